"""The benchmark engine behind ``kbmfast bench``: how fast minimal Binding Updates are verified.

One workload (N draft-Kbm peers, several rounds of minimal Binding Updates with increasing
sequence numbers, packed into one buffer) is measured on every path, in one run, so that the
ratios hold on a shared, noisy machine:

- the C core's zero-copy ``Verifier.verify_buffer`` per batch size, and ``verify_batch`` on lists;
- the pure-Python reference's ``verify_batch`` (on a sample: it is about 100 times slower);
- the yardstick peer: a one-shot OpenSSL ``HMAC()`` per packet, as existing daemons do;
- the ceiling: SHA-1 compressions per second on 1 and 2 interleaved streams, halved
  (a minimal Binding Update costs two compressions);
- single-packet ``verify()`` latency on both backends.

Every timed verifier is fresh and every packet must be ACCEPTED, else :class:`BenchError`.

>>> report = run(BenchConfig.quick(peers=200, rounds=2, repeat=1))  # doctest: +SKIP
>>> print(format_report(report))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import ipaddress
import os
import platform
import random
import statistics
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import kbmfast
import kbmfast.reference

from ._native_edge import ffi, lib

HOME_PREFIX = ipaddress.IPv6Address("2001:db8:1::")
CARE_OF_PREFIX = ipaddress.IPv6Address("2001:db8:2::")
CORRESPONDENT = ipaddress.IPv6Address("2001:db8:3::1")
LIFETIME = 420
MAX_ROUNDS = 32768  # a key's sequence space (the default rekey_limit): all rounds stay acceptable


class BenchError(RuntimeError):
    """A measured path gave a wrong answer (a packet not accepted): its figure would be a lie."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how often. ``BenchConfig.quick()`` finishes in a few seconds."""

    peers: int = 10_000
    rounds: int = 10
    batches: tuple[int, ...] = (4096,)
    repeat: int = 5
    reference_packets: int = 20_000
    latency_calls: int = 20_000
    reference_latency_calls: int = 2_000
    ceiling_blocks: int = 5_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("peers", "repeat", "reference_packets", "latency_calls", "reference_latency_calls", "ceiling_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds: must be in 1..{MAX_ROUNDS} (one key's sequence space)")
        if not self.batches or min(self.batches) < 1:
            raise ValueError("batches: one or more batch sizes of at least 1")
        if self.peers >= 1 << 48:
            raise ValueError("peers: fewer than 2**48, please")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A smaller run (thousands of peers, fewer repetitions) for a first look or CI."""
        base = cls(
            peers=5_000,
            rounds=4,
            repeat=3,
            reference_packets=2_000,
            latency_calls=5_000,
            reference_latency_calls=500,
            ceiling_blocks=1_000_000,
        )
        return dataclasses.replace(base, **overrides)


# ---------------------------------------------------------------------------------------------
# The workload


@dataclass(frozen=True)
class Workload:
    """Minimal Binding Updates from ``peers`` peers, ``rounds`` rounds in order (round-major).

    ``buffer``/``offsets`` is the zero-copy form of ``packets``; ``packet_kbms`` is the 20-byte
    key of each packet, back to back (the one-shot HMAC yardstick's input).
    """

    keys: kbmfast.KeyTable
    packets: list[bytes]
    buffer: bytes
    offsets: array[int]
    packet_kbms: bytes

    def __len__(self) -> int:
        return len(self.packets)


def make_workload(peers: int, rounds: int, seed: int = 0) -> Workload:
    """Build the keys and packets: peer ``i`` has home 2001:db8:1::i+1 and care-of 2001:db8:2::i+1.

    Each peer gets a distinct random Kbm and a random first sequence number; round ``r`` carries
    first + r (mod 65536), so a fresh verifier accepts every packet when they come in order.
    """
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds: must be in 1..{MAX_ROUNDS}")
    rng = random.Random(seed)
    keys = kbmfast.KeyTable()
    peer_list = []
    for i in range(peers):
        home = HOME_PREFIX + i + 1
        kbm = rng.randbytes(kbmfast.KBM_SIZE)
        keys.add_kbm(home, kbm)  # refuses a repeated key
        peer_list.append((home, CARE_OF_PREFIX + i + 1, kbm, rng.randrange(65536)))
    packets: list[bytes] = []
    for r in range(rounds):
        for home, care_of, kbm, first in peer_list:
            packets.append(
                kbmfast.build_binding_update(
                    kbm, home=home, care_of=care_of, correspondent=CORRESPONDENT, sequence=(first + r) % 65536, lifetime=LIFETIME
                )
            )
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    packet_kbms = b"".join(kbm for _ in range(rounds) for _, _, kbm, _ in peer_list)
    return Workload(keys, packets, b"".join(packets), offsets, packet_kbms)


def split_buffer(buffer: bytes, offsets: array[int], batch: int) -> list[tuple[memoryview, array[int]]]:
    """Cut the zero-copy form into batches: a memoryview slice of ``buffer`` and rebased offsets."""
    view = memoryview(buffer)
    n = len(offsets) - 1
    out = []
    for i in range(0, n, batch):
        j = min(i + batch, n)
        start = offsets[i]
        out.append((view[start : offsets[j]], array("Q", [o - start for o in offsets[i : j + 1]])))
    return out


def split_list(packets: Sequence[bytes], batch: int) -> list[list[bytes]]:
    """Cut a packet list into lists of at most ``batch`` packets."""
    return [list(packets[i : i + batch]) for i in range(0, len(packets), batch)]


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Measure:
    """One measured path: ``items`` verifications (or compressions) per run, each run's seconds."""

    name: str
    label: str
    items: int
    seconds: tuple[float, ...]
    batch: int | None = None
    unit: str = "verifications"

    @property
    def best(self) -> float:
        """Items per second of the fastest run (the least disturbed by a noisy machine)."""
        return self.items / min(self.seconds)

    @property
    def median(self) -> float:
        """Items per second of the median run."""
        return self.items / statistics.median(self.seconds)


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    with _gc_paused():
        t0 = perf_counter()
        out = run()
        return perf_counter() - t0, out


def check_accepted(verdicts: Sequence[Sequence[int]], what: str) -> None:
    """Raise BenchError unless every verdict code in every batch is ACCEPTED (0)."""
    for batch in verdicts:
        accepted = batch.count(kbmfast.Verdict.ACCEPTED)
        if accepted != len(batch):
            bad = next(kbmfast.Verdict(v) for v in batch if v != kbmfast.Verdict.ACCEPTED)
            raise BenchError(f"{what}: {len(batch) - accepted} of {len(batch)} packets not accepted (e.g. {bad.name})")


VerifierFactory = Callable[[kbmfast.KeyTable], Any]


def _fresh_runs(
    factory: VerifierFactory, keys: kbmfast.KeyTable, work: Callable[[Any], Any], repeat: int
) -> tuple[tuple[float, ...], list[Any]]:
    """Time ``work(verifier)`` ``repeat`` times, each on a fresh verifier: (seconds, outputs)."""
    seconds, outputs = [], []
    for _ in range(repeat):
        with factory(keys) as verifier:
            dt, out = _timed(functools.partial(work, verifier))
        seconds.append(dt)
        outputs.append(out)
    return tuple(seconds), outputs


def measure_verify_buffer(w: Workload, batch: int, repeat: int) -> Measure:
    """C ``verify_buffer`` over precomputed zero-copy batches, all rounds in order."""
    pairs = split_buffer(w.buffer, w.offsets, batch)
    seconds, outputs = _fresh_runs(kbmfast.Verifier, w.keys, lambda v: [v.verify_buffer(b, o) for b, o in pairs], repeat)
    for out in outputs:
        check_accepted(out, "C verify_buffer")
    return Measure("c.verify_buffer", f"C verify_buffer, batch {batch}", len(w), seconds, batch)


def measure_verify_batch(w: Workload, batch: int, repeat: int) -> Measure:
    """C ``verify_batch`` on lists of bytes (the convenience form: it packs each list)."""
    lists = split_list(w.packets, batch)
    seconds, outputs = _fresh_runs(kbmfast.Verifier, w.keys, lambda v: [v.verify_batch(p) for p in lists], repeat)
    for out in outputs:
        check_accepted(out, "C verify_batch")
    return Measure("c.verify_batch", f"C verify_batch (list), batch {batch}", len(w), seconds, batch)


def measure_reference(w: Workload, packets: int, repeat: int) -> Measure:
    """The pure-Python backend's ``verify_batch`` on the first ``packets`` packets."""
    sample = w.packets[:packets]
    seconds, outputs = _fresh_runs(kbmfast.reference.Verifier, w.keys, lambda v: v.verify_batch(sample), repeat)
    check_accepted(outputs, "reference verify_batch")
    label = f"reference verify_batch ({len(sample)} packets)"
    return Measure("reference.verify_batch", label, len(sample), seconds, len(sample))


def measure_oneshot(w: Workload, repeat: int) -> Measure:
    """The yardstick: parse, then one-shot OpenSSL ``HMAC()`` + memcmp per packet (csrc/bench.c)."""
    n = len(w)
    buf = ffi.from_buffer("uint8_t[]", w.buffer)
    offs = ffi.from_buffer("uint64_t[]", w.offsets)
    kbms = ffi.from_buffer("uint8_t[]", w.packet_kbms)
    ok = ffi.new("uint8_t[]", n)
    seconds = []
    for _ in range(repeat):
        dt, rc = _timed(lambda: lib.kbm_bench_oneshot(buf, offs, n, kbms, ok))
        good = bytes(ffi.buffer(ok)).count(1)
        if rc != 0 or good != n:
            raise BenchError(f"one-shot HMAC: status {rc}, {n - good} of {n} authenticators did not match")
        seconds.append(dt)
    return Measure("oneshot_hmac", "one-shot OpenSSL HMAC per packet", n, tuple(seconds))


def measure_compress(blocks: int, streams: int, repeat: int) -> Measure:
    """Raw SHA-1 compressions per second on 1 or 2 interleaved streams (the kernel in use)."""
    seconds = tuple(_timed(lambda: lib.kbm_bench_compress(blocks, streams))[0] for _ in range(repeat))
    label = f"SHA-1 compression, {streams} stream{'s' if streams > 1 else ''}"
    return Measure(f"compress.{streams}", label, blocks, seconds, unit="compressions")


def measure_latency(backend: str, w: Workload, calls: int, repeat: int) -> Measure:
    """Single-packet ``verify()`` of ``backend`` ("c" or "reference") on the first ``calls``
    packets in order, with a fresh verifier each run: items are calls."""
    factory = kbmfast.Verifier if backend == "c" else kbmfast.reference.Verifier
    sample = w.packets[:calls]
    seconds, outputs = _fresh_runs(factory, w.keys, lambda v: [v.verify(p).verdict for p in sample], repeat)
    label = f"{'C' if backend == 'c' else backend} verify() latency"
    check_accepted(outputs, label)
    return Measure(f"{backend}.verify", label, len(sample), seconds, 1, "calls")


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Report:
    """All measures of one run, with the figures derived from them."""

    config: BenchConfig
    environment: dict[str, Any]
    measures: tuple[Measure, ...]

    def find(self, name: str, batch: int | None = None) -> Measure:
        """The measure called ``name`` (and of that batch size, when given)."""
        for m in self.measures:
            if m.name == name and (batch is None or m.batch == batch):
                return m
        raise KeyError(name)

    @property
    def ceiling(self) -> float:
        """Verifications/s the SHA-1 kernel allows: best compressions/s over 1 or 2 streams, / 2."""
        return max(m.best for m in self.measures if m.unit == "compressions") / 2

    def ratios(self, m: Measure) -> dict[str, float]:
        """A throughput measure against the reference, the one-shot HMAC and the ceiling."""
        return {
            "vs_reference": m.best / self.find("reference.verify_batch").best,
            "vs_oneshot_hmac": m.best / self.find("oneshot_hmac").best,
            "of_ceiling": m.best / self.ceiling,
        }

    @property
    def headline(self) -> dict[str, float]:
        """C ``verify_buffer`` at the largest batch size: verifications/s and its ratios."""
        m = self.find("c.verify_buffer", max(self.config.batches))
        return {"batch": m.batch or 0, "verifications_per_s": m.best, **self.ratios(m)}

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values (rates per second, latencies in µs)."""
        rows = []
        for m in self.measures:
            row: dict[str, Any] = {
                "name": m.name,
                "label": m.label,
                "batch": m.batch,
                "unit": m.unit,
                "items": m.items,
                "seconds": list(m.seconds),
                "best_per_s": m.best,
                "median_per_s": m.median,
            }
            if m.unit == "verifications":
                row.update(self.ratios(m))
            if m.unit == "calls":
                row["best_us_per_call"] = 1e6 / m.best
                row["median_us_per_call"] = 1e6 / m.median
            rows.append(row)
        return {
            "config": dataclasses.asdict(self.config),
            "environment": self.environment,
            "ceiling_verifications_per_s": self.ceiling,
            "headline": self.headline,
            "measures": rows,
        }


def environment(w: Workload | None = None) -> dict[str, Any]:
    """Where the figures come from: versions, the SHA-1 kernel, the CPU."""
    env: dict[str, Any] = {
        "kbmfast": kbmfast.__version__,
        "kernel": kbmfast.kernel,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
    }
    if w is not None:
        env["packets"] = len(w)
        env["packet_bytes"] = len(w.packets[0])
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(config: BenchConfig | None = None, workload: Workload | None = None) -> Report:
    """Build the workload (unless given) and measure every path on it."""
    c = config or BenchConfig()
    w = workload or make_workload(c.peers, c.rounds, c.seed)
    measures: list[Measure] = []
    for batch in c.batches:
        measures.append(measure_verify_buffer(w, batch, c.repeat))
        measures.append(measure_verify_batch(w, batch, c.repeat))
    measures.append(measure_reference(w, c.reference_packets, c.repeat))
    measures.append(measure_oneshot(w, c.repeat))
    measures += [measure_compress(c.ceiling_blocks, streams, c.repeat) for streams in (1, 2)]
    measures.append(measure_latency("c", w, c.latency_calls, c.repeat))
    measures.append(measure_latency("reference", w, c.reference_latency_calls, c.repeat))
    return Report(c, environment(w), tuple(measures))


def run_dict(config: BenchConfig | None = None) -> dict[str, Any]:
    """``run(config).to_dict()``: the results as JSON-ready values (``kbmfast bench --json``)."""
    return run(config).to_dict()


# ---------------------------------------------------------------------------------------------
# Text


def si(x: float) -> str:
    """A rate in a short form: 6.51 M, 54.5 k, 812."""
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def format_report(r: Report) -> str:
    """A readable table of ``r``."""
    c, env = r.config, r.environment
    lines = [
        f"kbmfast {env['kbmfast']} bench: {c.peers} peers x {c.rounds} rounds = {env['packets']} minimal Binding Updates "
        f"({env['packet_bytes']} bytes), one core",
        f"SHA-1 kernel {env['kernel']}; {env['cpu']} ({env['cpus']} CPUs); Python {env['python']}; "
        f"best of {c.repeat} (median beside it)",
        "",
        f"{'verifications/s':<40}{'best':>10}{'median':>10}{'x ref':>9}{'x one-shot':>12}{'of ceiling':>12}",
    ]
    for m in r.measures:
        if m.unit == "verifications":
            q = r.ratios(m)
            lines.append(
                f"{m.label:<40}{si(m.best):>10}{si(m.median):>10}{q['vs_reference']:>9.1f}"
                f"{q['vs_oneshot_hmac']:>12.2f}{q['of_ceiling']:>12.2f}"
            )
    lines.append(f"{'ceiling (best compressions/s / 2)':<40}{si(r.ceiling):>10}")
    lines += ["", f"{'other':<40}{'best':>10}{'median':>10}"]
    for m in r.measures:
        if m.unit == "compressions":
            lines.append(f"{m.label + ' (/s)':<40}{si(m.best):>10}{si(m.median):>10}")
        elif m.unit == "calls":
            lines.append(f"{m.label + ' (µs/call)':<40}{1e6 / m.best:>10.2f}{1e6 / m.median:>10.2f}")
    h = r.headline
    lines += [
        "",
        f"headline (batch {h['batch']}): {si(h['verifications_per_s'])} verifications/s = "
        f"{h['vs_reference']:.0f}x the reference, {h['vs_oneshot_hmac']:.1f}x one-shot HMAC, "
        f"{h['of_ceiling']:.0%} of the SHA-1 ceiling",
    ]
    return "\n".join(lines)


__all__ = [
    "BenchConfig",
    "BenchError",
    "Measure",
    "Report",
    "Workload",
    "check_accepted",
    "environment",
    "format_report",
    "make_workload",
    "measure_compress",
    "measure_latency",
    "measure_oneshot",
    "measure_reference",
    "measure_verify_batch",
    "measure_verify_buffer",
    "run",
    "run_dict",
    "si",
    "split_buffer",
    "split_list",
]
