"""pytest-benchmark: latency, throughput, scaling and yardsticks (minimal Binding Updates, 10 k peers).

No timed assertions: figures are recorded (see conftest.py). Every run checks its verdicts, so a
fast wrong answer fails. Run: KBMFAST_BENCH_QUICK=1 python -P -m pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import kbmfast
import kbmfast.reference
from kbmfast import bench
from kbmfast._native_edge import ffi, lib
from kbmfast._stateformat import prepare
from kbmfast.bench import Traffic, Workload, check_accepted, check_verdicts, measures, pack, split_buffer, split_list, split_peers

Recorder = Callable[..., None]  # the `record` fixture of conftest.py
BACKENDS = {"c": kbmfast, "reference": kbmfast.reference}
BATCH = 4096


def fresh(backend: Any, keys: kbmfast.KeyTable) -> Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]:
    """A setup for pedantic: a new verifier per round, so every packet is accepted again."""
    return lambda: ((backend.Verifier(keys),), {})


# ---------------------------------------------------------------------------------------------
# One packet per call


@pytest.mark.benchmark(group="verify() latency")
@pytest.mark.parametrize("name", ["c", "c-cold", "reference"])
def test_verify_latency(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, quick: bool, name: str) -> None:
    """One verify() per round, on the packets in order (one verifier: each is a new sequence).
    c: the verdict read (a Result computes its other fields when first read), the C backend's
    address caches warm; c-cold: the caches emptied before every call and every field read, so
    each Result builds its addresses."""
    backend = BACKENDS[name.split("-")[0]]
    calls = (2_000 if quick else 20_000) // (10 if name == "reference" else 1)
    packets = workload.packets[:calls]
    if name == "c":
        with kbmfast.Verifier(workload.keys) as warm:
            for p in packets:
                warm.verify(p)
    verifier = backend.Verifier(workload.keys)
    feed = iter(packets)
    verdicts: list[int] = []

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        if name == "c-cold":
            measures._forget_addresses()
        return (next(feed),), {}

    read = measures._every_field if name == "c-cold" else (lambda r: r.verdict)
    benchmark.pedantic(lambda p: verdicts.append(read(verifier.verify(p))), setup=setup, rounds=calls)
    check_accepted([verdicts], f"{name} verify()")
    record(1, per_call=True)


@pytest.mark.benchmark(group="verify() latency")
def test_bare_call(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, quick: bool) -> None:
    """What verify() wraps: lib.kbm_verify on one packet, every argument prepared beforehand."""
    calls = 2_000 if quick else 20_000
    verifier = kbmfast.Verifier(workload.keys)
    offsets, verdict = ffi.new("uint64_t[2]"), ffi.new("uint8_t[1]")
    detail, where = ffi.new("kbm_detail[1]"), ffi.new("size_t *")
    feed = iter(workload.packets[:calls])
    verdicts: list[int] = []

    def once(p: bytes) -> None:
        lib.kbm_verify(verifier._v, p, len(p), offsets, 1, verdict, detail, where)
        verdicts.append(verdict[0])

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        p = next(feed)
        offsets[1] = len(p)
        return (p,), {}

    benchmark.pedantic(once, setup=setup, rounds=calls)
    check_accepted([verdicts], "bare kbm_verify call")
    record(1, per_call=True)


# ---------------------------------------------------------------------------------------------
# Throughput, one core


@pytest.mark.benchmark(group="verify_buffer throughput (C)")
@pytest.mark.parametrize("batch", [1, 16, 256, 4096])
def test_verify_buffer(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int, batch: int) -> None:
    """All packets through verify_buffer, in precomputed zero-copy batches."""
    pairs = split_buffer(workload.buffer, workload.offsets, batch)
    runs: list[list[Any]] = []

    def all_batches(v: Any) -> None:
        runs.append([v.verify_buffer(b, o) for b, o in pairs])

    benchmark.pedantic(all_batches, setup=fresh(kbmfast, workload.keys), rounds=repeat)
    for out in runs:
        check_accepted(out, f"verify_buffer, batch {batch}")
    record(len(workload))


@pytest.mark.benchmark(group="verify_batch throughput (list input)")
@pytest.mark.parametrize("batch", [256, 4096])
def test_verify_batch_list(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int, batch: int) -> None:
    """All packets through the C backend's verify_batch, lists of bytes."""
    lists = split_list(workload.packets, batch)
    runs: list[list[Any]] = []

    def all_batches(v: Any) -> None:
        runs.append([v.verify_batch(p) for p in lists])

    benchmark.pedantic(all_batches, setup=fresh(kbmfast, workload.keys), rounds=repeat)
    for out in runs:
        check_accepted(out, f"verify_batch, batch {batch}")
    record(len(workload))


