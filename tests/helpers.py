"""Packet makers for tests: what the public builders refuse to make (H flag, no BAD, ...)."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from kbmfast.reference import wire
from kbmfast.reference.crypto import mac96

UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
"""True in .ci/run's sanitizer step (the suite under an ASan preload and PYTHONMALLOC=malloc)."""

# ASan's allocator keeps freed blocks in a quarantine (256 MB by default) and maps shadow memory
# for everything: peak-RSS figures and scans of the process's own memory mean nothing under it.
# Tests that measure memory run in the plain suite (the README's test command) only.
not_under_asan = pytest.mark.skipif(UNDER_ASAN, reason="measures memory: meaningless under ASan's quarantine and shadow")


def a16(address: str) -> bytes:
    """16 bytes of an address."""
    return ipaddress.IPv6Address(address).packed


def custom_bu(
    kbm: bytes | None,
    *,
    home: str,
    care_of: str,
    correspondent: str,
    sequence: int,
    flags: int = 0x8000,
    lifetime_units: int = 105,
    alternate_care_of: str | None = None,
    nonce_indices: tuple[int, int] | None = None,
    with_bad: bool = True,
    mac_care_of: str | None = None,
) -> bytes:
    """A Binding Update with any flags; ``kbm=None`` leaves a zero authenticator."""
    alt = None if alternate_care_of is None else a16(alternate_care_of)
    mh = wire.binding_update_mh(sequence, flags, lifetime_units, alt, nonce_indices)
    if not with_bad:
        mh = mh[:-14]
        mh += wire.pad_to(len(mh), 8, 0)
        mh[1] = len(mh) // 8 - 1
    elif kbm is not None:
        if mac_care_of is None:
            mac_care_of = home if lifetime_units == 0 else (alternate_care_of or care_of)
        mh[-12:] = mac96(kbm, a16(mac_care_of), a16(correspondent), bytes(mh))
    return wrap_bu(bytes(mh), home=home, care_of=care_of, correspondent=correspondent)


def wrap_bu(mh: bytes, *, home: str, care_of: str, correspondent: str, fix_checksum: bool = True) -> bytes:
    """IPv6 (+ Destination Options with the HAO when away) around a BU MH, checksum fixed."""
    hoa, coa, cn = a16(home), a16(care_of), a16(correspondent)
    body = bytearray(mh)
    if fix_checksum:
        body[4:6] = struct.pack("!H", wire.mh_checksum(hoa, cn, bytes(body)))
    if hoa == coa:
        return wire.ipv6_header(135, len(body), coa, cn) + bytes(body)
    ext = wire.home_address_header(hoa)
    return wire.ipv6_header(60, len(ext) + len(body), coa, cn) + ext + bytes(body)


def with_checksum(packet: bytes) -> bytes:
    """The packet with its MH checksum recomputed."""
    layout = wire.scan(packet)
    src, dst = wire.pseudo_addresses(packet, layout)
    mh = bytearray(packet[layout.mh_offset :])
    mh[4:6] = struct.pack("!H", wire.mh_checksum(src, dst, bytes(mh)))
    return packet[: layout.mh_offset] + bytes(mh)


def tool_env() -> dict[str, str]:
    """The environment for outside tools (tshark, tcpdump, editcap...): without the sanitizer
    preload of the ASan test run, which deadlocks some of them."""
    import os

    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC")}
