"""The sequence table of the reference backend: in memory, or in a state file.

Each peer has a slot whose 64-bit word is rewritten with one aligned 8-byte pwrite, so a crash
leaves either the old or the new word. Slots are appended under an exclusive flock, after
re-reading the slot count, so processes sharing a file agree on every address's slot; a slot's
history of earlier key fingerprints is changed under the same lock.
The file is opened by the rules of _stateformat (checked, never through a link) and marked "in
use" for as long as it is open; every access first checks that it was not truncated, removed or
replaced meanwhile, and once it was, every later one fails too.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .. import _stateformat as fmt
from .._types import StateFileError


class SequenceState:
    """Per-address slots: the word (has_seq, last sequence, advance, key fingerprint) and the
    fingerprints of earlier keys."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._words: dict[bytes, int] = {}
        self._history: dict[bytes, list[int]] = {}
        self._slots: dict[bytes, int] = {}
        self._fd = -1
        self._count = 0
        self._changed = False
        self.salt = os.urandom(fmt.SALT_SIZE)
        self._prefix = b""
        if self.path is not None:
            self._open(self.path)

    def _open(self, name: str) -> None:
        fmt.prepare(name)
        self._fd = fmt.open_in_use(name)
        try:
            header = os.pread(self._fd, fmt.HEADER_SIZE, 0)
            self.salt = header[fmt.SALT_OFFSET : fmt.SALT_OFFSET + fmt.SALT_SIZE]
            self._prefix = header[: fmt.COUNT_OFFSET]
            self._refresh()
        except BaseException:
            self.close()
            raise

    def check(self) -> None:
        """Raise StateFileError if the file was truncated, removed or replaced since it was opened
        (and on every call after that): its words can no longer be trusted."""
        if self._fd < 0:
            return
        if not self._changed and (
            fmt.changed(os.fstat(self._fd), fmt.HEADER_SIZE + self._count * fmt.SLOT_SIZE)
            or os.pread(self._fd, len(fmt.MAGIC), 0) != fmt.MAGIC  # cut and grown back: zeros
        ):
            self._changed = True
        if self._changed:
            raise fmt.changed_error(self.path or "")

    def _refresh(self) -> None:
        """Learn slots appended by other processes."""
        self.check()
        header = os.pread(self._fd, fmt.HEADER_SIZE, 0)
        size = os.fstat(self._fd).st_size
        count, salt = fmt.check_header(self.path or "", header, size)
        if salt != self.salt or header[: fmt.COUNT_OFFSET] != self._prefix:
            raise StateFileError(f"state file {self.path}: damaged header (it changed while in use)")
        if count < self._count:
            raise StateFileError(f"state file {self.path}: damaged header (its slot count went down)")
        if count > self._count:
            raw = os.pread(self._fd, (count - self._count) * fmt.SLOT_SIZE, fmt.HEADER_SIZE + self._count * fmt.SLOT_SIZE)
            for i in range(self._count, count):
                slot = raw[(i - self._count) * fmt.SLOT_SIZE : (i - self._count + 1) * fmt.SLOT_SIZE]
                fmt.check_slot(self.path or "", self.salt, i, slot)
                if slot[:16] in self._slots:
                    raise StateFileError(f"state file {self.path}: slot {i} repeats an address ({fmt._show(slot[:16])})")
                self._slots[slot[:16]] = i
            self._count = count

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's exclusive flock (appends and history changes; a no-op in memory)."""
        if self._fd < 0:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def ensure(self, address: bytes) -> None:
        """Give ``address`` a slot if it has none."""
        if self._fd < 0:
            self._words.setdefault(address, 0)
            return
        self.check()
        if address in self._slots:
            return
        with self.locked():
            self._refresh()
            if address in self._slots:
                return
            i = self._count
            if i >= fmt.MAX_SLOTS:
                raise StateFileError(f"state file {self.path}: the sequence table is full")
            os.pwrite(self._fd, fmt.encode_slot(self.salt, i, address, 0), fmt.HEADER_SIZE + i * fmt.SLOT_SIZE)
            # the slot is complete before the count (and its check) that makes it visible
            os.pwrite(self._fd, struct.pack("<Q", fmt.count_word(self._prefix, self.salt, i + 1)), fmt.COUNT_OFFSET)
            self._slots[address] = i
            self._count = i + 1

    def _slot(self, address: bytes) -> int | None:
        self.check()
        i = self._slots.get(address)
        if i is None:
            self._refresh()
            i = self._slots.get(address)
        return i

    def get(self, address: bytes) -> int:
        """The slot word of ``address`` (0 when it has none)."""
        if self._fd < 0:
            return self._words.get(address, 0)
        i = self._slot(address)
        if i is None:
            return 0
        raw = os.pread(self._fd, 8, fmt.HEADER_SIZE + i * fmt.SLOT_SIZE + fmt.WORD_OFFSET)
        return int(struct.unpack("<Q", raw)[0])

    def history(self, address: bytes) -> list[int]:
        """The fingerprints of the keys ``address``'s slot has left, newest first."""
        if self._fd < 0:
            return list(self._history.get(address, ()))
        i = self._slot(address)
        if i is None:
            return []
        raw = os.pread(self._fd, 4 * fmt.HISTORY, fmt.HEADER_SIZE + i * fmt.SLOT_SIZE + fmt.HISTORY_OFFSET)
        return [fp for fp in struct.unpack(f"<{fmt.HISTORY}I", raw) if fp]

    def key_status(self, address: bytes, fp: int, rekey_limit: int) -> int:
        """fmt.key_status for the slot of ``address`` (read under the lock)."""
        with self.locked():
            return fmt.key_status(self.get(address), self.history(address), fp, rekey_limit)

    def retire(self, address: bytes, current: int, fp: int) -> bool:
        """Key ``fp`` replaces the slot's ``current`` key: False when ``fp`` is an earlier key;
        else ``current`` is in the history (written before the caller stores the new word)."""
        with self.locked():
            old = self.history(address)
            new = fmt.retire(old, current, fp)
            if new is None:
                return False
            if new != old:
                self._put_history(address, new)
            return True

    def _put_history(self, address: bytes, history: list[int]) -> None:
        if self._fd < 0:
            self._history[address] = history
            return
        i = self._slot(address)
        if i is None:  # pragma: no cover - every caller gave the address a slot first
            raise KeyError(address)
        raw = struct.pack(f"<{fmt.HISTORY}I", *(history + [0] * (fmt.HISTORY - len(history))))
        os.pwrite(self._fd, raw, fmt.HEADER_SIZE + i * fmt.SLOT_SIZE + fmt.HISTORY_OFFSET)

    def put(self, address: bytes, word: int) -> None:
        """Store the slot word of ``address`` (creating the slot if needed)."""
        if self._fd < 0:
            self._words[address] = word
            return
        self.ensure(address)
        os.pwrite(self._fd, struct.pack("<Q", word), fmt.HEADER_SIZE + self._slots[address] * fmt.SLOT_SIZE + fmt.WORD_OFFSET)

    def flush(self) -> None:
        """Push written words to stable storage."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