@pytest.mark.benchmark(group="verify_batch throughput (list input)")
def test_reference_verify_batch(
    benchmark: BenchmarkFixture, record: Recorder, workload: Workload, quick: bool, repeat: int
) -> None:
    """The pure-Python backend on one small batch (it is ~100x slower)."""
    sample = workload.packets[: 500 if quick else 2_000]
    runs: list[Any] = []
    benchmark.pedantic(
        lambda v: runs.append(v.verify_batch(sample)), setup=fresh(kbmfast.reference, workload.keys), rounds=repeat
    )
    check_accepted(runs, "reference verify_batch")
    record(len(sample))


@pytest.mark.benchmark(group="traffic (kbmfast.gen)")
@pytest.mark.parametrize("backend", ["c", "reference"])
def test_traffic(benchmark: BenchmarkFixture, record: Recorder, traffic: Traffic, quick: bool, repeat: int, backend: str) -> None:
    """Generated traffic, shapes (AltCoA, de-registration, Nonce Indices, RFC 4449 peers) or
    rejects (replays, forgeries, unknown peers, malformed): every verdict the known one."""
    runs: list[bytes] = []
    if backend == "c":
        pairs = split_buffer(traffic.buffer, traffic.offsets, BATCH)
        n = len(traffic.packets)
        work: Callable[[Any], None] = lambda v: runs.append(b"".join(v.verify_buffer(b, o).tobytes() for b, o in pairs))  # noqa: E731
    else:
        sample = traffic.packets[: 500 if quick else 2_000]
        n = len(sample)
        work = lambda v: runs.append(v.verify_batch(sample).tobytes())  # noqa: E731
    benchmark.pedantic(work, setup=fresh(BACKENDS[backend], traffic.keys), rounds=repeat)
    for out in runs:
        check_verdicts(out, traffic.verdicts[:n], f"{backend} on {traffic.kind} traffic")
    record(n)
    if backend == "c" and benchmark.stats:
        # the ceiling for this mix, from this run: every kernel's compressions/s, the best one
        # divided by the compressions per packet the mix needs (workload.mix_compressions)
        kernels = measures.execute([measures.plan_compress(1_000_000, 2), *measures.plan_kernels(1_000_000)], repeat)
        ceiling = max(m.best for m in kernels) / (traffic.compressions / len(traffic.packets))
        record(value=100 * n / benchmark.stats.stats.min / ceiling, unit="% of the mix's ceiling")


# ---------------------------------------------------------------------------------------------
# Scaling: threads on one Verifier, processes on one state file, a large table


def _thread_setup(w: Workload, jobs: list[list[Any]], runs: list[list[Any]], cpus: list[int] | None) -> Callable[[], Any]:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        v = kbmfast.Verifier(w.keys)
        start = threading.Barrier(len(jobs) + 1)
        out: list[list[Any]] = [[] for _ in jobs]
        runs.append(out)
        pool = [
            threading.Thread(target=measures._thread_worker, args=(v, job, start, out, k, cpus[k] if cpus else None))
            for k, job in enumerate(jobs)
        ]
        for t in pool:
            t.start()
        return (start, pool), {}

    return setup


def _release(start: Any, pool: list[threading.Thread]) -> None:
    start.wait()
    for t in pool:
        t.join()


