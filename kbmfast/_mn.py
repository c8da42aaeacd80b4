"""The mobile node's side: its Binding Update List (shared by both backends).

Not a hot path: it signs through the backend it is given, so each backend's list signs and
verifies with that backend's MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import _rr
from . import _stateformat as fmt
from ._keys import KIND_KBM
from ._types import (
    BindingAck,
    BindingAuthorizationData,
    CareOfTest,
    HomeTest,
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
    def mh_checksum(self, source: bytes, destination: bytes, mh: bytes) -> int: ...
    def ipv6_header(self, next_header: int, payload_length: int, source: bytes, destination: bytes) -> bytes: ...


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


class _RREntry:
    """Return routability with one correspondent: the cookies of the last HoTI/CoTI, the
    tokens and nonce indices received, and the binding state (sequence numbers in memory)."""

    __slots__ = (
        "care_of",
        "care_of_cookie",
        "care_of_test",
        "deregistration",
        "home_cookie",
        "home_test",
        "kbm",
        "last",
        "mac_care_of",
        "outstanding",
    )

    def __init__(self) -> None:
        self.home_cookie = b""
        self.care_of_cookie = b""
        self.care_of = b""  # the care-of address the CoTI was sent from
        self.home_test: tuple[int, bytes, float] | None = None  # (index, token, received at)
        self.care_of_test: tuple[int, bytes, float] | None = None
        self.kbm = bytearray()
        self.mac_care_of = b""
        self.deregistration = False
        self.last: int | None = None
        self.outstanding: int | None = None

    def __repr__(self) -> str:
        return "<BUL RR entry>"


class BindingUpdateList:
    """A mobile node's correspondents, keys and sequence numbers (the draft's BUL).

    With ``state=`` the last sequence sent to each correspondent is kept in a state file, so
    a restarted mobile node never reuses a sequence number.
    """

    _build: Callable[..., bytes]
    _mac: Mac
    _store: Callable[[str | os.PathLike[str] | None], SequenceStore]
    _wire: Wire

    def __init__(
        self, home: Any, *, state: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.home = ipaddress.IPv6Address(address_bytes(home, "home"))
        if not callable(clock):
            raise TypeError("clock: expected a callable returning seconds")
        self.clock = clock
        self._entries: dict[bytes, _Entry] = {}
        self._rr: dict[bytes, _RREntry] = {}
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
            if cn not in self._entries and cn in self._rr:
                return self._rr_binding_update(cn, coa, lifetime, ack)
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
            if entry is None and cn in self._rr:
                return self._rr_ack(self._rr[cn], p, layout.mh_offset, msg, bad, base)
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

    # -- return routability (RFC 6275 §5.2, §11.6), for correspondents without a configured key

    def return_routability(self, correspondent: Any, *, care_of: Any) -> tuple[bytes, bytes]:
        """Start RR with ``correspondent``: the Home Test Init (from the home address, to send
        through the home agent's tunnel) and the Care-of Test Init (from ``care_of``), each with
        a fresh random cookie. Answers to earlier inits are no longer accepted."""
        cn = address_bytes(correspondent, "correspondent")
        coa = address_bytes(care_of, "care_of")
        with self._lock:
            if cn in self._entries:
                raise ValueError(f"correspondent {ipaddress.IPv6Address(cn)} has a preconfigured key: no RR needed")
            e = self._rr.setdefault(cn, _RREntry())
            e.home_cookie, e.care_of_cookie, e.care_of = secrets.token_bytes(8), secrets.token_bytes(8), coa
            e.home_test = e.care_of_test = None
            home = self.home.packed
            return (self._init(_rr.MH_HOTI, e.home_cookie, home, cn), self._init(_rr.MH_COTI, e.care_of_cookie, coa, cn))

    def _init(self, mh_type: int, cookie: bytes, source: bytes, destination: bytes) -> bytes:
        """A HoTI (1) or CoTI (2): a 16-byte Mobility Header (kbmfast.reference.rr.build_init)."""
        body = bytearray(bytes((59, 1, mh_type, 0, 0, 0, 0, 0)) + cookie)
        body[4:6] = self._wire.mh_checksum(source, destination, bytes(body)).to_bytes(2, "big")
        return self._wire.ipv6_header(135, len(body), source, destination) + bytes(body)

    def process_test(self, packet: Any) -> bool:
        """Take a Home Test or Care-of Test: True when it answers our last init (source the
        correspondent, destination our home or care-of address, the cookie ours), else False."""
        p = check_packet(packet, "packet")
        wire = self._wire
        try:
            layout = wire.scan(p)
            src, dst = wire.pseudo_addresses(p, layout)
            if not wire.checksum_ok(src, dst, p[layout.mh_offset :]):
                return False
            msg = wire.parse_mh(p, layout.mh_offset)
        except MalformedPacket:
            return False
        if not isinstance(msg, HomeTest | CareOfTest) or layout.home_address is not None or layout.routing_address is not None:
            return False
        cn, dst = p[8:24], p[24:40]
        with self._lock:
            e = self._rr.get(cn)
            if e is None:
                return False
            test = (msg.nonce_index, msg.token, self.clock())
            if isinstance(msg, HomeTest) and dst == self.home.packed and hmac.compare_digest(msg.cookie, e.home_cookie):
                e.home_test = test
                return True
            if isinstance(msg, CareOfTest) and dst == e.care_of and hmac.compare_digest(msg.cookie, e.care_of_cookie):
                e.care_of_test = test
                return True
        return False

    def _rr_binding_update(self, cn: bytes, coa: bytes, lifetime: int, ack: bool) -> bytes:
        e = self._rr[cn]
        home = self.home.packed
        dereg = lifetime // 4 == 0 or coa == home
        now = self.clock()

        def fresh(t: tuple[int, bytes, float] | None) -> tuple[int, bytes, float] | None:
            return t if t is not None and now - t[2] < _rr.MAX_TOKEN_LIFETIME else None

        ht, ct = fresh(e.home_test), None if dereg else fresh(e.care_of_test)
        if ht is None or (not dereg and (ct is None or coa != e.care_of)):
            raise ValueError(
                f"correspondent {ipaddress.IPv6Address(cn)}: no fresh keygen tokens for this care-of address: "
                "run return routability"
            )
        kbm = hashlib.sha1(ht[1] + (b"" if ct is None else ct[1])).digest()
        seq = (e.last + 1) & 0xFFFF if e.last is not None else secrets.randbelow(65536)
        packet = self._build(
            kbm,
            home=home,
            care_of=coa,
            correspondent=cn,
            sequence=seq,
            lifetime=0 if coa == home else lifetime,
            ack=ack,
            nonce_indices=(ht[0], ht[0] if ct is None else ct[0]),
        )
        e.kbm = bytearray(kbm)
        e.last = e.outstanding = seq
        e.deregistration = dereg
        e.mac_care_of = home if dereg else coa
        return packet

    def _rr_ack(self, e: _RREntry, p: bytes, mh: int, msg: BindingAck, bad: Any, base: dict[str, Any]) -> Result:
        if e.outstanding is None:
            return Result(Verdict.NOT_CONFIGURED, **base)
        base["care_of"] = ipaddress.IPv6Address(e.mac_care_of)
        if bad is None:
            if msg.status in (136, 137, 138) and msg.sequence == e.outstanding:
                # unauthenticated by nature (the CN has no Kbm): rerun RR, nothing else changes
                e.home_test = None if msg.status in (136, 138) else e.home_test
                e.care_of_test = None if msg.status in (137, 138) else e.care_of_test
                return Result(Verdict(msg.status - 125), ba_status=msg.status, **base)
            return Result(Verdict.MISSING_AUTHORIZATION, **base)
        expected = self._mac(bytes(e.kbm), e.mac_care_of, p[8:24], p[mh:])
        if not hmac.compare_digest(expected, bad.authenticator):
            return Result(Verdict.BAD_AUTHENTICATOR, **base)
        base.update(lifetime=msg.lifetime, ba_status=msg.status)
        if msg.status == 135:
            e.last = msg.sequence
            return Result(Verdict.SEQUENCE_OUT_OF_WINDOW, last_sequence=msg.sequence, **base)
        if msg.sequence != e.outstanding:
            return Result(Verdict.SEQUENCE_OUT_OF_WINDOW, **base)
        e.outstanding = None
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
        return f"<BindingUpdateList home={self.home} correspondents={len(self._entries)} rr={len(self._rr)}>"


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
