"""The authenticator, RFC 4449 key derivation and the sequence window, in plain Python."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from .._types import AUTHENTICATOR_SIZE
from .._util import address_bytes, check_kbm, check_kcn, check_mh_for_mac, release_key, uint


def mac96(kbm: bytes | bytearray, care_of: bytes, correspondent: bytes, mh: bytes) -> bytes:
    """First(96, HMAC_SHA1(Kbm, care-of | correspondent | MH minus authenticator, checksum 0))."""
    data = care_of + correspondent + (mh[:4] + b"\0\0" + mh[6:])[:-AUTHENTICATOR_SIZE]
    return hmac.digest(kbm, data, "sha1")[:AUTHENTICATOR_SIZE]


def authenticator(kbm: Any, care_of: Any, correspondent: Any, mh: Any) -> bytes:
    """The 12-byte Binding Authorization Data value for the complete Mobility Header ``mh``.

    >>> kbm = bytes.fromhex("06fe1294dedbb6b085227e37ea4f9a198700c9f4")
    >>> mh = bytes.fromhex("3b030500ca35123480000069010400000000050c") + bytes(12)
    >>> authenticator(kbm, "2001:db8:2::200", "2001:db8:3::300", mh).hex()
    'a3168e73d2a06c8d4fb43c8f'
    """
    return authenticator_with(mac96, kbm, care_of, correspondent, mh)


def authenticator_with(
    mac: Callable[[bytes | bytearray, bytes, bytes, bytes], bytes], kbm: Any, care_of: Any, correspondent: Any, mh: Any
) -> bytes:
    """``authenticator`` with a backend's ``mac``: the arguments checked, a key copy wiped."""
    key = check_kbm(kbm)
    try:
        co = address_bytes(care_of, "care_of")
        cn = address_bytes(correspondent, "correspondent")
        return mac(key, co, cn, check_mh_for_mac(mh))
    finally:
        release_key(key)


def keygen_token(kcn: bytes | bytearray, address: bytes, nonce: bytes, which: int) -> bytes:
    """First(64, HMAC_SHA1(Kcn, address | nonce | 0 (home) or 1 (care-of)))."""
    return hmac.digest(kcn, address + nonce + bytes((which,)), "sha1")[:8]


def kbm_from_tokens(home_token: bytes, care_of_token: bytes | None) -> bytes:
    """Kbm = SHA1(hkt | ckt), or SHA1(hkt) when de-registering."""
    return hashlib.sha1(home_token + (care_of_token or b"")).digest()


def derive_kbm(
    kcn: Any,
    home_nonce: Any,
    care_of_nonce: Any,
    *,
    home: Any,
    care_of: Any,
    deregistration: bool = False,
) -> bytes:
    """RFC 4449: derive Kbm from a preconfigured Kcn and nonces the return-routability way.

    >>> kcn = bytes(range(1, 21))
    >>> derive_kbm(kcn, bytes(range(0xa0, 0xa8)), bytes(range(0xb0, 0xb8)),
    ...            home="2001:db8:1::100", care_of="2001:db8:2::200").hex()
    '06fe1294dedbb6b085227e37ea4f9a198700c9f4'
    """
    key, hn, cn = check_kcn(kcn, home_nonce, care_of_nonce)
    try:
        hoa = address_bytes(home, "home")
        coa = address_bytes(care_of, "care_of")
        hkt = keygen_token(key, hoa, hn, 0)
        ckt = None if deregistration else keygen_token(key, coa, cn, 1)
    finally:
        release_key(key)
    return kbm_from_tokens(hkt, ckt)


def sequence_newer(new: int, last: int) -> bool:
    """True when ``new`` is after ``last`` modulo 2**16: ``1 <= (new - last) % 65536 <= 32767``."""
    uint(new, "new", 16)
    uint(last, "last", 16)
    return 1 <= (new - last) % 65536 <= 32767
