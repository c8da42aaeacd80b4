"""``kbmfast verify`` over captures: the run (chunks read, verified on a worker thread, their
lines written in order, stopping at a batch boundary), the verdicts the verifier does not give
(both directions, snap length), --acks-out, and the progress bar and summary.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import ipaddress
import json
import os
import shlex
import shutil
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from .. import _outputs, _types
from .._outputs import (
    EXIT_SIGPIPE,
    CliError,
    OutputFile,
    Stdout,
    os_error_text,
)
from .._types import BA_STATUS, FLAG_A, Result, Verdict
from . import _verify_rr as verify_rr
from ._verify_format import (
    _BA_FOR_VERDICT,
    _BA_VERDICTS,
    _VERDICT_NAMES,
    _WITH_FIELDS,
    HEADER,
    V_BA_BAD_AUTHENTICATOR,
    V_BA_BAD_CHECKSUM,
    V_BA_NO_AUTHORIZATION,
    V_BA_NOT_CONFIGURED,
    V_BA_UNMATCHED,
    V_BA_VALID,
    V_RR_REPLIED,
    V_TRUNCATED,
    WHY_ROUTING_HEADER,
    _Addresses,
    format_json,
    format_plain,
    malformed_reason,
)

if TYPE_CHECKING:
    from ..capture import Batch, CaptureReader, Chunk, Fields


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def _same_terminal(a: IO[str], b: IO[str]) -> bool:
    """Whether two streams are the same terminal."""
    try:
        if not (a.isatty() and b.isatty()):
            return False
        sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (sa.st_rdev, sa.st_ino) == (sb.st_rdev, sb.st_ino)


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal, and not when the
    lines go to that same terminal (the bar would cut into them); with ``quiet`` (no lines
    before the summary) the bar shows, and is cleared before the summary."""

    def __init__(self, stream: IO[str], lines_to: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream
        self.on = stream.isatty() and (quiet or lines_to is None or not _same_terminal(stream, lines_to))
        self.last = 0.0

    def show(self, name: str, reader: CaptureReader) -> None:
        now = time.monotonic()
        if not self.on or now - self.last < 0.1:
            return
        self.last = now
        share = reader.position / reader.size if reader.size else 1.0
        width = 30
        bar = "#" * int(share * width)
        self.stream.write(f"\r{os.path.basename(name)[:30]} [{bar:<{width}}] {share:4.0%} {reader.frames} frames")
        self.stream.flush()

    def clear(self) -> None:
        if self.on:
            self.stream.write("\r" + " " * shutil.get_terminal_size().columns + "\r")
            self.stream.flush()


class _Acks:
    """Binding Acknowledgements for --acks-out: Results rebuilt from the packets and the verdicts.

    A Result for status 135 needs the last accepted sequence as it was when its Binding Update was
    verified: the table's values for the batch's home addresses are read just before the batch is
    verified, then followed through the batch's acceptances in order.
    """

    def __init__(self, verifier: Any, stream: BinaryIO) -> None:
        from ..capture import PcapWriter

        self.verifier = verifier
        self.writer = PcapWriter(stream)

    def snapshot(self, fields: Fields) -> dict[bytes, int | None]:
        homes = {bytes(fields.home[i]) for i in range(len(fields.mh_type)) if int(fields.mh_type[i]) == 5}
        return {h: self.verifier.last_sequence(h) for h in homes}

    def write(self, batch: Batch, fields: Fields, verdicts: Sequence[int], last: dict[bytes, int | None]) -> None:
        for i, code in enumerate(verdicts):
            if code not in _BA_FOR_VERDICT:
                continue
            v = Verdict(code)
            home = bytes(fields.home[i])
            flags = int(fields.flags[i])
            seq = int(fields.seq[i])
            if v == Verdict.ACCEPTED:
                last[home] = seq
                if not flags & FLAG_A:
                    continue
            p = batch.packet(i)
            result = Result(
                verdict=v,
                home=ipaddress.IPv6Address(home),
                care_of=ipaddress.IPv6Address(bytes(fields.care_of[i])),
                correspondent=ipaddress.IPv6Address(p[24:40]),
                sequence=seq,
                lifetime=int(fields.units[i]) * 4,
                ack=bool(flags & FLAG_A),
                ba_status=BA_STATUS[v] if v != Verdict.ACCEPTED else 0,
                last_sequence=last.get(home) if v == Verdict.SEQUENCE_OUT_OF_WINDOW else None,
                source=ipaddress.IPv6Address(p[8:24]),
            )
            ack = self.verifier.acknowledge(result)
            if ack is not None:
                self.writer.write(ack, int(batch.times[i]))


class _Directions:
    """What the verifier does not judge: frames cut by the snap length (TRUNCATED), and the other
    direction of a capture. A Binding Acknowledgement is checked as the mobile node would check
    it: the authenticator with its peer's key over the care-of address (from the Binding Update
    it answers, else its destination, else, for a de-registration, the home address: the type 2
    Routing header's address), the correspondent (its source) and its Mobility Header; its
    sequence is matched to a Binding Update to that correspondent seen before it (or at the same
    time) in the capture, once the capture has shown an acknowledgement. Other messages that the
    verifier calls MALFORMED only for their type 2 Routing header are NOT_BINDING_UPDATE."""

    HISTORY = 16  # Binding Updates remembered per (home, correspondent)

    def __init__(self, keys: Any, backend: Any) -> None:
        self.keys, self.backend = keys, backend
        self.history: dict[tuple[bytes, bytes], list[tuple[int, int, bytes, bool]]] = {}
        self.on = False  # an acknowledgement was seen: Binding Updates are remembered

    def apply(self, data: Any, offsets: Any, times: Any, n: int, verdicts: Any, cut: Any, look: Any = None) -> None:
        """Change ``verdicts`` (a writable uint8 sequence) of packets 0..n-1 where they call for it.

        ``look``: the packets to examine, as kbm_verdict_marks lists them (it has applied ``cut``
        already); None: every MALFORMED and NOT_BINDING_UPDATE packet, ``cut`` applied here."""
        import kbmfast

        from ..capture import packet_fields

        if look is None:
            if cut is not None:
                for i in range(n):
                    if cut[i]:
                        verdicts[i] = V_TRUNCATED
            raw = bytes(memoryview(verdicts)[:n])
            look = [i for code in (Verdict.MALFORMED, Verdict.NOT_BINDING_UPDATE) for i in _positions(raw, code)]
        view = memoryview(data)
        acks = []
        for i in look:
            code = verdicts[i]
            p = bytes(view[offsets[i] : offsets[i + 1]])
            try:
                packet = kbmfast.parse_packet(p)
            except _types.MalformedPacket:
                packet = None
            if packet is not None and isinstance(packet.message, _types.BindingAck):
                acks.append((i, p, packet))
            elif packet is not None and code == Verdict.MALFORMED and not isinstance(packet.message, _types.BindingUpdate):
                if malformed_reason(p)[0] == WHY_ROUTING_HEADER:
                    verdicts[i] = Verdict.NOT_BINDING_UPDATE
        self.on = self.on or bool(acks)
        if not self.on:
            return
        raw = bytes(memoryview(verdicts)[:n])  # (MALFORMED and NOT_BINDING_UPDATE alike: not shown)
        # In time order, a Binding Update before an acknowledgement of the same time (a merged
        # capture may put the answer first).
        events: list[tuple[int, int, int, bytes, Any]] = [
            (int(times[i]), 0, i, b"", None) for i in range(n) if raw[i] in _WITH_FIELDS and raw[i] < len(Verdict)
        ]
        events += [(int(times[i]), 1, i, p, packet) for i, p, packet in acks]
        events.sort(key=lambda e: e[:3])
        for when, kind, i, p, packet in events:
            if kind:
                verdicts[i] = self.check(p, packet, when)
                continue
            p = bytes(view[offsets[i] : offsets[i + 1]])
            _, seq, _, units, home, care_of = packet_fields(p)
            seen = self.history.setdefault((bytes(home), p[24:40]), [])
            seen.append((seq, when, bytes(home) if units == 0 else bytes(care_of), units == 0))
            del seen[: -self.HISTORY]

    def check(self, p: bytes, packet: Any, when: int) -> int:
        """The verdict on one Binding Acknowledgement."""
        import hmac

        from .._util import wipe
        from ..reference.verifier import current_kbm

        msg = packet.message
        if not packet.checksum_valid:
            return V_BA_BAD_CHECKSUM
        cn, dst = p[8:24], p[24:40]
        home = packet.routing_address.packed if packet.routing_address is not None else dst
        seen = [h for h in self.history.get((home, cn), []) if h[1] <= when]
        if msg.status == 135:  # it carries the last accepted sequence: it answers the latest
            match = seen[-1] if seen else None
        else:
            match = next((h for h in reversed(seen) if h[0] == msg.sequence), None)
        if self.keys.peer(home) is None:
            return V_BA_NOT_CONFIGURED
        bad = next((o for o in msg.options if isinstance(o, _types.BindingAuthorizationData)), None)
        if bad is None:
            return V_BA_NO_AUTHORIZATION
        tries = ([(match[2], match[3])] if match else []) + [(dst, False), (home, True)]
        for care_of, dereg in tries:
            found = current_kbm(self.keys, home, care_of, dereg)
            if found is None:
                return V_BA_NOT_CONFIGURED
            kbm = found[1]
            try:
                expected = self.backend.authenticator(bytes(kbm), care_of, cn, p[packet.mh_offset :])
            finally:
                wipe(kbm)
            if hmac.compare_digest(expected, bad.authenticator):
                return V_BA_VALID if match is not None or not seen else V_BA_UNMATCHED
        return V_BA_BAD_AUTHENTICATOR


def _count(verdicts: Any, n: int) -> list[int]:
    raw = bytes(memoryview(verdicts)[:n])
    return [raw.count(code) for code in range(len(_VERDICT_NAMES))]


def _positions(raw: bytes, code: int) -> Iterator[int]:
    """The indexes of ``code`` in ``raw``."""
    i = raw.find(code)
    while i >= 0:
        yield i
        i = raw.find(code, i + 1)


class _CAcks(_Acks):
    """--acks-out in C (csrc/capture.c, kbm_write_acks): the same records as :class:`_Acks`.

    The peers' keys are not copied: the table points into the KeyTable's own buffers (which the
    table keeps alive, and which KeyTable wipes). The last accepted sequence of each peer is read
    from the verifier once, then followed by kbm_write_acks through every acceptance it walks.
    """

    def __init__(self, verifier: Any, stream: BinaryIO, keys: Any) -> None:
        from .._keys import KIND_KCN
        from .._native_edge import ffi, lib

        super().__init__(verifier, stream)
        self.ffi, self.lib = ffi, lib
        peers = keys.peers()
        self.slots = 1 << max(4, (2 * len(peers)).bit_length())
        self.table = ffi.new("kbm_ack_peer[]", self.slots)
        self.hold: list[Any] = []  # the key and nonce buffers the table points into
        for peer in peers:
            slot = lib.kbm_ack_slot(self.table, self.slots, peer.home)
            last = verifier.last_sequence(peer.home)
            self.table[slot].last = -1 if last is None else last
            entry = self.table[slot].peer
            ffi.memmove(entry.home, peer.home, 16)
            entry.kind = lib.KBM_KIND_KCN if peer.kind == KIND_KCN else lib.KBM_KIND_KBM
            for name, value in (("key", peer.key), ("home_nonce", peer.home_nonce), ("care_of_nonce", peer.care_of_nonce)):
                view = ffi.from_buffer("uint8_t[]", value) if len(value) else ffi.NULL
                self.hold.append(view)
                setattr(entry, name, view)
                setattr(entry, name + "_len", len(value))
        limit = getattr(verifier, "max_lifetime", None)
        self.max_lifetime = 0xFFFFFFFF if limit is None else limit
        self.out = bytearray(0)

    def snapshot(self, fields: Fields) -> dict[bytes, int | None]:
        return {}

    def write(self, batch: Batch, fields: Fields, verdicts: Sequence[int], last: dict[bytes, int | None]) -> None:
        self.write_packets(batch.data, batch.offsets, batch.times, len(batch), verdicts)

    def write_packets(self, data: Any, offsets: Any, times: Any, n: int, verdicts: Any) -> None:
        """Write the acknowledgements for packets 0..n-1 (a Batch's or a Chunk's buffers)."""
        self.out, records = self.build(data, offsets, times, n, verdicts, self.out)
        self.put(records)

    def put(self, records: tuple[memoryview, int, int]) -> None:
        """Write records that :meth:`build` made."""
        self.writer.stream.write(records[0])
        self.writer.count += records[1]
        self.writer.clamped += records[2]

    def build(
        self, data: Any, offsets: Any, times: Any, n: int, verdicts: Any, out: bytearray
    ) -> tuple[bytearray, tuple[memoryview, int, int]]:
        """The pcap records of packets 0..n-1 in ``out`` (grown as needed): (out, (records,
        count, clamped)). Calls must come in capture order (the last accepted sequences)."""
        ffi, lib, fb = self.ffi, self.lib, self.ffi.from_buffer
        if len(out) < n * lib.KBM_ACK_RECORD_MAX:
            out = bytearray(n * lib.KBM_ACK_RECORD_MAX)
        written, count, clamped = ffi.new("size_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *")
        done = lib.kbm_write_acks(
            fb("uint8_t[]", data) if len(data) else ffi.new("uint8_t[]", 1),
            len(data),
            fb("uint64_t[]", offsets),
            fb("int64_t[]", times),
            fb("uint8_t[]", verdicts),
            n,
            self.table,
            self.slots,
            self.max_lifetime,
            fb("uint8_t[]", out),
            len(out),
            written,
            count,
            clamped,
        )
        if done < n:  # pragma: no cover - the buffer holds n records; offsets come from the walker
            raise AssertionError("kbm_write_acks stopped early")
        return out, (memoryview(out)[: written[0]], count[0], clamped[0])

    def close(self) -> None:
        """Drop the table (it holds pointers to the keys, not copies)."""
        self.ffi.memmove(self.table, bytes(self.ffi.sizeof(self.table)), self.ffi.sizeof(self.table))
        self.hold.clear()


class _Job:
    """One batch's work on the worker thread, in batch order: its fields, the sequence table as
    the batch finds it (for --acks-out), its verdicts, their count and the output text."""

    def __init__(self, verifier: Any, acks: _Acks | None, directions: _Directions, as_json: bool, quiet: bool, np: Any) -> None:
        self.verifier, self.acks, self.as_json, self.quiet, self.np = verifier, acks, as_json, quiet, np
        self.directions = directions
        self.addr = _Addresses()
        self.c_lines: _CLines | None = None
        self.rr: Any = None  # --rr: kbmfast.cli._verify_rr.Replay judges the batch instead

    def __call__(self, batch: Batch, path: str) -> tuple[Fields, Any, dict[bytes, int | None], bytes, list[int]]:
        from ..capture import Fields, fields_fast, fields_plain

        np = self.np
        python_acks = self.acks is not None and not isinstance(self.acks, _CAcks)
        if not python_acks and (self.quiet or self.c_lines is not None):  # nothing needs the fields
            fields = Fields([], [], [], [], [], [])
        else:
            fields = fields_fast(batch) if np is not None else fields_plain(batch)
        last = self.acks.snapshot(fields) if self.acks is not None else {}
        verdicts = self.rr(batch) if self.rr is not None else self.verifier.verify_buffer(batch.data, batch.offsets)
        self.directions.apply(batch.data, batch.offsets, batch.times, len(batch), verdicts, batch.cut)
        counts = _count(verdicts, len(batch))
        if self.quiet:
            text = b""
        elif self.c_lines is not None:
            self.c_lines.name = json.dumps(path).encode() if self.as_json else None
            text = bytes(
                self.c_lines.lines(batch.data, batch.offsets, batch.frames, batch.times, verdicts, len(batch), bytearray())
            )
        elif self.as_json:
            text = format_json(batch, fields, verdicts, self.addr, path).encode()
        else:
            text = format_plain(batch, fields, verdicts, self.addr).encode()
        return fields, verdicts, last, text, counts


class _CLines:
    """Text lines (or --quiet) the C way. The worker thread runs :meth:`verify` (verify_buffer,
    then the verdicts' bookkeeping in C: csrc/format.c, kbm_verdict_marks and
    kbm_verdict_counts) on chunk ``k`` while the main thread walks chunk ``k + 1`` and runs
    :meth:`write` on chunk ``k - 1``: its lines formatted in C (csrc/format.c,
    kbm_format_lines: byte for byte :func:`format_plain`) piece by piece into one buffer that
    stays in the cache, each piece written at once. Every C call releases the GIL, so the two
    threads keep two cores busy."""

    SLOTS = 1 << 16  # address texts cached (peers repeat)
    PIECE = 1 << 18  # bytes of lines formatted per call (then written)

    def __init__(self, verifier: Any, quiet: bool, directions: _Directions) -> None:
        from .._native_edge import ffi

        self.verifier, self.quiet, self.ffi, self.directions = verifier, quiet, ffi, directions
        self.acks: _CAcks | None = None
        self.name: bytes | None = None  # --json: the capture's name as a JSON string
        # the slots, each one 64-byte cache line (the table, and the buffer it lies in)
        self.cache: Any = None
        self._cache_buffer: Any = None
        if not quiet:
            self.cache, self._cache_buffer = _aligned_slots(ffi, self.SLOTS)
        self.dotted = int(str(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4")
        self.piece = bytearray(0)
        self.look = array("I")

    def verify(self, chunk: Chunk) -> tuple[Any, list[int], Any]:
        """The chunk's verdicts, their count per verdict and (--acks-out) its acknowledgements,
        built here on the worker thread, in chunk order, into the chunk's own buffer."""
        from .._native_edge import lib

        ffi, fb, n = self.ffi, self.ffi.from_buffer, chunk.n
        verdicts = self.verifier.verify_buffer(chunk.buffer(), chunk.offsets_view())
        if len(self.look) < n:
            self.look = array("I", bytes(4 * n))
        data = fb("uint8_t[]", chunk.data) if len(chunk.data) else ffi.new("uint8_t[]", 1)
        c_verdicts = fb("uint8_t[]", verdicts, require_writable=True) if n else ffi.new("uint8_t[]", 1)
        cut = fb("uint8_t[]", chunk.cut) if chunk.ncut else ffi.NULL
        k = lib.kbm_verdict_marks(data, len(chunk.data), fb("uint64_t[]", chunk.offsets), c_verdicts, cut, n,
                                  fb("uint32_t[]", self.look))  # fmt: skip
        self.directions.apply(chunk.data, chunk.offsets, chunk.times, n, verdicts, None, self.look[:k])
        counts = ffi.new("uint64_t[]", len(_VERDICT_NAMES))
        lib.kbm_verdict_counts(c_verdicts, n, counts)
        records = None
        if self.acks is not None:
            chunk.acks, records = self.acks.build(chunk.data, chunk.offsets, chunk.times, n, verdicts, chunk.acks)
        return verdicts, list(counts), records

    def write(self, chunk: Chunk, verdicts: Any, out: Stdout) -> None:
        """Write the chunk's text lines (nothing with --quiet), piece by piece."""
        n = chunk.n
        if self.quiet or n == 0:
            return
        if len(self.piece) < self.PIECE:
            self.piece = bytearray(self.PIECE)
        for text in self.pieces(chunk.data, chunk.offsets, chunk.frames, chunk.times, verdicts, n, self.piece):
            if not out.write(text):
                return

    def lines(self, data: Any, offsets: Any, frames: Any, times: Any, verdicts: Any, n: int, out: bytearray) -> bytes:
        """The text lines of packets 0..n-1, formatted in pieces in ``out`` (grown as needed)."""
        if len(out) < self.PIECE:
            out = bytearray(self.PIECE)
        return b"".join(bytes(t) for t in self.pieces(data, offsets, frames, times, verdicts, n, out))

    def pieces(
        self, data: Any, offsets: Any, frames: Any, times: Any, verdicts: Any, n: int, out: bytearray
    ) -> Iterator[memoryview | bytes]:
        """The text lines of packets 0..n-1, as many at a time as ``out`` holds: each piece is a
        view of ``out``, valid until the next one is asked for."""
        from .._native_edge import lib

        ffi, fb = self.ffi, self.ffi.from_buffer
        name = self.name
        row = lib.KBM_LINE_MAX if name is None else lib.KBM_JSON_MAX + len(name)
        if len(out) < row:
            out = bytearray(row)
        written = ffi.new("size_t *")
        c_data = fb("uint8_t[]", data) if len(data) else ffi.new("uint8_t[]", 1)
        c_offsets, c_frames, c_times = fb("uint64_t[]", offsets), fb("uint64_t[]", frames), fb("int64_t[]", times)
        c_verdicts, c_out = fb("uint8_t[]", verdicts), fb("char[]", out)
        view = memoryview(out)
        done = 0
        while done < n:
            args: tuple[Any, ...] = (c_data, len(data), c_offsets + done, c_frames + done, c_times + done)
            args += (c_verdicts + done, n - done, self.cache, self.SLOTS, self.dotted)
            if name is None:
                k = lib.kbm_format_lines(*args, c_out, len(out), written)
            else:
                k = lib.kbm_format_json(*args, name, len(name), c_out, len(out), written)
            if written[0]:
                yield view[: written[0]]
            done += k
            if k == 0:  # pragma: no cover - only for values C does not format (none today)
                yield self._python_lines(data, offsets, frames, times, verdicts, done, n)
                return

    def _python_lines(self, data: Any, offsets: Any, frames: Any, times: Any, verdicts: Any, done: int, n: int) -> bytes:
        """Packets done..n-1 through the Python formatters."""
        from ..capture import Batch as _Batch
        from ..capture import fields_plain

        rest = _Batch(bytes(data), array("Q", offsets[done : n + 1]), array("Q", frames[done:n]), array("q", times[done:n]))
        rows = list(verdicts)[done:n]
        if self.name is None:
            return format_plain(rest, fields_plain(rest), rows, _Addresses()).encode()
        return format_json(rest, fields_plain(rest), rows, _Addresses(), json.loads(self.name)).encode()


def _aligned_slots(ffi: Any, slots: int) -> tuple[Any, Any]:
    """A zeroed kbm_addr_slot table whose slots each fill one 64-byte cache line, and the
    buffer it lies in (keep it as long as the table)."""
    raw = ffi.new("char[]", slots * ffi.sizeof("kbm_addr_slot") + 64)
    skip = -int(ffi.cast("uintptr_t", raw)) % 64
    return ffi.cast("kbm_addr_slot *", raw + skip), raw


def _call_job(work: _Job, path: str, batch: Batch) -> Any:
    return work(batch, path)


def _skip(item: Any, skip: int) -> Any:
    """``item`` (a Chunk, changed in place, or a Batch) without the packets of frames up to
    ``skip``; None when no packet is left."""
    from ..capture import Batch

    if isinstance(item, Batch):
        n = len(item)
        if n == 0 or item.frames[n - 1] <= skip:
            return None
        if item.frames[0] > skip:
            return item
        k = bisect.bisect_right(item.frames, skip)
        start = item.offsets[k]
        offsets = array("Q", [o - start for o in item.offsets[k:]])
        return Batch(item.data[start:], offsets, item.frames[k:], item.times[k:])
    n = item.n
    if n == 0 or item.frames[n - 1] <= skip:
        return None
    if item.frames[0] > skip:
        return item
    k = bisect.bisect_right(item.frames, skip, 0, n)
    start, end = item.offsets[k], item.offsets[n]
    item.data[: end - start] = item.data[start:end]
    item.offsets[: n - k + 1] = array("Q", [o - start for o in item.offsets[k : n + 1]])
    item.frames[: n - k] = item.frames[k:n]
    item.times[: n - k] = item.times[k:n]
    item.n = n - k
    return item


def _only(item: Any, cn: bytes) -> Any:
    """``item`` (a Chunk, changed in place, or a Batch) with only the packets to or from the
    correspondent ``cn``; None when none is left."""
    from ..capture import Batch

    chunk = not isinstance(item, Batch)
    n = item.n if chunk else len(item)
    data = memoryview(item.data)
    offs = item.offsets
    keep = [i for i in range(n) if data[offs[i] + 24 : offs[i] + 40] == cn or data[offs[i] + 8 : offs[i] + 24] == cn]
    if len(keep) == n:
        return item
    if not keep:
        return None
    packed = b"".join(data[offs[i] : offs[i + 1]] for i in keep)
    offsets = array("Q", [0])
    for i in keep:
        offsets.append(offsets[-1] + offs[i + 1] - offs[i])
    frames = array("Q", [item.frames[i] for i in keep])
    times = array("q", [item.times[i] for i in keep])
    cut = bytes(item.cut[i] for i in keep) if (item.ncut if chunk else item.cut) else None
    data.release()
    if not chunk:
        return Batch(packed, offsets, frames, times, cut)
    m = len(keep)
    item.data[: len(packed)] = packed
    item.offsets[: m + 1] = offsets
    item.frames[:m], item.times[:m] = frames, times
    if cut is not None:
        item.cut[:m] = cut
        item.ncut = sum(cut)
    item.n = m
    return item


def _last_frame(item: Any) -> int:
    n = item.n if hasattr(item, "n") else len(item)
    return int(item.frames[n - 1])


def _open_verifier(backend: Any, keys: Any, state: str | None, **rr: Any) -> Any:
    """The Verifier, or CliError (status 2) for a state file that cannot be used or a bad
    KBMFAST_KERNEL."""
    if backend.backend == "c":
        from ..fast import use_kernel

        try:
            use_kernel()
        except ValueError as e:
            raise CliError(str(e)) from None
    try:
        return backend.Verifier(keys, state=state, **rr)
    except OSError as e:
        raise CliError(f"state file {os_error_text(e, state)}") from None
    except ValueError as e:  # StateFileError names the file itself
        text = str(e)
        raise CliError(text if text.startswith("state file") else f"state file {state}: {text}") from None


class _VerifyRun:
    """One ``kbmfast verify`` run over its captures, in batches, stopping at a batch boundary
    on SIGINT/SIGTERM or when standard output is closed: every batch handed to the verifier
    (whose state it changes) then has its lines written and its acknowledgements too."""

    def __init__(
        self, args: argparse.Namespace, verifier: Any, acks_file: OutputFile | None, keys: Any, backend: Any, replay: Any = None
    ) -> None:
        from ..capture import HAVE_C
        from ..capture import np as _np

        self.args, self.verifier, self.np = args, verifier, _np
        self.out = Stdout()
        self.counts = [0] * len(_VERDICT_NAMES)
        self.totals = {"frames": 0, "other": 0, "acks": 0}
        self.status = 0
        self.progress = _Progress(sys.stderr, sys.stdout, args.quiet)
        self.addr = _Addresses()
        self.directions = _Directions(keys, backend)
        self.acks: Any = None
        if acks_file is not None and replay is not None:  # --rr: packet by packet (kbmfast.cli._verify_rr)
            self.acks = verify_rr.Acks(replay, acks_file.stream)
        elif acks_file is not None:
            self.acks = _CAcks(verifier, acks_file.stream, keys) if HAVE_C else _Acks(verifier, acks_file.stream)
        self.work = _Job(verifier, self.acks, self.directions, args.json, args.quiet, _np)
        self.work.rr = replay
        c_lines = _CLines(verifier, args.quiet, self.directions) if HAVE_C and replay is None else None
        self.work.c_lines = c_lines if not args.quiet else None
        self.lines = c_lines if self.acks is None or isinstance(self.acks, _CAcks) else None
        if self.lines is not None and isinstance(self.acks, _CAcks):
            self.lines.acks = self.acks
        self.snaplen: list[tuple[str, int]] = []  # (capture, frames cut by its snap length)
        self.correspondent = ipaddress.IPv6Address(args.correspondent).packed if args.correspondent else None
        self.left: int | None = args.count  # -c: frames still to verify
        self.line_buffered = bool(args.line_buffered) or _isatty(sys.stdout)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbmfast-verify")
        self.stopped_at: tuple[int, int] | None = None  # (capture index, frames of it done)
        self.shard = _shard_filter(args)

    def stopping(self) -> bool:
        """A signal arrived or standard output was closed."""
        return _outputs.current.signum is not None or self.out.closed

    def all(self, captures: list[str]) -> None:
        """Verify every capture in turn (until a stop)."""
        for index, path in enumerate(captures):
            skip = self.args.skip if index == 0 else 0
            if self.stopping():
                self.stopped_at = (index, skip)
                return
            if self.left is not None and self.left <= 0:
                return  # -c COUNT frames verified
            done = self.one(path, skip)
            if done is not None:
                self.stopped_at = (index, done)
                return

    def emit_lines(self, job: tuple[Chunk, Future[Any]]) -> None:
        """Count and write a C-path chunk's lines (and acknowledgements)."""
        assert self.lines is not None
        verdicts, batch_counts, records = job[1].result()
        if not self.out.closed:
            self.lines.write(job[0], verdicts, self.out)
        for code, k in enumerate(batch_counts):
            self.counts[code] += k
        if isinstance(self.acks, _CAcks):
            self.acks.put(records)
            self.totals["acks"] += records[1]

    def emit(self, job: tuple[Batch, Future[Any]]) -> None:
        """Count and write a batch's lines (or JSON) and its acknowledgements."""
        batch, future = job
        fields, verdicts, last, text, batch_counts = future.result()
        for code, k in enumerate(batch_counts):
            self.counts[code] += k
        self.out.write(text)
        if self.acks is not None:
            before = self.acks.writer.count
            self.acks.write(batch, fields, verdicts, last)
            self.totals["acks"] += self.acks.writer.count - before

    def one(self, path: str, skip: int) -> int | None:
        """Verify one capture; None when read to its end (or unreadable), else the frames of it
        done (skipped or verified) when stopped."""
        from ..capture import CaptureError, CaptureReader

        try:
            reader = CaptureReader(path)
        except (OSError, CaptureError) as e:
            message = str(e) if isinstance(e, CaptureError) else os_error_text(e, path)
            print(f"kbmfast verify: {message}", file=sys.stderr)
            self.status = 1
            return None
        mobility_before = sum(self.counts)
        if self.left is not None:
            reader.max_frames = skip + self.left
        with reader:
            if self.lines is not None and self.args.json:
                self.lines.name = json.dumps(path).encode()
            if not self.args.json and not self.args.quiet:
                self.out.write(f"# {path}\n{HEADER}\n")
                if self.line_buffered:
                    self.out.flush()
            # A stream's lines go out as its packets arrive: each batch is finished at once.
            at_once = reader.streaming
            lines = self.lines
            # The C path (walk, gather, verify, format in C) when it applies, else batches.
            batch = self.args.batch
            items: Iterator[Any] = reader.chunks(batch, sets=2) if lines is not None else reader.batches(batch)
            job: Any = lines.verify if lines is not None else functools.partial(_call_job, self.work, path)
            finish: Any = self.emit_lines if lines is not None else self.emit
            pending: tuple[Any, Future[Any]] | None = None
            done = skip
            stopped = False
            try:
                for item in items:
                    if self.stopping():
                        stopped = True
                        break
                    if skip:
                        item = _skip(item, skip)
                        if item is None:
                            continue
                    if self.correspondent is not None:
                        item = _only(item, self.correspondent)
                        if item is None:
                            continue
                    if self.shard is not None:
                        item = self.shard(item)
                        if item is None:
                            continue
                    future = self.pool.submit(job, item)
                    if pending is not None:
                        finish(pending)
                    pending = (item, future)
                    done = _last_frame(item)
                    if at_once:
                        finish(pending)
                        pending = None
                    if self.line_buffered:
                        self.out.flush()
                    self.progress.show(path, reader)
                if pending is not None:
                    finish(pending)
            finally:
                if hasattr(items, "close"):
                    items.close()
            if not stopped:
                done = max(done, reader.frames)
            frames = max(0, done - skip)
            if self.shard is not None:
                frames, self.shard.kept, self.shard.dropped = self.shard.frames(frames), 0, 0
            if self.left is not None:
                self.left -= frames
            self.totals["frames"] += frames
            self.totals["other"] += frames - (sum(self.counts) - mobility_before)
            self.progress.clear()
            if reader.cut:
                self.snaplen.append((path, reader.cut))
            damage = reader.error
            if damage is not None and not stopped:
                print(
                    f"kbmfast verify: {damage}; the {damage.frame - 1 if damage.frame else 0} frames before it were verified",
                    file=sys.stderr,
                )
                self.status = 1
        return done if stopped else None

    def close(self) -> None:
        """Wait for the worker; flush and close the verifier (its state)."""
        self.pool.shutdown()
        if isinstance(self.acks, _CAcks):
            self.acks.close()
        self.verifier.close()

    def finish(self, captures: list[str]) -> int:
        """The summary (stdout) and, after a stop, the line that says how to resume (stderr)."""
        interrupts = _outputs.current
        signum = interrupts.signum
        resume = None
        if self.stopped_at is not None or signum is not None:
            interrupts.handled = True
            index, done = self.stopped_at if self.stopped_at is not None else (len(captures), 0)
            resume = {"capture": captures[index] if index < len(captures) else None, "skip": done}
            why = f"interrupted by {interrupts.name}" if signum is not None else "standard output closed"
            if index < len(captures):
                where = f"after {done} frames of {captures[index]}" + (f" and all of {index} earlier" if index else "")
                again = " ".join(shlex.quote(c) for c in captures[index:])
                skip = (f" --skip {done}" if done else "") + (f" --shard {self.args.shard}" if self.shard is not None else "")
                hint = f"to resume: kbmfast verify {again}{skip} with the same --keys and --state" + (
                    " and a new --acks-out" if self.acks is not None else ""
                )
            else:
                where, hint = "after the last frame", "nothing is left to verify"
            print(
                f"kbmfast verify: {why} {where}; its lines, acknowledgements and state all end there; {hint}",
                file=sys.stderr,
            )
        for path, cut in self.snaplen:
            print(
                f"kbmfast verify: {path}: {cut} frames were cut short by the capture's snap length and are "
                "reported as TRUNCATED, not verified: capture with a larger snap length (tcpdump -s 0, "
                "tshark/dumpcap -s 0)",
                file=sys.stderr,
            )
        if not self.out.closed:
            _summary(self.out, self.counts, self.totals, self.args, self.acks is not None, resume)
            self.out.flush()
        if self.out.closed:
            return EXIT_SIGPIPE
        return interrupts.status if signum is not None else self.status


def _shard_filter(args: argparse.Namespace) -> Any:
    """The --shard filter, or None."""
    from .._shard import ShardFilter, parse_shard

    if getattr(args, "shard", None) is None:
        return None
    try:
        return ShardFilter(parse_shard(args.shard))
    except ValueError as e:
        raise CliError(str(e)) from None


def _summary(
    out: Stdout, counts: list[int], totals: dict[str, int], args: argparse.Namespace, with_acks: bool, resume: Any
) -> None:
    mobility = sum(counts)
    acks = {_VERDICT_NAMES[v]: counts[v] for v in _BA_VERDICTS}
    if args.json:
        doc: dict[str, Any] = {
            "verdicts": {v.name: counts[v] for v in Verdict},
            "acknowledgements": acks,
            "truncated": counts[V_TRUNCATED],
            "mobility_packets": mobility,
            "other_frames": totals["other"],
            "frames": totals["frames"],
        }
        if getattr(args, "rr", False):
            doc["rr_replied"] = counts[V_RR_REPLIED]
        if with_acks:
            doc["acks_written"] = totals["acks"]
        if resume is not None:
            doc["interrupted"] = resume
        out.write(json.dumps({"summary": doc}) + "\n")
        return
    lines = [] if args.quiet else [""]
    lines.append(f"{'verdict':<24}{'packets':>10}")
    lines += [f"{v.name:<24}{counts[v]:>10}" for v in Verdict]
    if counts[V_TRUNCATED]:
        lines.append(f"{'TRUNCATED (snap length)':<24}{counts[V_TRUNCATED]:>10}")
    if getattr(args, "rr", False):
        lines.append(f"{'RR_REPLIED (HoTI, CoTI)':<24}{counts[V_RR_REPLIED]:>10}")
    if any(acks.values()):
        lines.append(f"{'acknowledgement verdict':<24}{'packets':>10}")
        lines += [f"{name:<24}{k:>10}" for name, k in acks.items()]
    lines.append(f"{'mobility packets':<24}{mobility:>10}")
    lines.append(f"{'other frames (skipped)':<24}{totals['other']:>10}")
    lines.append(f"{'frames':<24}{totals['frames']:>10}")
    if with_acks:
        lines.append(f"{'acknowledgements written':<24}{totals['acks']:>10}")
    out.write("\n".join(lines) + "\n")
