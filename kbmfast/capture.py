"""Reading and writing capture files: classic pcap and pcapng, for ``kbmfast verify`` and ``gen``.

A small in-house reader (see docs/tools.md for why no capture library is used): the file is
read in windows of :data:`WINDOW` bytes (never memory-mapped: a file truncated under a mapping
kills the process with SIGBUS; a short read is reported instead, as
:class:`CaptureChangedError`), record headers are walked in place, and the IPv6 packets that
carry a Mobility Header are handed out in batches ready for ``Verifier.verify_buffer``: one
``bytes`` buffer with the packets back to back and ``n + 1`` uint64 offsets, in capture order.

Link types: Ethernet (with any number of 802.1Q / 802.1ad tags), raw IP (LINKTYPE_RAW 101 and
the old DLT_RAW values 12 and 14), LINKTYPE_IPV6 (229), Linux cooked capture v1 (SLL, 113) and
v2 (SLL2, 276), BSD loopback (NULL 0, LOOP 108). A packet is a mobility packet when its IPv6
next-header chain reaches 135 through Hop-by-Hop, Destination Options and Routing headers. Each
IPv6 packet is cut to 40 + Payload Length when the frame carries more (Ethernet padding, FCS);
a shorter one is handed out as it is (the verifier then calls it MALFORMED).

Frame numbers count every frame from 1, as Wireshark does. A damaged capture stops the reader
with :class:`CaptureError` (frame number and byte offset) after every batch before the damage.

Three engines give the same packets: the C walker of csrc/capture.c (the default whenever the
C core is built: records, link and IPv6 headers and the gather in C, window by window);
with numpy, a vectorised path for classic pcap (record boundaries found by following the record
chain over candidate headers, many at a time, headers examined column-wise); and the plain Python
walk, the oracle the tests compare the other two with.
"""

from __future__ import annotations

import os
import select
import stat
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

try:  # optional: the fast path
    import numpy as np
except ImportError:  # pragma: no cover - exercised where numpy is missing
    np = None  # type: ignore[assignment]

try:  # the C walker (csrc/capture.c), part of the C core
    from ._native_edge import ffi as _ffi
    from ._native_edge import lib as _lib
except ImportError:  # pragma: no cover - a source tree without the built core
    _ffi = _lib = None

#: Whether the C walker and line formatter (csrc/capture.c) are built.
HAVE_C = _lib is not None

__all__ = [
    "ENGINES",
    "HAVE_C",
    "PCAP_MAX_TIME_US",
    "Batch",
    "CaptureChangedError",
    "CaptureError",
    "Chunk",
    "CaptureReader",
    "Fields",
    "PcapWriter",
    "fields_fast",
    "fields_plain",
    "ipv6_start",
    "mobility_length",
    "np",
    "packet_fields",
    "write_pcapng",
]

#: Largest captured length a record may claim (libpcap's limit for any link type, with room).
MAX_CAPLEN = 0x40000

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
#: Link types whose frames are read; others are counted as non-mobility frames.
SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback (NULL)",
    LINKTYPE_ETHERNET: "Ethernet",
    12: "raw IP (DLT_RAW)",
    14: "raw IP (DLT_RAW)",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback (LOOP)",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

ETHERTYPE_IPV6 = 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, Darwin
_EXT_HEADERS = (0, 43, 60)  # Hop-by-Hop, Routing, Destination Options
_MAX_EXT = 16  # extension headers followed before giving up (the verifier allows 4)
IPPROTO_MH = 135

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

#: Mobility packets per batch handed to the verifier.
DEFAULT_BATCH = 65536
#: Bytes of packets per batch at most, for the C engine (a batch ends early when the next
#: packet would pass it), so memory stays bounded whatever the packets' sizes.
MAX_BATCH_BYTES = 1 << 26
#: The readers that give identical batches: "c" (csrc/capture.c), "numpy" (classic pcap only;
#: pcapng goes the plain way), "plain" (the oracle).
ENGINES = ("c", "numpy", "plain")
#: Microseconds past this do not fit a Batch's int64 times (a pcapng timestamp can claim more).
_MAX_TIME_US = (1 << 63) - 1
#: Bytes of the file the C walker reads at a time (more when one record or block is larger).
WINDOW = 1 << 20  # 1 MiB: read, walked and gathered while still in the cache


class CaptureError(Exception):
    """A capture file that cannot be read on: not a capture, or damaged at some point.

    ``frame`` is the number of the frame that could not be read (0 for the file header) and
    ``offset`` the byte offset of its record or block; every frame before it was read.
    """

    def __init__(self, path: str, frame: int, offset: int, reason: str) -> None:
        self.path = path
        self.frame = frame
        self.offset = offset
        self.reason = reason
        where = "in the file header" if frame == 0 else f"at frame {frame}"
        super().__init__(f"{path}: {reason} ({where}, byte offset {offset})")


class CaptureChangedError(CaptureError):
    """The file shrank while it was read (another process truncated or rewrote it): fewer bytes
    could be read than it had when opened. Every frame before ``frame`` was read."""


@dataclass
class Batch:
    """Mobility packets of a capture, back to back, in capture order.

    Packet ``i`` is ``data[offsets[i]:offsets[i + 1]]`` (IPv6 header first); it is frame
    ``frames[i]`` of the capture, captured at ``times[i]`` microseconds since the epoch.
    """

    data: bytes
    offsets: array[int]
    frames: array[int]
    times: array[int]
    #: The C engine only: per packet, 1 when the capture's snap length cut it short (the frame's
    #: captured length is below its original length, and the packet below its Payload Length);
    #: None when no packet of the batch was cut.
    cut: bytes | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.frames)

    def packet(self, i: int) -> bytes:
        """Packet ``i`` as bytes."""
        return self.data[self.offsets[i] : self.offsets[i + 1]]


def _new_batch(data: bytes, lengths: list[int], frames: list[int], times: list[int]) -> Batch:
    offsets = array("Q", [0])
    total = 0
    for n in lengths:
        total += n
        offsets.append(total)
    return Batch(data, offsets, array("Q", frames), array("q", times))


# ---------------------------------------------------------------------------------------------
# One frame, in plain Python


