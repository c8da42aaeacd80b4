"""kbmfast: authorize Mobile IPv6 Binding Updates with preconfigured Binding Management Keys.

A correspondent node that shares a preconfigured Kbm (draft-ietf-mip6-precfgKbm) or Kcn and
nonces (RFC 4449) with a mobile node verifies each Binding Update's Binding Authorization Data
and its sequence number, here in a C core at line rate. ``kbmfast.reference`` is the same API in
plain Python; both answer identically on every input.

>>> import kbmfast
>>> keys = kbmfast.KeyTable()
>>> kbm = bytes(range(20))
>>> keys.add_kbm("2001:db8:1::100", kbm)
>>> bu = kbmfast.build_binding_update(kbm, home="2001:db8:1::100", care_of="2001:db8:2::200",
...                                   correspondent="2001:db8:3::300", sequence=7, lifetime=420)
>>> with kbmfast.Verifier(keys) as cn:
...     cn.verify(bu).verdict
<Verdict.ACCEPTED: 0>
"""

from __future__ import annotations

from ._keys import KeyTable
from ._rr import ReturnRoutability
from ._types import (
    AUTHENTICATOR_SIZE,
    IPPROTO_MH,
    KBM_SIZE,
    MIN_KCN_SIZE,
    AlternateCareOfAddress,
    BAStatus,
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
    KbmError,
    KeyFileError,
    MalformedPacket,
    NonceIndices,
    Packet,
    Pad1,
    PadN,
    Result,
    StateFileError,
    UnknownMessage,
    UnknownOption,
    Verdict,
)
from .fast import (
    BindingUpdateList,
    Verifier,
    authenticator,
    build_binding_ack,
    build_binding_update,
    derive_kbm,
    parse_packet,
    sequence_newer,
)

#: The backend answering through this module: "c" here, "reference" in kbmfast.reference.
backend = "c"

__version__ = "0.1.0"

__all__ = [
    "AUTHENTICATOR_SIZE",
    "IPPROTO_MH",
    "KBM_SIZE",
    "MIN_KCN_SIZE",
    "AlternateCareOfAddress",
    "BAStatus",
    "BindingAck",
    "BindingAuthorizationData",
    "BindingError",
    "BindingRefreshAdvice",
    "BindingRefreshRequest",
    "BindingUpdate",
    "BindingUpdateList",
    "CareOfTest",
    "CareOfTestInit",
    "HomeTest",
    "HomeTestInit",
    "KbmError",
    "KeyFileError",
    "KeyTable",
    "MalformedPacket",
    "NonceIndices",
    "Packet",
    "Pad1",
    "PadN",
    "Result",
    "ReturnRoutability",
    "StateFileError",
    "UnknownMessage",
    "UnknownOption",
    "Verdict",
    "Verifier",
    "authenticator",
    "backend",
    "build_binding_ack",
    "build_binding_update",
    "derive_kbm",
    "kernel",
    "parse_packet",
    "sequence_newer",
]


def __getattr__(name: str) -> str:
    """``kernel``: the MAC kernel the C core verifies with ("portable", "sha-ni", "avx2" or
    "avx512"): the fastest this CPU runs, measured on first use, or ``KBMFAST_KERNEL``'s choice.
    Reading it raises ValueError when ``KBMFAST_KERNEL`` names a kernel that is unknown or that
    this CPU cannot run."""
    if name == "kernel":
        from .fast import use_kernel

        return use_kernel()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, ``kernel`` (computed on first use) included."""
    return sorted([*globals(), "kernel"])