@pytest.mark.benchmark(group="scaling")
@pytest.mark.parametrize("threads", ["1", "2", "2-unpinned"])
def test_threads(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int, threads: str) -> None:
    """One Verifier, 1 or 2 threads (each its share of the peers; the GIL is released in C),
    each on a CPU of its own unless unpinned (see kbmfast.bench.plan_threads)."""
    pairs = [split_buffer(*pack(share), BATCH) for share in split_peers(workload, 2)]
    jobs = [pairs[0] + pairs[1]] if threads == "1" else pairs
    cpus = None if threads.endswith("unpinned") else measures._cpus(len(jobs))
    runs: list[list[list[Any]]] = []
    benchmark.pedantic(_release, setup=_thread_setup(workload, jobs, runs, cpus), rounds=repeat)
    for out in runs:
        for part in out:
            check_accepted(part, f"{threads} thread(s)")
    record(len(workload))


def _child(keys: kbmfast.KeyTable, job: Any, path: str, ready: Any, start: Any, conn: Any) -> None:
    with kbmfast.Verifier(keys, state=path) as v:
        ready.wait()
        start.wait()
        out = [v.verify_buffer(b, o) for b, o in job]
        conn.send(sum(o.count(0) for o in out))  # before close() flushes the file: untimed
    conn.close()


@pytest.mark.benchmark(group="scaling")
@pytest.mark.parametrize("processes", [1, 2])
def test_processes(
    benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int, processes: int, tmp_path: Any
) -> None:
    """1 or 2 forked processes, each its own Verifier on one shared state file and its share of
    the peers; timed from the release of the started children to their last answer."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    ctx = multiprocessing.get_context("fork")
    pairs = [split_buffer(*pack(share), BATCH) for share in split_peers(workload, 2)]
    jobs = [pairs[0] + pairs[1]] if processes == 1 else pairs
    accepted: list[int] = []
    counter = iter(range(repeat + 1))
    done: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        path = os.path.join(tmp_path, f"state.{next(counter)}")
        prepare(path)
        ready, start = ctx.Barrier(len(jobs) + 1), ctx.Barrier(len(jobs) + 1)
        pipes = [ctx.Pipe(duplex=False) for _ in jobs]
        children = [
            ctx.Process(target=_child, args=(workload.keys, job, path, ready, start, send), daemon=True)
            for job, (_, send) in zip(jobs, pipes, strict=True)
        ]
        for c in children:
            c.start()
        ready.wait()  # every child has its Verifier: the timed part is the verifying only
        return (start, pipes, children), {}

    def run(start: Any, pipes: list[Any], children: list[Any]) -> None:
        start.wait()
        accepted.append(sum(recv.recv() for recv, _ in pipes))
        done.extend(children)

    benchmark.pedantic(run, setup=setup, rounds=repeat)
    for c in done:
        c.join()
        assert c.exitcode == 0
    assert accepted == [len(workload)] * repeat  # every packet accepted, by one process or the other
    record(len(workload))


@pytest.fixture(scope="module")
def big(big_peers: int) -> Iterator[tuple[kbmfast.Verifier, Iterator[list[Any]], int]]:
    """big_peers peers, one Verifier, and each round's batches (one round per benchmark round)."""
    homes, kbms, firsts = bench.make_peers(big_peers)
    verifier = kbmfast.Verifier(bench.key_table(homes, kbms))

    def rounds() -> Iterator[list[Any]]:
        for r in range(bench.MAX_ROUNDS):
            packets, _, _ = bench.build_rounds(kbms, firsts, range(r, r + 1))
            yield split_buffer(*pack(packets), BATCH)

    with verifier:
        yield verifier, rounds(), big_peers