def ipv6_start(buf: Any, start: int, caplen: int, linktype: int) -> int:
    """Offset of the IPv6 header in the frame at ``buf[start:start + caplen]``, or -1."""
    end = start + caplen
    if linktype == LINKTYPE_ETHERNET:
        p = start + 12
        while p + 2 <= end:
            et = buf[p] << 8 | buf[p + 1]
            if et == ETHERTYPE_IPV6:
                return p + 2
            if et not in _VLAN_TAGS:
                return -1
            p += 4
        return -1
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV6, 12, 14):
        return start if caplen and buf[start] >> 4 == 6 else -1
    if linktype == LINKTYPE_LINUX_SLL:
        return start + 16 if caplen >= 16 and buf[start + 14] << 8 | buf[start + 15] == ETHERTYPE_IPV6 else -1
    if linktype == LINKTYPE_LINUX_SLL2:
        return start + 20 if caplen >= 20 and buf[start] << 8 | buf[start + 1] == ETHERTYPE_IPV6 else -1
    if linktype == LINKTYPE_NULL:
        if caplen < 4:
            return -1
        family = int.from_bytes(buf[start : start + 4], "little")
        if family not in _AF_INET6:
            family = int.from_bytes(buf[start : start + 4], "big")
        return start + 4 if family in _AF_INET6 else -1
    if linktype == LINKTYPE_LOOP:
        return start + 4 if caplen >= 4 and int.from_bytes(buf[start : start + 4], "big") in _AF_INET6 else -1
    return -1


def mobility_length(buf: Any, ip: int, available: int) -> int:
    """Length of the IPv6 packet at ``buf[ip:]`` if it carries a Mobility Header, else -1.

    ``available`` is how many bytes the frame has from ``ip`` on; the packet is cut to 40 +
    Payload Length when the frame is longer, and left as it is when it is shorter.
    """
    if available < 40 or buf[ip] >> 4 != 6:
        return -1
    length: int = min(available, 40 + (buf[ip + 4] << 8 | buf[ip + 5]))
    nh = buf[ip + 6]
    pos = 40
    for _ in range(_MAX_EXT):
        if nh == IPPROTO_MH:
            return length
        if nh not in _EXT_HEADERS or pos + 2 > length:
            return -1
        nh, pos = buf[ip + pos], pos + (buf[ip + pos + 1] + 1) * 8
    return length if nh == IPPROTO_MH else -1


# ---------------------------------------------------------------------------------------------
# The reader


@dataclass
class _Progress:
    frames: int = 0  # frames read so far
    other: int = 0  # frames read that carry no Mobility Header
    position: int = 0  # bytes of the file consumed


