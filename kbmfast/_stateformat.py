"""The persistent sequence state file: layout constants and validation (docs/state-format.md).

Shared by both backends so that a file refused by one is refused by the other with the same
words. The C core (csrc/state.c) maps the same layout; the reference reads and writes it with
pread/pwrite.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from ._types import StateFileError

MAGIC = b"KBMSTATE"
VERSION = 1
HEADER_SIZE = 64
SLOT_SIZE = 32
# header: magic, version, header size, slot size, flags, slot count; the rest reserved (zero)
HEADER = struct.Struct("<8sIIIIQ")
COUNT_OFFSET = 24
WORD_OFFSET = 16  # the atomic 64-bit word inside a slot

SEQ_MASK = 0xFFFF
HAS_SEQ = 1 << 16
ADVANCE_SHIFT = 32
EPOCH_SHIFT = 48
RESERVED_BITS = 0xFFFE0000  # bits 17..31 of the word
MAX_ADVANCE = 32768


def pack_word(has_seq: bool, seq: int, advance: int, epoch: int) -> int:
    """The slot word: seq (0-15), has-seq (16), advance (32-47), key epoch (48-63)."""
    return (seq & SEQ_MASK) | (HAS_SEQ if has_seq else 0) | (advance << ADVANCE_SHIFT) | (epoch << EPOCH_SHIFT)


def unpack_word(word: int) -> tuple[bool, int, int, int]:
    """(has_seq, seq, advance, epoch) from a slot word."""
    return bool(word & HAS_SEQ), word & SEQ_MASK, (word >> ADVANCE_SHIFT) & 0xFFFF, word >> EPOCH_SHIFT


def new_header(count: int = 0) -> bytes:
    """A fresh 64-byte header."""
    return HEADER.pack(MAGIC, VERSION, HEADER_SIZE, SLOT_SIZE, 0, count).ljust(HEADER_SIZE, b"\0")


def check_header(name: str, header: bytes, size: int) -> int:
    """Validate a header against the file size; return the slot count."""
    if size < HEADER_SIZE or len(header) < HEADER_SIZE:
        raise StateFileError(f"state file {name}: truncated ({size} bytes, the header alone is {HEADER_SIZE})")
    magic, version, hsize, ssize, flags, count = HEADER.unpack_from(header)
    if magic != MAGIC:
        raise StateFileError(f"state file {name}: not a kbmfast state file (bad magic)")
    if version > VERSION:
        raise StateFileError(f"state file {name}: version {version} is newer than this kbmfast reads ({VERSION})")
    if version != VERSION or hsize != HEADER_SIZE or ssize != SLOT_SIZE or flags != 0 or any(header[32:64]):
        raise StateFileError(f"state file {name}: corrupt header")
    if HEADER_SIZE + count * SLOT_SIZE > size:
        raise StateFileError(f"state file {name}: truncated (header says {count} slots, the file holds fewer)")
    return int(count)


def check_slot(name: str, index: int, slot: bytes) -> None:
    """Validate one slot's word and reserved bytes."""
    (word,) = struct.unpack_from("<Q", slot, WORD_OFFSET)
    advance = (word >> ADVANCE_SHIFT) & 0xFFFF
    if word & RESERVED_BITS or advance > MAX_ADVANCE or any(slot[24:32]):
        raise StateFileError(f"state file {name}: slot {index} is corrupt")


def validate(path: str | os.PathLike[str]) -> int:
    """Check a whole existing state file; return its slot count. Raises StateFileError."""
    name = os.fspath(path)
    data = read_file(name)
    count = check_header(name, data[:HEADER_SIZE], len(data))
    seen: set[bytes] = set()
    for i in range(count):
        slot = data[HEADER_SIZE + i * SLOT_SIZE : HEADER_SIZE + (i + 1) * SLOT_SIZE]
        check_slot(name, i, slot)
        if slot[:16] in seen:
            raise StateFileError(f"state file {name}: slot {i} repeats an address")
        seen.add(slot[:16])
    return count


def prepare(path: str | os.PathLike[str]) -> str:
    """Create the state file if it is missing, then validate it; return its path as str."""
    name = os.fspath(path)
    if not os.path.lexists(name):
        create(name)
    validate(name)
    return name


def create(name: str) -> None:
    """Create an empty state file atomically (a crash never leaves a half-written header)."""
    try:
        tmp = _write_temp(name, new_header())
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot create: {_why(e)}") from None
    try:
        os.link(tmp, name)  # fails if another process created it meanwhile: theirs wins
    except FileExistsError:
        pass
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot create: {_why(e)}") from None
    finally:
        os.unlink(tmp)


