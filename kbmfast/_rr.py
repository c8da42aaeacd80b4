"""Return routability (RFC 6275 §5.2, §9.4, §9.5.1): the correspondent node's secrets and rules.

Shared by both backends. :class:`ReturnRoutability` holds the node key Kcn and the nonces;
``reply`` answers a Home Test Init with a Home Test and a Care-of Test Init with a Care-of Test
(kbmfast/reference/rr.py: the pure-Python rules the C core follows in csrc/rr.c);
:class:`RRSequences` is the bounded
table of the last sequence number accepted from each RR peer. docs/return-routability.md
describes the design and docs/spec-notes.md every reading of the RFC made here.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._util import wipe

#: RFC 6275 §12 protocol constants, in seconds.
MAX_NONCE_LIFETIME = 240
MAX_TOKEN_LIFETIME = 210
MAX_RR_BINDING_LIFETIME = 420
#: Nonce and keygen token sizes (RFC 6275 §5.2.3, §5.2.5), and Kcn's (§5.2.7: 20 octets).
NONCE_SIZE = 8
TOKEN_SIZE = 8
KCN_SIZE = 20
#: Live nonces are consecutive serials; at most MAX_NONCE_LIFETIME / 1 s + 1 of them, so their
#: serials are distinct modulo NONCE_SLOTS (the C core's table).
NONCE_SLOTS = 256
DEFAULT_MAX_PEERS = 16384
#: Longer Home / Care-of Test Init packets are not answered (the C core copies each one).
INIT_MAX = 2048
#: Names every Kcn of the process (a new one at each ReturnRoutability and regeneration): the C
#: core keeps one Kcn's midstates per verifier for its replies and recomputes them when it
#: changes.
_KCN_IDS = itertools.count(1)

MH_HOTI, MH_COTI, MH_HOT, MH_COT = 1, 2, 3, 4
#: ReturnRoutability(derive_nonces=True): nonce = First(64, HMAC_SHA1(Kcn, label | serial)).
_NONCE_LABEL = b"kbmfast nonce"


@dataclass(frozen=True)
class Snapshot:
    """The RR secrets valid at one instant: Kcn and the live nonces (serials oldest..oldest+n-1).

    ``generation`` changes with Kcn. A nonce's index is its serial modulo 2**16. ``kcn`` is the
    ReturnRoutability's own bytearray (no copy), wiped when Kcn is regenerated.
    """

    generation: int
    kcn: bytearray
    oldest: int
    nonces: tuple[bytes, ...]
    version: int = 0  # grows with every new snapshot of one ReturnRoutability
    kcn_id: int = 0  # names this Kcn in the process (never reused; 0: none)

    def nonce(self, index: int) -> bytes | None:
        """The live nonce with this 16-bit index, or None (expired or never handed out)."""
        d = (index - self.oldest) & 0xFFFF
        return self.nonces[d] if d < len(self.nonces) else None

    @property
    def newest(self) -> int:
        """Serial of the newest live nonce (oldest - 1 when none is live)."""
        return self.oldest + len(self.nonces) - 1

    def __repr__(self) -> str:
        return f"<RR snapshot generation={self.generation} oldest={self.oldest} live={len(self.nonces)}>"


class ReturnRoutability:
    """A correspondent node's return-routability secrets: Kcn and the nonces (RFC 6275 §5.2.7).

    ``kcn``: 20 bytes, or None to draw them from :mod:`secrets` (kept in memory only).
    ``nonce_interval``: seconds between two nonces (1..240); a new nonce is made when a Home
    or Care-of Test needs one and the newest is that old. Every nonce is accepted for
    MAX_NONCE_LIFETIME (240 s) after it was made, then forgotten. ``clock``: seconds, monotonic
    (injectable: tests move time without sleeping). ``max_peers``: how many RR mobile nodes a
    verifier remembers the last sequence number of at once (see docs/return-routability.md).
    ``derive_nonces``: derive each nonce from Kcn and its serial number instead of drawing it
    from :mod:`secrets`, so that a run can be replayed from Kcn and the times of the Home and
    Care-of Test Inits (``kbmfast verify --rr --rr-kcn-file``). Never give a live CN a Kcn it
    used before with this: its nonces would repeat, and old Binding Updates verify again.

    A Home or Care-of Test Init creates no state at all: the reply is a function of Kcn, the
    current nonce and the message. Pass the object to ``Verifier(..., return_routability=)``.
    """

    def __init__(
        self,
        kcn: bytes | bytearray | None = None,
        nonce_interval: float = 30,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_peers: int = DEFAULT_MAX_PEERS,
        derive_nonces: bool = False,
    ) -> None:
        if kcn is not None and (not isinstance(kcn, bytes | bytearray) or len(kcn) != KCN_SIZE):
            raise ValueError(f"kcn: expected {KCN_SIZE} bytes")
        if isinstance(nonce_interval, bool) or not isinstance(nonce_interval, int | float) or not 1 <= nonce_interval <= 240:
            raise ValueError(f"nonce_interval: expected seconds between 1 and 240, not {nonce_interval!r}")
        if not callable(clock):
            raise TypeError("clock: expected a callable returning seconds")
        if isinstance(max_peers, bool) or not isinstance(max_peers, int) or not 1 <= max_peers <= 1 << 22:
            raise ValueError(f"max_peers: expected an int between 1 and {1 << 22}, not {max_peers!r}")
        self.nonce_interval = nonce_interval
        self.clock = clock
        self.max_peers = max_peers
        self.derive_nonces = bool(derive_nonces)
        self._lock = threading.Lock()
        self._kcn = bytearray(kcn if kcn is not None else secrets.token_bytes(KCN_SIZE))
        self._generation = 0
        self._next = 0  # serial of the next nonce; its index is serial & 0xFFFF
        self._nonces: deque[tuple[int, float, bytes]] = deque()  # (serial, made at, nonce)
        self._snapshot: Snapshot | None = None
        self._version = 0
        self._kcn_id = next(_KCN_IDS)
        self._listeners: list[weakref.WeakMethod[Callable[[], None]]] = []

    def regenerate(self) -> None:
        """Draw a new Kcn and forget every nonce: tokens handed out so far no longer verify,
        and Binding Updates naming the old nonce indices get BA 136-138 (run RR again)."""
        with self._lock:
            old = self._kcn
            self._kcn = bytearray(secrets.token_bytes(KCN_SIZE))
            wipe(old)
            self._generation += 1
            self._kcn_id = next(_KCN_IDS)
            self._nonces.clear()
            self._snapshot = None
            listeners = [fn for fn in (ref() for ref in self._listeners) if fn is not None]
            self._listeners = [ref for ref in self._listeners if ref() is not None]
        for fn in listeners:  # the C core wipes what it derived from the old Kcn
            fn()

    def subscribe(self, method: Callable[[], None]) -> None:
        """Call the bound ``method()`` after every regeneration (held weakly; internal)."""
        with self._lock:
            self._listeners.append(weakref.WeakMethod(method))

    def _new_nonce(self, serial: int) -> bytes:
        """Nonce ``serial``: from :mod:`secrets`, or with ``derive_nonces`` First(64,
        HMAC_SHA1(Kcn, "kbmfast nonce" | serial as 8 bytes)) (caller holds the lock)."""
        if not self.derive_nonces:
            return secrets.token_bytes(NONCE_SIZE)
        return hmac.digest(self._kcn, _NONCE_LABEL + serial.to_bytes(8, "big"), "sha1")[:NONCE_SIZE]

    def snapshot(self, now: float | None = None, *, current: bool = False) -> Snapshot:
        """The secrets valid at ``now`` (default: the clock); ``current`` makes the nonce a
        Home or Care-of Test would hand out now, if the newest is ``nonce_interval`` old."""
        if now is None:
            now = self.clock()
        with self._lock:
            q = self._nonces
            changed = False
            while q and now - q[0][1] >= MAX_NONCE_LIFETIME:
                q.popleft()
                changed = True
            if current and (not q or now - q[-1][1] >= self.nonce_interval):
                q.append((self._next, now, self._new_nonce(self._next)))
                self._next += 1
                changed = True
            snap = self._snapshot
            if snap is None or changed:
                oldest = q[0][0] if q else self._next
                self._version += 1
                nonces = tuple(n for _, _, n in q)
                snap = self._snapshot = Snapshot(self._generation, self._kcn, oldest, nonces, self._version, self._kcn_id)
            return snap

    def __repr__(self) -> str:
        return f"<kbmfast ReturnRoutability nonce_interval={self.nonce_interval} live_nonces={len(self._nonces)}>"


def keygen_token(kcn: bytes | bytearray, address: bytes, nonce: bytes, which: int) -> bytes:
    """RFC 6275 §5.2.5: First(64, HMAC_SHA1(Kcn, address | nonce | 0 (home) or 1 (care-of)))."""
    return hmac.digest(kcn, address + nonce + bytes((which,)), "sha1")[:TOKEN_SIZE]


def granted_lifetime(lifetime: int, max_lifetime: int | None, rr: bool) -> int:
    """The lifetime (seconds) a CN grants a Binding Update asking for ``lifetime``: capped at
    ``max_lifetime`` (None: no cap), and for one verified with return routability keys at
    MAX_RR_BINDING_LIFETIME too (RFC 6275 §5.2.6)."""
    cap = max_lifetime
    if rr:
        cap = MAX_RR_BINDING_LIFETIME if cap is None else min(cap, MAX_RR_BINDING_LIFETIME)
    return lifetime if cap is None else min(lifetime, cap)


def rr_kbm(snap: Snapshot, home: bytes, care_of: bytes, indices: tuple[int, int], deregistration: bool) -> bytearray | None:
    """Kbm = SHA1(home token | care-of token), or SHA1(home token) for a de-registration
    (RFC 6275 §5.2.5); None when a nonce it needs has expired."""
    hn = snap.nonce(indices[0])
    cn = None if deregistration else snap.nonce(indices[1])
    if hn is None or (cn is None and not deregistration):
        return None
    tokens = keygen_token(snap.kcn, home, hn, 0)
    if cn is not None:
        tokens += keygen_token(snap.kcn, care_of, cn, 1)
    return bytearray(hashlib.sha1(tokens).digest())


def expired_verdict(snap: Snapshot, indices: tuple[int, int], deregistration: bool) -> int:
    """0 when the nonces a Binding Update names are live, else the Verdict code (11-13) whose
    BA status is 136, 137 or 138 (RFC 6275 §9.5.1; a de-registration needs the home one only)."""
    home_gone = snap.nonce(indices[0]) is None
    care_of_gone = not deregistration and snap.nonce(indices[1]) is None
    return (11 if home_gone else 0) + (12 if care_of_gone else 0) - (10 if home_gone and care_of_gone else 0)


class RRSequences:
    """The last sequence number of each RR peer, bounded (the reference's; csrc/rr.c mirrors it).

    An entry is live while a nonce that was live when it was written still is: after that every
    Binding Update it accepted names expired nonces and can never be accepted again, so the
    entry may go. ``insert`` refuses a new peer when ``max_peers`` live entries are held.
    """

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._table: dict[bytes, tuple[int, int]] = {}  # home -> (sequence, newest serial then)

    def last(self, home: bytes, snap: Snapshot) -> int | None:
        """The live entry's sequence number, or None."""
        e = self._table.get(home)
        return e[0] if e is not None and e[1] >= snap.oldest else None

    def put(self, home: bytes, seq: int, snap: Snapshot) -> bool:
        """Record an acceptance; False when the table is full of live entries."""
        if home not in self._table and len(self._table) >= self.max_peers:
            self._table = {h: e for h, e in self._table.items() if e[1] >= snap.oldest}
            if len(self._table) >= self.max_peers:
                return False
        self._table[home] = (seq, snap.newest)
        return True

    def __len__(self) -> int:
        return len(self._table)


def check_rr(value: Any) -> ReturnRoutability | None:
    """Validate ``return_routability=``."""
    if value is not None and not isinstance(value, ReturnRoutability):
        raise TypeError(f"return_routability: expected a ReturnRoutability or None, not {type(value).__name__}")
    return value


def check_compat(value: Any) -> str:
    """Validate ``compat=``: "rfc6275" (default) or "rfc3775"."""
    if value not in ("rfc6275", "rfc3775"):
        raise ValueError(f"compat: expected 'rfc6275' or 'rfc3775', not {value!r}")
    return str(value)