class CaptureReader:
    """One capture file, opened; iterate :meth:`batches` once.

    Raises :class:`CaptureError` at once when the file is not a pcap or pcapng capture. During
    iteration, damage stops the batches and sets :attr:`error` (the reader never raises then,
    so every packet before the damage is verified). ``frames``, ``other`` (frames without a
    Mobility Header) and ``position`` (bytes consumed) grow as batches are handed out.

    The capture is the file's first ``size`` bytes, its size when opened (bytes appended later
    are not read). The file is read, never mapped: if it shrinks while it is read, :attr:`error`
    is a :class:`CaptureChangedError` at the frame that could not be read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.error: CaptureError | None = None
        #: Mobility packets cut short by the snap length so far (the C engine counts them).
        self.cut = 0
        #: Stop after this many frames (0: read to the end); the C engine honours it.
        self.max_frames = 0
        self._progress = _Progress()
        self._whole: bytes | bytearray | None = None  # the file in memory, for the Python walks
        self._shrunk: int | None = None  # bytes that could be read, when fewer than size
        #: A pipe, terminal or other special file (``-``: standard input): read as it comes.
        self.streaming = False
        self._head = b""  # a stream's first bytes, read at open
        if self.path == "-":
            self._file = open(os.dup(0), "rb", buffering=0)
        else:
            self._file = open(self.path, "rb", buffering=0)
        try:
            st = os.fstat(self._file.fileno())
            if stat.S_ISREG(st.st_mode) and self.path != "-":
                self.size = st.st_size
                head = bytearray(min(self.size, 24))
                got = self._read_into(memoryview(head), 0)
                if got < len(head):
                    self._shrunk = got
                    raise CaptureChangedError(self.path, 0, 0, self._changed())
            else:  # a pipe or a special file: its header now, the rest as it comes
                self.streaming = True
                head = bytearray()
                while len(head) < 24:
                    more = self._file.read(24 - len(head))
                    if not more:
                        break
                    head += more
                self._head = bytes(head)
                self.size = len(head)  # what was read so far (a stream's size is not known)
            self._init_format(head)
        except BaseException:
            self.close()
            raise

    def _read_into(self, view: memoryview, offset: int) -> int:
        """Read the file's bytes from ``offset`` into ``view``; how many there were (fewer only
        at the end of the file). Not for a pipe (read whole at open)."""
        self._file.seek(offset)
        got = 0
        while got < len(view):
            n = self._file.readinto(view[got:])
            if not n:
                break
            got += n
        return got

    def _changed(self) -> str:
        return f"the file changed while it was read: {self.size} bytes when opened, {self._shrunk} could be read"

    def _data(self) -> bytes | bytearray:
        """The whole capture in memory (the numpy and plain walks), read on first use."""
        if self._whole is None and self.streaming:
            self._whole = self._head + self._file.readall()
            self.size = len(self._whole)
        if self._whole is None:
            buf = bytearray(self.size)
            got = self._read_into(memoryview(buf), 0)
            if got < self.size:
                self._shrunk = got
                del buf[got:]
            self._whole = buf
        return self._whole

    def _init_format(self, buf: bytes | bytearray) -> None:
        if self.size < 4:
            raise CaptureError(self.path, 0, 0, "not a capture file: shorter than any capture header")
        magic_le = struct.unpack_from("<I", buf)[0]
        magic_be = struct.unpack_from(">I", buf)[0]
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
            self.linktypes: list[int] = []
            return
        for order, magic in (("<", magic_le), (">", magic_be)):
            if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                if self.size < 24:
                    raise CaptureError(self.path, 0, 0, "pcap file header truncated")
                self.format = "pcap"
                self.order = order
                self.nanoseconds = magic == PCAP_MAGIC_NS
                self.snaplen = struct.unpack_from(order + "I", buf, 16)[0]
                self.linktypes = [struct.unpack_from(order + "I", buf, 20)[0] & 0xFFFF]
                self._progress.position = 24  # the file header is read
                return
        raise CaptureError(self.path, 0, 0, f"not a pcap or pcapng file (magic number 0x{magic_be:08x})")

    @property
    def frames(self) -> int:
        """Frames read so far."""
        return self._progress.frames

    @property
    def other(self) -> int:
        """Frames read so far that carry no Mobility Header (or use an unsupported link type)."""
        return self._progress.other

    @property
    def position(self) -> int:
        """Bytes of the file read so far."""
        return self._progress.position

    def close(self) -> None:
        """Close the file and drop what was read of it; idempotent."""
        self._whole = None
        self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batches(self, size: int = DEFAULT_BATCH, *, fast: bool = True, engine: str | None = None) -> Iterator[Batch]:
        """Mobility packets in batches of at most ``size``, in capture order.

        ``engine`` picks the reader (:data:`ENGINES`); by default the C walker when the C core is
        built, else numpy, else plain. ``fast=False`` is ``engine="plain"``. Every engine gives
        the same packets, frames, times, counts and damage; the C engine may end a batch early
        to keep it under :data:`MAX_BATCH_BYTES`.
        """
        if size < 1:
            raise ValueError("size: must be at least 1")
        if engine is None:
            engine = "plain" if not fast else "c" if HAVE_C else "numpy" if np is not None else "plain"
        if engine not in ENGINES:
            raise ValueError(f"engine: one of {ENGINES}, not {engine!r}")
        if engine == "numpy" and self.max_frames:
            engine = "plain"  # the plain walk stops at max_frames
        if engine == "c":
            for chunk in self.chunks(size, sets=1):
                n = chunk.n
                data = bytes(memoryview(chunk.data)[: chunk.offsets[n]])
                offsets = array("Q", memoryview(chunk.offsets)[: n + 1])
                frames, times = array("Q", memoryview(chunk.frames)[:n]), array("q", memoryview(chunk.times)[:n])
                yield Batch(data, offsets, frames, times, bytes(chunk.cut[:n]) if chunk.ncut else None)
            return
        if self.format == "pcapng":
            walk: Iterator[tuple[int, int, int, int, int]] = self._pcapng_frames()
            yield from self._collect(walk, size)
        elif engine == "numpy" and np is not None:
            yield from _fast_pcap(self, size)
        else:
            yield from self._collect(self._pcap_frames(), size)

    # -- the C walk ----------------------------------------------------------------------------

    def chunks(self, size: int = DEFAULT_BATCH, *, sets: int = 2, max_bytes: int = MAX_BATCH_BYTES) -> Iterator[Chunk]:
        """Mobility packets in :class:`Chunk` buffers, read by the C walker (csrc/capture.c).

        The buffers are reused: chunk ``k`` is overwritten when chunk ``k + sets`` is read, so
        a consumer may work on ``sets - 1`` chunks while the next one is read. A chunk holds
        at most ``size`` packets and, past its first packet, at most ``max_bytes`` bytes of them.
        """
        if _ffi is None or _lib is None:  # pragma: no cover - a source tree without the built core
            raise RuntimeError("the C capture walker is not built")
        if size < 1 or sets < 1:
            raise ValueError("size and sets: must be at least 1")
        walk = _CWalk(self)
        pool = [Chunk(size) for _ in range(sets)]
        k = 0
        try:
            while True:
                chunk = pool[k % sets]
                k += 1
                if not walk.fill(chunk, max_bytes):
                    break
                yield chunk
        finally:
            walk.release()

    # -- the plain walk ------------------------------------------------------------------------

    def _collect(self, frames: Iterator[tuple[int, int, int, int, int]], size: int) -> Iterator[Batch]:
        """Batches from (frame, µs time, start, caplen, linktype) tuples."""
        buf = self._data()
        view = memoryview(buf)
        progress = self._progress
        slices: list[memoryview] = []
        lengths: list[int] = []
        numbers: list[int] = []
        times: list[int] = []
        try:
            for number, time_us, start, caplen, linktype in frames:
                ip = ipv6_start(buf, start, caplen, linktype)
                n = -1 if ip < 0 else mobility_length(buf, ip, start + caplen - ip)
                if n < 0:
                    progress.other += 1
                    continue
                slices.append(view[ip : ip + n])
                lengths.append(n)
                numbers.append(number)
                times.append(time_us)
                if len(numbers) == size:
                    yield _new_batch(b"".join(slices), lengths, numbers, times)
                    slices, lengths, numbers, times = [], [], [], []
            if numbers:
                yield _new_batch(b"".join(slices), lengths, numbers, times)
        finally:
            slices.clear()
            view.release()

    def _damage(self, frame: int, offset: int, reason: str) -> None:
        if self._shrunk is not None:  # whatever the walk found, the bytes it needed went away
            self.error = CaptureChangedError(self.path, frame, offset, self._changed())
        else:
            self.error = CaptureError(self.path, frame, offset, reason)

    def _ended(self, frame: int, offset: int) -> None:
        """The walk used up the bytes read: the end, unless the file shrank first."""
        if self._shrunk is not None and self.error is None:
            self._damage(frame, offset, "")

    def _pcap_frames(self, pos: int = 24, frame: int = 0) -> Iterator[tuple[int, int, int, int, int]]:
        buf, progress = self._data(), self._progress
        size = len(buf)
        header = struct.Struct(self.order + "IIII")
        unpack = header.unpack_from
        linktype = self.linktypes[0]
        scale_down = 1000 if self.nanoseconds else 1
        second = 1_000_000 * scale_down  # the fraction's units per second (µs or ns)
        while pos < size:
            if self.max_frames and frame >= self.max_frames:
                return
            frame += 1
            if size - pos < 16:
                self._damage(frame, pos, f"record header truncated ({size - pos} of 16 bytes)")
                return
            sec, frac, caplen, _ = unpack(buf, pos)
            if caplen > MAX_CAPLEN:
                self._damage(frame, pos, f"record claims {caplen} captured bytes (more than {MAX_CAPLEN})")
                return
            if pos + 16 + caplen > size:
                self._damage(frame, pos, f"record runs past the end of the file ({caplen} bytes, {size - pos - 16} left)")
                return
            if frac >= second:
                self._damage(frame, pos, f"record's fraction of a second is {frac} (a second is {second})")
                return
            progress.frames = frame
            progress.position = pos + 16 + caplen
            yield frame, sec * 1_000_000 + frac // scale_down, pos + 16, caplen, linktype
            pos += 16 + caplen
        self._ended(frame + 1, pos)

    def _pcapng_frames(self) -> Iterator[tuple[int, int, int, int, int]]:
        buf, progress = self._data(), self._progress
        size = len(buf)
        pos, frame = 0, 0
        order = "<"
        interfaces: list[tuple[int, int, int]] = []  # (linktype, numerator, denominator) for µs
        while pos < size:
            if self.max_frames and frame >= self.max_frames:
                return
            where = frame + 1
            if size - pos < 12:
                self._damage(where, pos, f"block header truncated ({size - pos} of 12 bytes)")
                return
            btype = struct.unpack_from(order + "I", buf, pos)[0]
            if btype == PCAPNG_SHB:
                bom = buf[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    self._damage(where, pos, "section header block with an invalid byte-order magic")
                    return
                interfaces = []
            total = struct.unpack_from(order + "I", buf, pos + 4)[0]
            if total < 12 or total % 4:
                self._damage(where, pos, f"block length {total} is not a multiple of 4 of at least 12")
                return
            if pos + total > size:
                self._damage(where, pos, f"block runs past the end of the file ({total} bytes, {size - pos} left)")
                return
            if struct.unpack_from(order + "I", buf, pos + total - 4)[0] != total:
                self._damage(where, pos, "block's trailing length differs from its leading length")
                return
            body = pos + 8
            body_len = total - 12
            if btype == 1:  # Interface Description Block
                if body_len < 8:
                    self._damage(where, pos, "interface description block too short")
                    return
                linktype = struct.unpack_from(order + "H", buf, body)[0]
                interfaces.append((linktype, *_tsresol(buf, order, body + 8, body + body_len)))
            elif btype in (6, 2, 3):  # Enhanced, obsolete and Simple Packet Blocks
                frame += 1
                if btype == 3:
                    if body_len < 4:
                        self._damage(frame, pos, "simple packet block too short")
                        return
                    iface, ts = 0, None
                    caplen = min(struct.unpack_from(order + "I", buf, body)[0], body_len - 4)
                    data = body + 4
                else:
                    if body_len < 20:
                        self._damage(frame, pos, "packet block too short")
                        return
                    if btype == 6:
                        iface, high, low, caplen = struct.unpack_from(order + "IIII", buf, body)
                    else:
                        iface, _drops, high, low, caplen = struct.unpack_from(order + "HHIII", buf, body)
                    ts = high << 32 | low
                    data = body + 20
                    if caplen > body_len - 20:
                        self._damage(frame, pos, f"packet block claims {caplen} captured bytes, holds {body_len - 20}")
                        return
                if iface >= len(interfaces):
                    self._damage(frame, pos, f"packet block names interface {iface}, which is not described")
                    return
                linktype, num, den = interfaces[iface]
                time_us = 0 if ts is None else ts * num // den
                if time_us > _MAX_TIME_US:
                    self._damage(frame, pos, f"packet block's timestamp ({ts} units) is past the 64-bit microsecond range")
                    return
                progress.frames = frame
                progress.position = pos + total
                yield frame, time_us, data, caplen, linktype
            pos += total
            progress.position = pos
        self._ended(frame + 1, pos)


class Chunk:
    """Reusable buffers of the C walker: ``n`` packets back to back in ``data`` with ``n + 1``
    ``offsets`` (uint64), their frame numbers and µs times (capacity: ``size`` packets)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.n = 0
        self.data = bytearray(0)
        self.offsets = array("Q", bytes(8 * (size + 1)))
        self.frames = array("Q", bytes(8 * size))
        self.times = array("q", bytes(8 * size))
        self.ip_off = array("Q", bytes(8 * size))
        self.ip_len = array("I", bytes(4 * size))
        self.cut = bytearray(size)  # 1: cut short by the snap length (valid when ncut > 0)
        self.ncut = 0
        self.acks = bytearray(0)  # for the consumer (kbmfast verify --acks-out)

    def buffer(self) -> memoryview:
        """The packets, as verify_buffer takes them."""
        return memoryview(self.data)[: self.offsets[self.n]]

    def offsets_view(self) -> memoryview:
        """The n + 1 offsets, as verify_buffer takes them."""
        return memoryview(self.offsets)[: self.n + 1]

    def batch(self) -> Batch:
        """A copy as a :class:`Batch`."""
        n = self.n
        return Batch(
            bytes(self.buffer()),
            array("Q", self.offsets_view()),
            array("Q", memoryview(self.frames)[:n]),
            array("q", memoryview(self.times)[:n]),
            bytes(self.cut[:n]) if self.ncut else None,
        )


