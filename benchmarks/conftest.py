"""Shared fixtures for the pytest-benchmark suite: one workload, sizes, and a figure recorder.

KBMFAST_BENCH_QUICK=1 shrinks every benchmark (CI: the whole suite in well under a minute).
Figures are recorded as verifications/s (best round) or µs/call (median round) in each
benchmark's extra_info (so --benchmark-json keeps them) and printed in a closing summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kbmfast.bench import Workload, make_workload, si

QUICK = os.environ.get("KBMFAST_BENCH_QUICK", "") not in ("", "0")
PEERS = 10_000
BU_ROUNDS = 2 if QUICK else 8  # Binding Updates per peer in the workload
REPEAT = 5 if QUICK else 10  # pytest-benchmark rounds of each whole-workload benchmark

_figures: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def quick() -> bool:
    return QUICK


@pytest.fixture(scope="session")
def repeat() -> int:
    return REPEAT


@pytest.fixture(scope="session")
def workload() -> Workload:
    return make_workload(PEERS, BU_ROUNDS)


Recorder = Callable[..., None]


@pytest.fixture
def record(benchmark: BenchmarkFixture) -> Recorder:
    """record(items) after a pedantic run: items per second of the best round, or with
    per_call=True the median round's µs (rounds of one call each)."""

    def record(items: int, *, unit: str = "verifications/s", per_call: bool = False) -> None:
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