@pytest.mark.benchmark(group="scaling")
def test_big_table(benchmark: BenchmarkFixture, record: Recorder, big: Any) -> None:
    """verify_buffer with big_peers configured peers (each peer once per round, random order)."""
    verifier, rounds, peers = big
    runs: list[list[Any]] = []
    benchmark.pedantic(
        lambda pairs: runs.append([verifier.verify_buffer(b, o) for b, o in pairs]),
        setup=lambda: ((next(rounds),), {}),
        rounds=3,
    )
    for out in runs:
        check_accepted(out, f"verify_buffer, {peers} peers")
    record(peers)


@pytest.mark.benchmark(group="setup and memory")
def test_setup(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int) -> None:
    """KeyTable + Verifier for the workload's peers (µs per peer is the mean / peers)."""
    homes = [bench.peer_addresses(i)[0] for i in range(workload.peers)]
    built: list[Any] = []
    benchmark.pedantic(lambda: built.append(kbmfast.Verifier(bench.key_table(homes, workload.kbms))), rounds=repeat)
    for v in built:
        check_accepted([v.verify_batch(workload.packets[:100])], "a Verifier just built")
        v.close()
    record(workload.peers, unit="peers/s")


@pytest.mark.benchmark(group="setup and memory")
def test_keyfile_to_verifier(
    benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int, tmp_path: os.PathLike[str]
) -> None:
    """A key file as save() writes it -> a running C Verifier: KeyTable.load + Verifier (issue 14
    item 4's start-up; the 1 M-peer figure is kbmfast bench's ``key file -> Verifier`` row)."""
    path = os.path.join(tmp_path, "cn.keys")
    workload.keys.save(path)
    built: list[Any] = []
    benchmark.pedantic(lambda: built.append(kbmfast.Verifier(kbmfast.KeyTable.load(path))), rounds=repeat)
    for v in built:
        check_accepted([v.verify_batch(workload.packets[:100])], "a Verifier built from the key file")
        v.close()
    record(workload.peers, unit="peers/s")


@pytest.mark.benchmark(group="setup and memory")
def test_memory_per_peer(benchmark: BenchmarkFixture, record: Recorder, big_peers: int) -> None:
    """Resident memory per peer with big_peers peers, measured in a fresh interpreter (which also
    verifies one round and checks every verdict). The time is that whole child's."""
    config = bench.BenchConfig(big_peers=big_peers, big_rounds=1)
    out: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: out.append(bench.run_big_table(config, plot=False)), rounds=1)
    memory = out[0]["memory"]
    record(value=memory["verifier"], unit="verifier_bytes_per_peer")
    record(value=memory["keytable"], unit="keytable_bytes_per_peer")
    if memory["verifier_live"] is not None:
        record(value=memory["verifier_live"], unit="verifier_live_bytes_per_peer")


# ---------------------------------------------------------------------------------------------
# Yardsticks


@pytest.mark.benchmark(group="yardsticks")
def test_oneshot_hmac(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int) -> None:
    """What existing daemons do: parse, one-shot OpenSSL HMAC() and memcmp per packet."""
    n = len(workload)
    buf = ffi.from_buffer("uint8_t[]", workload.buffer)
    offs = ffi.from_buffer("uint64_t[]", workload.offsets)
    kbms = ffi.from_buffer("uint8_t[]", workload.packet_kbms)
    ok = ffi.new("uint8_t[]", n)
    rc = benchmark.pedantic(lib.kbm_bench_oneshot, args=(buf, offs, n, kbms, ok), rounds=repeat)
    assert rc == 0
    assert bytes(ffi.buffer(ok)) == b"\x01" * n  # every authenticator matched (the last round)
    record(n)


@pytest.mark.benchmark(group="yardsticks")
@pytest.mark.parametrize("streams", [1, 2])
def test_compression_ceiling(benchmark: BenchmarkFixture, record: Recorder, quick: bool, repeat: int, streams: int) -> None:
    """Raw SHA-1 compressions/s; a minimal Binding Update needs 2, so the ceiling is half."""
    blocks = 1_000_000 if quick else 5_000_000
    benchmark.pedantic(lib.kbm_bench_compress, args=(blocks, streams), rounds=repeat)
    record(blocks, unit="compressions/s")