_C_DAMAGE = {
    1: "record header truncated ({a} of 16 bytes)",
    2: "record claims {a} captured bytes (more than " + str(MAX_CAPLEN) + ")",
    3: "record runs past the end of the file ({a} bytes, {b} left)",
    4: "block header truncated ({a} of 12 bytes)",
    5: "section header block with an invalid byte-order magic",
    6: "block length {a} is not a multiple of 4 of at least 12",
    7: "block runs past the end of the file ({a} bytes, {b} left)",
    8: "block's trailing length differs from its leading length",
    9: "interface description block too short",
    10: "simple packet block too short",
    11: "packet block too short",
    12: "packet block claims {a} captured bytes, holds {b}",
    13: "packet block names interface {a}, which is not described",
    14: "packet block's timestamp ({a} units) is past the 64-bit microsecond range",
    15: "record's fraction of a second is {a} (a second is {b})",
}


class _CWalk:
    """A kbm_capture walked into Chunks over a window of the reader's file: ``win[:have]`` holds
    the file's bytes from ``base`` on. When the walker needs more (a record runs past the
    window), the window moves on: the bytes from the walker's position first, then more read."""

    def __init__(self, reader: CaptureReader) -> None:
        assert _ffi is not None and _lib is not None
        self.reader = reader
        self.c = _ffi.new("kbm_capture *")
        self.base = 0
        self.eof = False  # a stream: its end was read
        if reader.streaming:
            self.win: bytes | bytearray = bytearray(WINDOW)
            self.win[: len(reader._head)] = reader._head
            self.have = len(reader._head)
            self.eof = self.have < 24
        elif reader._whole is not None:  # read whole already
            self.win = reader._whole
            self.have = len(self.win)
        else:
            self.win = bytearray(min(reader.size, max(WINDOW, 24)))  # the pcap header at least
            self.have = self._read(0, len(self.win))
        self.buf = self._view()
        rc = _lib.kbm_capture_open(self.c, self.buf, self.have)
        self.ifaces = _ffi.new("kbm_cap_iface[]", 16)
        self.c.ifaces, self.c.cap_ifaces = self.ifaces, 16
        self.c.partial = not self.eof if reader.streaming else self.have < reader.size and reader._shrunk is None
        self.c.max_frames = reader.max_frames
        self.out = _ffi.new("kbm_cap_out *")
        if rc != 0 or (self.c.format == _lib.KBM_CAP_PCAPNG) != (reader.format == "pcapng"):
            if reader._shrunk is None:  # pragma: no cover - the header was read alike at open
                raise AssertionError(f"the C walker reads {reader.path}'s header differently ({rc})")
            reader._damage(0, 0, "")
            self.c.done = 1

    def _view(self) -> Any:
        assert _ffi is not None
        return _ffi.from_buffer("uint8_t[]", self.win) if len(self.win) else _ffi.new("uint8_t[]", 1)

    def _read(self, at: int, count: int) -> int:
        """Read ``count`` bytes of the file (from base + at) into win[at:]; note a short read."""
        reader = self.reader
        assert isinstance(self.win, bytearray)
        got = reader._read_into(memoryview(self.win)[at : at + count], self.base + at)
        if got < count and reader._shrunk is None:
            reader._shrunk = self.base + at + got
        return got

    def ready(self) -> bool:
        """A stream: more can be read without waiting (or its end was read)."""
        if self.eof:
            return True
        try:
            return bool(select.select([self.reader._file], [], [], 0)[0])
        except (OSError, ValueError):  # pragma: no cover - a file select() cannot watch
            return True

    def _move(self, cap: int) -> int:
        """Move the bytes from the walker's position to the window's start (a window of ``cap``
        bytes when that is larger: a record or block larger than the window); ``cap``."""
        assert _ffi is not None and isinstance(self.win, bytearray)
        pos, keep = self.c.pos, self.have - self.c.pos
        if cap > len(self.win):
            bigger = bytearray(cap)
            bigger[:keep] = memoryview(self.win)[pos : self.have]
            _ffi.release(self.buf)
            self.win = bigger
            self.buf = self._view()
        else:
            self.win[:keep] = memoryview(self.win)[pos : self.have]
        self.base += pos
        return cap

    def _slide_stream(self) -> None:
        """A stream: move the window on to the walker's position, then read until it holds what
        the walker needs (or the stream ends), taking whatever else is there already."""
        assert _ffi is not None and isinstance(self.win, bytearray)
        c, reader = self.c, self.reader
        keep = self.have - c.pos
        cap = self._move(max(len(self.win), c.need))
        self.have = keep
        view = memoryview(self.win)
        while not self.eof and self.have - keep < max(c.need - keep, 1):
            try:
                got = reader._file.readinto(view[self.have : cap])
            except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may raise
                continue
            if not got:
                self.eof = True
                break
            self.have += got
            if self.have >= c.need:
                break
        view.release()
        reader.size = self.base + self.have
        c.buf, c.size, c.pos = self.buf, self.have, 0
        c.partial = not self.eof

    def _slide(self) -> None:
        """Move the window on to the walker's position, holding at least what it needs."""
        assert _ffi is not None and isinstance(self.win, bytearray)
        c, reader = self.c, self.reader
        if reader.streaming:
            self._slide_stream()
            return
        keep = self.have - c.pos
        rest = reader.size - self.base - c.pos  # the file's bytes from the walker's position on
        cap = self._move(max(len(self.win), min(c.need, rest)))
        self.have = keep + self._read(keep, min(cap, rest) - keep)
        c.buf, c.size, c.pos = self.buf, self.have, 0
        c.partial = self.base + self.have < reader.size and reader._shrunk is None

    def fill(self, chunk: Chunk, max_bytes: int) -> bool:
        """Walk on into ``chunk``; False when no packet is left (the end or damage)."""
        assert _ffi is not None and _lib is not None
        c, out, reader = self.c, self.out, self.reader
        n = 0
        fb = _ffi.from_buffer
        ip_off, ip_len = fb("uint64_t[]", chunk.ip_off), fb("uint32_t[]", chunk.ip_len)
        frames, times = fb("uint64_t[]", chunk.frames), fb("int64_t[]", chunk.times)
        offsets = fb("uint64_t[]", chunk.offsets)
        cut = fb("uint8_t[]", chunk.cut)
        offsets[0] = 0
        c.walked_bytes = 0
        cut_before = c.cut
        while True:
            out.ip_off, out.ip_len, out.frame, out.time_us, out.cut = ip_off + n, ip_len + n, frames + n, times + n, cut + n
            got = _lib.kbm_capture_walk(c, out, chunk.size - n, max_bytes)
            if got:  # gathered now: the window may move on before the chunk is full
                total = c.walked_bytes
                if len(chunk.data) < total:
                    data = bytearray(max(total, 2 * len(chunk.data)) if c.need_more else total)
                    data[: offsets[n]] = memoryview(chunk.data)[: offsets[n]]
                    chunk.data = data
                rc = _lib.kbm_capture_gather(
                    self.buf, self.have, ip_off + n, ip_len + n, got, fb("uint8_t[]", chunk.data), len(chunk.data), offsets + n
                )
                if rc:  # pragma: no cover - the walker only hands out packets inside the window
                    raise AssertionError("kbm_capture_gather refused the walker's packets")
                n += got
            if c.need_ifaces:
                bigger = _ffi.new("kbm_cap_iface[]", 2 * c.cap_ifaces)
                _ffi.memmove(bigger, self.ifaces, _ffi.sizeof("kbm_cap_iface") * c.n_ifaces)
                self.ifaces = bigger
                c.ifaces, c.cap_ifaces = bigger, 2 * c.cap_ifaces
            elif c.need_more and n < chunk.size:
                if n and reader.streaming and not self.ready():
                    break  # hand out what arrived rather than wait for more
                self._slide()
            else:
                break
        progress = reader._progress
        progress.frames, progress.other, progress.position = c.frames, c.other, self.base + c.pos
        if c.error and reader.error is None:
            reason = _C_DAMAGE[c.error].format(a=c.error_a, b=c.error_b)
            reader._damage(c.error_frame, self.base + c.error_offset, reason)
        elif c.done:
            reader._ended(c.frames + 1, self.base + c.pos)
        chunk.n = n
        chunk.ncut = c.cut - cut_before
        reader.cut = c.cut
        return n > 0

    def release(self) -> None:
        """Drop the view of the window."""
        assert _ffi is not None
        if len(self.win):
            _ffi.release(self.buf)


