"""The benchmark engine behind ``kbmfast bench``: how fast Binding Updates are verified, and why.

The main workload (N draft-Kbm peers, several rounds of minimal Binding Updates with increasing
sequence numbers, packed into one buffer) is measured on every path in one run, so that the
ratios hold on a shared, noisy machine:

- the C core's zero-copy ``Verifier.verify_buffer`` per batch size, and ``verify_batch`` on lists;
- the pure-Python reference's ``verify_batch`` (on a sample: it is about 100 times slower);
- the yardstick peer: a one-shot OpenSSL ``HMAC()`` per packet, as existing daemons do;
- the ceiling: SHA-1 compressions per second of every kernel (SHA-NI on 1 and 2 streams, the
  AVX2 and AVX-512 multi-buffer ones), the best halved
  (a minimal Binding Update costs two compressions);
- single-packet ``verify()`` latency on both backends, and the bare C call it wraps;
- one Verifier shared by 1 and 2 threads, and 2 processes sharing one state file;
- generated traffic of every shape (Alternate Care-of Address, de-registration, Nonce Indices,
  RFC 4449 peers) and with a realistic share of replays, forgeries, unknown peers and
  malformed packets (:mod:`kbmfast.gen`), checked against its known verdicts;
- unless ``big_peers`` is 0: throughput with 1 M peers, and the key table's setup time and
  resident memory per peer, in a fresh interpreter (so other measures' heap does not blur it);
- with sweeps (``kbmfast bench --plot``): throughput against the number of peers and against
  the batch size, per backend.

Every verdict of every timed run is checked (all ACCEPTED, or the generator's known verdicts),
else :class:`BenchError`: a fast wrong answer is not a figure.

>>> report = run(BenchConfig.quick(peers=200, rounds=2, repeat=1))  # doctest: +SKIP
>>> print(format_report(report))  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import ipaddress
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate
from time import perf_counter
from typing import Any, BinaryIO

import kbmfast
import kbmfast.reference

from . import _stateformat
from . import fast as _fast
from ._native_edge import ffi, lib
from ._outputs import child_defaults
from ._rr_bench import rr_ratio

HOME_PREFIX = ipaddress.IPv6Address("2001:db8:1::")
CARE_OF_PREFIX = ipaddress.IPv6Address("2001:db8:2::")
CORRESPONDENT = ipaddress.IPv6Address("2001:db8:3::1")
LIFETIME = 420
MAX_ROUNDS = 32768  # a key's sequence space (the default rekey_limit): all rounds stay acceptable
SWEEP_PACKETS = 100_000  # packets per point of the peers sweep (at least one round)

# The targets, checked in Report.targets().
TARGET_OF_CEILING = 0.50
TARGET_VS_REFERENCE = 60.0
TARGET_VS_ONESHOT = 25.0
TARGET_BIG_VS_HEADLINE = 0.70
TARGET_THREADS = 1.8
TARGET_OVERHEAD_US = 1.0
TARGET_BYTES_PER_PEER = 128.0


class BenchError(RuntimeError):
    """A measured path gave a wrong answer (a verdict not the expected one): its figure would be a lie."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how often. ``BenchConfig.quick()`` finishes in a few seconds.

    ``big_peers`` (0: skip) is the peer count of the large-table measure, run in a fresh
    interpreter together with the setup time and memory per peer. ``threads`` and
    ``processes`` (below 2: skip) compare that many against one. ``mixed_packets`` (0: skip)
    is the size of each generated traffic sample. ``peer_sweep`` and ``batch_sweep`` (empty:
    skip) are the points of the throughput plots.
    """

    peers: int = 10_000
    rounds: int = 10
    batches: tuple[int, ...] = (4096,)
    repeat: int = 5
    reference_packets: int = 20_000
    latency_calls: int = 20_000
    reference_latency_calls: int = 2_000
    ceiling_blocks: int = 5_000_000
    seed: int = 0
    big_peers: int = 1_000_000
    big_rounds: int = 3
    threads: int = 2
    processes: int = 2
    mixed_packets: int = 100_000
    peer_sweep: tuple[int, ...] = ()
    batch_sweep: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("peers", "repeat", "reference_packets", "latency_calls", "reference_latency_calls", "ceiling_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        for name in ("big_peers", "threads", "processes", "mixed_packets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be at least 0")
        if not 1 <= self.rounds <= MAX_ROUNDS or not 1 <= self.big_rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds: must be in 1..{MAX_ROUNDS} (one key's sequence space)")
        for name in ("batches", "batch_sweep", "peer_sweep"):
            sizes = getattr(self, name)
            if (name == "batches" and not sizes) or (sizes and min(sizes) < 1):
                raise ValueError(f"{name}: one or more sizes of at least 1")
        if max(self.peers, self.big_peers, *self.peer_sweep) >= 1 << 48:
            raise ValueError("peers: fewer than 2**48, please")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A smaller run (thousands of peers, fewer repetitions, no 1 M peers) for a first look or CI."""
        base = cls(
            peers=5_000,
            rounds=4,
            repeat=3,
            reference_packets=2_000,
            latency_calls=5_000,
            reference_latency_calls=500,
            ceiling_blocks=1_000_000,
            big_peers=0,
            mixed_packets=20_000,
        )
        return dataclasses.replace(base, **overrides)

    def with_plot_sweeps(self) -> BenchConfig:
        """This configuration plus the sweeps the plot draws (peers up to ``big_peers``)."""
        top = self.big_peers or self.peers
        peers = tuple(sorted({n for n in (100, 1_000, 10_000, 100_000) if n < top} | {self.peers}))
        return dataclasses.replace(self, peer_sweep=peers, batch_sweep=(1, 4, 16, 64, 256, 1024, 4096, 16384))


# ---------------------------------------------------------------------------------------------
# The workload


@dataclass(frozen=True)
class Workload:
    """Minimal Binding Updates from ``peers`` peers, ``rounds`` rounds in order, each round
    every peer once in a random order (packet ``j`` comes from peer ``peer_of[j]``).

    ``buffer``/``offsets`` is the zero-copy form of ``packets``; ``packet_kbms`` is the 20-byte
    key of each packet, back to back (the one-shot HMAC yardstick's input); ``kbms[i]`` is peer
    ``i``'s key.
    """

    keys: kbmfast.KeyTable
    packets: list[bytes]
    buffer: bytes
    offsets: array[int]
    packet_kbms: bytes
    peers: int = 0
    peer_of: array[int] = field(default_factory=lambda: array("L"))
    kbms: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.packets)


class MinimalBuilder:
    """Minimal Binding Updates (96 bytes: Home Address option, 32-byte Mobility Header with the
    Binding Authorization Data option), byte for byte what ``kbmfast.build_binding_update``
    makes, several times faster: a template, the C core's MAC and checksum, no argument checks.
    ``make_workload`` compares its output with the builder's.
    """

    def __init__(self, correspondent: bytes) -> None:
        self.cn = correspondent
        self.head = b"\x60\x00\x00\x00\x00\x38\x3c\x40"  # Payload Length 56, Destination Options, hop limit 64
        self.ext = b"\x87\x02\x01\x02\x00\x00\xc9\x10"  # Mobility Header next, PadN(2), Home Address option
        self.out = ffi.new("uint8_t[12]")

    def __call__(self, kbm: bytes, home: bytes, care_of: bytes, sequence: int, lifetime_units: int) -> bytes:
        """The packet from ``care_of`` for ``home`` (packed addresses), signed with ``kbm``."""
        mh = bytearray(b"\x3b\x03\x05\x00\x00\x00\x00\x00\x80\x00\x00\x00\x01\x04\x00\x00\x00\x00\x05\x0c" + bytes(12))
        mh[6:8] = sequence.to_bytes(2, "big")
        mh[10:12] = lifetime_units.to_bytes(2, "big")
        mac_care_of = home if lifetime_units == 0 else care_of
        if lib.kbm_authenticator(kbm, mac_care_of, self.cn, bytes(mh), 32, self.out):
            raise BenchError("kbm_authenticator refused a minimal Binding Update")
        mh[20:32] = ffi.buffer(self.out)
        mh[4:6] = lib.kbm_mh_checksum(home, self.cn, bytes(mh), 32).to_bytes(2, "big")
        return self.head + care_of + self.cn + self.ext + home + mh


