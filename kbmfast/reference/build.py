"""Building authenticated Binding Updates and Binding Acknowledgements.

``make_builders(mac)`` gives a backend its pair of builders signing with its own MAC, so both
backends share one layout (RFC 6275 §6.2 alignment: canonical padding) and one signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .._types import IPPROTO_MH
from .._util import address_bytes, check_kbm, lifetime_units, release_key, uint
from . import wire
from .crypto import mac96

#: mac(kbm, care_of, correspondent, mh) -> 12 bytes, over the MH minus its last 12 bytes.
MacFunction = Callable[[bytes | bytearray, bytes, bytes, bytes], bytes]


def _seal(mh: bytearray, mac: MacFunction, kbm: bytes | bytearray, care_of: bytes, correspondent: bytes) -> None:
    # MAC first over the MH with a zero checksum, checksum last (RFC 6275 §6.2.7).
    mh[-12:] = mac(kbm, care_of, correspondent, bytes(mh))


def _checksum(mh: bytearray, source: bytes, destination: bytes) -> None:
    c = wire.mh_checksum(source, destination, bytes(mh))
    mh[4:6] = c.to_bytes(2, "big")


def wire_flags(ack: bool) -> int:
    """BU flags word: A when asked; H, L and K are always 0 toward a correspondent."""
    if not isinstance(ack, bool):
        raise TypeError(f"ack: expected a bool, not {type(ack).__name__}")
    return 0x8000 if ack else 0


class BuildBindingUpdate(Protocol):
    """The type of ``build_binding_update``."""

    def __call__(
        self,
        kbm: Any,
        *,
        home: Any,
        care_of: Any,
        correspondent: Any,
        sequence: int,
        lifetime: int,
        ack: bool = ...,
        alternate_care_of: Any = ...,
        nonce_indices: tuple[int, int] | None = ...,
    ) -> bytes:
        """Build and sign a Binding Update."""


class BuildBindingAck(Protocol):
    """The type of ``build_binding_ack``."""

    def __call__(
        self,
        kbm: Any,
        *,
        home: Any,
        care_of: Any,
        correspondent: Any,
        sequence: int,
        status: int,
        lifetime: int,
        destination: Any = ...,
    ) -> bytes:
        """Build and sign a Binding Acknowledgement."""


def make_builders(mac: MacFunction) -> tuple[BuildBindingUpdate, BuildBindingAck]:
    """The two builders, signing with ``mac``: each backend gets its pair from here."""

    def build_binding_update(
        kbm: Any,
        *,
        home: Any,
        care_of: Any,
        correspondent: Any,
        sequence: int,
        lifetime: int,
        ack: bool = True,
        alternate_care_of: Any = None,
        nonce_indices: tuple[int, int] | None = None,
    ) -> bytes:
        """A complete, authenticated Binding Update packet from the mobile node.

        The source is ``care_of``; when it differs from ``home`` a Destination Options header
        carries the Home Address option. With ``alternate_care_of`` the binding's care-of address
        (and the one in the MAC) is that address. A zero lifetime is a de-registration: the MAC's
        care-of address is then the home address (RFC 6275 §6.2.7).
        """
        hoa = address_bytes(home, "home")
        coa = address_bytes(care_of, "care_of")
        cn = address_bytes(correspondent, "correspondent")
        alt = None if alternate_care_of is None else address_bytes(alternate_care_of, "alternate_care_of")
        seq = uint(sequence, "sequence", 16)
        units = lifetime_units(lifetime)
        if nonce_indices is not None:
            if not isinstance(nonce_indices, tuple) or len(nonce_indices) != 2:
                raise TypeError("nonce_indices: expected a (home, care_of) tuple of two ints")
            nonce_indices = (uint(nonce_indices[0], "nonce_indices[0]", 16), uint(nonce_indices[1], "nonce_indices[1]", 16))
        mh = wire.binding_update_mh(seq, wire_flags(ack), units, alt, nonce_indices)
        mac_care_of = hoa if units == 0 else (alt if alt is not None else coa)
        key = check_kbm(kbm)
        try:
            _seal(mh, mac, key, mac_care_of, cn)
        finally:
            release_key(key)
        _checksum(mh, hoa, cn)
        if coa == hoa:
            return wire.ipv6_header(IPPROTO_MH, len(mh), coa, cn) + mh
        ext = wire.home_address_header(hoa)
        return wire.ipv6_header(wire.NH_DEST_OPTS, len(ext) + len(mh), coa, cn) + ext + mh

    def build_binding_ack(
        kbm: Any,
        *,
        home: Any,
        care_of: Any,
        correspondent: Any,
        sequence: int,
        status: int,
        lifetime: int,
        destination: Any = None,
    ) -> bytes:
        """A complete, authenticated Binding Acknowledgement from the correspondent node.

        ``care_of`` is the care-of address used in the MAC (the one the Binding Update was verified
        with: the home address for a de-registration). The packet goes to ``destination`` (the
        Binding Update's source; default ``care_of``) with a type 2 Routing header carrying
        ``home`` whenever that destination is not the home address.
        """
        hoa = address_bytes(home, "home")
        coa = address_bytes(care_of, "care_of")
        cn = address_bytes(correspondent, "correspondent")
        dst = coa if destination is None else address_bytes(destination, "destination")
        mh = wire.binding_ack_mh(uint(status, "status", 8), uint(sequence, "sequence", 16), lifetime_units(lifetime))
        key = check_kbm(kbm)
        try:
            _seal(mh, mac, key, coa, cn)
        finally:
            release_key(key)
        _checksum(mh, cn, hoa)
        if dst == hoa:
            return wire.ipv6_header(IPPROTO_MH, len(mh), cn, dst) + mh
        ext = wire.routing_header_2(hoa)
        return wire.ipv6_header(wire.NH_ROUTING, len(ext) + len(mh), cn, dst) + ext + mh

    # named as the public functions they become (argument errors quote the qualified name)
    for builder in (build_binding_update, build_binding_ack):
        builder.__qualname__ = builder.__name__
    return build_binding_update, build_binding_ack


build_binding_update, build_binding_ack = make_builders(mac96)