def _tsresol(buf: Any, order: str, pos: int, end: int) -> tuple[int, int]:
    """An IDB's if_tsresol as (numerator, denominator) turning its units into microseconds."""
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = buf[pos + 4]
            if v & 0x80:
                return 1_000_000, 1 << (v & 0x7F)
            exp = v & 0x7F
            return (10 ** (6 - exp), 1) if exp <= 6 else (1, 10 ** (exp - 6))
        pos += 4 + (length + 3) // 4 * 4
    return 1, 1


# ---------------------------------------------------------------------------------------------
# The vectorised walk for classic pcap (numpy)

_CHUNK = 1 << 23  # bytes of file examined per round


def _fast_pcap(reader: CaptureReader, size: int) -> Iterator[Batch]:
    """Batches from a classic pcap, as ``_collect(_pcap_frames())`` would give them."""
    assert np is not None
    buf = reader._data()
    total = len(buf)
    u8 = np.frombuffer(buf, dtype=np.uint8)
    little = reader.order == "<"
    linktype = reader.linktypes[0]
    nano = reader.nanoseconds
    progress = reader._progress
    pending: list[tuple[Any, Any, Any, Any]] = []  # (frames, times, ip starts, lengths) runs
    npending = 0
    pos = 24
    frame = 0
    walker = _Walker(u8, total, little, 1_000_000_000 if nano else 1_000_000)
    if True:
        while pos < total:
            starts, pos_after = walker.run(pos)
            if len(starts) == 0:
                # Not a run the vector walk can follow: one record the plain way.
                step = reader._pcap_frames(pos, frame)
                item = next(step, None)
                if item is None:
                    break  # damage (reader.error is set)
                _, _, start, caplen, _ = item
                starts_arr = np.array([start - 16], dtype=np.int64)
                pos = start + caplen
            else:
                starts_arr = starts
                pos = pos_after
            recs = _records(walker.u32, starts_arr, little)
            numbers = np.arange(frame + 1, frame + 1 + len(starts_arr), dtype=np.int64)
            frame += len(starts_arr)
            progress.frames = frame
            progress.position = pos
            ip, length = _classify(u8, starts_arr + 16, recs["caplen"], linktype)
            keep = length >= 0
            progress.other += int(len(keep) - np.count_nonzero(keep))
            if keep.any():
                sec = recs["sec"][keep]
                frac = recs["frac"][keep] // 1000 if nano else recs["frac"][keep]
                pending.append((numbers[keep], sec * 1_000_000 + frac, ip[keep], length[keep]))
                npending += int(np.count_nonzero(keep))
            while npending >= size:
                yield _flush(u8, pending, size)
                npending -= size
        reader._ended(frame + 1, pos)
        while npending:
            take = min(size, npending)
            yield _flush(u8, pending, take)
            npending -= take


