"""pytest-benchmark: latency, throughput and yardsticks on minimal Binding Updates (10 k peers).

No timed assertions: figures are recorded (see conftest.py). Every run checks its verdicts, so a
fast wrong answer fails. Run: KBMFAST_BENCH_QUICK=1 python -P -m pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import kbmfast
import kbmfast.reference
from kbmfast._native_edge import ffi, lib
from kbmfast.bench import Workload, check_accepted, split_buffer, split_list

Recorder = Callable[..., None]  # the `record` fixture of conftest.py
BACKENDS = {"c": kbmfast, "reference": kbmfast.reference}


def fresh(backend: Any, w: Workload) -> Any:
    """A setup for pedantic: a new verifier per round, so every packet is accepted again."""
    return lambda: ((backend.Verifier(w.keys),), {})


@pytest.mark.benchmark(group="verify() latency")
@pytest.mark.parametrize("name", ["c", "reference"])
def test_verify_latency(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, quick: bool, name: str) -> None:
    """One verify() per round, on the packets in order (one verifier: each is a new sequence)."""
    calls = (2_000 if quick else 20_000) // (1 if name == "c" else 10)
    verifier = BACKENDS[name].Verifier(workload.keys)
    packets = iter(workload.packets[:calls])
    verdicts: list[int] = []

    def once(p: bytes) -> None:
        verdicts.append(verifier.verify(p).verdict)

    benchmark.pedantic(once, setup=lambda: ((next(packets),), {}), rounds=calls)
    check_accepted([verdicts], f"{name} verify()")
    record(1, per_call=True)


@pytest.mark.benchmark(group="verify_buffer throughput (C)")
@pytest.mark.parametrize("batch", [1, 16, 256, 4096])
def test_verify_buffer(benchmark: BenchmarkFixture, record: Recorder, workload: Workload, repeat: int, batch: int) -> None:
    """All packets through verify_buffer, in precomputed zero-copy batches."""
    pairs = split_buffer(workload.buffer, workload.offsets, batch)
    runs: list[list[Any]] = []

    def all_batches(v: Any) -> None:
        runs.append([v.verify_buffer(b, o) for b, o in pairs])

    benchmark.pedantic(all_batches, setup=fresh(kbmfast, workload), rounds=repeat)
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

    benchmark.pedantic(all_batches, setup=fresh(kbmfast, workload), rounds=repeat)
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
    benchmark.pedantic(lambda v: runs.append(v.verify_batch(sample)), setup=fresh(kbmfast.reference, workload), rounds=repeat)
    check_accepted(runs, "reference verify_batch")
    record(len(sample))


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