def advance_under(word: int, epoch: int) -> int:
    """The advance a slot word counts for a key of this epoch (0 after a rekey)."""
    has_seq, _, advance, word_epoch = unpack_word(word)
    return advance if has_seq and word_epoch == epoch else 0


def read_slots(path: str | os.PathLike[str]) -> list[tuple[bytes, int]]:
    """(address, word) of every slot of a valid state file (StateFileError otherwise)."""
    name = os.fspath(path)
    count = validate(name)
    data = read_file(name)
    return [
        (
            data[HEADER_SIZE + i * SLOT_SIZE : HEADER_SIZE + i * SLOT_SIZE + 16],
            int.from_bytes(data[HEADER_SIZE + i * SLOT_SIZE + 16 : HEADER_SIZE + i * SLOT_SIZE + 24], "little"),
        )
        for i in range(count)
    ]


def salvage(path: str | os.PathLike[str]) -> tuple[list[tuple[bytes, int]], list[str]]:
    """The sound slots of a damaged state file, and what was dropped (for ``state compact --salvage``).

    Needs the magic to be right (anything else may not be a state file at all). Slots with
    reserved bits set or an impossible advance are dropped; an address held by two slots loses
    both (neither can be trusted), so its peer must be rekeyed.
    """
    name = os.fspath(path)
    data = read_file(name)
    if data[:8] != MAGIC:
        raise StateFileError(f"state file {name}: not a kbmfast state file (bad magic): nothing to salvage")
    whole = max(0, (len(data) - HEADER_SIZE) // SLOT_SIZE)
    count = int.from_bytes(data[COUNT_OFFSET : COUNT_OFFSET + 8], "little") if len(data) >= HEADER_SIZE else 0
    problems = []
    if count > whole:
        problems.append(f"header says {count} slots, the file holds {whole}: kept those")
        count = whole
    kept: dict[bytes, int] = {}
    doubled: set[bytes] = set()
    for i in range(count):
        slot = data[HEADER_SIZE + i * SLOT_SIZE : HEADER_SIZE + (i + 1) * SLOT_SIZE]
        try:
            check_slot(name, i, slot)
        except StateFileError as e:
            problems.append(str(e).split(": ", 1)[1] + ": dropped")
            continue
        address = slot[:16]
        if address in kept or address in doubled:
            kept.pop(address, None)
            doubled.add(address)
            continue
        kept[address] = int.from_bytes(slot[16:24], "little")
    for address in sorted(doubled):
        problems.append(f"address {_show(address)} had two slots: dropped both (rekey that peer)")
    return list(kept.items()), problems


def write(path: str | os.PathLike[str], slots: list[tuple[bytes, int]]) -> None:
    """Write a fresh state file with exactly these slots, atomically (temp file + rename)."""
    name = os.fspath(path)
    body = bytearray(new_header(len(slots)))
    for address, word in slots:
        body += address + word.to_bytes(8, "little") + bytes(8)
    try:
        tmp = _write_temp(name, body)
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot write: {_why(e)}") from None
    try:
        os.replace(tmp, name)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise StateFileError(f"state file {name}: cannot replace: {_why(e)}") from None
        raise


# ---------------------------------------------------------------------------------------------
# Opening, locking and creating the file: the rules csrc/state.c applies too (docs/state-format.md)

# The byte whose open-file-description lock (fcntl F_OFD_SETLK, independent of the flock that
# serialises appends) says "in use" (a read lock, held by every open verifier or mobile node for
# its lifetime) or "being rewritten" (a write lock, held by kbmfast state compact).
LOCK_OFFSET = 0
_FLOCK = struct.Struct("@hhqqi4x")  # Linux's struct flock; l_pid must be 0 for OFD locks
_REOPEN_TRIES = 8


class InUse(StateFileError):
    """The file is open in a verifier or mobile node, so it must not be rewritten now."""


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def file_problem(name: str, st: os.stat_result) -> str | None:
    """What makes a state file unsafe to use, and the fix; None when it is sound.

    The key file's standard: a regular file (a link is never followed), owned by the user
    running kbmfast, that nobody else can write (whoever can write it can roll sequence numbers
    back, and a rolled-back number lets a captured Binding Update be replayed).
    """
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link, which kbmfast does not follow for its state: give the real file's path"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file: give the path of a kbmfast state file"
    if st.st_uid != euid:
        return (
            f"is owned by uid {st.st_uid}, not by the user running kbmfast (uid {euid}), who could roll its "
            f"sequence numbers back: check its contents, then run 'chown {euid} {name}' (or run as its owner)"
        )
    if st.st_mode & 0o022:
        return (
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}), who could roll its sequence "
            f"numbers back: check its contents, then run 'chmod go-w {name}'"
        )
    return None