def peer_addresses(i: int) -> tuple[bytes, bytes]:
    """Peer ``i``'s home (2001:db8:1::i+1) and care-of (2001:db8:2::i+1) addresses, packed."""
    return (HOME_PREFIX + i + 1).packed, (CARE_OF_PREFIX + i + 1).packed


def make_peers(peers: int, seed: int = 0) -> tuple[list[bytes], list[bytes], list[int]]:
    """Each peer's packed home address, a distinct random Kbm and a random first sequence number."""
    rng = random.Random(seed)
    kbms, firsts = [], []
    for _ in range(peers):
        kbms.append(rng.randbytes(kbmfast.KBM_SIZE))
        firsts.append(rng.randrange(65536))
    homes = [peer_addresses(i)[0] for i in range(peers)]
    return homes, kbms, firsts


def key_table(homes: Sequence[bytes], kbms: Sequence[bytes]) -> kbmfast.KeyTable:
    """A KeyTable configuring each home address with its Kbm (refuses a repeated key)."""
    keys = kbmfast.KeyTable()
    add = keys.add_kbm
    for home, kbm in zip(homes, kbms, strict=True):
        add(home, kbm)
    return keys


def round_order(peers: int, r: int, seed: int = 0) -> list[int]:
    """The order in which the peers send in round ``r``: a random permutation, as if each peer
    refreshed its binding at its own moment (the same for the same arguments)."""
    order = list(range(peers))
    random.Random(f"{seed}:{r}").shuffle(order)
    return order


