"""When state reaches the disk (``sync=``), and closing verifiers at exit (shared by both backends).

``sync="always"``: fsync after every call (a power loss loses nothing that was answered).
``sync=N`` (milliseconds): a background thread flushes at most N ms after a change.
``sync="close"``: only on ``close()``. In every mode an acceptance is in the file (the page
cache) before ``verify`` returns, so a killed process never accepts it again; ``sync`` is
about power loss and kernel crashes.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

DEFAULT_SYNC_MS = 1000

#: The arguments of ``Verifier`` (both backends append it to their class docstring, so that
#: ``help(kbmfast.Verifier)`` explains them).
VERIFIER_ARGUMENTS = """
    Arguments (all but ``keys`` by keyword):

    ``keys``
        The :class:`KeyTable` of preconfigured peers. The verifier follows it: a peer added,
        rekeyed or removed there is used (or forgotten) at once.
    ``state``
        Path of the persistent sequence table, created if missing and safely shared by threads
        and processes; ``None`` keeps it in memory, so a restart forgets every sequence number.
    ``rekey_limit`` (default and maximum 32768)
        The total advance of sequence numbers allowed under one key. A Binding Update that would
        go past it is refused with ``KEY_EXHAUSTED`` (BA status 129) until the peer is rekeyed:
        beyond 32768 an old captured Binding Update would compare as newer again.
        ``keys_near_limit()`` lists the peers to rekey soon.
    ``max_lifetime`` (seconds, default ``None``)
        Caps the lifetime granted in the Binding Acknowledgements ``acknowledge()`` builds;
        ``None`` grants what the mobile node asked for. Verdicts do not depend on it.
    ``sync`` (default 1000)
        When the state file reaches stable storage: ``"always"`` (fsync after every call), an
        int N (a background thread flushes at most N ms after a change) or ``"close"`` (only on
        ``close()``). Every acceptance is in the file before ``verify`` returns, so a killed
        process never accepts it again; ``sync`` bounds what a power loss or kernel crash can
        lose (with N, Binding Updates accepted in the last N ms may be accepted once more).
        Without a ``state`` file there is nothing to flush.
    ``return_routability`` (default ``None``)
        A :class:`ReturnRoutability`: peers without a preconfigured key are then verified by
        return routability (RFC 6275 §5.2) instead of getting ``NOT_CONFIGURED``, and
        ``reply()`` / ``reply_buffer()`` answer Home and Care-of Test Inits
        (docs/return-routability.md). A configured peer is never verified with RR keys.
    ``compat`` (default ``"rfc6275"``)
        ``"rfc3775"`` takes care-of = home as a de-registration at any lifetime and a
        de-registration's authenticator over its care-of address too (UMIP's mobile nodes).

    ``close()`` (or ``with``) flushes the state and wipes the verifier's keys; verifiers still
    open are closed at interpreter exit. A verifier cannot be used in a process forked after
    it was created: create one in the child.
    """


def check_sync(sync: Any) -> str | int:
    """Validate a ``sync=`` argument."""
    if sync in ("always", "close"):
        return str(sync)
    if isinstance(sync, bool) or not isinstance(sync, int) or not 1 <= sync <= 3_600_000:
        raise ValueError(f"sync: expected 'always', 'close' or a flush interval in ms (1..3600000), not {sync!r}")
    return sync


class Durability:
    """Flushes one verifier's state file according to its ``sync`` policy."""

    def __init__(self, sync: str | int, flush: Callable[[], None]) -> None:
        self.sync = sync
        self._flush = flush
        self._dirty = False
        self._last = time.monotonic()
        self._lock = threading.Lock()
        if isinstance(sync, int):
            _Flusher.instance().add(self)

    def changed(self) -> None:
        """Called after every verifying call."""
        if self.sync == "always":
            self.flush()
        else:
            self._dirty = True

    def due(self, now: float) -> bool:
        """True when an interval policy should flush now."""
        return self._dirty and isinstance(self.sync, int) and (now - self._last) * 1000 >= self.sync

    def flush(self) -> None:
        """Push state to stable storage now."""
        with self._lock:
            self._dirty = False
            self._last = time.monotonic()
            self._flush()


class _Flusher:
    """One daemon thread for every verifier with an interval policy."""

    _instance: _Flusher | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._members: weakref.WeakSet[Durability] = weakref.WeakSet()
        # Adding to a WeakSet while another thread copies it raises "Set changed size during
        # iteration", which would kill the flusher for good: both happen under this lock.
        self._members_lock = threading.Lock()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kbmfast-state-flusher", daemon=True)
        self.thread.start()

    @classmethod
    def instance(cls) -> _Flusher:
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def _forget(cls) -> None:
        """In a forked child: the parent's flusher thread does not exist here, so the next
        interval verifier starts a new one (and the guard may have been held at the fork)."""
        cls._instance = None
        cls._guard = threading.Lock()

    def add(self, member: Durability) -> None:
        with self._members_lock:
            self._members.add(member)
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._members_lock:
                members = list(self._members)
            intervals = [m.sync for m in members if isinstance(m.sync, int)]
            self._wake.wait(timeout=min(intervals, default=1000) / 2000)
            self._wake.clear()
            now = time.monotonic()
            for m in members:
                if m.due(now):
                    try:
                        m.flush()
                    except (OSError, ValueError):
                        pass  # closed meanwhile; close() flushed it


_live: weakref.WeakSet[Any] = weakref.WeakSet()


def track(verifier: Any) -> None:
    """Close ``verifier`` at interpreter exit if it is still open (flushes, wipes its keys)."""
    _live.add(verifier)


def _after_fork_in_child() -> None:
    _Flusher._forget()
    _disown_all()


def _disown_all() -> None:
    # A forked child inherits the parent's verifiers mid-flight (locks, reader counts, the
    # state file's lock): none of it is usable there, so they refuse work with a clear error.
    for verifier in list(_live):
        verifier._disown()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    for verifier in list(_live):
        try:
            verifier.close()
        except Exception:
            pass
