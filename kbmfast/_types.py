"""Types shared by both backends: verdicts, results, parsed messages, exceptions.

Everything here is plain data. Both ``kbmfast`` (the C core) and ``kbmfast.reference`` (pure
Python) return these very classes, so results compare equal across backends.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

IPv6Address = ipaddress.IPv6Address
#: What the API accepts wherever it takes an address.
Address = str | ipaddress.IPv6Address | bytes | bytearray | memoryview

KBM_SIZE = 20
AUTHENTICATOR_SIZE = 12
MIN_KCN_SIZE = 20
IPPROTO_MH = 135
#: Largest lifetime the wire can carry, in seconds (65535 units of 4 s).
MAX_LIFETIME = 65535 * 4
#: Default cumulative sequence advance allowed under one key (see ``Verifier``).
DEFAULT_REKEY_LIMIT = 32768


class Verdict(enum.IntEnum):
    """The uint8 verdict codes of ``Verifier.verify_batch`` (README.md lists them with their BA)."""

    ACCEPTED = 0
    MALFORMED = 1
    BAD_CHECKSUM = 2
    NOT_BINDING_UPDATE = 3
    NOT_CONFIGURED = 4
    MISSING_AUTHORIZATION = 5
    BAD_AUTHENTICATOR = 6
    SEQUENCE_OUT_OF_WINDOW = 7
    HOME_REGISTRATION = 8
    INVALID_CARE_OF = 9
    KEY_EXHAUSTED = 10
    # return routability (RFC 6275 §9.5.1): a Binding Update from a peer with no preconfigured
    # key, verified with the return-routability Kbm (Verifier(return_routability=...))
    HOME_NONCE_EXPIRED = 11
    CARE_OF_NONCE_EXPIRED = 12
    NONCES_EXPIRED = 13
    RR_TABLE_FULL = 14


#: Binding Acknowledgement status sent for each verdict (None: nothing is sent).
BA_STATUS: dict[Verdict, int | None] = {
    Verdict.ACCEPTED: 0,
    Verdict.SEQUENCE_OUT_OF_WINDOW: 135,
    Verdict.HOME_REGISTRATION: 131,
    Verdict.INVALID_CARE_OF: 174,
    Verdict.KEY_EXHAUSTED: 129,
    Verdict.HOME_NONCE_EXPIRED: 136,
    Verdict.CARE_OF_NONCE_EXPIRED: 137,
    Verdict.NONCES_EXPIRED: 138,
    Verdict.RR_TABLE_FULL: 130,
}


class BAStatus(enum.IntEnum):
    """Binding Acknowledgement status codes of RFC 6275 §6.1.8."""

    ACCEPTED = 0
    ACCEPTED_PREFIX_DISCOVERY = 1
    REASON_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INSUFFICIENT_RESOURCES = 130
    HOME_REGISTRATION_NOT_SUPPORTED = 131
    NOT_HOME_SUBNET = 132
    NOT_HOME_AGENT = 133
    DUPLICATE_ADDRESS_DETECTION_FAILED = 134
    SEQUENCE_OUT_OF_WINDOW = 135
    EXPIRED_HOME_NONCE_INDEX = 136
    EXPIRED_CARE_OF_NONCE_INDEX = 137
    EXPIRED_NONCES = 138
    REGISTRATION_TYPE_CHANGE_DISALLOWED = 139
    INVALID_CARE_OF_ADDRESS = 174


# --------------------------------------------------------------------------------------------
# Exceptions


class KbmError(Exception):
    """Base class of every error kbmfast raises on purpose."""


class MalformedPacket(KbmError, ValueError):
    """A packet that is not a well-formed IPv6 + Mobility Header packet.

    ``reason`` says what is wrong and ``offset`` at which byte of the packet (counted from the
    first byte of the IPv6 header). Both backends raise it with the same code, so the same text.
    """

    def __init__(self, code: int, offset: int) -> None:
        self.code = code
        self.reason = MALFORMED_REASONS.get(code, "malformed packet")
        self.offset = offset
        super().__init__(f"{self.reason} (at byte {offset})")

    def __reduce__(self) -> tuple[type[MalformedPacket], tuple[int, int]]:
        return (type(self), (self.code, self.offset))


class KeyFileError(KbmError, ValueError):
    """A key file that cannot be used: unreadable, malformed, or readable by others."""


class StateFileError(KbmError, ValueError):
    """A sequence state file that is corrupt, truncated, foreign or of a newer version."""


# Parse error codes. The C core (csrc/kbm.h, enum kbm_perr) uses the same numbers: a parse
# failure is (code, offset) on both sides and the text comes from this one table.
E_SHORT = 1
E_VERSION = 2
E_PAYLOAD_LENGTH = 3
E_EXT_TRUNCATED = 4
E_EXT_ORDER = 5
E_NO_MH = 6
E_OPT_TRUNCATED = 7
E_OPT_DISCARD = 8
E_HAO_LENGTH = 9
E_HAO_REPEATED = 10
# 11 is unused: the address in a Home Address option is the verifier's check, not the parser's
E_ROUTING_TYPE = 12
E_RH2_FORMAT = 13
E_MH_LENGTH = 14
E_PAYLOAD_PROTO = 15
E_HEADER_LEN = 16
E_MOPT_TRUNCATED = 17
E_MOPT_LENGTH = 18
E_MOPT_DUPLICATE = 19
E_BAD_NOT_LAST = 20

MALFORMED_REASONS: dict[int, str] = {
    E_SHORT: "packet shorter than an IPv6 header and a Mobility Header",
    E_VERSION: "IP version is not 6",
    E_PAYLOAD_LENGTH: "IPv6 Payload Length does not match the packet length",
    E_EXT_TRUNCATED: "extension header runs past the end of the packet",
    E_EXT_ORDER: "extension headers repeated or out of order",
    E_NO_MH: "no Mobility Header: unsupported next header",
    E_OPT_TRUNCATED: "IPv6 option runs past the end of its header",
    E_OPT_DISCARD: "unrecognised IPv6 option whose action bits say discard",
    E_HAO_LENGTH: "Home Address option length is not 16",
    E_HAO_REPEATED: "more than one Home Address option",
    E_ROUTING_TYPE: "Routing header is not of type 2",
    E_RH2_FORMAT: "type 2 Routing header needs Hdr Ext Len 2 and Segments Left 1",
    E_MH_LENGTH: "Mobility Header length does not match the IPv6 payload",
    E_PAYLOAD_PROTO: "Mobility Header Payload Proto is not 59",
    E_HEADER_LEN: "Mobility Header Header Len below the minimum for its MH Type",
    E_MOPT_TRUNCATED: "mobility option runs past the end of the Mobility Header",
    E_MOPT_LENGTH: "mobility option has the wrong length for its type",
    E_MOPT_DUPLICATE: "mobility option repeated",
    E_BAD_NOT_LAST: "Binding Authorization Data option is not the last option",
}


# --------------------------------------------------------------------------------------------
# Mobility options (RFC 6275 §6.2)


@dataclass(frozen=True)
class Pad1:
    """A single byte of padding (type 0, no length byte)."""


@dataclass(frozen=True)
class PadN:
    """``length`` bytes of padding in all, type and length bytes included."""

    length: int


@dataclass(frozen=True)
class BindingRefreshAdvice:
    """Refresh interval suggested by a home agent, in seconds (the wire counts 4-s units)."""

    interval: int


@dataclass(frozen=True)
class AlternateCareOfAddress:
    """Care-of address to register instead of the packet's source address."""

    address: IPv6Address


