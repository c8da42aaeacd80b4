"""The persistent sequence state file: layout constants and validation (docs/state-format.md).

Shared by both backends so that a file refused by one is refused by the other with the same
words. The C core (csrc/state.c) maps the same layout; the reference reads and writes it with
pread/pwrite.
"""

from __future__ import annotations

import errno
import fcntl
import hmac
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ._types import StateFileError

MAGIC = b"KBMSTATE"
VERSION = 2
HEADER_SIZE = 64
SLOT_SIZE = 64
# header: magic, version, header size, slot size, flags (the check covers these 24 bytes)
HEADER = struct.Struct("<8sIIII")
COUNT_OFFSET = 24  # the count word: slot count (bits 0-31) and the header check (32-63)
SALT_OFFSET = 32
SALT_SIZE = 16
WORD_OFFSET = 16  # the atomic 64-bit word inside a slot
CHECK_OFFSET = 24  # the slot's check (CRC-32 over salt, index and address)
HISTORY_OFFSET = 28  # earlier key fingerprints, newest first, 0 = empty
HISTORY = 9
MAX_SLOTS = 1 << 25

SEQ_MASK = 0xFFFF
HAS_SEQ = 1 << 16
ADVANCE_SHIFT = 17
FP_SHIFT = 33
FP_MAX = 0x7FFFFFFF  # fingerprints are 1..FP_MAX; 0 means "no key recorded yet"
MAX_ADVANCE = 32768


def pack_word(has_seq: bool, seq: int, advance: int, fp: int) -> int:
    """The slot word: seq (0-15), has-seq (16), advance (17-32), key fingerprint (33-63)."""
    return (seq & SEQ_MASK) | (HAS_SEQ if has_seq else 0) | (advance << ADVANCE_SHIFT) | (fp << FP_SHIFT)


def unpack_word(word: int) -> tuple[bool, int, int, int]:
    """(has_seq, seq, advance, key fingerprint) from a slot word."""
    return bool(word & HAS_SEQ), word & SEQ_MASK, (word >> ADVANCE_SHIFT) & 0xFFFF, word >> FP_SHIFT


def fingerprint(
    salt: bytes, address: bytes, kind: int, key: bytes | bytearray, home_nonce: bytes = b"", care_of_nonce: bytes = b""
) -> int:
    """The key fingerprint a slot records: HMAC-SHA1 under the file's salt over the address and
    the whole key identity (kind, key, both nonces), reduced to 1..FP_MAX. csrc/state.c computes
    the same (kbm_state_fingerprint)."""
    h = hmac.new(salt, digestmod="sha1")
    h.update(address)
    h.update(bytes((kind, len(key) >> 8, len(key) & 0xFF)))
    h.update(key)
    h.update(bytes((len(home_nonce),)))
    h.update(home_nonce)
    h.update(bytes((len(care_of_nonce),)))
    h.update(care_of_nonce)
    return int.from_bytes(h.digest()[:4], "little") % FP_MAX + 1


def count_word(prefix: bytes, salt: bytes, count: int) -> int:
    """The header's count word: the slot count and a CRC-32 binding it to the header and salt."""
    check = zlib.crc32(prefix[:COUNT_OFFSET] + salt + struct.pack("<I", count))
    return count | check << 32


def slot_check(salt: bytes, index: int, address: bytes) -> int:
    """The check a slot carries: CRC-32 over the salt, its index and its address."""
    return zlib.crc32(salt + struct.pack("<I", index) + address)


def new_header(count: int = 0, salt: bytes | None = None) -> bytes:
    """A fresh 64-byte header (a new random salt unless one is given)."""
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    prefix = HEADER.pack(MAGIC, VERSION, HEADER_SIZE, SLOT_SIZE, 0)
    return (prefix + struct.pack("<Q", count_word(prefix, salt, count)) + salt).ljust(HEADER_SIZE, b"\0")


def encode_slot(salt: bytes, index: int, address: bytes, word: int, history: Iterable[int] = ()) -> bytes:
    """One whole slot."""
    earlier = list(history)[:HISTORY]
    earlier += [0] * (HISTORY - len(earlier))
    return address + struct.pack("<QI", word, slot_check(salt, index, address)) + struct.pack(f"<{HISTORY}I", *earlier)


