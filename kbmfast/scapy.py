"""Scapy glue (the ``[scapy]`` extra): sign, verify and convert Scapy Mobile IPv6 packets.

>>> from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, HAO, MIP6MH_BU, MIP6OptBindingAuthData
>>> import kbmfast.scapy as ks
>>> bu = (IPv6(src="2001:db8:2::2", dst="2001:db8:3::3") / IPv6ExtHdrDestOpt(options=[HAO(hoa="2001:db8:1::1")])
...       / MIP6MH_BU(seq=7, flags="A", mhtime=105, options=[MIP6OptBindingAuthData(olen=12)]))
>>> signed = ks.sign(bu, bytes(20))
>>> ks.verify(signed, bytes(20)).verdict
<Verdict.ACCEPTED: 0>

Scapy computes a Mobility Header checksum over the wrong pseudo-header source when the
Destination Options header holds more than the Home Address option (PadN + HAO, as every
re-dissected packet does; tests/test_scapy_module.py shows it). :func:`sign` therefore writes the checksum itself
(home address as pseudo-source, final destination) and returns a packet whose ``cksum`` field
holds that value, which Scapy then keeps when it builds the packet again.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from scapy.layers.inet6 import (
    HAO,
    MIP6MH_BA,
    MIP6MH_BE,
    MIP6MH_BRR,
    MIP6MH_BU,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrRouting,
    MIP6MH_CoT,
    MIP6MH_CoTI,
    MIP6MH_Generic,
    MIP6MH_HoT,
    MIP6MH_HoTI,
    MIP6OptAltCoA,
    MIP6OptBindingAuthData,
    MIP6OptBRAdvice,
    MIP6OptNonceIndices,
    MIP6OptUnknown,
    Pad1,
    PadN,
)
from scapy.packet import Packet as ScapyPacket

import kbmfast
import kbmfast.reference

from ._types import (
    AlternateCareOfAddress,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    HomeTest,
    HomeTestInit,
    MalformedPacket,
    MobilityOption,
    NonceIndices,
    Packet,
    Result,
    UnknownMessage,
    UnknownOption,
)
from ._types import Pad1 as KPad1
from ._types import PadN as KPadN
from .reference.wire import mh_checksum

__all__ = ["from_scapy", "sign", "to_scapy", "verify"]


def _ipv6_layer(pkt: ScapyPacket) -> ScapyPacket:
    if not isinstance(pkt, ScapyPacket) or IPv6 not in pkt:
        raise TypeError(f"expected a Scapy packet with an IPv6 layer, not {type(pkt).__name__}")
    layer: ScapyPacket = pkt[IPv6]
    return layer


def _replace_ipv6(pkt: ScapyPacket, new_ip: ScapyPacket) -> ScapyPacket:
    """``pkt`` with its IPv6 layer (and everything after it) replaced by ``new_ip``."""
    if isinstance(pkt, IPv6):
        return new_ip
    outer = pkt.copy()
    under = outer[IPv6].underlayer
    under.remove_payload()
    under.add_payload(new_ip)
    return outer.__class__(bytes(outer))


def sign(pkt: ScapyPacket, kbm: bytes, *, care_of: Any = None) -> ScapyPacket:
    """``pkt`` (a Binding Update or Acknowledgement) with its authenticator and checksum right.

    The packet must end with a 12-byte Binding Authorization Data option (give
    ``MIP6OptBindingAuthData(olen=12)``: Scapy's default length 16 is malformed). The MAC's
    care-of address is, for a Binding Update, the home address when the lifetime is 0, else the
    Alternate Care-of Address or the source; for a Binding Acknowledgement, its destination.
    ``care_of`` overrides it (a BA answering an Alternate Care-of Address or a de-registration).
    The checksum uses the Home Address option's address (BU) or the type 2 Routing header's
    address (BA) as the pseudo-header's home end. Returns a new packet; ``pkt`` is unchanged.
    """
    ip = _ipv6_layer(pkt)
    raw = bytearray(bytes(ip))
    parsed = kbmfast.parse_packet(bytes(raw))
    msg = parsed.message
    if not isinstance(msg, (BindingUpdate, BindingAck)):
        raise ValueError(f"sign: expected a Binding Update or Acknowledgement, not {type(msg).__name__}")
    if not msg.options or not isinstance(msg.options[-1], BindingAuthorizationData) or len(msg.options[-1].authenticator) != 12:
        raise ValueError("sign: the last mobility option must be a 12-byte Binding Authorization Data option (olen=12)")
    mh = parsed.mh_offset
    mh_end = mh + (raw[mh + 1] + 1) * 8
    if isinstance(msg, BindingUpdate):
        home = parsed.home_address or parsed.source
        alt = next((o.address for o in msg.options if isinstance(o, AlternateCareOfAddress)), None)
        mac_care_of = home if msg.lifetime == 0 else (alt or parsed.source)
        correspondent = parsed.destination
        pseudo = (home.packed, parsed.destination.packed)
    else:
        home = parsed.routing_address or parsed.destination
        mac_care_of = parsed.destination
        correspondent = parsed.source
        pseudo = (parsed.source.packed, home.packed)
    if care_of is not None:
        mac_care_of = ipaddress.IPv6Address(care_of if not isinstance(care_of, (bytes, bytearray)) else bytes(care_of))
    raw[mh + 4 : mh + 6] = b"\0\0"
    raw[mh_end - 12 : mh_end] = kbmfast.authenticator(kbm, mac_care_of, correspondent, bytes(raw[mh:mh_end]))
    raw[mh + 4 : mh + 6] = mh_checksum(*pseudo, bytes(raw[mh:mh_end])).to_bytes(2, "big")
    return _replace_ipv6(pkt, IPv6(bytes(raw)))


def verify(pkt: ScapyPacket, keys_or_kbm: Any) -> Result:
    """What a correspondent node decides about ``pkt``, as a :class:`kbmfast.Result`.

    ``keys_or_kbm`` is a ``kbmfast.Verifier`` (its sequence table is used and updated), a
    ``KeyTable`` (a fresh in-memory verifier: no replay history), or a 20-byte Kbm (configured
    for the packet's home address: the Home Address option's, else the source).
    """
    raw = bytes(_ipv6_layer(pkt))
    if isinstance(keys_or_kbm, (kbmfast.Verifier, kbmfast.reference.Verifier)):
        return keys_or_kbm.verify(raw)
    if isinstance(keys_or_kbm, kbmfast.KeyTable):
        with kbmfast.Verifier(keys_or_kbm) as v:
            return v.verify(raw)
    if isinstance(keys_or_kbm, (bytes, bytearray, memoryview)):
        try:
            parsed = kbmfast.parse_packet(raw)
            home = parsed.home_address or parsed.source
        except MalformedPacket:
            home = ipaddress.IPv6Address(raw[8:24]) if len(raw) >= 24 else ipaddress.IPv6Address("2001:db8::1")
        table = kbmfast.KeyTable()
        table.add_kbm(home, bytes(keys_or_kbm))
        with kbmfast.Verifier(table) as v:
            return v.verify(raw)
    raise TypeError(f"keys_or_kbm: expected a Verifier, a KeyTable or a 20-byte Kbm, not {type(keys_or_kbm).__name__}")


def from_scapy(pkt: ScapyPacket) -> Packet:
    """Parse the bytes Scapy builds for ``pkt``'s IPv6 layer with ``kbmfast.parse_packet``.

    Raises ``kbmfast.MalformedPacket`` for what is not an IPv6 + Mobility Header packet. A
    checksum Scapy computed wrongly (see the module text) shows as ``checksum_valid=False``.
    """
    return kbmfast.parse_packet(bytes(_ipv6_layer(pkt)))


def _option(o: MobilityOption) -> ScapyPacket:
    if isinstance(o, KPad1):
        return Pad1()
    if isinstance(o, KPadN):
        return PadN(optdata=bytes(o.length - 2))
    if isinstance(o, BindingRefreshAdvice):
        return MIP6OptBRAdvice(rinter=o.interval // 4)
    if isinstance(o, AlternateCareOfAddress):
        return MIP6OptAltCoA(acoa=str(o.address))
    if isinstance(o, NonceIndices):
        return MIP6OptNonceIndices(olen=4, hni=o.home_nonce_index, coni=o.care_of_nonce_index)
    if isinstance(o, BindingAuthorizationData):
        return MIP6OptBindingAuthData(olen=len(o.authenticator), authenticator=int.from_bytes(o.authenticator, "big"))
    if isinstance(o, UnknownOption):
        return MIP6OptUnknown(otype=o.type, olen=len(o.data), odata=o.data)
    raise TypeError(f"not a mobility option: {o!r}")


def _message(m: Any, checksum: int) -> ScapyPacket:
    opts = [_option(o) for o in getattr(m, "options", ())]
    common: dict[str, Any] = {"cksum": checksum}
    if isinstance(m, BindingUpdate):
        return MIP6MH_BU(
            seq=m.sequence,
            flags=m.flags >> 9,
            reserved=m.flags & 0x1FF,
            mhtime=m.lifetime // 4,
            autopad=0,
            options=opts,
            **common,
        )
    if isinstance(m, BindingAck):
        return MIP6MH_BA(
            status=m.status, flags=m.flags >> 5, res2=m.flags & 0x1F, seq=m.sequence, mhtime=m.lifetime // 4,
            autopad=0, options=opts, **common,
        )  # fmt: skip
    if isinstance(m, BindingRefreshRequest):
        return MIP6MH_BRR(autopad=0, options=opts, **common)
    if isinstance(m, (HomeTestInit, CareOfTestInit)):
        init: Any = MIP6MH_HoTI if isinstance(m, HomeTestInit) else MIP6MH_CoTI
        return init(cookie=m.cookie, autopad=0, options=opts, **common)  # type: ignore[no-any-return]
    if isinstance(m, (HomeTest, CareOfTest)):
        test: Any = MIP6MH_HoT if isinstance(m, HomeTest) else MIP6MH_CoT
        return test(index=m.nonce_index, cookie=m.cookie, token=m.token, autopad=0, options=opts, **common)  # type: ignore[no-any-return]
    if isinstance(m, BindingError):
        return MIP6MH_BE(status=m.status, ha=str(m.home), options=opts, **common)
    if isinstance(m, UnknownMessage):
        return MIP6MH_Generic(mhtype=m.mh_type, msg=m.data, **common)
    raise TypeError(f"not a Mobility Header message: {m!r}")


def to_scapy(packet: Packet) -> ScapyPacket:
    """A Scapy ``IPv6`` packet for a :class:`kbmfast.Packet` (as ``parse_packet`` returns it).

    Layers: IPv6, a type 2 Routing header (``routing_address``), a Destination Options header
    with the Home Address option (``home_address``), the Mobility Header with its options in
    order (padding included) and the checksum it carries. What a ``Packet`` does not record
    (traffic class, flow label, Hop-by-Hop options) takes Scapy's defaults.
    """
    if not isinstance(packet, Packet):
        raise TypeError(f"expected a kbmfast.Packet, not {type(packet).__name__}")
    pkt: ScapyPacket = IPv6(src=str(packet.source), dst=str(packet.destination))
    if packet.routing_address is not None:
        pkt /= IPv6ExtHdrRouting(type=2, segleft=1, addresses=[str(packet.routing_address)])
    if packet.home_address is not None:
        pkt /= IPv6ExtHdrDestOpt(options=[HAO(hoa=str(packet.home_address))])
    pkt /= _message(packet.message, packet.checksum)
    return IPv6(bytes(pkt))
