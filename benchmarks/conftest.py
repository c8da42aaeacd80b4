"""Shared fixtures for the pytest-benchmark suite: workloads, sizes, and a figure recorder.

KBMFAST_BENCH_QUICK=1 shrinks every benchmark (CI: the whole suite in about a minute).
Figures are recorded as verifications/s (best round) or µs/call (median round) in each
benchmark's extra_info (so --benchmark-json keeps them) and printed in a closing summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kbmfast.bench import Traffic, Workload, make_traffic, make_workload, si

QUICK = os.environ.get("KBMFAST_BENCH_QUICK", "") not in ("", "0")
PEERS = 10_000
BU_ROUNDS = 2 if QUICK else 8  # Binding Updates per peer in the workload
REPEAT = 5 if QUICK else 10  # pytest-benchmark rounds of each whole-workload benchmark
BIG_PEERS = 100_000 if QUICK else 1_000_000  # the large-table benchmarks
TRAFFIC_PACKETS = 20_000 if QUICK else 100_000  # each generated traffic sample (kbmfast.gen)

_figures: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def quick() -> bool:
    return QUICK


@pytest.fixture(scope="session")
def repeat() -> int:
    return REPEAT


@pytest.fixture(scope="session")
def big_peers() -> int:
    return BIG_PEERS


@pytest.fixture(scope="session")
def workload() -> Workload:
    return make_workload(PEERS, BU_ROUNDS)


@pytest.fixture(scope="session", params=["shapes", "rejects"])
def traffic(request: pytest.FixtureRequest) -> Traffic:
    """Generated traffic: every Binding Update shape, or with replays, forgeries, unknown peers."""
    kind: str = request.param
    return make_traffic(kind, PEERS, TRAFFIC_PACKETS)


Recorder = Callable[..., None]


@pytest.fixture
def record(benchmark: BenchmarkFixture) -> Recorder:
    """record(items) after a pedantic run: items per second of the best round, or with
    per_call=True the median round's µs (rounds of one call each); record(value=, unit=) for a
    figure that is not a rate."""

    def record(items: int = 0, *, unit: str = "verifications/s", per_call: bool = False, value: float | None = None) -> None:
        if value is not None:
            benchmark.extra_info[unit] = value
            _figures.append((benchmark.name, f"{value:.1f} {unit}"))
            return
        if not benchmark.stats:  # --benchmark-disable: nothing was timed
            return
        stats = benchmark.stats.stats
        if per_call:
            value, text = stats.median * 1e6, f"{stats.median * 1e6:.2f} µs/call (median)"
            unit = "us_per_call"
        else:
            value = items / stats.min
            text = f"{si(value)} {unit} (best)"
        benchmark.extra_info[unit] = value
        _figures.append((benchmark.name, text))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _figures:
        terminalreporter.section(f"kbmfast figures ({PEERS} peers x {BU_ROUNDS} rounds{', quick' if QUICK else ''})")
        for name, text in _figures:
            terminalreporter.write_line(f"{name:<50} {text}")