def check_header(name: str, header: bytes, size: int) -> tuple[int, bytes]:
    """Validate a header against the file size; return (slot count, salt)."""
    if size < HEADER_SIZE or len(header) < HEADER_SIZE:
        raise StateFileError(f"state file {name}: truncated ({size} bytes, the header alone is {HEADER_SIZE})")
    magic, version, hsize, ssize, flags = HEADER.unpack_from(header)
    if magic != MAGIC:
        raise StateFileError(f"state file {name}: not a kbmfast state file (bad magic)")
    if version > VERSION:
        raise StateFileError(f"state file {name}: version {version} is newer than this kbmfast reads ({VERSION})")
    if version == 1:
        raise StateFileError(
            f"state file {name}: format version 1 (written before key fingerprints) is no longer used: "
            f"stop every verifier using it and run 'kbmfast state migrate {name} --keys KEYFILE' (docs/state-format.md)"
        )
    (word,) = struct.unpack_from("<Q", header, COUNT_OFFSET)
    salt = bytes(header[SALT_OFFSET : SALT_OFFSET + SALT_SIZE])
    count = word & 0xFFFFFFFF
    if version != VERSION or hsize != HEADER_SIZE or ssize != SLOT_SIZE or flags != 0 or any(header[48:64]):
        raise StateFileError(f"state file {name}: corrupt header")
    if word != count_word(header, salt, count) or count > MAX_SLOTS:
        raise StateFileError(f"state file {name}: damaged header (its check does not match the slot count {count})")
    if HEADER_SIZE + count * SLOT_SIZE > size:
        raise StateFileError(f"state file {name}: truncated (header says {count} slots, the file holds fewer)")
    return count, salt


def slot_problem(salt: bytes, index: int, slot: bytes) -> str | None:
    """What is wrong with one slot (None when it is sound)."""
    word, check = struct.unpack_from("<QI", slot, WORD_OFFSET)
    if check != slot_check(salt, index, slot[:16]):
        return "its check does not match its address and place"
    if (word >> ADVANCE_SHIFT) & 0xFFFF > MAX_ADVANCE:
        return "impossible sequence advance"
    if slot[HISTORY_OFFSET:] == _NO_HISTORY:
        return None
    earlier = struct.unpack_from(f"<{HISTORY}I", slot, HISTORY_OFFSET)
    if any(fp > FP_MAX for fp in earlier) or any(earlier[i] == 0 and earlier[i + 1] for i in range(HISTORY - 1)):
        return "damaged key history"
    return None


_NO_HISTORY = bytes(SLOT_SIZE - HISTORY_OFFSET)


def check_slot(name: str, salt: bytes, index: int, slot: bytes) -> None:
    """Validate one slot (StateFileError naming its address)."""
    problem = slot_problem(salt, index, slot)
    if problem is not None:
        raise StateFileError(f"state file {name}: slot {index} (address {_show(slot[:16])}) is corrupt: {problem}")


def check_tail(name: str, data: bytes, count: int) -> None:
    """Bytes past the last slot are zero, except the slot a crashed append may have left."""
    start = HEADER_SIZE + (count + 1) * SLOT_SIZE
    tail = data[start:]
    if tail.count(0) != len(tail):
        at = start + next(i for i, b in enumerate(tail) if b)
        raise StateFileError(
            f"state file {name}: damaged: data past the {count} slots the header counts "
            f"(slot {(at - HEADER_SIZE) // SLOT_SIZE} is not empty)"
        )


def validate(path: str | os.PathLike[str]) -> int:
    """Check a whole existing state file; return its slot count. Raises StateFileError."""
    name = os.fspath(path)
    return _validate(name, _read(name))[0]


def _validate(name: str, data: bytes) -> tuple[int, bytes]:
    count, salt = check_header(name, data[:HEADER_SIZE], len(data))
    seen: set[bytes] = set()
    for i in range(count):
        slot = data[HEADER_SIZE + i * SLOT_SIZE : HEADER_SIZE + (i + 1) * SLOT_SIZE]
        check_slot(name, salt, i, slot)
        if slot[:16] in seen:
            raise StateFileError(f"state file {name}: slot {i} repeats an address ({_show(slot[:16])})")
        seen.add(slot[:16])
    check_tail(name, data, count)
    return count, salt


