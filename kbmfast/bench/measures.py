"""The benchmark's measures: each path planned (:class:`Plan`), timed (best of ``repeat``, every
verdict checked) and reported as a :class:`Measure`; the large table in a fresh interpreter."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import multiprocessing
import os
import statistics
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import kbmfast
import kbmfast.reference

from .. import _stateformat
from .. import fast as _fast
from .._native_edge import ffi, lib
from .._outputs import child_defaults

# ---------------------------------------------------------------------------------------------
# Measuring
from .workload import (
    SWEEP_PACKETS,
    BenchConfig,
    BenchError,
    Traffic,
    Workload,
    build_rounds,
    check_builder,
    key_table,
    make_peers,
    pack,
    peer_addresses,
    split_buffer,
    split_list,
    split_peers,
)


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


def _every_field(r: kbmfast.Result) -> int:
    """Read every field of ``r`` (a Result computes all but its verdict when first read): its verdict."""
    for name in _RESULT_FIELDS:
        getattr(r, name)
    return int(r.verdict)


_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(kbmfast.Result))


def plan_latency(backend: str, w: Workload, calls: int, *, cold: bool = False) -> Plan:
    """Single-packet ``verify()`` of ``backend`` ("c" or "reference") on the first ``calls``
    packets in order, with a fresh verifier each run: items are calls.

    A Result computes its fields but the verdict when they are first read, and the C backend
    caches its IPv6Address objects: warm (the default), only the verdict is read, and the same
    packets went through once before the timed runs; ``cold``, the caches are emptied before each
    run, ``calls`` is cut to one packet per peer, and every field is read, so every call builds
    its addresses.
    """
    factory = kbmfast.Verifier if backend == "c" else kbmfast.reference.Verifier
    sample = w.packets[: min(calls, w.peers) if cold else calls]
    label = f"{'C' if backend == 'c' else backend} verify() latency{', cold, every field read' if cold else ''}"

    def work(v: Any) -> list[int]:
        verify = v.verify
        if cold:
            return [_every_field(verify(p)) for p in sample]
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


def keyfile_to_verifier_with_state(keys: kbmfast.KeyTable) -> tuple[float, float]:
    """Seconds from a key file to a running C Verifier with a state file: a new one (a slot
    appended for every peer), then that one again (every slot found: a restart)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, state = os.path.join(tmp, "cn.keys"), os.path.join(tmp, "cn.state")
        keys.save(path)
        times = []
        for _ in range(2):
            gc.collect()
            t0 = perf_counter()
            verifier = kbmfast.Verifier(kbmfast.KeyTable.load(path), state=state)
            times.append(perf_counter() - t0)
            verifier.close()
    return times[0], times[1]


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
    out["setup"]["keyfile_state_s"], out["setup"]["keyfile_state_again_s"] = keyfile_to_verifier_with_state(keys)
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
