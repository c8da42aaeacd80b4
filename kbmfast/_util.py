"""Argument checking shared by both backends (the API's edge, not its logic)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ._types import AUTHENTICATOR_SIZE, KBM_SIZE, MAX_LIFETIME, MIN_KCN_SIZE

_pton, _ntop, _AF_INET6 = socket.inet_pton, socket.inet_ntop, socket.AF_INET6
_ZERO10 = bytes(10)


def address_bytes(value: Any, name: str) -> bytes:
    """Return the 16 bytes of an IPv6 address given as str, IPv6Address or 16 bytes."""
    if isinstance(value, ipaddress.IPv6Address):
        return value.packed
    if isinstance(value, str):
        # Fast path, exact: text that inet_ntop writes back unchanged is what IPv6Address reads
        # to the same bytes (inet_ntop differs from ipaddress only for a zero first 80 bits).
        try:
            raw = _pton(_AF_INET6, value)
        except (OSError, ValueError):
            raw = b""
        if raw and raw[:10] != _ZERO10 and _ntop(_AF_INET6, raw) == value:
            return raw
        try:
            return ipaddress.IPv6Address(value).packed
        except ValueError:
            raise ValueError(f"{name}: not an IPv6 address: {value!r}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) != 16:
            raise ValueError(f"{name}: an address given as bytes must be 16 bytes, not {len(raw)}")
        return raw
    raise TypeError(f"{name}: expected an IPv6 address (str, IPv6Address or 16 bytes), not {type(value).__name__}")


def key_bytes(value: Any, name: str) -> bytes | bytearray:
    """Key material given to a function that only uses it: the caller's ``bytes`` object itself
    (immutable: nothing to copy or wipe), or a private bytearray copy of any other bytes-like,
    which the caller hands to :func:`release_key` when done. str is refused (a common mistake:
    hex text)."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytearray(value)
    raise TypeError(f"{name}: expected bytes-like key material, not {type(value).__name__}")


def release_key(key: bytes | bytearray) -> None:
    """Wipe ``key`` if :func:`key_bytes` made it (a bytearray); the caller's bytes stay theirs."""
    if type(key) is bytearray:
        wipe(key)


def owned_key(value: Any, name: str) -> bytearray:
    """A private copy of bytes-like key material for a KeyTable to keep and later :func:`wipe`
    (copied straight into the bytearray: no intermediate bytes object holds the key)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytearray(value)
    raise TypeError(f"{name}: expected bytes-like key material, not {type(value).__name__}")


def wipe(buf: bytearray) -> None:
    """Overwrite ``buf`` with zeros in place (the same length: it is never reallocated)."""
    buf[:] = bytes(len(buf))


def lifetime_units(seconds: Any, name: str = "lifetime") -> int:
    """Seconds to the wire's 4-second units (floored); ValueError outside 0..262140."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"{name}: expected an int number of seconds, not {type(seconds).__name__}")
    if seconds < 0 or seconds > MAX_LIFETIME:
        raise ValueError(f"{name}: {seconds} s is outside 0..{MAX_LIFETIME} s")
    return seconds // 4


