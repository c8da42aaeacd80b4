"""pytest-benchmark: ``kbmfast serve`` on a veth pair against a plain libpcap loop
(kbmfast.bench.serve; the figures in docs/performance.md come from ``kbmfast bench --serve``).

Needs root, iproute2, nftables and tcpreplay (CI has them). One round: the interesting output is
the printed table (the highest rate each side keeps up with, serve's CPU per BU, user space and
kernel apart, against verify_buffer's); the only assertion is that the slowest rate is kept up
by both sides.
"""

from __future__ import annotations

import os
import shutil

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kbmfast.bench import serve as serve_bench

QUICK = os.environ.get("KBMFAST_BENCH_QUICK", "") not in ("", "0")


@pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "nft", "tcpreplay")),
    reason="needs root, iproute2, nftables and tcpreplay (CI has them)",
)
def test_serve_against_plain_capture(benchmark: BenchmarkFixture) -> None:
    rates = (20_000, 0) if QUICK else serve_bench.DEFAULT_RATES
    report = benchmark.pedantic(
        serve_bench.run, kwargs={"packets": 20_000 if QUICK else 100_000, "rates": rates}, rounds=1, iterations=1
    )
    print("\n" + serve_bench.format_report(report))
    slowest = [s for s in report.steps if s.target_pps == rates[0]]
    assert all(s.ok for s in slowest), slowest
