"""The mobile node's side: its Binding Update List (shared by both backends).

Not a hot path: it signs through the backend it is given, so each backend's list signs and
verifies with that backend's MAC.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any, Protocol

from . import _stateformat as fmt
from ._keys import KIND_KBM
from ._types import (
    BindingAck,
    BindingAuthorizationData,
    MalformedPacket,
    Result,
    Verdict,
)
from ._util import address_bytes, check_kbm, check_packet, lifetime_units

Mac = Callable[[bytes, bytes, bytes, bytes], bytes]


class SequenceStore(Protocol):
    """What the list needs of a sequence table (``kbmfast.reference.statefile.SequenceState``)."""

    salt: bytes

    def ensure(self, address: bytes) -> None: ...
    def get(self, address: bytes) -> int: ...
    def put(self, address: bytes, word: int) -> None: ...
    def retire(self, address: bytes, current: int, fp: int) -> bool: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Wire(Protocol):
    """What the list needs of a packet parser (the module ``kbmfast.reference.wire``)."""

    def scan(self, p: bytes) -> Any: ...
    def pseudo_addresses(self, p: bytes, layout: Any) -> tuple[bytes, bytes]: ...
    def checksum_ok(self, source: bytes, destination: bytes, mh: bytes) -> bool: ...
    def parse_mh(self, p: bytes, mh: int) -> Any: ...


class _Entry:
    __slots__ = ("care_of", "deregistration", "fp", "kbm", "outstanding")

    def __init__(self, kbm: bytes | bytearray, fp: int) -> None:
        self.kbm = bytearray(kbm)
        self.fp = fp  # the key's fingerprint in the state file
        self.care_of = b""
        self.deregistration = False
        self.outstanding: int | None = None

    def __repr__(self) -> str:
        return "<BUL entry>"


class BindingUpdateList:
    """A mobile node's correspondents, keys and sequence numbers (the draft's BUL).

    With ``state=`` the last sequence sent to each correspondent is kept in a state file, so
    a restarted mobile node never reuses a sequence number.
    """

    _build: Callable[..., bytes]
    _mac: Mac
    _store: Callable[[str | os.PathLike[str] | None], SequenceStore]
    _wire: Wire

    def __init__(self, home: Any, *, state: str | os.PathLike[str] | None = None) -> None:
        self.home = ipaddress.IPv6Address(address_bytes(home, "home"))
        self._entries: dict[bytes, _Entry] = {}
        self._state = self._store(state)
        self._lock = threading.Lock()

    def add(self, correspondent: Any, kbm: Any) -> None:
        """Use ``kbm`` with ``correspondent``; a Kbm already used for another one is refused."""
        cn = address_bytes(correspondent, "correspondent")
        key = check_kbm(kbm)
        with self._lock:
            for other, entry in self._entries.items():
                if other != cn and hmac.compare_digest(bytes(entry.kbm), key):
                    raise ValueError(
                        f"correspondent {ipaddress.IPv6Address(cn)}: this Kbm is already used for another "
                        "correspondent (a different Kbm for each node in the Binding Update List)"
                    )
            self._state.ensure(cn)
            fp = fmt.fingerprint(self._state.salt, cn, KIND_KBM, key)
            has, last, advance, current = fmt.unpack_word(self._state.get(cn))
            if current not in (0, fp):
                # a new key: the old one goes into the slot's history, the advance starts over
                if not self._state.retire(cn, current, fp):
                    raise ValueError(
                        f"correspondent {ipaddress.IPv6Address(cn)}: this is an earlier Kbm of this correspondent, "
                        "replaced by a newer one in the state file: configure a new key"
                    )
                advance = 0
            if current != fp:
                self._state.put(cn, fmt.pack_word(has, last, advance, fp) if has else fmt.pack_word(False, 0, 0, fp))
            self._entries[cn] = _Entry(key, fp)

    def _entry(self, cn: bytes) -> _Entry:
        entry = self._entries.get(cn)
        if entry is None:
            raise KeyError(f"correspondent {ipaddress.IPv6Address(cn)} is not in the Binding Update List")
        return entry

    def binding_update(self, correspondent: Any, *, care_of: Any, lifetime: int, ack: bool = True) -> bytes:
        """The next authenticated Binding Update to ``correspondent`` (a greater sequence each time)."""
        cn = address_bytes(correspondent, "correspondent")
        coa = address_bytes(care_of, "care_of")
        lifetime_units(lifetime)
        with self._lock:
            entry = self._entry(cn)
            has, last, advance, _ = fmt.unpack_word(self._state.get(cn))
            seq = (last + 1) & 0xFFFF if has else secrets.randbelow(65536)
            # persisted before it leaves: a restart never sends this number again
            self._state.put(cn, fmt.pack_word(True, seq, min(advance + (1 if has else 0), fmt.MAX_ADVANCE), entry.fp))
            self._state.flush()
            home = self.home.packed
            packet = self._build(
                bytes(entry.kbm),
                home=home,
                care_of=coa,
                correspondent=cn,
                sequence=seq,
                lifetime=lifetime,
                ack=ack,
            )
            entry.care_of = coa
            entry.deregistration = lifetime // 4 == 0
            entry.outstanding = seq
            return packet

    def process_ack(self, packet: Any) -> Result:
        """Verify a Binding Acknowledgement from a correspondent; adopt an authenticated 135.

        ``verdict`` is ACCEPTED for an authenticated BA answering the outstanding Binding
        Update, SEQUENCE_OUT_OF_WINDOW for an authenticated status 135 (whose sequence is
        adopted) or a BA for another sequence (ignored); unauthenticated BAs change nothing.
        """
        wire = self._wire
        p = check_packet(packet, "packet")
        try:
            layout = wire.scan(p)
            src, dst = wire.pseudo_addresses(p, layout)
            if not wire.checksum_ok(src, dst, p[layout.mh_offset :]):
                return Result(Verdict.BAD_CHECKSUM)
            msg = wire.parse_mh(p, layout.mh_offset)
        except MalformedPacket:
            return Result(Verdict.MALFORMED)
        if not isinstance(msg, BindingAck):
            return Result(Verdict.NOT_BINDING_UPDATE)
        cn = p[8:24]
        base: dict[str, Any] = {"home": self.home, "correspondent": ipaddress.IPv6Address(cn), "sequence": msg.sequence}
        bad = next((o for o in msg.options if isinstance(o, BindingAuthorizationData)), None)
        with self._lock:
            entry = self._entries.get(cn)
            if entry is None or entry.outstanding is None:
                return Result(Verdict.NOT_CONFIGURED, **base)
            base["care_of"] = ipaddress.IPv6Address(entry.care_of)
            if bad is None:
                return Result(Verdict.MISSING_AUTHORIZATION, **base)
            mac_care_of = self.home.packed if entry.deregistration else entry.care_of
            expected = self._mac(bytes(entry.kbm), mac_care_of, cn, p[layout.mh_offset :])
            if not hmac.compare_digest(expected, bad.authenticator):
                return Result(Verdict.BAD_AUTHENTICATOR, **base)
            base.update(lifetime=msg.lifetime, ba_status=msg.status)
            if msg.status == 135:
                _, _, advance, _ = fmt.unpack_word(self._state.get(cn))
                self._state.put(cn, fmt.pack_word(True, msg.sequence, advance, entry.fp))
                self._state.flush()
                return Result(Verdict.SEQUENCE_OUT_OF_WINDOW, last_sequence=msg.sequence, **base)
            if msg.sequence != entry.outstanding:
                return Result(Verdict.SEQUENCE_OUT_OF_WINDOW, **base)
            entry.outstanding = None
            return Result(Verdict.ACCEPTED, **base)

    def needs_rekey(self, correspondent: Any) -> bool:
        """True once 32768 sequence numbers have been used under this correspondent's key."""
        cn = address_bytes(correspondent, "correspondent")
        with self._lock:
            self._entry(cn)
            _, _, advance, _ = fmt.unpack_word(self._state.get(cn))
        return advance >= 32768

    def close(self) -> None:
        """Flush and close the state file."""
        with self._lock:
            self._state.close()

    def __repr__(self) -> str:
        return f"<BindingUpdateList home={self.home} correspondents={len(self._entries)}>"


def binding_update_list_class(
    build: Callable[..., bytes],
    mac: Mac,
    store: Callable[[str | os.PathLike[str] | None], SequenceStore],
    wire: Wire,
    module: str,
) -> type[BindingUpdateList]:
    """A BindingUpdateList bound to one backend's builder and MAC, keeping sequences in ``store``
    and reading Binding Acknowledgements with ``wire`` (passed in: the reference package imports
    this module, so this module must not import it)."""
    attrs = {"_build": staticmethod(build), "_mac": staticmethod(mac), "_store": staticmethod(store), "_wire": wire}
    cls = type("BindingUpdateList", (BindingUpdateList,), attrs)
    cls.__module__ = module
    cls.__doc__ = BindingUpdateList.__doc__
    return cls