def _read(name: str) -> bytes:
    """The whole file, opened by the rules (``open_checked``) and read under a shared flock
    (appenders hold it exclusively, so the count and the slots are read as of one moment)."""
    fd = open_checked(name)
    try:
        with os.fdopen(fd, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            return f.read()
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot read: {_why(e)}") from None


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


# -- the key rules (docs/state-format.md, "Keys"); csrc/state.c and csrc/verify.c follow them --

#: What installing a key finds in its slot.
KEY_OK, KEY_EXHAUSTED, KEY_EARLIER = 0, 1, 2


def key_status(word: int, history: Iterable[int], fp: int, rekey_limit: int) -> int:
    """Whether a key (fingerprint ``fp``) may be installed for a slot: KEY_OK, KEY_EXHAUSTED (the
    slot's current key, its advance at the limit) or KEY_EARLIER (a key the slot has left)."""
    has_seq, _, advance, current = unpack_word(word)
    if current == fp:
        return KEY_EXHAUSTED if has_seq and advance >= rekey_limit else KEY_OK
    return KEY_EARLIER if fp in history else KEY_OK


def key_refusal(address: bytes, status: int, rekey_limit: int) -> str:
    """The words for a key refused by :func:`key_status` (both backends)."""
    who = f"home {_show(address)}"
    if status == KEY_EXHAUSTED:
        return (
            f"{who}: this key is used up (its sequence advance reached rekey_limit={rekey_limit}): "
            "configure a new key for this peer"
        )
    return (
        f"{who}: this is an earlier key of this peer, replaced by a newer one in the state file: "
        "re-installing it would let its captured Binding Updates replay; configure a new key"
    )


def advance_under(word: int, history: Iterable[int], fp: int, rekey_limit: int) -> int:
    """The advance a slot counts for the key with fingerprint ``fp``: the word's advance if the
    word is that key's (or no key's yet), 0 for a key not used yet, the limit for an earlier key."""
    _, _, advance, current = unpack_word(word)
    if current in (0, fp):
        return advance
    return rekey_limit if fp in history else 0


def retire(history: list[int], current: int, fp: int) -> list[int] | None:
    """A key ``fp`` is about to replace the slot's ``current`` key: None when ``fp`` is an earlier
    key (refuse), else the history with ``current`` in front (unchanged if it is there already)."""
    if fp in history:
        return None
    if current in history:
        return history
    return ([current, *history])[:HISTORY]


def read_slots(path: str | os.PathLike[str]) -> tuple[bytes, list[tuple[bytes, int, tuple[int, ...]]]]:
    """The salt and (address, word, earlier fingerprints) of every slot of a valid state file."""
    name = os.fspath(path)
    data = _read(name)
    count, salt = _validate(name, data)
    return salt, [_decode(data, i) for i in range(count)]


def _decode(data: bytes, i: int) -> tuple[bytes, int, tuple[int, ...]]:
    at = HEADER_SIZE + i * SLOT_SIZE
    (word,) = struct.unpack_from("<Q", data, at + WORD_OFFSET)
    earlier = struct.unpack_from(f"<{HISTORY}I", data, at + HISTORY_OFFSET)
    return data[at : at + 16], word, tuple(fp for fp in earlier if fp)


def salvage(path: str | os.PathLike[str]) -> tuple[bytes, list[tuple[bytes, int, tuple[int, ...]]], list[str]]:
    """The sound slots of a damaged state file, and what was dropped (for ``state compact --salvage``).

    Needs the magic and version to be right (anything else may not be a state file at all).
    Every whole slot is judged by its own check, so slots the header no longer counts are
    found again; a damaged slot is dropped and its address (as stored) named, and an address
    held by two slots loses both (neither can be trusted): those peers must be rekeyed.
    """
    name = os.fspath(path)
    data = _read(name)
    if data[:8] != MAGIC:
        raise StateFileError(f"state file {name}: not a kbmfast state file (bad magic): nothing to salvage")
    if len(data) < HEADER_SIZE or HEADER.unpack_from(data)[1] != VERSION:
        raise StateFileError(f"state file {name}: not a version {VERSION} state file: nothing to salvage")
    salt = data[SALT_OFFSET : SALT_OFFSET + SALT_SIZE]
    rekey = "its replay protection is lost: rekey that peer"
    problems = []
    try:
        count, _ = check_header(name, data[:HEADER_SIZE], len(data))
    except StateFileError as e:
        problems.append(f"{str(e).split(': ', 1)[1]}: judging every slot by its own check")
        count = -1
    kept: dict[bytes, tuple[int, tuple[int, ...]]] = {}
    doubled: set[bytes] = set()
    whole = (len(data) - HEADER_SIZE) // SLOT_SIZE
    for i in range(whole):
        slot = data[HEADER_SIZE + i * SLOT_SIZE : HEADER_SIZE + (i + 1) * SLOT_SIZE]
        if not any(slot):
            if i < count:
                problems.append(f"slot {i} was wiped (its address is unknown): rekey every peer not in the salvaged file")
            continue
        problem = slot_problem(salt, i, slot)
        if problem is not None:
            if count < 0 or i < count or (i > count and any(slot[16:])):
                problems.append(f"slot {i}, address {_show(slot[:16])} (as stored): {problem}: dropped; {rekey}")
            continue
        address, word, earlier = _decode(data, i)
        if count >= 0 and i >= count and word == 0 and not earlier:
            continue  # a crashed append's empty slot
        if address in kept or address in doubled:
            kept.pop(address, None)
            doubled.add(address)
            continue
        if count >= 0 and i >= count:
            problems.append(f"slot {i}, address {_show(address)}: past the slot count, kept")
        kept[address] = (word, earlier)
    for address in sorted(doubled):
        problems.append(f"address {_show(address)} had two slots: dropped both; {rekey}")
    return salt, [(a, w, h) for a, (w, h) in kept.items()], problems


def read_v1(path: str | os.PathLike[str]) -> list[tuple[bytes, bool, int, int]]:
    """(address, has_seq, last sequence, advance) of every slot of a format version 1 file."""
    name = os.fspath(path)
    data = _read(name)
    if len(data) < 64 or data[:8] != MAGIC or HEADER.unpack_from(data)[1:] != (1, 64, 32, 0):
        raise StateFileError(f"state file {name}: not a version 1 kbmfast state file: nothing to migrate")
    (count,) = struct.unpack_from("<Q", data, 24)
    if 64 + count * 32 > len(data):
        raise StateFileError(f"state file {name}: truncated (header says {count} slots, the file holds fewer)")
    out = []
    for i in range(count):
        address = data[64 + i * 32 : 64 + i * 32 + 16]
        (word,) = struct.unpack_from("<Q", data, 64 + i * 32 + 16)
        advance = (word >> 32) & 0xFFFF
        if word & 0xFFFE0000 or advance > MAX_ADVANCE:
            raise StateFileError(f"state file {name}: slot {i} (address {_show(address)}) is corrupt: repair it first")
        out.append((address, bool(word & HAS_SEQ), word & SEQ_MASK, advance))
    return out


def migrate(
    v1: list[tuple[bytes, bool, int, int]], salt: bytes, fingerprints: dict[bytes, int]
) -> list[tuple[bytes, int, tuple[int, ...]]]:
    """Version 2 slots for version 1 ones. A version 1 advance is kept and charged to the
    address's key in ``fingerprints`` (the key file's), or to no key yet (fingerprint 0: the
    first key used takes the slot over with the advance as it is), never started over."""
    return [(a, pack_word(has, seq, advance, fingerprints.get(a, 0)), ()) for a, has, seq, advance in v1]


def encode(salt: bytes, slots: list[tuple[bytes, int, tuple[int, ...]]]) -> bytes:
    """A whole state file holding exactly these slots, under this salt (keep a file's salt:
    the fingerprints in its slots are keyed with it)."""
    body = bytearray(new_header(len(slots), salt))
    for i, (address, word, earlier) in enumerate(slots):
        body += encode_slot(salt, i, address, word, earlier)
    return bytes(body)


def write(path: str | os.PathLike[str], salt: bytes, slots: list[tuple[bytes, int, tuple[int, ...]]]) -> None:
    """Write a fresh state file with exactly these slots, atomically (temp file + rename)."""
    name = os.fspath(path)
    body = encode(salt, slots)
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

    return str(ipaddress.IPv6Address(bytes(address)))