def _gather(u8: Any, start: Any, length: Any) -> bytes:
    """``u8[start[i]:start[i] + length[i]]`` for all i, back to back (packets in file order).

    One mask over the file region the packets span, then one compress: no Python per packet.
    """
    assert np is not None
    if len(start) == 0:
        return b""
    lo = int(start[0])
    end = start + length
    runs = np.empty(2 * len(start), dtype=np.int64)
    runs[0::2] = start - np.concatenate(([lo], end[:-1]))
    runs[1::2] = length
    if (runs < 0).any():  # not in file order (cannot happen for one capture): the plain way
        return b"".join(bytes(u8[a:b]) for a, b in zip(start.tolist(), end.tolist(), strict=True))
    keep = np.zeros(2 * len(start), dtype=bool)
    keep[1::2] = True
    return u8[lo : int(end[-1])][np.repeat(keep, runs)].tobytes()  # type: ignore[no-any-return]


def _flush(u8: Any, pending: list[tuple[Any, Any, Any, Any]], n: int) -> Batch:
    """Take the first ``n`` pending packets as a batch."""
    assert np is not None
    parts: list[tuple[Any, Any, Any, Any]] = []
    got = 0
    while got < n:
        numbers, times, ip, length = pending[0]
        take = min(n - got, len(numbers))
        parts.append((numbers[:take], times[:take], ip[:take], length[:take]))
        if take == len(numbers):
            pending.pop(0)
        else:
            pending[0] = (numbers[take:], times[take:], ip[take:], length[take:])
        got += take
    numbers = np.concatenate([p[0] for p in parts])
    times = np.concatenate([p[1] for p in parts])
    ip = np.concatenate([p[2] for p in parts])
    length = np.concatenate([p[3] for p in parts])
    data = _gather(u8, ip, length)
    offsets = array("Q", bytes(8))
    offsets.frombytes(np.cumsum(length, dtype=np.uint64).tobytes())
    return Batch(data, offsets, array("Q", numbers.astype(np.uint64).tobytes()), array("q", times.astype(np.int64).tobytes()))


def _u32_view(u8: Any, little: bool) -> Any:
    """A uint32 at every byte offset of ``u8`` (an unaligned, stride-1 view: no copy)."""
    assert np is not None
    n = max(len(u8) - 3, 0)
    return np.ndarray((n,), dtype="<u4" if little else ">u4", buffer=u8, offset=0, strides=(1,))


def _u32(u32: Any, at: Any, little: bool) -> Any:
    """uint32 at each byte offset in ``at`` (an int64 array), from a :func:`_u32_view`."""
    assert np is not None
    return u32[at].astype(np.int64)


def _records(u32: Any, starts: Any, little: bool) -> dict[str, Any]:
    return {"sec": _u32(u32, starts, little), "frac": _u32(u32, starts + 4, little), "caplen": _u32(u32, starts + 8, little)}


class _Walker:
    """Record starts of a classic pcap, found many at a time over a window of candidates.

    Candidates are the offsets whose timestamp's top byte equals that of a known record (records
    of one capture are seldom 194 days apart) and whose header is sane; the chain is then
    followed from a known record as long as each record's end is a candidate. Only records
    proved to be on the chain are returned, so the candidates decide the speed, never the result.
    """

    def __init__(self, u8: Any, total: int, little: bool, second: int) -> None:
        self.u8, self.total, self.little, self.second = u8, total, little, second
        self.u32 = _u32_view(u8, little)
        self.lo = self.hi = -1
        self.top = -1

    def _window(self, pos: int, top: int) -> None:
        assert np is not None
        u8, total, little = self.u8, self.total, self.little
        hi_at = 3 if little else 0
        hi = min(total - 16, pos + _CHUNK)  # candidate starts in [pos, hi]
        cand = np.flatnonzero(u8[pos + hi_at : hi + hi_at + 1] == top).astype(np.int64) + pos
        caplen = _u32(self.u32, cand + 8, little)
        nxt = cand + 16 + caplen
        sane = (caplen <= MAX_CAPLEN) & (caplen <= _u32(self.u32, cand + 12, little)) & (nxt <= total)
        sane &= _u32(self.u32, cand + 4, little) < self.second  # else damage: the plain step says so
        self.cand, self.nxt = cand[sane], nxt[sane]
        n = len(self.cand)
        self.idx = np.searchsorted(self.cand, self.nxt)
        linked = self.cand[np.minimum(self.idx, max(n - 1, 0))] == self.nxt if n else np.zeros(0, dtype=bool)
        self.linked = linked
        # Record i is followed by candidate i + 1: the runs; anything else ends one.
        self.breaks = np.flatnonzero(~(linked & (self.idx == np.arange(1, n + 1))))
        self.lo, self.hi, self.top = pos, hi, top

    def run(self, pos: int) -> tuple[Any, int]:
        """Records from ``pos`` on that are proved to be on the chain, and the offset after them.

        Empty when ``pos`` needs a plain step (its header is not a candidate).
        """
        assert np is not None
        if self.total - pos < 16:
            return np.empty(0, dtype=np.int64), pos
        top = int(self.u8[pos + (3 if self.little else 0)])
        if not (self.lo <= pos <= self.hi and top == self.top):
            self._window(pos, top)
        cand = self.cand
        i = int(np.searchsorted(cand, pos))
        if i >= len(cand) or cand[i] != pos:
            return np.empty(0, dtype=np.int64), pos
        out: list[Any] = []
        while True:
            j = int(self.breaks[np.searchsorted(self.breaks, i)])  # the record ending this run
            out.append(cand[i : j + 1])
            if self.linked[j] and self.idx[j] > j + 1:
                i = int(self.idx[j])  # a false candidate lay between: go on from the real record
                continue
            return np.concatenate(out) if len(out) > 1 else out[0], int(self.nxt[j])


