"""The capture tools of the ``kbmfast`` command: ``verify``, ``gen`` and ``keys generate``.

``kbmfast verify`` reads captures (kbmfast.capture), verifies their Binding Updates in batches
with ``Verifier.verify_buffer`` on a worker thread (the C core releases the GIL, so the next batch
is read and the previous one printed meanwhile), prints one line per mobility packet and a summary
by verdict, and can write the Binding Acknowledgements a correspondent node would send.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from . import _outputs
from ._outputs import (
    EXIT_SIGPIPE,
    CliError,
    Interrupted,
    OutputFile,
    Stdout,
    check_distinct,
    check_stdout_distinct,
    os_error_text,
    output_files,
    refuse_existing,
)
from ._types import BA_STATUS, FLAG_A, Result, Verdict

if TYPE_CHECKING:
    from .capture import Batch, CaptureReader, Chunk, Fields

# The capture module (and numpy, when installed) is imported when a command runs, not for --help.
MH_TYPE_NAMES = ("BRR", "HoTI", "CoTI", "HoT", "CoT", "BU", "BA", "BE")

Subparsers = argparse._SubParsersAction

#: The sample capture and key file shipped in kbmfast/samples (made by ``kbmfast gen``).
SAMPLE_CAPTURE = "sample.pcap"
SAMPLE_KEYS = "sample-keys.toml"
SAMPLE_GEN = {"peers": 12, "updates": 300, "seed": 4449}

_VERDICT_NAMES = [v.name for v in Verdict]
_BA_FOR_VERDICT = {int(v): s for v, s in BA_STATUS.items()}
#: Verdicts whose Result carries the Binding Update's fields (see kbmfast.reference.verifier).
_WITH_FIELDS = {int(v) for v in Verdict} - {int(Verdict.MALFORMED), int(Verdict.BAD_CHECKSUM), int(Verdict.NOT_BINDING_UPDATE)}

# ---------------------------------------------------------------------------------------------
# Text lines: one format, written by a plain formatter and a column-wise (numpy) one.

_W_FRAME, _W_TIME, _W_TYPE, _W_ADDR, _W_SEQ, _W_VERDICT, _W_BA = 8, 17, 5, 39, 5, 22, 3
HEADER = (
    f"{'frame':>{_W_FRAME}}  {'time':>{_W_TIME}}  {'type':<{_W_TYPE}}  {'home':<{_W_ADDR}}  {'care-of':<{_W_ADDR}}  "
    f"{'seq':>{_W_SEQ}}  {'verdict':<{_W_VERDICT}}  {'BA':>{_W_BA}}"
)


def _type_name(t: int) -> str:
    return "?" if t < 0 else MH_TYPE_NAMES[t] if t < len(MH_TYPE_NAMES) else f"MH{t}"


def _time_text(us: int) -> str:
    sec, frac = divmod(us, 1_000_000)
    return f"{sec}.{frac:06d}"


def ipv6_text(raw: bytes) -> str:
    """RFC 5952 text of 16 address bytes: what ``str(IPv6Address(raw))`` gives, faster.

    The C library's inet_ntop writes the same text except for addresses whose first 80 bits are
    zero (IPv4-compatible and -mapped forms), which go through ipaddress.
    """
    if raw[:10] == _ZERO10:
        return str(ipaddress.IPv6Address(raw))
    return socket.inet_ntop(socket.AF_INET6, raw)


_ZERO10 = bytes(10)


class _Addresses:
    """IPv6 address text for 16-byte values, cached (peers repeat)."""

    def __init__(self) -> None:
        self.cache: dict[bytes, str] = {}

    def __call__(self, raw: bytes) -> str:
        text = self.cache.get(raw)
        if text is None:
            if len(self.cache) > 1 << 20:
                self.cache.clear()
            text = self.cache[raw] = ipv6_text(raw)
        return text


def _rows(batch: Batch, fields: Fields, verdicts: Sequence[int]) -> Iterator[tuple[int, int, str, Any, Any, Any, int, Any]]:
    """(frame, µs, type, home, care-of, seq, verdict, BA) per packet; None where not applicable."""
    home_l = fields.home if isinstance(fields.home, list) else [bytes(r) for r in fields.home]
    care_l = fields.care_of if isinstance(fields.care_of, list) else [bytes(r) for r in fields.care_of]
    types = list(fields.mh_type)
    seqs, flags = list(fields.seq), list(fields.flags)
    for i, v in enumerate(verdicts):
        v = int(v)
        with_fields = v in _WITH_FIELDS
        ba = _BA_FOR_VERDICT.get(v)
        if v == 0 and not int(flags[i]) & FLAG_A:
            ba = None
        yield (
            int(batch.frames[i]),
            int(batch.times[i]),
            _type_name(int(types[i])),
            home_l[i] if with_fields else None,
            care_l[i] if with_fields else None,
            int(seqs[i]) if with_fields else None,
            v,
            ba,
        )


def format_plain(batch: Batch, fields: Fields, verdicts: Sequence[int], addr: _Addresses) -> str:
    """The text lines of a batch, one per packet, each ending in a newline."""
    out = []
    for frame, us, mtype, home, care_of, seq, v, ba in _rows(batch, fields, verdicts):
        out.append(
            f"{frame:>{_W_FRAME}}  {_time_text(us):>{_W_TIME}}  {mtype:<{_W_TYPE}}  "
            f"{'-' if home is None else addr(home):<{_W_ADDR}}  {'-' if care_of is None else addr(care_of):<{_W_ADDR}}  "
            f"{'-' if seq is None else seq:>{_W_SEQ}}  {_VERDICT_NAMES[v]:<{_W_VERDICT}}  {'-' if ba is None else ba:>{_W_BA}}\n"
        )
    return "".join(out)


def format_json(batch: Batch, fields: Fields, verdicts: Sequence[int], addr: _Addresses, capture: str) -> str:
    """JSON lines of a batch: capture, frame, time, type, home, care_of, sequence, verdict, code, ba_status."""
    name = json.dumps(capture)
    out = []
    for frame, us, mtype, home, care_of, seq, v, ba in _rows(batch, fields, verdicts):
        out.append(
            f'{{"capture": {name}, "frame": {frame}, "time": {_time_text(us)}, "type": "{mtype}", '
            f'"home": {"null" if home is None else chr(34) + addr(home) + chr(34)}, '
            f'"care_of": {"null" if care_of is None else chr(34) + addr(care_of) + chr(34)}, '
            f'"sequence": {"null" if seq is None else seq}, "verdict": "{_VERDICT_NAMES[v]}", "code": {v}, '
            f'"ba_status": {"null" if ba is None else ba}}}\n'
        )
    return "".join(out)


class _FastFormatter:
    """Column-wise text lines (numpy): byte for byte what :func:`format_plain` writes.

    Numbers come from tables of 4-digit groups, addresses from a table of padded address texts
    kept across batches (each distinct address is formatted once). Falls back to the plain
    formatter (returns None) for a batch with a value wider than its column.
    """

    def __init__(self, addr: _Addresses, np: Any) -> None:
        self.np = np
        self.addr = addr
        self.width = len(HEADER) + 1
        cols = [_W_FRAME, _W_TIME, _W_TYPE, _W_ADDR, _W_ADDR, _W_SEQ, _W_VERDICT, _W_BA]
        self.at = []
        pos = 0
        for w in cols:
            self.at.append(pos)
            pos += w + 2
        self.verdicts = self._table([f"{n:<{_W_VERDICT}}" for n in _VERDICT_NAMES], _W_VERDICT)
        self.types = self._table([f"{_type_name(t):<{_W_TYPE}}" for t in range(-1, 256)], _W_TYPE)
        # Rows 0-9999: "0000".."9999"; 10000-19999: "   0".."9999"; 20000: blanks.
        k = np.arange(10000)
        zero = (k[:, None] // np.array([1000, 100, 10, 1]) % 10 + 48).astype(np.uint8)
        space = zero.copy()
        space[(k[:, None] < np.array([1000, 100, 10, 1])) & (np.arange(4) < 3)] = 32
        self.groups = np.concatenate([zero, space, np.full((1, 4), 32, dtype=np.uint8)])
        # Distinct addresses seen so far: sorted 64-bit keys, their rows, the bytes and the text.
        self.keys = np.zeros(0, dtype=np.uint64)
        self.key_rows = np.zeros(0, dtype=np.int64)
        self.raw = np.zeros((1, 16), dtype=np.uint8)  # row 0: "-"
        self.text = self._table(["-"], _W_ADDR)

    def _table(self, texts: list[str], width: int) -> Any:
        np = self.np
        return np.frombuffer("".join(t[:width].ljust(width) for t in texts).encode(), dtype=np.uint8).reshape(-1, width)

    def _digits(self, values: Any, width: int, zero_pad: bool = False) -> Any:
        """(n, width) ASCII of non-negative ``values`` (< 10**width), right-aligned."""
        np = self.np
        chunks = []
        rest = values
        for j in range((width + 3) // 4):
            c = rest % 10000
            rest = rest // 10000
            if zero_pad:
                idx = c
            else:
                idx = np.where(rest > 0, c, np.where((c > 0) | (j == 0), 10000 + c, 20000))
            chunks.append(self.groups[idx])
        out = np.concatenate(chunks[::-1], axis=1) if len(chunks) > 1 else chunks[0]
        return out[:, -width:]

    def _addresses(self, both: Any) -> Any:
        """Row of each 16-byte address of ``both`` in the address table (new ones added)."""
        np = self.np
        halves = np.ascontiguousarray(both).view(np.uint64)
        key = halves[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ halves[:, 1]
        rows = np.full(len(key), -1, dtype=np.int64)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
            hit = self.keys[pos] == key
            rows[hit] = self.key_rows[pos[hit]]
        miss = np.flatnonzero(rows < 0)
        if len(miss):
            new_keys, first, inverse = np.unique(key[miss], return_index=True, return_inverse=True)
            new_raw = both[miss[first]]
            flat = new_raw.tobytes()
            ntop, af = socket.inet_ntop, socket.AF_INET6
            texts = [ntop(af, flat[k : k + 16]) for k in range(0, len(flat), 16)]
            for k in np.flatnonzero(~new_raw[:, :10].any(axis=1)):  # IPv4-compatible/-mapped forms
                texts[k] = ipv6_text(flat[16 * k : 16 * k + 16])
            base = len(self.raw)
            rows[miss] = base + inverse.ravel()
            self.raw = np.concatenate([self.raw, new_raw])
            self.text = np.concatenate([self.text, self._table(texts, _W_ADDR)])
            keys = np.concatenate([self.keys, new_keys])
            order = np.argsort(keys, kind="stable")
            self.keys = keys[order]
            self.key_rows = np.concatenate([self.key_rows, np.arange(base, base + len(new_keys))])[order]
        if not (self.raw[rows] == both).all():  # two addresses with one key: not worth a table
            return None
        return rows

    def __call__(self, batch: Batch, fields: Fields, verdicts: Any) -> bytes | None:
        np = self.np
        n = len(batch)
        frames = np.frombuffer(batch.frames, dtype=np.uint64).astype(np.int64)
        times = np.frombuffer(batch.times, dtype=np.int64)
        sec, usec = times // 1_000_000, times % 1_000_000
        if n == 0 or frames.max() >= 10**_W_FRAME or sec.min() < 10**9 or sec.max() >= 10**10:
            return None
        if max(len(t) for t in _VERDICT_NAMES) > _W_VERDICT:
            return None
        v = np.frombuffer(verdicts, dtype=np.uint8).astype(np.int64)
        with_fields = np.isin(v, list(_WITH_FIELDS))
        sel = np.flatnonzero(with_fields)
        rows = self._addresses(np.concatenate([fields.home[sel], fields.care_of[sel]]))
        if rows is None:
            return None
        home_i = np.zeros(n, dtype=np.int64)
        care_i = np.zeros(n, dtype=np.int64)
        home_i[sel], care_i[sel] = rows[: len(sel)], rows[len(sel) :]
        m = np.full((n, self.width), 32, dtype=np.uint8)
        m[:, -1] = 10
        a = self.at
        m[:, a[0] : a[0] + _W_FRAME] = self._digits(frames, _W_FRAME)
        m[:, a[1] : a[1] + 10] = self._digits(sec, 10)
        m[:, a[1] + 10] = 46
        m[:, a[1] + 11 : a[1] + 17] = self._digits(usec, 6, zero_pad=True)
        m[:, a[2] : a[2] + _W_TYPE] = self.types[np.asarray(fields.mh_type, dtype=np.int64) + 1]
        m[:, a[3] : a[3] + _W_ADDR] = self.text[home_i]
        m[:, a[4] : a[4] + _W_ADDR] = self.text[care_i]
        seq = np.asarray(fields.seq, dtype=np.int64)
        m[:, a[5] : a[5] + _W_SEQ] = self._digits(seq, _W_SEQ)
        m[~with_fields, a[5] : a[5] + _W_SEQ] = np.frombuffer(b"    -", dtype=np.uint8)
        m[:, a[6] : a[6] + _W_VERDICT] = self.verdicts[v]
        ba = np.full(n, -1, dtype=np.int64)
        for code, status in _BA_FOR_VERDICT.items():
            if status is not None:
                ba[v == code] = status
        ba[(v == 0) & ((np.asarray(fields.flags, dtype=np.int64) & FLAG_A) == 0)] = -1
        m[:, a[7] : a[7] + _W_BA] = self._digits(np.maximum(ba, 0), _W_BA)
        m[ba < 0, a[7] : a[7] + _W_BA] = np.frombuffer(b"  -", dtype=np.uint8)
        return bytes(m.tobytes())


# ---------------------------------------------------------------------------------------------
# kbmfast verify


def add_verify(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast verify``: verify the Binding Updates in capture files."""
    p = sub.add_parser(
        "verify",
        help="verify the Binding Updates in pcap/pcapng captures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read captures (pcap or pcapng; Ethernet with 802.1Q tags, raw IP/IPv6, Linux cooked SLL/SLL2,\n"
            "BSD loopback), find every IPv6 packet whose next-header chain reaches a Mobility Header, verify\n"
            "the Binding Updates in capture order as a correspondent node would (a replay inside a capture\n"
            "is caught), and print one line per mobility packet, then a summary by verdict.\n"
            "Several captures are verified in the order given, with one sequence table.\n\n"
            "Columns: frame number (from 1, as Wireshark counts), capture time (s since the epoch), MH type,\n"
            "home address, care-of address, sequence number, verdict, and the status of the Binding\n"
            "Acknowledgement the correspondent would send ('-': none). Address and sequence are shown for\n"
            "well-formed Binding Updates only.\n\n"
            "Exit status: 0 when every capture was read to its end (whatever the verdicts); 1 when a\n"
            "capture is missing or damaged (what came before the damage is still verified and printed);\n"
            "2 for usage, key-file, state-file or output-file errors (nothing verified); 130 (SIGINT),\n"
            "143 (SIGTERM), 141 (standard output closed, as by '| head'): stopped at a batch boundary,\n"
            "with lines, acknowledgements and state all ending at the same frame, and a line on stderr\n"
            "saying how to resume with --skip. --acks-out is written to a temporary file and renamed\n"
            "into place, and may not be the same file as an input."
        ),
        epilog=(
            "examples:\n"
            "  kbmfast verify --demo\n"
            "  kbmfast verify cn.pcapng --keys cn.keys --state cn.state --acks-out acks.pcap\n"
            "  kbmfast verify day1.pcap day2.pcap --keys cn.keys --json > verdicts.jsonl"
        ),
    )
    p.add_argument("captures", nargs="*", metavar="CAPTURE", help="pcap or pcapng files, verified in this order")
    p.add_argument("--keys", metavar="KEYS", help="the key file (TOML, mode 0600; see 'kbmfast keys generate')")
    p.add_argument(
        "--demo",
        action="store_true",
        help="verify the sample capture shipped with kbmfast with its sample keys (copied to a private "
        "temporary file, so the permission check on key files stays as it is); give no CAPTURE or --keys",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="persistent sequence table (created if missing): sequence numbers accepted in earlier runs "
        "count, and this run's are kept; default: in memory, forgotten at exit",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines (one object per packet, then one summary object)")
    p.add_argument("--quiet", action="store_true", help="print only the summary (no line per packet)")
    p.add_argument(
        "--acks-out",
        metavar="FILE",
        help="write the Binding Acknowledgements the correspondent would send (Verifier.acknowledge) to FILE, "
        "a pcap with raw IPv6 link type, each stamped with its Binding Update's capture time",
    )
    p.add_argument(
        "--backend",
        choices=("c", "reference"),
        default="c",
        help="verify with the C core (default) or the pure-Python reference (slow; same answers)",
    )
    p.add_argument("--batch", type=int, default=65536, metavar="N", help="packets per verify_buffer call (default 65536)")
    p.add_argument("--shard", metavar="I/N", help="only the peers of shard I of N (docs/tools.md: sharding)")
    p.add_argument(
        "--skip",
        type=int,
        default=0,
        metavar="N",
        help="skip the first N frames of the first CAPTURE (frames keep their numbers): resumes an interrupted "
        "run, whose last line on stderr gives N",
    )
    p.set_defaults(handler=run_verify)


@contextlib.contextmanager
def _demo_files() -> Iterator[tuple[str, str]]:
    """The bundled sample capture and a private (0600) temporary copy of its key file."""
    samples = resources.files("kbmfast") / "samples"
    with resources.as_file(samples / SAMPLE_CAPTURE) as capture, tempfile.TemporaryDirectory(prefix="kbmfast-demo-") as tmp:
        keys = os.path.join(tmp, SAMPLE_KEYS)
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write((samples / SAMPLE_KEYS).read_bytes())
        yield str(capture), keys


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
        from .capture import PcapWriter

        self.verifier = verifier
        self.writer = PcapWriter(stream)

    def snapshot(self, fields: Fields) -> dict[bytes, int | None]:
        homes = {bytes(fields.home[i]) for i in range(len(fields.mh_type)) if int(fields.mh_type[i]) == 5}
        return {h: self.verifier.last_sequence(h) for h in homes}

    def write(self, batch: Batch, fields: Fields, verdicts: Sequence[int], last: dict[bytes, int | None]) -> None:
        for i, code in enumerate(verdicts):
            v = Verdict(code)
            if v not in BA_STATUS:
                continue
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


class _Job:
    """One batch's work on the worker thread, in batch order: its fields, the sequence table as
    the batch finds it (for --acks-out), its verdicts, their count and the output text. numpy
    releases the GIL in its inner loops, so this overlaps with reading the next batch."""

    def __init__(
        self, verifier: Any, acks: _Acks | None, fast: _FastFormatter | None, as_json: bool, quiet: bool, np: Any
    ) -> None:
        self.verifier, self.acks, self.fast, self.as_json, self.quiet, self.np = verifier, acks, fast, as_json, quiet, np
        self.addr = fast.addr if fast is not None else _Addresses()

    def __call__(self, batch: Batch, path: str) -> tuple[Fields, Any, dict[bytes, int | None], bytes, list[int]]:
        from .capture import Fields, fields_fast, fields_plain

        np = self.np
        if self.quiet and self.acks is None:  # nothing needs the fields
            fields = Fields([], [], [], [], [], [])
        else:
            fields = fields_fast(batch) if np is not None else fields_plain(batch)
        last = self.acks.snapshot(fields) if self.acks is not None else {}
        verdicts = self.verifier.verify_buffer(batch.data, batch.offsets)
        if np is not None:
            counts = np.bincount(np.frombuffer(verdicts, dtype=np.uint8), minlength=len(Verdict)).tolist()
        else:
            counts = [0] * len(Verdict)
            for code in verdicts:
                counts[code] += 1
        if self.quiet:
            text = b""
        elif self.as_json:
            text = format_json(batch, fields, verdicts, self.addr, path).encode()
        else:
            fast = self.fast(batch, fields, verdicts) if self.fast is not None else None
            text = fast if fast is not None else format_plain(batch, fields, verdicts, self.addr).encode()
        return fields, verdicts, last, text, counts


class _CLines:
    """Text lines (or --quiet) the C way. The worker thread runs :meth:`verify` (verify_buffer)
    on chunk ``k`` while the main thread walks chunk ``k + 1`` and runs :meth:`format` on chunk
    ``k - 1``: the lines formatted in C (csrc/capture.c, kbm_format_lines: byte for byte
    :func:`format_plain`) into the chunk's text buffer, then written. Every C call releases
    the GIL, so the two threads keep two cores busy."""

    SLOTS = 1 << 16  # address texts cached (peers repeat)

    def __init__(self, verifier: Any, quiet: bool) -> None:
        from ._native_edge import ffi

        self.verifier, self.quiet, self.ffi = verifier, quiet, ffi
        self.cache = ffi.new("kbm_addr_slot[]", self.SLOTS) if not quiet else None
        self.dotted = int(str(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4")

    def verify(self, chunk: Chunk) -> tuple[Any, list[int]]:
        """The chunk's verdicts and their count per verdict."""
        verdicts = self.verifier.verify_buffer(chunk.buffer(), chunk.offsets_view())
        raw = verdicts.tobytes()
        return verdicts, [raw.count(code) for code in range(len(Verdict))]

    def format(self, chunk: Chunk, verdicts: Any) -> memoryview | bytes:
        """The chunk's text lines."""
        from ._native_edge import lib

        n = chunk.n
        if self.quiet or n == 0:
            return b""
        ffi, fb = self.ffi, self.ffi.from_buffer
        need = n * lib.KBM_LINE_MAX
        if len(chunk.text) < need:
            chunk.text = bytearray(need)
        written = ffi.new("size_t *")
        done = lib.kbm_format_lines(
            fb("uint8_t[]", chunk.data),
            len(chunk.data),
            fb("uint64_t[]", chunk.offsets),
            fb("uint64_t[]", chunk.frames),
            fb("int64_t[]", chunk.times),
            fb("uint8_t[]", verdicts),
            n,
            self.cache,
            self.SLOTS,
            self.dotted,
            fb("char[]", chunk.text),
            len(chunk.text),
            written,
        )
        text: memoryview | bytes = memoryview(chunk.text)[: written[0]]
        if done < n:  # pragma: no cover - only for values C does not format (none today)
            from .capture import Batch as _Batch
            from .capture import fields_plain

            batch = chunk.batch()
            rest = _Batch(batch.data, batch.offsets[done:], batch.frames[done:], batch.times[done:])
            text = bytes(text) + format_plain(rest, fields_plain(rest), list(verdicts)[done:], _Addresses()).encode()
        return text


def _call_job(work: _Job, path: str, batch: Batch) -> Any:
    return work(batch, path)


def run_verify(args: argparse.Namespace) -> int:
    """Verify the captures; print lines and the summary; return the exit status."""
    _shard_filter(args)  # a bad --shard is refused before any file is opened
    if args.demo:
        if args.captures or args.keys:
            raise CliError("--demo takes no CAPTURE and no --keys")
        with _demo_files() as (capture, keys):
            return _verify(args, [capture], keys)
    if not args.captures or not args.keys:
        raise CliError("give one or more CAPTURE files and --keys KEYS (or --demo)")
    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    if args.skip < 0:
        raise CliError("--skip must be at least 0")
    return _verify(args, args.captures, args.keys)


def _skip(item: Any, skip: int) -> Any:
    """``item`` (a Chunk, changed in place, or a Batch) without the packets of frames up to
    ``skip``; None when no packet is left."""
    from .capture import Batch

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


def _last_frame(item: Any) -> int:
    n = item.n if hasattr(item, "n") else len(item)
    return int(item.frames[n - 1])


def load_key_file(path: str, status: int = 2) -> Any:
    """The key table, or CliError (``status``) naming the file and the cause."""
    import kbmfast

    try:
        return kbmfast.KeyTable.load(path)
    except kbmfast.KeyFileError as e:
        raise CliError(str(e), status) from None
    except OSError as e:
        raise CliError(f"key file {os_error_text(e, path)}", status) from None


def _open_verifier(backend: Any, keys: Any, state: str | None) -> Any:
    """The Verifier, or CliError (status 2) for a state file that cannot be used."""
    try:
        return backend.Verifier(keys, state=state)
    except OSError as e:
        raise CliError(f"state file {os_error_text(e, state)}") from None
    except ValueError as e:  # StateFileError names the file itself
        text = str(e)
        raise CliError(text if text.startswith("state file") else f"state file {state}: {text}") from None


def _verify(args: argparse.Namespace, captures: list[str], key_path: str) -> int:
    import kbmfast
    import kbmfast.reference

    backend: Any = kbmfast if args.backend == "c" else kbmfast.reference
    inputs = [*(("CAPTURE", c) for c in captures), ("--keys", key_path)]
    check_distinct(inputs, [("--state", args.state), ("--acks-out", args.acks_out)])
    check_stdout_distinct([*inputs, ("--state", args.state), ("--acks-out", args.acks_out)])
    keys = load_key_file(key_path)
    if len(keys) == 0:
        print(f"kbmfast verify: warning: key file {key_path} lists no peers: every Binding Update will be NOT_CONFIGURED",
              file=sys.stderr)  # fmt: skip
    try:
        acks_file = OutputFile(args.acks_out) if args.acks_out else None
    except OSError as e:
        raise CliError(f"--acks-out {os_error_text(e)}") from None
    try:
        verifier = _open_verifier(backend, keys, args.state)
        run = _VerifyRun(args, verifier, acks_file)
        try:
            with _outputs.current.deferred():
                run.all(captures)
                _outputs.current.handled = True  # a signal from here on is reported by run.finish
        finally:
            run.close()
    except BaseException:
        if acks_file is not None:
            acks_file.discard()
        raise
    if acks_file is not None:
        acks_file.commit()
        clamped = run.acks.writer.clamped if run.acks is not None else 0
        if clamped:  # Binding Updates stamped past 2106: a pcap record cannot say so
            print(
                f"kbmfast verify: {clamped} acknowledgements stamped with the latest time a pcap "
                "holds (2106-02-07 06:28:15.999999): their Binding Updates' times lie beyond it",
                file=sys.stderr,
            )
    return run.finish(captures)


class _VerifyRun:
    """One ``kbmfast verify`` run over its captures, in batches, stopping at a batch boundary
    on SIGINT/SIGTERM or when standard output is closed: every batch handed to the verifier
    (whose state it changes) then has its lines written and its acknowledgements too."""

    def __init__(self, args: argparse.Namespace, verifier: Any, acks_file: OutputFile | None) -> None:
        from .capture import HAVE_C
        from .capture import np as _np

        self.args, self.verifier, self.np = args, verifier, _np
        self.out = Stdout()
        self.counts = [0] * len(Verdict)
        self.totals = {"frames": 0, "other": 0, "acks": 0}
        self.status = 0
        self.progress = _Progress(sys.stderr, sys.stdout, args.quiet)
        self.addr = _Addresses()
        fast = _FastFormatter(self.addr, _np) if _np is not None and not args.json else None
        self.acks = _Acks(verifier, acks_file.stream) if acks_file is not None else None
        self.work = _Job(verifier, self.acks, fast, args.json, args.quiet, _np)
        self.lines = _CLines(verifier, args.quiet) if HAVE_C and not args.json and self.acks is None else None
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
            done = self.one(path, skip)
            if done is not None:
                self.stopped_at = (index, done)
                return

    def emit_lines(self, job: tuple[Chunk, Future[Any]]) -> None:
        """Count and write a C-path chunk's lines."""
        assert self.lines is not None
        verdicts, batch_counts = job[1].result()
        text = self.lines.format(job[0], verdicts) if not self.out.closed else b""
        for code, k in enumerate(batch_counts):
            self.counts[code] += k
        if text:
            self.out.write(text)

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
        from .capture import CaptureError, CaptureReader

        try:
            reader = CaptureReader(path)
        except (OSError, CaptureError) as e:
            message = str(e) if isinstance(e, CaptureError) else os_error_text(e, path)
            print(f"kbmfast verify: {message}", file=sys.stderr)
            self.status = 1
            return None
        mobility_before = sum(self.counts)
        with reader:
            if not self.args.json and not self.args.quiet:
                self.out.write(f"# {path}\n{HEADER}\n")
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
                    if self.shard is not None:
                        item = self.shard(item)
                        if item is None:
                            continue
                    future = self.pool.submit(job, item)
                    if pending is not None:
                        finish(pending)
                    pending = (item, future)
                    done = _last_frame(item)
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
            self.totals["frames"] += frames
            self.totals["other"] += frames - (sum(self.counts) - mobility_before)
            self.progress.clear()
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
        if not self.out.closed:
            _summary(self.out, self.counts, self.totals, self.args, self.acks is not None, resume)
            self.out.flush()
        if self.out.closed:
            return EXIT_SIGPIPE
        return interrupts.status if signum is not None else self.status


def _shard_filter(args: argparse.Namespace) -> Any:
    """The --shard filter, or None."""
    from ._shard import ShardFilter, parse_shard

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
    if args.json:
        doc: dict[str, Any] = {
            "verdicts": {v.name: counts[v] for v in Verdict},
            "mobility_packets": mobility,
            "other_frames": totals["other"],
            "frames": totals["frames"],
        }
        if with_acks:
            doc["acks_written"] = totals["acks"]
        if resume is not None:
            doc["interrupted"] = resume
        out.write(json.dumps({"summary": doc}) + "\n")
        return
    lines = [] if args.quiet else [""]
    lines.append(f"{'verdict':<24}{'packets':>10}")
    lines += [f"{v.name:<24}{counts[v]:>10}" for v in Verdict]
    lines.append(f"{'mobility packets':<24}{mobility:>10}")
    lines.append(f"{'other frames (skipped)':<24}{totals['other']:>10}")
    lines.append(f"{'frames':<24}{totals['frames']:>10}")
    if with_acks:
        lines.append(f"{'acknowledgements written':<24}{totals['acks']:>10}")
    out.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# kbmfast gen


def add_gen(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast gen``: realistic Binding Update traffic with a hostile mix, its keys and its truth."""
    p = sub.add_parser(
        "gen",
        help="generate a capture of realistic Binding Update traffic, its key file and expected verdicts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a capture of Ethernet frames as a correspondent node would see them: Binding Updates\n"
            "from N preconfigured peers (Kbm and RFC 4449 Kcn peers), interleaved, each peer's sequence\n"
            "numbers increasing from a random start; some peers move, some use an Alternate Care-of\n"
            "Address, some de-register, a few send Nonce Indices; plus the hostile mix. Also writes the\n"
            "matching key file (mode 0600). Deterministic for a seed; the keys are for test traffic only."
        ),
        epilog="example: kbmfast gen --peers 1000 --updates 100000 --out t.pcap --truth t.truth.jsonl",
    )
    p.add_argument("--peers", type=int, required=True, metavar="N", help="number of preconfigured peers")
    p.add_argument(
        "--updates", type=int, required=True, metavar="M", help="number of Binding Update packets in all, hostile ones included"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the capture to write")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0): same seed, same bytes")
    p.add_argument("--format", choices=("pcap", "pcapng"), default="pcap", help="capture format (default pcap)")
    p.add_argument(
        "--mix",
        default="",
        metavar="SHARES",
        help="hostile shares of all packets, e.g. replay=0.05,forged=0.02,unknown=0.02,malformed=0.01 (the "
        "defaults): replays of earlier Binding Updates, forgeries (wrong key), unconfigured home addresses, "
        "malformed packets; names left out keep their default",
    )
    p.add_argument(
        "--truth",
        metavar="FILE",
        help="write the expected outcome of every frame as JSON lines: frame, kind, verdict, ba_status "
        "(checked against kbmfast.reference while generating)",
    )
    p.add_argument(
        "--keys", metavar="KEYFILE", help="the key file to write (default: FILE with .keys.toml instead of its suffix)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files (refused otherwise)")
    p.add_argument("--shard", metavar="I/N", help="write only the frames of shard I of N (docs/tools.md: sharding)")
    p.set_defaults(handler=run_gen)


def _default_keys(out: str) -> str:
    root, _ = os.path.splitext(out)
    return root + ".keys.toml"


def run_gen(args: argparse.Namespace) -> int:
    """Generate the traffic and write the capture, the key file and the truth.

    The outputs must be distinct files and, without --force, must not exist. They are checked
    and opened (as temporary files beside them) first, written, then renamed into place
    together: an error or an interrupt leaves none of them changed.
    """
    from . import gen
    from ._shard import parse_shard
    from .capture import PcapWriter, write_pcapng

    keys_path = args.keys or _default_keys(args.out)
    outputs = [("--out", args.out), ("--keys", keys_path), ("--truth", args.truth)]
    check_distinct([], outputs)
    refuse_existing(outputs, args.force)
    try:
        mix = gen.parse_mix(args.mix)
        traffic = gen.generate(args.peers, args.updates, seed=args.seed, mix=mix)
        if args.shard is not None:
            traffic = gen.shard_traffic(traffic, parse_shard(args.shard))
    except ValueError as e:
        raise CliError(str(e)) from None
    wanted = [(args.out, False), (keys_path, True)] + ([(args.truth, False)] if args.truth else [])
    names = ["--out", "--keys", "--truth"]
    files: list[OutputFile] = []
    try:
        with output_files(wanted, _outputs.current) as files:
            if args.format == "pcap":
                writer = PcapWriter(files[0].stream, linktype=1)
                for frame, us in traffic.frames:
                    writer.write(frame, us)
            else:
                write_pcapng(files[0].stream, traffic.frames)
            files[1].stream.write(traffic.keys.to_toml().encode())
            if args.truth:
                out = files[2].stream
                for entry in traffic.truth:
                    doc = {"frame": entry.frame, "kind": entry.kind, "verdict": entry.verdict.name, "ba_status": entry.ba_status}
                    out.write((json.dumps(doc) + "\n").encode())
    except OSError as e:
        what = next((n for n, (path, _) in zip(names, wanted, strict=False) if path == e.filename), "output")
        raise CliError(f"{what} {os_error_text(e)}; no file was written", 2 if what != "output" else 1) from None
    except Interrupted as e:
        written = files and all(f.committed for f in files)
        raise CliError(f"interrupted by {e}; {'every' if written else 'no'} file was written", e.status) from None
    print(f"kbmfast gen: {len(traffic.frames)} frames to {args.out}, keys of {len(traffic.keys)} peers to {keys_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# kbmfast keys generate


def add_keys(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast keys``: key-file commands (``generate``)."""
    p = sub.add_parser("keys", help="key-file commands", description="Create and manage kbmfast key files.")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    g = keys_sub.add_parser(
        "generate",
        help="write a key file with fresh random keys for N peers",
        description=(
            "Write a key file (TOML, mode 0600) with fresh random keys from the operating system's CSPRNG "
            "(Python's secrets) for N peers whose home addresses are the first N host addresses of PREFIX."
        ),
        epilog="example: kbmfast keys generate --peers 3 --out cn.keys --prefix 2001:db8:1::/64 --kind kcn",
    )
    g.add_argument("--peers", type=int, required=True, metavar="N", help="number of peers (home addresses PREFIX::1 on)")
    g.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the key file to write (mode 0600); an existing file is not overwritten; '-': standard output",
    )
    g.add_argument("--prefix", default="2001:db8:1::/64", help="the home addresses' prefix (default 2001:db8:1::/64)")
    g.add_argument(
        "--kind",
        choices=("kbm", "kcn"),
        default="kbm",
        help="kbm: a 20-byte Kbm per peer (draft-ietf-mip6-precfgKbm, default); kcn: RFC 4449, a 20-byte "
        "Kcn and two 8-byte nonces per peer",
    )
    g.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    g.set_defaults(handler=run_keys_generate)


def run_keys_generate(args: argparse.Namespace) -> int:
    """Write N fresh random keys (to standard output with ``--out -``)."""
    import kbmfast

    try:
        net = ipaddress.IPv6Network(args.prefix, strict=True)
    except ValueError as e:
        raise CliError(f"--prefix: {e}") from None
    if args.peers < 1 or args.peers > net.num_addresses - 1:
        raise CliError(f"--peers must be in 1..{min(net.num_addresses - 1, 10**9)} for {net}")
    to_stdout = args.out == "-"
    if not to_stdout:
        refuse_existing([("--out", args.out)], args.force)
    table = kbmfast.KeyTable()
    base = int(net.network_address)
    for i in range(1, args.peers + 1):
        home = ipaddress.IPv6Address(base + i)
        if args.kind == "kbm":
            table.add_kbm(home, secrets.token_bytes(kbmfast.KBM_SIZE))
        else:
            table.add_kcn(home, secrets.token_bytes(kbmfast.MIN_KCN_SIZE), secrets.token_bytes(8), secrets.token_bytes(8))
    text = table.to_toml()
    if to_stdout:
        return 0 if Stdout().write(text) else EXIT_SIGPIPE
    try:
        with output_files([(args.out, True)], _outputs.current) as files:
            files[0].stream.write(text.encode())
    except OSError as e:
        raise CliError(f"--out {os_error_text(e)}") from None
    print(f"kbmfast keys generate: {args.peers} {args.kind} keys to {args.out} (mode 0600)")
    return 0


def registrars() -> tuple[Any, ...]:
    """This module's subcommands for kbmfast.cli, in --help order."""
    return (add_verify, add_gen, add_keys)