def uint(value: Any, name: str, bits: int) -> int:
    """Check an unsigned integer field of the given width."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, not {type(value).__name__}")
    if value < 0 or value >= 1 << bits:
        raise ValueError(f"{name}: {value} is outside 0..{(1 << bits) - 1}")
    return value


def is_unicast(addr: bytes) -> bool:
    """Not the unspecified address and not multicast (a valid packet source)."""
    return addr[0] != 0xFF and addr != bytes(16)


def is_routable_unicast(addr: bytes) -> bool:
    """Unicast and usable beyond the link: not ::, ::1, ff00::/8 or fe80::/10."""
    if addr[0] == 0xFF:
        return False
    if addr[0] == 0xFE and addr[1] & 0xC0 == 0x80:
        return False
    return addr[:15] != bytes(15) or addr[15] > 1


def check_mh_for_mac(mh: Any) -> bytes:
    """The MH given to ``authenticator``: bytes-like, ending with a 14-byte BAD option."""
    if not isinstance(mh, (bytes, bytearray, memoryview)):
        raise TypeError(f"mh: expected a bytes-like Mobility Header, not {type(mh).__name__}")
    raw = bytes(mh)
    if not 14 <= len(raw) <= 2048:
        raise ValueError(f"mh: a Mobility Header ending with Binding Authorization Data is 14..2048 bytes, not {len(raw)}")
    if raw[-14] != 5 or raw[-13] != AUTHENTICATOR_SIZE:
        raise ValueError("mh: must end with the Binding Authorization Data option (05 0c + 12 bytes)")
    return raw


def _kbm_size(raw: bytes | bytearray) -> None:
    if len(raw) != KBM_SIZE:
        raise ValueError(f"kbm: must be {KBM_SIZE} bytes, not {len(raw)}")


def _kcn_sizes(raw: bytes | bytearray, home_nonce: Any, care_of_nonce: Any) -> tuple[bytes, bytes]:
    if len(raw) < MIN_KCN_SIZE:
        raise ValueError(f"kcn: must be at least {MIN_KCN_SIZE} bytes, not {len(raw)}")
    if len(raw) > 1024:
        raise ValueError(f"kcn: at most 1024 bytes, not {len(raw)}")
    nonces = []
    for name, value in (("home_nonce", home_nonce), ("care_of_nonce", care_of_nonce)):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{name}: expected bytes-like key material, not {type(value).__name__}")
        nonce = bytes(value)
        if not 1 <= len(nonce) <= 64:
            raise ValueError(f"{name}: must be 1..64 bytes, not {len(nonce)}")
        nonces.append(nonce)
    return nonces[0], nonces[1]


def check_kbm(kbm: Any) -> bytes | bytearray:
    """A Kbm is exactly 20 bytes (draft-ietf-mip6-precfgKbm D2); as :func:`key_bytes` gives it
    (hand it to :func:`release_key` when done)."""
    raw = key_bytes(kbm, "kbm")
    try:
        _kbm_size(raw)
    except ValueError:
        release_key(raw)
        raise
    return raw


def check_kcn(kcn: Any, home_nonce: Any, care_of_nonce: Any) -> tuple[bytes | bytearray, bytes, bytes]:
    """Kcn of at least 20 bytes (RFC 4449 §3) and nonces of 1..64 bytes; the Kcn as
    :func:`key_bytes` gives it (hand it to :func:`release_key` when done)."""
    raw = key_bytes(kcn, "kcn")
    try:
        return (raw, *_kcn_sizes(raw, home_nonce, care_of_nonce))
    except (TypeError, ValueError):
        release_key(raw)
        raise


def owned_kbm(kbm: Any) -> bytearray:
    """:func:`check_kbm` into a private bytearray (wiped again if it is refused)."""
    raw = owned_key(kbm, "kbm")
    try:
        _kbm_size(raw)
    except ValueError:
        wipe(raw)
        raise
    return raw


def owned_kcn(kcn: Any, home_nonce: Any, care_of_nonce: Any) -> tuple[bytearray, bytes, bytes]:
    """:func:`check_kcn` with the Kcn in a private bytearray (wiped again if it is refused)."""
    raw = owned_key(kcn, "kcn")
    try:
        return (raw, *_kcn_sizes(raw, home_nonce, care_of_nonce))
    except (TypeError, ValueError):
        wipe(raw)
        raise


def check_packet(packet: Any, name: str) -> bytes:
    """A packet must be bytes-like."""
    if isinstance(packet, bytes):
        return packet
    if isinstance(packet, (bytearray, memoryview)):
        return bytes(packet)
    raise TypeError(f"{name}: expected a bytes-like packet, not {type(packet).__name__}")


_OFFSET_FORMATS = {"Q", "<Q", "=Q", "L", "<L", "=L"}


def check_offsets(buffer: Any, offsets: Any, walk: bool = True) -> tuple[memoryview, memoryview]:
    """Validate the zero-copy form: a contiguous byte buffer and n + 1 uint64 offsets.

    ``walk=False`` skips the O(n) check of the values (the C core makes it, and on failure the
    caller comes back with ``walk=True`` for the message).
    """
    try:
        buf = memoryview(buffer)
    except TypeError:
        raise TypeError(f"buffer: expected a bytes-like object, not {type(buffer).__name__}") from None
    if not buf.c_contiguous:
        raise ValueError("buffer: must be contiguous")
    buf = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
    try:
        offs = memoryview(offsets)
    except TypeError:
        kind = type(offsets).__name__
        raise TypeError(f"offsets: expected a buffer of uint64 (array('Q') or numpy uint64), not {kind}") from None
    if offs.ndim != 1 or offs.itemsize != 8 or offs.format not in _OFFSET_FORMATS or not offs.c_contiguous:
        raise ValueError(f"offsets: must be a contiguous 1-D buffer of unsigned 64-bit integers, not format {offs.format!r}")
    if len(offs) < 1:
        raise ValueError("offsets: needs n + 1 entries for n packets (at least one)")
    if not walk:
        return buf, offs
    prev = 0
    for i, o in enumerate(offs.tolist()):
        if o < prev:
            raise ValueError(f"offsets: decreasing at index {i}")
        prev = o
    if prev > len(buf):
        raise ValueError(f"offsets: last offset {prev} is past the end of the buffer ({len(buf)} bytes)")
    return buf, offs


def check_verifier_args(keys: Any, table: type, rekey_limit: Any, max_lifetime: Any) -> None:
    """Validate Verifier's arguments (the same words for both backends); ``keys`` must be a ``table``."""
    if not isinstance(keys, table):
        raise TypeError(f"keys: expected a KeyTable, not {type(keys).__name__}")
    if isinstance(rekey_limit, bool) or not isinstance(rekey_limit, int):
        raise TypeError("rekey_limit: expected an int")
    if not 1 <= rekey_limit <= 32768:
        raise ValueError(f"rekey_limit: {rekey_limit} is outside 1..32768 (beyond 32768 old Binding Updates replay)")
    if max_lifetime is not None:
        lifetime_units(max_lifetime, "max_lifetime")


def near_limit_threshold(fraction: Any, rekey_limit: int) -> float:
    """The advance from which ``keys_near_limit`` reports a peer."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a number in (0, 1], not {fraction!r}")
    return float(fraction) * rekey_limit