@dataclass(frozen=True)
class NonceIndices:
    """Return-routability nonce indices (ignored for preconfigured keys, RFC 4449 §3)."""

    home_nonce_index: int
    care_of_nonce_index: int


@dataclass(frozen=True)
class BindingAuthorizationData:
    """The 96-bit authenticator; always the last option of its message."""

    authenticator: bytes


@dataclass(frozen=True)
class UnknownOption:
    """An option type this implementation does not know; skipped by the verifier."""

    type: int
    data: bytes


MobilityOption = (
    Pad1 | PadN | BindingRefreshAdvice | AlternateCareOfAddress | NonceIndices | BindingAuthorizationData | UnknownOption
)


# --------------------------------------------------------------------------------------------
# Mobility Header messages (RFC 6275 §6.1)

FLAG_A = 0x8000
FLAG_H = 0x4000
FLAG_L = 0x2000
FLAG_K = 0x1000
BA_FLAG_K = 0x80


@dataclass(frozen=True)
class BindingRefreshRequest:
    """MH Type 0."""

    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class HomeTestInit:
    """MH Type 1."""

    cookie: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class CareOfTestInit:
    """MH Type 2."""

    cookie: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class HomeTest:
    """MH Type 3."""

    nonce_index: int
    cookie: bytes
    token: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class CareOfTest:
    """MH Type 4."""

    nonce_index: int
    cookie: bytes
    token: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class BindingUpdate:
    """MH Type 5. ``flags`` is the whole 16-bit flags-and-reserved word; lifetime in seconds."""

    sequence: int
    flags: int
    lifetime: int
    options: tuple[MobilityOption, ...] = ()

    @property
    def ack(self) -> bool:
        """The A flag: the sender asks for a Binding Acknowledgement."""
        return bool(self.flags & FLAG_A)

    @property
    def home_registration(self) -> bool:
        """The H flag: a home registration, which only a home agent may accept."""
        return bool(self.flags & FLAG_H)


@dataclass(frozen=True)
class BindingAck:
    """MH Type 6. ``flags`` is the K bit and the reserved bits; lifetime in seconds."""

    status: int
    flags: int
    sequence: int
    lifetime: int
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class BindingError:
    """MH Type 7."""

    status: int
    home: IPv6Address
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True)
class UnknownMessage:
    """An MH Type this implementation does not know (a receiver answers with Binding Error 2)."""

    mh_type: int
    data: bytes


