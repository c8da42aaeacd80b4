"""The sequence table of the reference backend: in memory, or in a state file.

Each peer has a slot whose 64-bit word is rewritten with one aligned 8-byte pwrite, so a crash
leaves either the old or the new word. Slots are appended under an exclusive flock, after
re-reading the slot count, so processes sharing a file agree on every address's slot.
The file is opened by the rules of _stateformat (checked, never through a link) and marked "in
use" for as long as it is open; every access first checks that it was not truncated, removed or
replaced meanwhile, and once it was, every later one fails too.
"""

from __future__ import annotations

import fcntl
import os
import struct

from .. import _stateformat as fmt


class SequenceState:
    """Per-address slots holding (has_seq, last sequence, cumulative advance, key epoch)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._words: dict[bytes, int] = {}
        self._slots: dict[bytes, int] = {}
        self._fd = -1
        self._count = 0
        self._changed = False
        if self.path is not None:
            self._open(self.path)

    def _open(self, name: str) -> None:
        fmt.prepare(name)
        self._fd = fmt.open_in_use(name)
        try:
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
        count = fmt.check_header(self.path or "", header, size)
        if count > self._count:
            raw = os.pread(self._fd, (count - self._count) * fmt.SLOT_SIZE, fmt.HEADER_SIZE + self._count * fmt.SLOT_SIZE)
            for i in range(self._count, count):
                slot = raw[(i - self._count) * fmt.SLOT_SIZE : (i - self._count + 1) * fmt.SLOT_SIZE]
                fmt.check_slot(self.path or "", i, slot)
                self._slots.setdefault(slot[:16], i)
            self._count = count

    def ensure(self, address: bytes) -> None:
        """Give ``address`` a slot if it has none."""
        if self._fd < 0:
            self._words.setdefault(address, 0)
            return
        self.check()
        if address in self._slots:
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._refresh()
            if address in self._slots:
                return
            i = self._count
            slot = address + bytes(fmt.SLOT_SIZE - 16)
            os.pwrite(self._fd, slot, fmt.HEADER_SIZE + i * fmt.SLOT_SIZE)
            # the slot is complete before the count that makes it visible
            os.pwrite(self._fd, struct.pack("<Q", i + 1), fmt.COUNT_OFFSET)
            self._slots[address] = i
            self._count = i + 1
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def get(self, address: bytes) -> int:
        """The slot word of ``address`` (0 when it has none)."""
        if self._fd < 0:
            return self._words.get(address, 0)
        self.check()
        i = self._slots.get(address)
        if i is None:
            self._refresh()
            i = self._slots.get(address)
            if i is None:
                return 0
        raw = os.pread(self._fd, 8, fmt.HEADER_SIZE + i * fmt.SLOT_SIZE + fmt.WORD_OFFSET)
        return int(struct.unpack("<Q", raw)[0])

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
