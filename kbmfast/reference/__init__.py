"""kbmfast.reference: the whole kbmfast API in pure Python, the oracle for the C core.

Plainly written and slow on purpose: every rule of RFC 6275, RFC 4449 and draft-ietf-mip6-precfgKbm that the
verifier applies is here where a reader can check it (docs/spec-notes.md lists the choices made).
``kbmfast`` (the C backend) must answer exactly as this module does on every input.
"""

from __future__ import annotations

from .._keys import KeyTable
from .._mn import binding_update_list_class
from .._rr import ReturnRoutability
from .._types import (
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
from . import statefile as _statefile
from . import wire as _wire
from .build import build_binding_ack, build_binding_update
from .crypto import authenticator, derive_kbm, mac96, sequence_newer
from .verifier import Verifier
from .wire import parse_packet

backend = "reference"
#: Where the SHA-1 work happens in this backend.
kernel = "hashlib"

BindingUpdateList = binding_update_list_class(build_binding_update, mac96, _statefile.SequenceState, _wire, __name__)

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