Message = (
    BindingRefreshRequest
    | HomeTestInit
    | CareOfTestInit
    | HomeTest
    | CareOfTest
    | BindingUpdate
    | BindingAck
    | BindingError
    | UnknownMessage
)


@dataclass(frozen=True)
class Packet:
    """An IPv6 packet carrying a Mobility Header, as ``parse_packet`` returns it.

    ``home_address`` comes from a Home Address option, ``routing_address`` from a type 2
    Routing header; ``mh_offset`` is where the Mobility Header starts. ``checksum_valid`` tells
    whether the Mobility Header checksum (HoA pseudo-source, final destination) is right.
    """

    source: IPv6Address
    destination: IPv6Address
    home_address: IPv6Address | None
    routing_address: IPv6Address | None
    mh_offset: int
    checksum: int
    checksum_valid: bool
    message: Message


@dataclass(frozen=True)
class Result:
    """What the correspondent node decided about one packet.

    Fields other than ``verdict`` are ``None`` until the packet is known to be a well-formed
    Binding Update. ``care_of`` is the care-of address of the binding (Alternate Care-of
    Address, else the source); ``source`` is where a Binding Acknowledgement goes;
    ``lifetime`` is the requested lifetime in seconds; ``ba_status`` is the status of the
    Binding Acknowledgement to send (``None``: send nothing); ``last_sequence`` is the last
    accepted sequence number, given with status 135. ``nonce_indices`` (home, care-of) is set
    when the Binding Update was judged by return routability (no preconfigured key).

    The verifiers set ``verdict`` at once and leave the other fields to be computed, all
    together, when one is first read (the address objects cost more to build than the C core
    takes to verify a packet, and many callers look at ``verdict`` only): reading, comparing,
    hashing, printing, copying or pickling a Result gives the same values either way.
    """

    verdict: Verdict
    home: IPv6Address | None = None
    care_of: IPv6Address | None = None
    correspondent: IPv6Address | None = None
    sequence: int | None = None
    lifetime: int | None = None
    ack: bool | None = None
    ba_status: int | None = None
    last_sequence: int | None = None
    source: IPv6Address | None = None
    nonce_indices: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """The fields (computed if they were left to first use), for copy and pickle."""
        return {name: getattr(self, name) for name in FIELDS}


class _LeftToFirstUse:
    """A Result field's class attribute, found when the instance dict does not hold the field
    (a non-data descriptor: a value in the dict comes first, so reading a set field stays a
    plain attribute read). A verifier's Result holds ``verdict`` and ``_pending`` = (fill, ...)
    only: fill(its dict, _pending) sets every field. On the class: the field's default, None."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, result: Result | None, owner: type | None = None) -> Any:
        if result is None:
            return None
        d = result.__dict__
        pending = d.get("_pending")
        if pending is not None:
            pending[0](d, pending)
        try:
            return d[self.name]
        except KeyError:  # an instance no constructor, verifier or unpickling filled
            raise AttributeError(f"'Result' object has no field {self.name!r} set") from None


#: Every field, in order.
FIELDS = tuple(f.name for f in fields(Result))
for _name in FIELDS[1:]:  # (the constructor keeps its defaults apart from these)
    setattr(Result, _name, _LeftToFirstUse(_name))
#: For the verifiers' hot paths: a Result with nothing set (then ``r.__dict__`` gets "verdict"
#: and "_pending"; a frozen dataclass refuses setattr, its own __init__ bypasses it too).
new_result: Callable[[type[Result]], Result] = object.__new__


def _fill_from_bytes(d: dict[str, Any], pending: tuple[Any, ...]) -> None:
    """Set the fields result_from_bytes left: its values, the addresses made IPv6Address."""
    home, care_of, correspondent, source, sequence, lifetime, ack, ba_status, last_sequence, nonce_indices = pending[1:]
    d["home"] = IPv6Address(home)
    d["care_of"] = IPv6Address(care_of)
    d["correspondent"] = IPv6Address(correspondent)
    d["sequence"] = sequence
    d["lifetime"] = lifetime
    d["ack"] = ack
    d["ba_status"] = ba_status
    d["last_sequence"] = last_sequence
    d["source"] = IPv6Address(source)
    d["nonce_indices"] = nonce_indices
    d.pop("_pending", None)


def result_from_bytes(
    verdict: Verdict,
    *,
    home: bytes,
    care_of: bytes,
    correspondent: bytes,
    source: bytes,
    sequence: int,
    lifetime: int,
    ack: bool,
    ba_status: int | None = None,
    last_sequence: int | None = None,
    nonce_indices: tuple[int, int] | None = None,
) -> Result:
    """``Result(verdict, ...)`` with the addresses given as 16 bytes each, made IPv6Address
    (and the other fields set) when a field is first read."""
    r = new_result(Result)
    d = r.__dict__
    d["verdict"] = verdict
    d["_pending"] = (
        _fill_from_bytes, home, care_of, correspondent, source, sequence, lifetime, ack, ba_status, last_sequence, nonce_indices,
    )  # fmt: skip
    return r