def _classify(u8: Any, starts: Any, caplen: Any, linktype: int) -> tuple[Any, Any]:
    """Per frame: IPv6 start and mobility packet length (-1 where none), column-wise."""
    assert np is not None
    n = len(starts)
    ip = np.full(n, -1, dtype=np.int64)
    end = starts + caplen

    def byte(at: Any, ok: Any) -> Any:
        return np.where(ok, u8.take(at, mode="clip").astype(np.int64), -1)

    if linktype == LINKTYPE_ETHERNET:
        p = starts + 12
        active = np.ones(n, dtype=bool)
        for _ in range(8):
            ok = active & (p + 2 <= end)
            et = byte(p, ok) << 8 | byte(p + 1, ok)
            found = ok & (et == ETHERTYPE_IPV6)
            ip[found] = p[found] + 2
            tag = ok & np.isin(et, _VLAN_TAGS)
            active = tag
            p = p + 4
            if not active.any():
                break
        else:  # absurdly many tags: the plain way
            for k in np.flatnonzero(active):
                s, c = int(starts[k]), int(caplen[k])
                found_at = ipv6_start(u8[s : s + c].tobytes(), 0, c, linktype)
                ip[k] = -1 if found_at < 0 else s + found_at
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV6, 12, 14):
        ok = caplen > 0
        ip = np.where(ok & (byte(starts, ok) >> 4 == 6), starts, -1)
    elif linktype == LINKTYPE_LINUX_SLL:
        ok = caplen >= 16
        ip = np.where(ok & ((byte(starts + 14, ok) << 8 | byte(starts + 15, ok)) == ETHERTYPE_IPV6), starts + 16, -1)
    elif linktype == LINKTYPE_LINUX_SLL2:
        ok = caplen >= 20
        ip = np.where(ok & ((byte(starts, ok) << 8 | byte(starts + 1, ok)) == ETHERTYPE_IPV6), starts + 20, -1)
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        ok = caplen >= 4
        be = byte(starts, ok) << 24 | byte(starts + 1, ok) << 16 | byte(starts + 2, ok) << 8 | byte(starts + 3, ok)
        le = byte(starts + 3, ok) << 24 | byte(starts + 2, ok) << 16 | byte(starts + 1, ok) << 8 | byte(starts, ok)
        fam = np.isin(be, _AF_INET6) | (np.isin(le, _AF_INET6) if linktype == LINKTYPE_NULL else False)
        ip = np.where(ok & fam, starts + 4, -1)
    # IPv6 and the next-header chain.
    has = ip >= 0
    avail = np.where(has, end - ip, 0)
    ok = has & (avail >= 40)
    ok &= byte(ip, ok) >> 4 == 6
    plen = byte(ip + 4, ok) << 8 | byte(ip + 5, ok)
    length = np.where(ok, np.minimum(avail, 40 + plen), -1)
    nh = byte(ip + 6, ok)
    pos = np.full(n, 40, dtype=np.int64)
    active = ok & np.isin(nh, _EXT_HEADERS)
    for _ in range(_MAX_EXT):
        if not active.any():
            break
        step = active & (pos + 2 <= length)
        dead = active & ~step
        nh = np.where(dead, -1, nh)
        new_nh = byte(ip + pos, step)
        hlen = byte(ip + pos + 1, step)
        nh = np.where(step, new_nh, nh)
        pos = np.where(step, pos + (hlen + 1) * 8, pos)
        active = step & np.isin(nh, _EXT_HEADERS)
    mobility = ok & (nh == IPPROTO_MH)
    return ip, np.where(mobility, length, -1)


# ---------------------------------------------------------------------------------------------
# Writing


#: The latest time a classic pcap record holds (its seconds field is 32 bits): 2106-02-07.
PCAP_MAX_TIME_US = 0xFFFFFFFF * 1_000_000 + 999_999


@dataclass
class PcapWriter:
    """Write a classic pcap (microsecond timestamps, little-endian) one packet at a time.

    A record's time is 0 to :data:`PCAP_MAX_TIME_US` µs since the epoch; a time outside (a
    pcapng can stamp a packet far later) is clamped to that range and counted in ``clamped``.
    """

    stream: BinaryIO
    linktype: int = LINKTYPE_RAW
    snaplen: int = 65535
    count: int = field(default=0, init=False)
    clamped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.stream.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, self.snaplen, self.linktype))

    def write(self, frame: bytes, time_us: int) -> None:
        """Append one frame captured at ``time_us`` microseconds since the epoch."""
        if not 0 <= time_us <= PCAP_MAX_TIME_US:
            time_us = min(max(time_us, 0), PCAP_MAX_TIME_US)
            self.clamped += 1
        sec, usec = divmod(time_us, 1_000_000)
        self.stream.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
        self.stream.write(frame)
        self.count += 1


def write_pcapng(stream: BinaryIO, frames: Iterable[tuple[bytes, int]], linktype: int = LINKTYPE_ETHERNET) -> None:
    """Write ``(frame, time_us)`` pairs (any iterable: written as they come) as a pcapng file:
    one section, one interface (µs)."""

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        total = len(body) + 12
        return struct.pack("<II", btype, total) + body + struct.pack("<I", total)

    stream.write(block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1)))
    stream.write(block(1, struct.pack("<HHI", linktype, 0, 0)))
    for frame, time_us in frames:
        stream.write(block(6, struct.pack("<IIIII", 0, time_us >> 32, time_us & 0xFFFFFFFF, len(frame), len(frame)) + frame))


# ---------------------------------------------------------------------------------------------
# What a batch's packets say (for display and Binding Acknowledgements)

#: Short names of the Mobility Header types (RFC 6275 §6.1).
MH_TYPE_NAMES = ("BRR", "HoTI", "CoTI", "HoT", "CoT", "BU", "BA", "BE")


@dataclass
class Fields:
    """Per packet of a batch: MH Type (-1: not captured) and, for Binding Updates, their fields.

    ``home`` is the Home Address option's address (else the source) and ``care_of`` the
    Alternate Care-of Address (else the source), 16 bytes each; ``seq``/``flags``/``units`` are
    the Sequence, flags word and Lifetime in 4-s units. Meaningful only for packets that the
    verifier found to be well-formed Binding Updates. Lists, or numpy arrays (``home`` and
    ``care_of`` then of shape (n, 16)) from :func:`fields_fast`.
    """

    mh_type: Any
    seq: Any
    flags: Any
    units: Any
    home: Any
    care_of: Any


def _find_option_plain(p: bytes, pos: int, end: int, want: int, want_len: int) -> int:
    """Offset of the first option ``want`` of data length ``want_len`` in p[pos:end], or -1."""
    while pos < end:
        t = p[pos]
        if t == 0:
            pos += 1
            continue
        if pos + 1 >= end:
            return -1
        n = p[pos + 1]
        if t == want and n == want_len and pos + 2 + n <= end:
            return pos
        pos += 2 + n
    return -1


