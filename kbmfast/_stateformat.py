"""The persistent sequence state file: layout constants and validation (docs/state-format.md).

Shared by both backends so that a file refused by one is refused by the other with the same
words. The C core (csrc/state.c) maps the same layout; the reference reads and writes it with
pread/pwrite.
"""

from __future__ import annotations

import os
import struct

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
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot read: {e.strerror}") from None
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
    if not os.path.exists(name):
        create(name)
    validate(name)
    return name


def create(name: str) -> None:
    """Create an empty state file atomically (a crash never leaves a half-written header)."""
    tmp = f"{name}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StateFileError(f"state file {name}: cannot create: {e.strerror}") from None
    try:
        os.write(fd, new_header())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, name)  # fails if another process created it meanwhile: theirs wins
    except FileExistsError:
        pass
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
    with open(name, "rb") as f:
        data = f.read(HEADER_SIZE + count * SLOT_SIZE)
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
    with open(name, "rb") as f:
        data = f.read()
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
    tmp = f"{name}.compact.{os.getpid()}"
    body = bytearray(new_header(len(slots)))
    for address, word in slots:
        body += address + word.to_bytes(8, "little") + bytes(8)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _show(address: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(address))