def open_checked(name: str, flags: int = os.O_RDONLY) -> int:
    """Open a state file by the rules of ``file_problem`` (``O_NOFOLLOW``, then fstat); StateFileError otherwise."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise (
            unsafe_error(name) if e.errno == errno.ELOOP else StateFileError(f"state file {name}: cannot open: {_why(e)}")
        ) from None
    try:
        problem = file_problem(name, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    if problem:
        os.close(fd)
        raise StateFileError(f"state file {name} {problem}")
    return fd


def unsafe_error(name: str) -> StateFileError:
    """The words for a file refused at open (the C core's own check of what Python checked first)."""
    try:
        problem = file_problem(name, os.lstat(name))
    except OSError as e:
        return StateFileError(f"state file {name}: cannot open: {_why(e)}")
    return StateFileError(f"state file {name} {problem}" if problem else f"state file {name}: changed while being opened")


def read_file(name: str) -> bytes:
    """The whole of a state file, opened by the rules; StateFileError otherwise."""
    fd = open_checked(name)
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot read: {_why(e)}") from None


def _ofd_lock(fd: int, kind: int) -> bool:
    """Take an OFD lock on LOCK_OFFSET without waiting; False when another holder conflicts."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, LOCK_OFFSET, 1, 0))
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise StateFileError(f"state file: cannot lock: {_why(e)}") from None
    return True


def _same_file(name: str, fd: int) -> bool:
    """Whether ``name`` still names the file open at ``fd`` (a rewrite renames a new one over it)."""
    try:
        a, b = os.lstat(name), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


BEING_REWRITTEN = "is being rewritten (kbmfast state compact holds it): start this when that is done"


def open_in_use(name: str) -> int:
    """Open a state file for a verifier or mobile node: checked, and marked "in use" (an OFD read
    lock on LOCK_OFFSET) for as long as the descriptor stays open. StateFileError otherwise."""
    for _ in range(_REOPEN_TRIES):
        fd = open_checked(name, os.O_RDWR)
        try:
            if not _ofd_lock(fd, fcntl.F_RDLCK):
                raise StateFileError(f"state file {name} {BEING_REWRITTEN}")
            if _same_file(name, fd):  # not the old file a rewrite just replaced
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise StateFileError(f"state file {name}: changed while being opened")


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold a state file against every verifier while it is rewritten (``kbmfast state compact``).

    Raises InUse while any verifier or mobile node, of either backend, in any process, has it
    open: a rewrite then would leave them on the old file and split the sequence state.
    """
    fd = open_checked(name, os.O_RDWR)
    try:
        if not _ofd_lock(fd, fcntl.F_WRLCK):
            raise InUse(
                f"state file {name} is in use by a running verifier or mobile node: stop every process using "
                "it first (rewriting it now would split its sequence state and let replays in)"
            )
        if not _same_file(name, fd):
            raise StateFileError(f"state file {name}: changed while being opened")
        yield
    finally:
        os.close(fd)


def changed_error(name: str) -> StateFileError:
    """A state file found changed under a verifier that has it open (both backends' words)."""
    return StateFileError(
        f"state file {name} changed while in use (truncated, removed or replaced): this stops answering, "
        "since its sequence numbers can no longer be trusted; check the file (kbmfast state check), "
        "rekey the peers whose slots were lost, and restart"
    )


def changed(st: os.stat_result, need: int) -> bool:
    """Whether an open state file was removed or renamed over (no link left) or cut below ``need`` bytes."""
    return st.st_nlink == 0 or st.st_size < need


def _write_temp(name: str, data: bytes | bytearray) -> str:
    """``data`` in a new file beside ``name``: an unpredictable name, created with O_EXCL|O_NOFOLLOW and
    mode 0600 (tempfile.mkstemp), written whole and fsynced. Returns its path; removed on any failure."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(name) + ".", suffix=".tmp", dir=os.path.dirname(name) or ".")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _show(address: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(address))