def packet_fields(p: bytes) -> tuple[int, int, int, int, bytes, bytes]:
    """(MH Type, sequence, flags, lifetime units, home, care-of) of one packet, plain Python.

    For a Binding Acknowledgement: its sequence, its status (as flags), lifetime units, the
    type 2 Routing header's address (else the destination) as home and the destination as
    care-of.
    """
    length = len(p)
    nh, pos = p[6], 40
    hao = rh2 = -1
    for _ in range(_MAX_EXT):
        if nh not in _EXT_HEADERS or pos + 2 > length:
            break
        end = min(pos + (p[pos + 1] + 1) * 8, length)
        if nh == 60 and hao < 0:
            hao = _find_option_plain(p, pos + 2, end, 0xC9, 16)
        if nh == 43 and rh2 < 0 and pos + 24 <= length and p[pos + 2] == 2:
            rh2 = pos + 8
        nh, pos = p[pos], pos + (p[pos + 1] + 1) * 8
    source = p[8:24]
    home = source if hao < 0 else p[hao + 2 : hao + 18]
    if nh != IPPROTO_MH or pos + 3 > length:
        return -1, 0, 0, 0, home, source
    mh = pos
    mh_type = p[mh + 2]
    if mh_type == 6:
        dst = p[24:40]
        ba_home = dst if rh2 < 0 else p[rh2 : rh2 + 16]
        if mh + 12 > length:
            return mh_type, 0, 0, 0, ba_home, dst
        status, seq, units = p[mh + 6], p[mh + 8] << 8 | p[mh + 9], p[mh + 10] << 8 | p[mh + 11]
        return mh_type, seq, status, units, ba_home, dst
    if mh_type != 5 or mh + 12 > length:
        return mh_type, 0, 0, 0, home, source
    seq, flags, units = struct.unpack_from("!HHH", p, mh + 6)
    end = min(mh + (p[mh + 1] + 1) * 8, length)
    alt = _find_option_plain(p, mh + 12, end, 3, 16)
    care_of = source if alt < 0 else p[alt + 2 : alt + 18]
    return mh_type, seq, flags, units, home, care_of


def fields_plain(batch: Batch) -> Fields:
    """:class:`Fields` of every packet of ``batch``, plain Python (lists)."""
    rows = [packet_fields(batch.packet(i)) for i in range(len(batch))]
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), (), ()]
    return Fields(*(list(c) for c in cols))


def _find_option_fast(u8: Any, start: Any, end: Any, want: int, want_len: int) -> Any:
    """Column-wise :func:`_find_option_plain`: absolute offsets or -1."""
    assert np is not None
    found = np.full(len(start), -1, dtype=np.int64)
    idx = np.flatnonzero(start < end)
    pos = start[idx].copy()
    stop = end[idx]
    size = len(u8)
    while len(idx):
        t = u8[np.minimum(pos, size - 1)].astype(np.int64)
        pad1 = t == 0
        has_len = ~pad1 & (pos + 1 < stop)
        n = np.where(has_len, u8[np.minimum(pos + 1, size - 1)].astype(np.int64), 0)
        hit = has_len & (t == want) & (n == want_len) & (pos + 2 + n <= stop)
        found[idx[hit]] = pos[hit]
        pos = np.where(pad1, pos + 1, pos + 2 + n)
        alive = ~hit & (pad1 | has_len) & (pos < stop)
        idx, pos, stop = idx[alive], pos[alive], stop[alive]
    return found


def fields_fast(batch: Batch) -> Fields:
    """:class:`Fields` of every packet of ``batch``, column-wise (numpy arrays)."""
    assert np is not None
    u8 = np.frombuffer(batch.data, dtype=np.uint8)
    size = len(u8)
    offs = np.frombuffer(batch.offsets, dtype=np.uint64).astype(np.int64)
    start, end = offs[:-1], offs[1:]
    n = len(start)

    def byte(at: Any, ok: Any) -> Any:
        return np.where(ok, u8.take(at, mode="clip").astype(np.int64), 0) if size else at * 0

    nh = byte(start + 6, np.ones(n, dtype=bool))
    pos = start + 40
    hao = np.full(n, -1, dtype=np.int64)
    active = np.isin(nh, _EXT_HEADERS) & (pos + 2 <= end)
    for _ in range(_MAX_EXT):
        if not active.any():
            break
        hlen = (byte(pos + 1, active) + 1) * 8
        dest = active & (nh == 60) & (hao < 0)
        if dest.any():
            sel = np.flatnonzero(dest)
            hao[sel] = _find_option_fast(u8, pos[sel] + 2, np.minimum(pos[sel] + hlen[sel], end[sel]), 0xC9, 16)
        nh = np.where(active, byte(pos, active), nh)
        pos = np.where(active, pos + hlen, pos)
        active = active & np.isin(nh, _EXT_HEADERS) & (pos + 2 <= end)
    is_mh = (nh == IPPROTO_MH) & (pos + 3 <= end)
    mh_type = np.where(is_mh, byte(pos + 2, is_mh), -1)
    bu = is_mh & (mh_type == 5) & (pos + 12 <= end)
    seq = np.where(bu, byte(pos + 6, bu) << 8 | byte(pos + 7, bu), 0)
    flags = np.where(bu, byte(pos + 8, bu) << 8 | byte(pos + 9, bu), 0)
    units = np.where(bu, byte(pos + 10, bu) << 8 | byte(pos + 11, bu), 0)
    alt = np.full(n, -1, dtype=np.int64)
    if bu.any():
        sel = np.flatnonzero(bu)
        mh_end = np.minimum(pos[sel] + (byte(pos[sel] + 1, np.ones(len(sel), dtype=bool)) + 1) * 8, end[sel])
        alt[sel] = _find_option_fast(u8, pos[sel] + 12, mh_end, 3, 16)
    cols = np.arange(16, dtype=np.int64)
    source_at = start + 8
    home_at = np.where(hao >= 0, hao + 2, source_at)
    care_at = np.where(alt >= 0, alt + 2, source_at)
    home = u8[home_at[:, None] + cols] if n else np.zeros((0, 16), dtype=np.uint8)
    care_of = u8[care_at[:, None] + cols] if n else np.zeros((0, 16), dtype=np.uint8)
    for i in np.flatnonzero(mh_type == 6):  # Binding Acknowledgements (few): the plain way
        _, seq[i], flags[i], units[i], h, c = packet_fields(batch.packet(int(i)))
        home[i], care_of[i] = np.frombuffer(h, dtype=np.uint8), np.frombuffer(c, dtype=np.uint8)
    return Fields(mh_type, seq, flags, units, home, care_of)