def build_rounds(
    kbms: Sequence[bytes], firsts: Sequence[int], rounds: range, *, seed: int = 0, lifetime: int = LIFETIME
) -> tuple[list[bytes], bytes, array[int]]:
    """The packets of ``rounds`` (round ``r`` carries first + r, its peers in ``round_order``),
    their keys back to back, and the peer of each."""
    build = MinimalBuilder(CORRESPONDENT.packed)
    units = lifetime // 4
    addresses = [peer_addresses(i) for i in range(len(kbms))]
    peer_of = array("L")
    for r in rounds:
        peer_of.extend(round_order(len(kbms), r, seed))
    packets = []
    for j, i in enumerate(peer_of):
        home, care_of = addresses[i]
        packets.append(build(kbms[i], home, care_of, (firsts[i] + rounds[j // len(kbms)]) % 65536, units))
    return packets, b"".join(kbms[i] for i in peer_of), peer_of


def check_builder(kbm: bytes, i: int, sequence: int, lifetime: int = LIFETIME) -> None:
    """Raise BenchError unless MinimalBuilder makes exactly kbmfast.build_binding_update's packet."""
    home, care_of = peer_addresses(i)
    ours = MinimalBuilder(CORRESPONDENT.packed)(kbm, home, care_of, sequence, lifetime // 4)
    theirs = kbmfast.build_binding_update(
        kbm, home=home, care_of=care_of, correspondent=CORRESPONDENT, sequence=sequence, lifetime=lifetime
    )
    if ours != theirs:
        raise BenchError("the benchmark's packet template no longer matches kbmfast.build_binding_update")


def pack(packets: Sequence[bytes]) -> tuple[bytes, array[int]]:
    """The zero-copy form: the packets back to back, and n + 1 offsets."""
    return b"".join(packets), array("Q", accumulate(map(len, packets), initial=0))


def make_workload(peers: int, rounds: int, seed: int = 0) -> Workload:
    """Build the keys and packets: peer ``i`` has home 2001:db8:1::i+1 and care-of 2001:db8:2::i+1.

    Each peer gets a distinct random Kbm and a random first sequence number; round ``r`` carries
    first + r (mod 65536), so a fresh verifier accepts every packet when they come in order.
    """
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds: must be in 1..{MAX_ROUNDS}")
    homes, kbms, firsts = make_peers(peers, seed)
    keys = key_table(homes, kbms)
    packets, packet_kbms, peer_of = build_rounds(kbms, firsts, range(rounds), seed=seed)
    check_builder(kbms[0], 0, firsts[0])
    check_builder(kbms[-1], peers - 1, (firsts[-1] + rounds - 1) % 65536, lifetime=0)
    buffer, offsets = pack(packets)
    return Workload(keys, packets, buffer, offsets, packet_kbms, peers, peer_of, kbms)


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


def split_peers(w: Workload, parts: int) -> list[list[bytes]]:
    """The packets of peers ``k, k + parts, ...`` for each part ``k``, in order: disjoint peers,
    so that parts verified concurrently accept every packet."""
    return [[p for p, i in zip(w.packets, w.peer_of, strict=True) if i % parts == k] for k in range(parts)]


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Measure:
    """One measured path: ``items`` verifications (or compressions, calls) per run, each run's
    seconds, with ``peers`` configured."""

    name: str
    label: str
    items: int
    seconds: tuple[float, ...]
    batch: int | None = None
    unit: str = "verifications"
    peers: int = 0

    @property
    def best(self) -> float:
        """Items per second of the fastest run (the least disturbed by a noisy machine)."""
        return self.items / min(self.seconds)

    @property
    def median(self) -> float:
        """Items per second of the median run."""
        return self.items / statistics.median(self.seconds)


@dataclass(frozen=True)
class Figure:
    """One derived or scalar figure (a setup time, a memory size) that is not a rate."""

    name: str
    label: str
    value: float
    unit: str


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


def check_verdicts(got: Sequence[int], want: Sequence[int], what: str) -> None:
    """Raise BenchError unless the verdict codes are exactly the expected ones."""
    if len(got) != len(want) or bytes(got) != bytes(want):
        wrong = sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))
        raise BenchError(f"{what}: {wrong} of {len(want)} verdicts differ from the known ones")


VerifierFactory = Callable[[kbmfast.KeyTable], Any]


@dataclass
class Plan:
    """One path to measure: what it is, and ``once()``, which times one run of it (on a fresh
    verifier where state matters) after checking every verdict. ``execute`` runs the plans
    round-robin, so that each measure's runs are spread over the whole benchmark and a burst of
    load from elsewhere on a shared machine does not spoil all runs of one figure."""

    name: str
    label: str
    items: int
    once: Callable[[], float]
    batch: int | None = None
    unit: str = "verifications"
    peers: int = 0


def execute(plans: Sequence[Plan], repeat: int) -> list[Measure]:
    """``repeat`` rounds over ``plans``, one run of each per round: their Measures."""
    seconds: list[list[float]] = [[] for _ in plans]
    for _ in range(repeat):
        for plan, runs in zip(plans, seconds, strict=True):
            runs.append(plan.once())
    return [Measure(p.name, p.label, p.items, tuple(s), p.batch, p.unit, p.peers) for p, s in zip(plans, seconds, strict=True)]


def _fresh(factory: VerifierFactory, keys: kbmfast.KeyTable, work: Callable[[Any], Any], check: Callable[[Any], None]) -> float:
    """Time ``work(verifier)`` on a fresh verifier; ``check`` its output (untimed): seconds."""
    with factory(keys) as verifier:
        dt, out = _timed(functools.partial(work, verifier))
    check(out)
    return dt


def plan_verify_buffer(w: Workload, batch: int) -> Plan:
    """C ``verify_buffer`` over precomputed zero-copy batches, all rounds in order."""
    pairs = split_buffer(w.buffer, w.offsets, batch)
    return Plan(
        "c.verify_buffer",
        f"C verify_buffer, batch {batch}",
        len(w),
        lambda: _fresh(
            kbmfast.Verifier,
            w.keys,
            functools.partial(_verify_pairs, pairs=pairs),
            lambda out: check_accepted(out, "C verify_buffer"),
        ),
        batch,
        peers=w.peers,
    )


def plan_verify_buffer_kernels(w: Workload, batch: int) -> list[Plan]:
    """``plan_verify_buffer`` once per MAC kernel this CPU runs, each run switching to that
    kernel and back: the kernels end to end, interleaved in one run."""
    plans = []
    forced = os.environ.get("KBMFAST_KERNEL", "").strip() or "auto"
    for name, ok, _ in _fast.kernel_table():
        if not ok:
            continue
        base = plan_verify_buffer(w, batch)

        def once(name: str = name, run: Callable[[], float] = base.once) -> float:
            lib.kbm_kernel_select(name.encode())
            try:
                return run()
            finally:
                lib.kbm_kernel_select(forced.encode())

        label = f"{base.label}, {name} kernel"
        plans.append(dataclasses.replace(base, name=f"c.verify_buffer.kernel.{name}", label=label, once=once))
    return plans


def plan_verify_batch(w: Workload, batch: int) -> Plan:
    """C ``verify_batch`` on lists of bytes (the convenience form: it packs each list)."""
    lists = split_list(w.packets, batch)
    return Plan(
        "c.verify_batch",
        f"C verify_batch (list), batch {batch}",
        len(w),
        lambda: _fresh(
            kbmfast.Verifier,
            w.keys,
            lambda v: [v.verify_batch(p) for p in lists],
            lambda out: check_accepted(out, "C verify_batch"),
        ),
        batch,
        peers=w.peers,
    )


def plan_reference(w: Workload, packets: int, batch: int | None = None) -> Plan:
    """The pure-Python backend's ``verify_batch`` on the first ``packets`` packets (in batches of
    ``batch``; default: all in one)."""
    sample = w.packets[:packets]
    lists = split_list(sample, batch or len(sample))

    def once() -> float:
        return _fresh(
            kbmfast.reference.Verifier,
            w.keys,
            lambda v: [v.verify_batch(p) for p in lists],
            lambda out: check_accepted(out, "reference verify_batch"),
        )

    if batch is None:
        label = f"reference verify_batch ({len(sample)} packets)"
        return Plan("reference.verify_batch", label, len(sample), once, len(sample), peers=w.peers)
    return Plan("reference.verify_batch.sweep", f"reference verify_batch, batch {batch}", len(sample), once, batch, peers=w.peers)


def plan_oneshot(w: Workload) -> Plan:
    """The yardstick: parse, then one-shot OpenSSL ``HMAC()`` + memcmp per packet (csrc/bench.c)."""
    n = len(w)
    buf = ffi.from_buffer("uint8_t[]", w.buffer)
    offs = ffi.from_buffer("uint64_t[]", w.offsets)
    kbms = ffi.from_buffer("uint8_t[]", w.packet_kbms)
    ok = ffi.new("uint8_t[]", n)

    def once() -> float:
        ffi.memmove(ok, bytes(n), n)
        dt, rc = _timed(lambda: lib.kbm_bench_oneshot(buf, offs, n, kbms, ok))
        good = bytes(ffi.buffer(ok)).count(1)
        if rc != 0 or good != n:
            raise BenchError(f"one-shot HMAC: status {rc}, {n - good} of {n} authenticators did not match")
        return dt

    return Plan("oneshot_hmac", "one-shot OpenSSL HMAC per packet", n, once, peers=w.peers)


def plan_compress(blocks: int, streams: int) -> Plan:
    """Raw SHA-1 compressions per second on 1 or 2 interleaved streams (the kernel in use)."""
    label = f"SHA-1 compression, {streams} stream{'s' if streams > 1 else ''}"
    return Plan(
        f"compress.{streams}",
        label,
        blocks,
        lambda: _timed(lambda: lib.kbm_bench_compress(blocks, streams))[0],
        unit="compressions",
    )


def plan_kernels(blocks: int) -> list[Plan]:
    """Raw SHA-1 compressions per second of every other MAC kernel this CPU runs (the multi-buffer
    ones: 8 or 16 messages at once, blocks transposed in); SHA-NI is ``plan_compress``'s."""
    plans = []
    for i, (name, ok, _) in enumerate(_fast.kernel_table()):
        if ok and name != "sha-ni":
            n = blocks // 10 if name == "portable" else blocks

            def once(i: int = i, n: int = n) -> float:
                return _timed(lambda: lib.kbm_bench_kernel(i, n))[0]

            plans.append(Plan(f"compress.kernel.{name}", f"SHA-1 compression, {name} kernel", n, once, unit="compressions"))
    return plans


def kernel_choice() -> str:
    """Which MAC kernel verifies and why: KBMFAST_KERNEL's choice, or the calibration's figures."""
    table = _fast.kernel_table()
    timed = ", ".join(f"{name} {ns:.1f}" for name, ok, ns in table if ok)
    why = "KBMFAST_KERNEL" if os.environ.get("KBMFAST_KERNEL", "").strip() not in ("", "auto") else "the fastest"
    return f"{kbmfast.kernel} ({why}; calibration, ns per minimal-BU MAC: {timed})"


def _compress_worker(blocks: int, start: Any, conn: Any) -> None:
    child_defaults()
    start.wait()
    t0 = perf_counter()
    lib.kbm_bench_compress(blocks, 1)
    conn.send((t0, perf_counter()))
    conn.close()


def plan_compress_parallel(blocks: int, processes: int) -> Plan | None:
    """The ceiling's own scaling: ``processes`` forked processes each running ``blocks``
    single-stream compressions at once; items are all their compressions. What the CPUs give
    for SHA-1 bounds what threads can gain. None without fork."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("fork")

    def once() -> float:
        start = ctx.Barrier(processes)
        pipes = [ctx.Pipe(duplex=False) for _ in range(processes)]
        children = [ctx.Process(target=_compress_worker, args=(blocks, start, send), daemon=True) for _, send in pipes]
        for c in children:
            c.start()
        reports = [recv.recv() for recv, _ in pipes]
        for c in children:
            c.join()
        return float(max(r[1] for r in reports) - min(r[0] for r in reports))

    label = f"SHA-1 compression, 1 stream, {processes} processes at once"
    return Plan(f"compress.1.x{processes}", label, blocks * processes, once, unit="compressions")


def _forget_addresses() -> None:
    """Empty the C backend's IPv6Address caches (a cold verify(): every peer seen first)."""
    _fast._ADDRESSES.clear()
    _fast._TRIPLES.clear()


def plan_latency(backend: str, w: Workload, calls: int, *, cold: bool = False) -> Plan:
    """Single-packet ``verify()`` of ``backend`` ("c" or "reference") on the first ``calls``
    packets in order, with a fresh verifier each run: items are calls.

    The C backend caches the IPv6Address objects of its Results: warm (the default), the same
    packets went through once before the timed runs; ``cold``, the caches are emptied before each
    run, and ``calls`` is cut to one packet per peer, so every call builds its addresses.
    """
    factory = kbmfast.Verifier if backend == "c" else kbmfast.reference.Verifier
    sample = w.packets[: min(calls, w.peers) if cold else calls]
    label = f"{'C' if backend == 'c' else backend} verify() latency{', cold' if cold else ''}"

    def work(v: Any) -> list[int]:
        verify = v.verify
        return [verify(p).verdict for p in sample]

    def once() -> float:
        if cold:
            _forget_addresses()
        elif backend == "c":  # warm: these packets' addresses went through once
            with factory(w.keys) as v:
                work(v)
        return _fresh(factory, w.keys, work, lambda out: check_accepted([out], label))

    return Plan(f"{backend}.verify{'.cold' if cold else ''}", label, len(sample), once, 1, "calls", w.peers)


def plan_bare_call(w: Workload, calls: int) -> Plan:
    """What verify() wraps: ``lib.kbm_verify`` on one packet per call, from Python, with every
    argument prepared beforehand (the C work plus cffi's call and GIL release)."""
    sample = w.packets[:calls]
    offsets, verdict = ffi.new("uint64_t[2]"), ffi.new("uint8_t[1]")
    detail, where = ffi.new("kbm_detail[1]"), ffi.new("size_t *")
    call = lib.kbm_verify

    def work(v: Any) -> list[int]:
        handle, out = v._v, []
        for p in sample:
            offsets[1] = len(p)
            call(handle, p, len(p), offsets, 1, verdict, detail, where)
            out.append(verdict[0])
        return out

    once = functools.partial(_fresh, kbmfast.Verifier, w.keys, work, lambda out: check_accepted([out], "bare kbm_verify call"))
    return Plan("c.bare_call", "bare kbm_verify call from Python", len(sample), once, 1, "calls", w.peers)


def _thread_worker(v: Any, job: Any, start: threading.Barrier, results: list[list[Any]], k: int, cpu: int | None = None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # this thread only
    start.wait()
    results[k] = [v.verify_buffer(b, o) for b, o in job]


def _cpus(n: int) -> list[int] | None:
    """``n`` CPUs this process may run on, to pin one thread to each; None if not possible."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus[:n] if len(cpus) >= n else None


def plan_threads(w: Workload, threads: int, batch: int, *, pin: bool = True) -> Plan:
    """One Verifier, ``threads`` threads each verifying the packets of its share of the peers
    (``verify_buffer``, GIL released in C); with 1, one thread does every share in turn.

    ``pin``: each thread on its own CPU, as a daemon would place one worker per core. Left
    alone, Linux starts threads woken together on the waker's CPU and moves one only after a
    few milliseconds, about the length of one run here: unpinned figures show that, not the
    library."""
    shares = split_peers(w, max(threads, 2))
    pairs = [split_buffer(*pack(share), batch) for share in shares]
    jobs = [[p for part in pairs for p in part]] if threads == 1 else pairs
    cpus = _cpus(len(jobs)) if pin else None

    def once() -> float:
        with kbmfast.Verifier(w.keys) as v:
            start = threading.Barrier(len(jobs) + 1)
            results: list[list[Any]] = [[] for _ in jobs]
            pool = [
                threading.Thread(target=_thread_worker, args=(v, job, start, results, k, cpus[k] if cpus else None))
                for k, job in enumerate(jobs)
            ]
            for t in pool:
                t.start()
            with _gc_paused():
                start.wait()
                t0 = perf_counter()
                for t in pool:
                    t.join()
                dt = perf_counter() - t0
        for out in results:
            check_accepted(out, f"{threads} thread(s) on one Verifier")
        return dt

    label = f"C verify_buffer, {threads} thread{'s' if threads > 1 else ''}, one Verifier{'' if cpus else ', unpinned'}"
    return Plan(f"c.threads.{threads}{'' if cpus else '.unpinned'}", label, len(w), once, batch, peers=w.peers)


def _process_worker(keys: kbmfast.KeyTable, pairs: Any, path: str, start: Any, conn: Any) -> None:
    child_defaults()
    with kbmfast.Verifier(keys, state=path) as v:
        start.wait()
        t0 = perf_counter()
        out = [v.verify_buffer(b, o) for b, o in pairs]
        t1 = perf_counter()
        conn.send((t0, t1, sum(o.count(0) for o in out), sum(len(o) for o in out)))
    conn.close()


def plan_processes(w: Workload, processes: int, batch: int, tmp: str) -> Plan | None:
    """``processes`` processes (forked), each with its own Verifier on one shared state file (a
    new file in ``tmp`` each run) and its share of the peers; seconds from the first start to
    the last finish (CLOCK_MONOTONIC). With 1, a single process does every share (the same
    file-backed state). None without fork."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("fork")
    shares = split_peers(w, max(processes, 2))
    pairs = [split_buffer(*pack(share), batch) for share in shares]
    jobs = [[p for part in pairs for p in part]] if processes == 1 else pairs
    runs = iter(range(1 << 30))

    def once() -> float:
        path = os.path.join(tmp, f"state.{processes}.{next(runs)}")
        _stateformat.prepare(path)  # created once, before the children race to open it
        start = ctx.Barrier(len(jobs))
        pipes = [ctx.Pipe(duplex=False) for _ in jobs]
        children = [
            ctx.Process(target=_process_worker, args=(w.keys, job, path, start, send), daemon=True)
            for job, (_, send) in zip(jobs, pipes, strict=True)
        ]
        for c in children:
            c.start()
        reports = [recv.recv() for recv, _ in pipes]
        for c in children:
            c.join()
        os.unlink(path)
        if any(c.exitcode for c in children) or sum(r[2] for r in reports) != len(w):
            raise BenchError(f"{processes} process(es) on one state file: not every packet was accepted")
        return float(max(r[1] for r in reports) - min(r[0] for r in reports))

    label = f"C verify_buffer, {processes} process{'es' if processes > 1 else ''}, one state file"
    return Plan(f"c.processes.{processes}", label, len(w), once, batch, peers=w.peers)


@dataclass(frozen=True)
class Traffic:
    """Generated traffic (kbmfast.gen) in zero-copy form, with the verdict each packet must get."""

    kind: str
    keys: kbmfast.KeyTable
    packets: list[bytes]
    buffer: bytes
    offsets: array[int]
    verdicts: bytes
    shares: dict[str, float] = field(default_factory=dict)


def make_traffic(kind: str, peers: int, packets: int, seed: int = 0) -> Traffic:
    """``kind`` "shapes": legitimate Binding Updates of every shape kbmfast.gen makes (Alternate
    Care-of Address, de-registrations, Nonce Indices, RFC 4449 peers); "rejects": the same
    with kbmfast.gen's default hostile mix (replays, forgeries, unknown peers, malformed)."""
    from . import gen

    mix = {name: 0.0 for name in gen.DEFAULT_MIX} if kind == "shapes" else dict(gen.DEFAULT_MIX)
    t = gen.generate(peers, packets, seed=seed, mix=mix)
    ps = t.packets()
    buffer, offsets = pack(ps)
    tags = {
        "plain": lambda k: k == "update",
        "alternate-care-of": lambda k: "alternate-care-of" in k,
        "deregistration": lambda k: k.startswith("deregistration"),
        "nonce-indices": lambda k: "nonce-indices" in k,
        "replay": lambda k: k == "replay",
        "forged": lambda k: k == "forged",
        "unknown-peer": lambda k: k == "unknown",
        "malformed": lambda k: k.startswith("malformed"),
    }
    kinds = {tag: sum(map(test, (e.kind for e in t.truth))) / len(t.truth) for tag, test in tags.items()}
    return Traffic(kind, t.keys, ps, buffer, offsets, bytes(e.verdict for e in t.truth), kinds)


def plan_traffic(t: Traffic, batch: int, reference_packets: int) -> list[Plan]:
    """C ``verify_buffer`` on all of ``t`` and the reference on its first packets, fresh
    verifiers, every verdict compared with the known one."""
    pairs = split_buffer(t.buffer, t.offsets, batch)
    sample = t.packets[:reference_packets]

    def c_work(v: Any) -> bytes:
        return b"".join(v.verify_buffer(b, o).tobytes() for b, o in pairs)

    def c_once() -> float:
        return _fresh(kbmfast.Verifier, t.keys, c_work, lambda out: check_verdicts(out, t.verdicts, f"C on {t.kind} traffic"))

    def ref_once() -> float:
        return _fresh(
            kbmfast.reference.Verifier,
            t.keys,
            lambda v: v.verify_batch(sample),
            lambda out: check_verdicts(out, t.verdicts[: len(sample)], f"reference on {t.kind} traffic"),
        )

    return [
        Plan(f"c.traffic.{t.kind}", f"C verify_buffer, {t.kind} traffic", len(t.packets), c_once, batch),
        Plan(f"reference.traffic.{t.kind}", f"reference, {t.kind} traffic", len(sample), ref_once, len(sample)),
    ]


# The one-measure forms (each plan run ``repeat`` times on its own).


def measure_verify_buffer(w: Workload, batch: int, repeat: int) -> Measure:
    """``plan_verify_buffer``, measured."""
    return execute([plan_verify_buffer(w, batch)], repeat)[0]


def measure_verify_batch(w: Workload, batch: int, repeat: int) -> Measure:
    """``plan_verify_batch``, measured."""
    return execute([plan_verify_batch(w, batch)], repeat)[0]


def measure_reference(w: Workload, packets: int, repeat: int, batch: int | None = None) -> Measure:
    """``plan_reference``, measured."""
    return execute([plan_reference(w, packets, batch)], repeat)[0]


def measure_oneshot(w: Workload, repeat: int) -> Measure:
    """``plan_oneshot``, measured."""
    return execute([plan_oneshot(w)], repeat)[0]


def measure_compress(blocks: int, streams: int, repeat: int) -> Measure:
    """``plan_compress``, measured."""
    return execute([plan_compress(blocks, streams)], repeat)[0]


def measure_latency(backend: str, w: Workload, calls: int, repeat: int, *, cold: bool = False) -> Measure:
    """``plan_latency``, measured."""
    return execute([plan_latency(backend, w, calls, cold=cold)], repeat)[0]


def keyfile_to_verifier(keys: kbmfast.KeyTable) -> float:
    """Seconds from a key file on disk (``keys`` saved, as ``kbmfast keys generate`` writes
    one) to a running C Verifier: KeyTable.load, then Verifier (issue 14 item 4's start-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cn.keys")
        keys.save(path)
        gc.collect()
        t0 = perf_counter()
        verifier = kbmfast.Verifier(kbmfast.KeyTable.load(path))
        dt = perf_counter() - t0
        verifier.close()
    return dt


def measure_setup(w: Workload, repeat: int) -> list[Figure]:
    """Building the KeyTable of ``w``'s peers and a Verifier from it, µs per peer (best run)."""
    homes = [peer_addresses(i)[0] for i in range(w.peers)]
    kbms = w.kbms
    table, verifier = [], []
    for _ in range(repeat):
        dt, keys = _timed(lambda: key_table(homes, kbms))
        table.append(dt)
        dt, v = _timed(functools.partial(kbmfast.Verifier, keys))
        verifier.append(dt)
        v.close()
    return [
        Figure("setup.keytable", f"KeyTable.add_kbm, {w.peers} peers", min(table) / w.peers * 1e6, "µs/peer"),
        Figure("setup.verifier", f"Verifier(keys), {w.peers} peers", min(verifier) / w.peers * 1e6, "µs/peer"),
        Figure("setup.keyfile", f"key file -> Verifier, {w.peers} peers", keyfile_to_verifier(keys) / w.peers * 1e6, "µs/peer"),
    ]


# ---------------------------------------------------------------------------------------------
# The large table, in a fresh interpreter


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _verify_pairs(verifier: Any, pairs: list[tuple[memoryview, array[int]]]) -> list[array[int]]:
    return [verifier.verify_buffer(b, o) for b, o in pairs]


def big_table(peers: int, rounds: int, batch: int, seed: int, plot: bool) -> dict[str, Any]:
    """Run in a fresh interpreter: the KeyTable and Verifier for ``peers`` peers (time, resident
    memory), then ``rounds`` rounds through verify_buffer on that one Verifier (one round per
    run, each accepted); with ``plot``, the other backends at this size too."""
    out: dict[str, Any] = {}
    homes, kbms, firsts = make_peers(peers, seed)
    gc.collect()
    rss0 = _rss()
    t0 = perf_counter()
    keys = key_table(homes, kbms)
    t1 = perf_counter()
    rss1 = _rss()
    verifier = kbmfast.Verifier(keys)
    t2 = perf_counter()
    gc.collect()
    rss2 = _rss()
    trimmed = _malloc_trim()
    rss3 = _rss()
    out["setup"] = {"keytable_s": t1 - t0, "verifier_s": t2 - t1, "keyfile_s": keyfile_to_verifier(keys)}
    out["memory"] = {
        "keytable": (rss1 - rss0) / peers,
        "verifier": (rss2 - rss1) / peers,
        "verifier_live": (rss3 - rss1) / peers if trimmed else None,
    }
    # One Verifier for every run (a fresh one per run would cost seconds): run r verifies round
    # r, whose sequence numbers are all new.
    check_builder(kbms[0], 0, firsts[0])
    seconds, first_round = [], None
    for r in range(rounds):
        packets, packet_kbms, _ = build_rounds(kbms, firsts, range(r, r + 1), seed=seed)
        first_round = first_round or (packets, packet_kbms)
        pairs = split_buffer(*pack(packets), batch)
        dt, verdicts = _timed(functools.partial(_verify_pairs, verifier, pairs))
        check_accepted(verdicts, f"C verify_buffer, {peers} peers")
        seconds.append(dt)
    out["verify_buffer"] = (peers, tuple(seconds))
    if plot and first_round:
        packets, _, _ = build_rounds(kbms, firsts, range(rounds, rounds + 1), seed=seed)
        lists = split_list(packets, batch)
        dt, verdicts = _timed(lambda: [verifier.verify_batch(p) for p in lists])
        check_accepted(verdicts, f"C verify_batch, {peers} peers")
        rows = [Measure("c.verify_batch", f"C verify_batch (list), batch {batch}", len(packets), (dt,), batch, peers=peers)]
        sample = SWEEP_PACKETS  # the one-shot yardstick needs no table: a sample of round 0 will do
        packets, packet_kbms = first_round[0][:sample], first_round[1][: 20 * sample]
        w = Workload(keys, packets, *pack(packets), packet_kbms, peers)
        rows += [measure_reference(w, 2_000, 3), measure_oneshot(w, 3)]
        out["plot"] = [dataclasses.astuple(m) for m in rows]
    verifier.close()
    return out


def _big_table_child(conn: Any, *args: Any) -> None:
    child_defaults()
    try:
        conn.send(big_table(*args))
    except BaseException as e:  # reported to the parent, which raises it
        conn.send(e)
    conn.close()


def run_big_table(c: BenchConfig, plot: bool) -> dict[str, Any]:
    """big_table in a spawned interpreter (its heap untouched by the rest of the benchmark)."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_big_table_child, args=(send, c.big_peers, c.big_rounds, max(c.batches), c.seed, plot))
    child.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:
        result = None
    except BaseException:  # interrupted: stop the child rather than wait for it
        child.terminate()
        child.join()
        raise
    child.join()
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, dict):
        raise BenchError(f"the {c.big_peers}-peer measure ended without a result (exit {child.exitcode})")
    return result


def _backends(w: Workload, batch: int, reference_packets: int) -> list[Plan]:
    """The throughput of each backend on ``w`` (the peers sweep's points)."""
    return [plan_verify_buffer(w, batch), plan_verify_batch(w, batch), plan_reference(w, reference_packets), plan_oneshot(w)]


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: what it asks, what was measured, and whether it is met."""

    text: str
    measured: str
    met: bool | None  # None: not measured in this run
    note: str = ""


@dataclass(frozen=True)
class Report:
    """All measures of one run, with the figures derived from them."""

    config: BenchConfig
    environment: dict[str, Any]
    measures: tuple[Measure, ...]
    figures: tuple[Figure, ...] = ()

    def find(self, name: str, batch: int | None = None, peers: int | None = None) -> Measure:
        """The measure called ``name`` (of that batch size and peer count, when given; the
        configured peer count otherwise)."""
        want = self.config.peers if peers is None else peers
        for m in self.measures:
            if m.name == name and (batch is None or m.batch == batch) and m.peers in (want, 0):
                return m
        raise KeyError(name)

    def get(self, name: str, batch: int | None = None, peers: int | None = None) -> Measure | None:
        """``find``, or None."""
        try:
            return self.find(name, batch, peers)
        except KeyError:
            return None

    def figure(self, name: str) -> Figure | None:
        """The figure called ``name``, or None."""
        return next((f for f in self.figures if f.name == name), None)

    def _best_compress(self) -> Measure:
        return max((m for m in self.measures if m.unit == "compressions" and ".x" not in m.name), key=lambda m: m.best)

    @property
    def ceiling(self) -> float:
        """Verifications/s the SHA-1 kernels allow: the best compressions/s of any kernel (SHA-NI on
        1 or 2 streams, the multi-buffer ones), / 2 compressions per minimal Binding Update."""
        return self._best_compress().best / 2

    @property
    def ceiling_source(self) -> str:
        """Which measure set the ceiling, in words."""
        return self._best_compress().label.removeprefix("SHA-1 compression, ")

    def ratios(self, m: Measure) -> dict[str, float]:
        """A throughput measure against the reference and the one-shot HMAC (at the same number
        of peers when measured there) and the ceiling."""
        ref = self.get("reference.verify_batch", peers=m.peers) or self.find("reference.verify_batch")
        if m.name.startswith("c.traffic."):
            ref = self.get("reference.traffic." + m.name.split(".")[-1]) or ref
        one = self.get("oneshot_hmac", peers=m.peers) or self.find("oneshot_hmac")
        return {"vs_reference": m.best / ref.best, "vs_oneshot_hmac": m.best / one.best, "of_ceiling": m.best / self.ceiling}

    @property
    def headline(self) -> dict[str, float]:
        """C ``verify_buffer`` at the largest batch size: verifications/s and its ratios."""
        m = self.find("c.verify_buffer", max(self.config.batches))
        return {"batch": m.batch or 0, "verifications_per_s": m.best, **self.ratios(m)}

    @property
    def overhead_us(self) -> float | None:
        """What verify() costs per call beyond the bare C call it wraps, µs (warm caches)."""
        v, bare = self.get("c.verify"), self.get("c.bare_call")
        return None if v is None or bare is None else 1e6 / v.best - 1e6 / bare.best

    def targets(self) -> list[Target]:
        """The issue's targets against this run's figures."""
        c, h = self.config, self.headline
        ceiling, rate = self.ceiling, h["verifications_per_s"]
        one = self.find("oneshot_hmac")
        at = f"{c.peers} peers, batch {h['batch']:.0f}"
        out = [
            Target(f"verify_buffer >= {TARGET_OF_CEILING:.0%} of the SHA-1 ceiling ({at})",
                   f"{h['of_ceiling']:.0%} ({si(rate)}/s of {si(ceiling)}/s)", h["of_ceiling"] >= TARGET_OF_CEILING),
            Target(f"verify_buffer >= {TARGET_VS_REFERENCE:.0f}x the reference",
                   f"{h['vs_reference']:.0f}x", h["vs_reference"] >= TARGET_VS_REFERENCE),
            Target(f"verify_buffer >= {TARGET_VS_ONESHOT:.0f}x one-shot HMAC", f"{h['vs_oneshot_hmac']:.1f}x",
                   h["vs_oneshot_hmac"] >= TARGET_VS_ONESHOT,
                   f"{TARGET_VS_ONESHOT:.0f}x one-shot ({si(one.best)}/s) is {si(TARGET_VS_ONESHOT * one.best)}/s: "
                   f"{TARGET_VS_ONESHOT * one.best / ceiling:.1f}x the SHA-1 ceiling of this CPU"),
        ]  # fmt: skip
        big = self.get("c.verify_buffer", max(c.batches), c.big_peers) if c.big_peers else None
        out.append(
            Target(f"{c.big_peers or 1_000_000} peers >= {TARGET_BIG_VS_HEADLINE:.0%} of the {c.peers}-peer figure",
                   "not measured" if big is None else f"{big.best / rate:.0%} ({si(big.best)}/s)",
                   None if big is None else big.best / rate >= TARGET_BIG_VS_HEADLINE)
        )  # fmt: skip
        one_t, two_t = self.get("c.threads.1"), self.get(f"c.threads.{c.threads}")
        scaled = None if one_t is None or two_t is None or c.threads < 2 else two_t.best / one_t.best
        sha_one, sha_n = self.get("compress.1"), self.get(f"compress.1.x{c.threads}")
        sha_scaling = "" if sha_one is None or sha_n is None else f"; raw SHA-1 itself scales {sha_n.best / sha_one.best:.2f}x"
        out.append(
            Target(f"{c.threads} threads >= {TARGET_THREADS}x one thread (one Verifier, a CPU each)",
                   "not measured" if scaled is None else f"{scaled:.2f}x", None if scaled is None else scaled >= TARGET_THREADS,
                   f"{os.cpu_count()} CPUs, shared with whatever else runs{sha_scaling}")
        )  # fmt: skip
        o = self.overhead_us
        out.append(
            Target(f"verify() <= {TARGET_OVERHEAD_US:.0f} us per call above the C work",
                   "not measured" if o is None else f"{o:.2f} us above the bare C call",
                   None if o is None else o <= TARGET_OVERHEAD_US,
                   "the C work counted as the bare kbm_verify call from Python (cffi + GIL release included)")
        )  # fmt: skip
        mem = self.figure("memory.verifier")
        live = self.figure("memory.verifier_live")
        out.append(
            Target(f"<= {TARGET_BYTES_PER_PEER:.0f} bytes of memory per configured peer (beyond the key table)",
                   "not measured" if mem is None else f"{mem.value:.0f} B/peer RSS"
                   + ("" if live is None else f" ({live.value:.0f} B/peer after malloc_trim)"),
                   None if mem is None else mem.value <= TARGET_BYTES_PER_PEER)
        )  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values (rates per second, latencies in µs)."""
        rows = []
        for m in self.measures:
            row: dict[str, Any] = {
                "name": m.name,
                "label": m.label,
                "peers": m.peers or None,
                "batch": m.batch,
                "unit": m.unit,
                "items": m.items,
                "seconds": list(m.seconds),
                "best_per_s": m.best,
                "median_per_s": m.median,
            }
            if m.unit == "verifications":
                row.update(self.ratios(m))
            row.update(rr_ratio(m, self.ceiling))  # return routability's rows
            if m.unit == "calls":
                row["best_us_per_call"] = 1e6 / m.best
                row["median_us_per_call"] = 1e6 / m.median
            rows.append(row)
        return {
            "config": dataclasses.asdict(self.config),
            "environment": self.environment,
            "ceiling_verifications_per_s": self.ceiling,
            "ceiling_from": self.ceiling_source,
            "headline": self.headline,
            "verify_overhead_us": self.overhead_us,
            "measures": rows,
            "figures": [dataclasses.asdict(f) for f in self.figures],
            "targets": [dataclasses.asdict(t) for t in self.targets()],
        }


def environment(w: Workload | None = None) -> dict[str, Any]:
    """Where the figures come from: versions, the SHA-1 kernel, the CPU."""
    env: dict[str, Any] = {
        "kbmfast": kbmfast.__version__,
        "kernel": kbmfast.kernel,
        "kernel_choice": kernel_choice(),
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


def run(config: BenchConfig | None = None, workload: Workload | None = None, *, plot: bool = False) -> Report:
    """Build the workload (unless given) and measure every path on it, the runs of all measures
    interleaved (see Plan); ``plot`` adds the sweeps."""
    c = config or BenchConfig()
    if plot and not (c.peer_sweep or c.batch_sweep):
        c = c.with_plot_sweeps()
    w = workload or make_workload(c.peers, c.rounds, c.seed)
    top = max(c.batches)
    plans: list[Plan] = []
    figures: list[Figure] = []
    for batch in c.batches:
        plans += [plan_verify_buffer(w, batch), plan_verify_batch(w, batch)]
    plans += [plan_reference(w, c.reference_packets), plan_oneshot(w)]
    plans += [plan_compress(c.ceiling_blocks, streams) for streams in (1, 2)]
    plans += plan_kernels(c.ceiling_blocks)
    plans += plan_verify_buffer_kernels(w, top)
    from ._rr_bench import rr_plans  # return routability (issue 12): its own module

    plans += rr_plans(min(c.peers, 4096), 4, top, c.seed, sys.modules[__name__])
    plans += [
        plan_latency("c", w, c.latency_calls),
        plan_latency("c", w, c.latency_calls, cold=True),
        plan_bare_call(w, c.latency_calls),
        plan_latency("reference", w, c.reference_latency_calls),
    ]
    if c.threads >= 2:
        plans += [plan_threads(w, n, top) for n in (1, c.threads)]
        if _cpus(c.threads):  # pinned above; unpinned too, for comparison
            plans.append(plan_threads(w, c.threads, top, pin=False))
    if c.mixed_packets:
        for kind in ("shapes", "rejects"):
            t = make_traffic(kind, c.peers, c.mixed_packets, c.seed)
            plans += plan_traffic(t, top, min(c.reference_packets, len(t.packets)))
            figures += [Figure(f"traffic.{kind}.{k}", f"{kind}: {k}", v, "share") for k, v in t.shares.items()]
    for n in c.peer_sweep:
        if n != c.peers:
            rounds = max(1, min(MAX_ROUNDS, SWEEP_PACKETS // n))
            plans += _backends(make_workload(n, rounds, c.seed), top, min(c.reference_packets, 2_000))
    for batch in c.batch_sweep:
        if batch not in c.batches:
            plans += [plan_verify_buffer(w, batch), plan_verify_batch(w, batch)]
        if batch in (1, 16, 256, 4096):
            plans.append(plan_reference(w, min(c.reference_packets, 2_000), batch))
    with tempfile.TemporaryDirectory(prefix="kbmfast-bench-") as tmp:
        if c.processes >= 2:
            plans += [p for p in (plan_processes(w, n, top, tmp) for n in (1, c.processes)) if p]
        if max(c.threads, c.processes) >= 2:
            parallel = plan_compress_parallel(c.ceiling_blocks, max(c.threads, c.processes))
            plans += [parallel] if parallel else []
        measures = execute(plans, c.repeat)
    figures += measure_setup(w, min(c.repeat, 3))
    if c.big_peers:
        big = run_big_table(c, plot=bool(c.peer_sweep))
        peers, seconds = big["verify_buffer"]
        label = f"C verify_buffer, batch {top}, {peers} peers"
        measures.append(Measure("c.verify_buffer", label, peers, seconds, top, peers=peers))
        measures += [Measure(*row) for row in big.get("plot", [])]
        s, mem = big["setup"], big["memory"]
        figures += [
            Figure("big.setup.keytable", f"KeyTable.add_kbm, {peers} peers", s["keytable_s"] / peers * 1e6, "µs/peer"),
            Figure("big.setup.verifier", f"Verifier(keys), {peers} peers", s["verifier_s"] / peers * 1e6, "µs/peer"),
            Figure("big.setup.keyfile", f"key file -> Verifier (load + Verifier), {peers} peers", s["keyfile_s"], "s"),
            Figure("memory.keytable", f"KeyTable (the key file in memory), {peers} peers", mem["keytable"], "B/peer"),
            Figure("memory.verifier", f"Verifier beyond the key table, {peers} peers (RSS)", mem["verifier"], "B/peer"),
        ]
        if mem["verifier_live"] is not None:
            figures.append(
                Figure("memory.verifier_live", "  of which still in use (after malloc_trim)", mem["verifier_live"], "B/peer")
            )
    return Report(c, environment(w), tuple(measures), tuple(figures))


def run_dict(config: BenchConfig | None = None) -> dict[str, Any]:
    """``run(config).to_dict()``: the results as JSON-ready values (``kbmfast bench --json``)."""
    return run(config).to_dict()


# ---------------------------------------------------------------------------------------------
# Text and plot


def si(x: float) -> str:
    """A rate in a short form: 6.51 M, 54.5 k, 812."""
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def _row(label: str, *cells: str) -> str:
    return f"{label:<54}" + "".join(f"{c:>11}" for c in cells)


def format_report(r: Report) -> str:
    """A readable table of ``r``."""
    c, env = r.config, r.environment
    top = max(c.batches)
    lines = [
        f"kbmfast {env['kbmfast']} bench: {c.peers} peers x {c.rounds} rounds = {env['packets']} minimal Binding Updates "
        f"({env['packet_bytes']} bytes), one core unless said",
        f"MAC kernel {env.get('kernel_choice', env['kernel'])}",
        f"{env['cpu']} ({env['cpus']} CPUs); Python {env['python']}; best of {c.repeat} (median beside it)",
        "",
        _row("verifications/s", "best", "median", "x ref", "x one-shot", "of ceiling"),
    ]

    def rate(m: Measure | None, label: str | None = None) -> None:
        if m is not None:
            q = r.ratios(m)
            lines.append(
                _row(label or m.label, si(m.best), si(m.median), f"{q['vs_reference']:.1f}", f"{q['vs_oneshot_hmac']:.2f}",
                     f"{q['of_ceiling']:.2f}")
            )  # fmt: skip

    for batch in c.batches:
        rate(r.get("c.verify_buffer", batch))
        rate(r.get("c.verify_batch", batch))
    for m in r.measures:
        if m.name.startswith("c.verify_buffer.kernel."):
            rate(m)
    rate(r.get("reference.verify_batch"))
    rate(r.get("oneshot_hmac"))
    if c.big_peers:
        rate(r.get("c.verify_buffer", top, c.big_peers))
    for name in ("c.threads.1", f"c.threads.{c.threads}", f"c.threads.{c.threads}.unpinned"):
        rate(r.get(name))
    for name in ("c.processes.1", f"c.processes.{c.processes}"):
        rate(r.get(name))
    for kind in ("shapes", "rejects"):
        rate(r.get(f"c.traffic.{kind}"), f"C verify_buffer, {kind} traffic (kbmfast.gen)")
        rate(r.get(f"reference.traffic.{kind}"), f"reference, {kind} traffic")
    lines.append(_row(f"ceiling ({r.ceiling_source}: best compressions/s / 2)", si(r.ceiling)))
    from ._rr_bench import rr_rows

    lines += rr_rows(r.measures, r.ceiling, _row, si)  # of ceiling: of compressions/s ÷ their count

    lines += ["", _row("latency and SHA-1", "best", "median")]
    for m in r.measures:
        if m.unit == "calls":
            lines.append(_row(m.label + " (µs/call)", f"{1e6 / m.best:.2f}", f"{1e6 / m.median:.2f}"))
    if r.overhead_us is not None:
        lines.append(_row("verify() above the bare C call (µs/call)", f"{r.overhead_us:.2f}"))
    for m in r.measures:
        if m.unit == "compressions":
            lines.append(_row(m.label + " (/s)", si(m.best), si(m.median)))

    setup = [f for f in r.figures if not f.name.startswith("traffic.")]
    if setup:
        lines += ["", "setup and memory"]
        lines += [_row(f"{f.label} ({f.unit})", f"{f.value:.1f}") for f in setup]
    shares = [f for f in r.figures if f.name.startswith("traffic.")]
    if shares:
        lines += ["", "generated traffic (kbmfast.gen), shares of packets:"]
        for kind in ("shapes", "rejects"):
            parts = [
                f"{f.name.split('.')[-1]} {f.value:.1%}" for f in shares if f.name.startswith(f"traffic.{kind}.") and f.value
            ]
            lines.append(f"  {kind}: " + ", ".join(parts))
    if c.peer_sweep or c.batch_sweep:
        lines += ["", _row("sweeps (verifications/s, best)", "C buffer", "C list", "reference", "one-shot")]
        for n in sorted({*c.peer_sweep, *([c.big_peers] if c.big_peers else [])}):
            cells = [r.get(name, top if name.startswith("c.") else None, n) for name in _SWEPT]
            lines.append(_row(f"  {n} peers, batch {top}", *(si(m.best) if m and m.peers == n else "-" for m in cells)))
        for b in c.batch_sweep:
            cells = [r.get(name, b) for name in ("c.verify_buffer", "c.verify_batch", "reference.verify_batch.sweep")]
            lines.append(_row(f"  batch {b}, {c.peers} peers", *(si(m.best) if m else "-" for m in cells)))
    h = r.headline
    lines += [
        "",
        f"headline (batch {h['batch']}): {si(h['verifications_per_s'])} verifications/s = "
        f"{h['vs_reference']:.0f}x the reference, {h['vs_oneshot_hmac']:.1f}x one-shot HMAC, "
        f"{h['of_ceiling']:.0%} of the SHA-1 ceiling",
        "",
        "targets:",
    ]
    for t in r.targets():
        mark = "n/a" if t.met is None else "met" if t.met else "NOT met"
        lines.append(f"  [{mark}] {t.text}: {t.measured}" + (f" ({t.note})" if t.note and t.met is not True else ""))
    return "\n".join(lines)


_SWEPT = ("c.verify_buffer", "c.verify_batch", "reference.verify_batch", "oneshot_hmac")
_STYLES = {
    "c.verify_buffer": ("C verify_buffer", "tab:blue", "o"),
    "c.verify_batch": ("C verify_batch (list)", "tab:orange", "s"),
    "reference.verify_batch": ("reference verify_batch", "tab:red", "v"),
    "oneshot_hmac": ("one-shot OpenSSL HMAC", "tab:green", "^"),
}


def plot(r: Report, path: str | BinaryIO, fmt: str | None = None) -> None:
    """Draw throughput against the number of peers and against the batch size, per backend,
    with the SHA-1 ceiling as a line, into ``path`` (a file name or a binary stream; ``fmt``,
    e.g. "png", by default from the name) (needs matplotlib: ``kbmfast[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'kbmfast[plot]'") from None
    c, env = r.config, r.environment
    top = max(c.batches)
    fig, (by_peers, by_batch) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=80, sharey=True)
    peers = sorted({m.peers for m in r.measures if m.unit == "verifications" and m.peers})
    for name, (label, color, marker) in _STYLES.items():
        found = (r.get(name, top if name.startswith("c.") else None, n) for n in peers)
        pts = [(m.peers, m.best) for m in found if m is not None and m.peers]
        if pts:
            by_peers.plot(*zip(*pts, strict=True), label=label, color=color, marker=marker)
    by_peers.set_xscale("log")
    by_peers.set_xlabel("configured peers")
    by_peers.set_ylabel("verifications/s, one core")
    by_peers.set_title(f"throughput vs peers (batch {top})", fontsize=10)

    batches = sorted({b for b in (*c.batches, *c.batch_sweep)})
    for name, (label, color, marker) in _STYLES.items():
        if name == "oneshot_hmac":
            by_batch.axhline(r.find(name).best, color=color, linestyle=":", label=f"{label} (no batching)")
            continue
        found = (r.get(name + (".sweep" if name.startswith("reference") else ""), b) for b in batches)
        pts = [(m.batch, m.best) for m in found if m is not None and m.batch]
        if pts:
            by_batch.plot(*zip(*pts, strict=True), label=label, color=color, marker=marker)
    for name, color in (("c.verify", "tab:purple"), ("reference.verify", "tab:brown")):
        m = r.get(name)
        if m is not None:
            label = f"{'C' if name.startswith('c') else 'reference'} verify(), one packet"
            by_batch.plot([1], [m.best], color=color, marker="*", markersize=11, linestyle="", label=label)
    by_batch.set_xscale("log", base=2)
    by_batch.set_xlabel("batch size (packets per call)")
    by_batch.set_title(f"throughput vs batch size ({c.peers} peers)", fontsize=10)
    for ax in (by_peers, by_batch):
        ax.axhline(r.ceiling, color="black", linestyle="--", label="SHA-1 ceiling (2 compressions each)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    by_peers.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 0.1))  # between the reference and one-shot
    by_batch.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"kbmfast {env['kbmfast']}, minimal Binding Updates; {env['cpu']}, SHA-1 kernel {env['kernel']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format=fmt)
    plt.close(fig)


__all__ = [
    "BenchConfig",
    "BenchError",
    "Figure",
    "Measure",
    "MinimalBuilder",
    "Report",
    "Target",
    "Traffic",
    "Workload",
    "check_accepted",
    "check_verdicts",
    "environment",
    "format_report",
    "make_traffic",
    "make_workload",
    "Plan",
    "execute",
    "measure_compress",
    "measure_latency",
    "measure_oneshot",
    "measure_reference",
    "measure_setup",
    "measure_verify_batch",
    "measure_verify_buffer",
    "plan_bare_call",
    "plan_compress",
    "plan_compress_parallel",
    "plan_kernels",
    "plan_verify_buffer_kernels",
    "kernel_choice",
    "plan_latency",
    "plan_oneshot",
    "plan_processes",
    "plan_reference",
    "plan_threads",
    "plan_traffic",
    "plan_verify_batch",
    "plan_verify_buffer",
    "plot",
    "run",
    "run_big_table",
    "run_dict",
    "si",
    "split_buffer",
    "split_list",
    "split_peers",
]
