"""pytest-benchmark: ``kbmfast verify`` end to end on a capture, against verification in memory.

One capture from ``kbmfast gen`` (1 M Binding Updates from 10 k peers, Ethernet, classic pcap;
KBMFAST_BENCH_QUICK=1: 20 k from 500 peers), then, on the same packets:

- ``kbmfast verify CAPTURE --keys KEYS`` through ``cli.main``, stdout to /dev/null (key file
  loading included: it is part of the command, and measured on its own too);
- reading alone: ``CaptureReader.batches`` (windowed read, record walk, link and IPv6 headers, gather);
- ``Verifier.verify_buffer`` on the same batches already in memory, and ``verify_batch`` on a
  list of the packets (4096 a call), each with a fresh verifier.

The closing summary gives the ratio end-to-end / in-memory (the goal: at least 0.5). Nothing
timed is asserted; every run checks its verdicts against gen's truth.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import kbmfast
from kbmfast import cli, gen
from kbmfast.capture import Batch, CaptureReader, PcapWriter

Recorder = Callable[..., None]
QUICK = os.environ.get("KBMFAST_BENCH_QUICK", "") not in ("", "0")
PEERS, UPDATES = (500, 20_000) if QUICK else (10_000, 1_000_000)
_best: dict[str, float] = {}


class Capture:
    def __init__(self, root: pathlib.Path) -> None:
        self.pcap = root / "bench.pcap"
        self.keys = root / "bench.keys.toml"
        traffic = gen.generate(PEERS, UPDATES, seed=2024)
        with open(self.pcap, "wb") as f:
            w = PcapWriter(f, linktype=1)
            for frame, us in traffic.frames:
                w.write(frame, us)
        traffic.keys.save(self.keys)
        self.truth = collections.Counter(e.verdict for e in traffic.truth)
        with CaptureReader(self.pcap) as r:
            self.batches: list[Batch] = list(r.batches())
        self.packets = [b.packet(i) for b in self.batches for i in range(len(b))]
        self.table = kbmfast.KeyTable.load(self.keys)


@pytest.fixture(scope="module")
def cap(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    return Capture(tmp_path_factory.mktemp("capture-bench"))


@contextlib.contextmanager
def stdout_to_devnull() -> Iterator[None]:
    saved = sys.stdout
    with open(os.devnull, "w") as null:
        sys.stdout = null
        try:
            yield
        finally:
            sys.stdout = saved


def time_command(benchmark: BenchmarkFixture, argv: list[str], repeat: int) -> None:
    """Time ``kbmfast ARGV`` in process with stdout to /dev/null; every run must exit 0."""
    codes: list[int] = []

    def once() -> None:
        with stdout_to_devnull():
            codes.append(cli.main(argv))

    benchmark.pedantic(once, rounds=max(2, repeat // 2))
    assert set(codes) == {0}


def keep_best(name: str, benchmark: BenchmarkFixture) -> None:
    if benchmark.stats:
        _best[name] = benchmark.stats.stats.min


def counts(verdicts: list[Any]) -> collections.Counter[kbmfast.Verdict]:
    c: collections.Counter[kbmfast.Verdict] = collections.Counter()
    for v in verdicts:
        c.update(kbmfast.Verdict(x) for x in v)
    return c


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_verify_command_end_to_end(
    benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kbmfast verify CAPTURE --keys KEYS > /dev/null`, in process; then its verdicts are checked."""
    time_command(benchmark, ["verify", str(cap.pcap), "--keys", str(cap.keys)], repeat)
    record(len(cap.packets), unit="packets/s")
    keep_best("end to end", benchmark)
    check_command_verdicts(cap, capsys)


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_verify_command_quiet(benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int) -> None:
    """`kbmfast verify CAPTURE --keys KEYS --quiet`: the summary only (no line per packet)."""
    time_command(benchmark, ["verify", str(cap.pcap), "--keys", str(cap.keys), "--quiet"], repeat)
    record(len(cap.packets), unit="packets/s")
    keep_best("end to end, --quiet", benchmark)


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_verify_command_json(benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int) -> None:
    """`kbmfast verify CAPTURE --keys KEYS --json`: JSON lines (written in C, as the text lines)."""
    time_command(benchmark, ["verify", str(cap.pcap), "--keys", str(cap.keys), "--json"], repeat)
    record(len(cap.packets), unit="packets/s")
    keep_best("end to end, --json", benchmark)


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_verify_command_acks_out(
    benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int, tmp_path: pathlib.Path
) -> None:
    """`kbmfast verify CAPTURE --keys KEYS --acks-out FILE`: lines and acknowledgements (C)."""
    acks = tmp_path / "acks.pcap"
    argv = ["verify", str(cap.pcap), "--keys", str(cap.keys), "--acks-out", str(acks)]
    time_command(benchmark, argv, repeat)
    record(len(cap.packets), unit="packets/s")
    keep_best("end to end, --acks-out", benchmark)
    assert acks.stat().st_size > 24


@pytest.mark.benchmark(group="capture: gen")
def test_gen_command(benchmark: BenchmarkFixture, record: Recorder, tmp_path: pathlib.Path) -> None:
    """`kbmfast gen` of the bench capture in a child process: its time and peak RSS (it streams:
    bounded memory whatever --updates is)."""
    import subprocess
    import time

    argv = [sys.executable, "-P", "-m", "kbmfast.cli", "gen", "--peers", str(PEERS), "--updates", str(UPDATES)]
    argv += ["--seed", "2024", "--out", str(tmp_path / "g.pcap"), "--truth", str(tmp_path / "g.truth"), "--force"]
    code = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    code += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    peaks: list[int] = []

    def once() -> None:
        done = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True)
        peaks.append(int(done.stdout.split()[-1]))

    start = time.monotonic()
    benchmark.pedantic(once, rounds=1)
    record(UPDATES, unit="packets/s")
    _best["gen"] = time.monotonic() - start
    _best["gen peak RSS MB"] = max(peaks) / 1024


def check_command_verdicts(cap: Capture, capsys: pytest.CaptureFixture[str]) -> None:
    """The same command's verdicts (JSON) equal the truth gen computed with the oracle."""
    capsys.readouterr()
    assert cli.main(["verify", str(cap.pcap), "--keys", str(cap.keys), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(lines[-1])["summary"]
    assert {k: v for k, v in summary["verdicts"].items() if v} == {v.name: n for v, n in cap.truth.items()}
    assert len(lines) == len(cap.packets) + 1


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_key_file_load(benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int) -> None:
    """KeyTable.load of the capture's key file (part of the end-to-end figure)."""
    tables = benchmark.pedantic(kbmfast.KeyTable.load, args=(cap.keys,), rounds=max(2, repeat // 2))
    assert len(tables) == PEERS
    record(PEERS, unit="peers/s")
    keep_best("key file load", benchmark)


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_capture_read(benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int) -> None:
    """CaptureReader alone: windowed read, record walk, link/IPv6 headers, batches."""
    sizes: list[int] = []

    def once() -> None:
        with CaptureReader(cap.pcap) as r:
            sizes.append(sum(len(b) for b in r.batches()))

    benchmark.pedantic(once, rounds=repeat)
    assert set(sizes) == {len(cap.packets)}
    record(len(cap.packets), unit="packets/s")
    keep_best("read", benchmark)


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_verify_buffer_in_memory(benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int) -> None:
    runs: list[list[Any]] = []
    benchmark.pedantic(
        lambda v: runs.append([v.verify_buffer(b.data, b.offsets) for b in cap.batches]),
        setup=lambda: ((kbmfast.Verifier(cap.table),), {}),
        rounds=repeat,
    )
    assert all(counts(r) == cap.truth for r in runs)
    record(len(cap.packets))
    keep_best("verify_buffer", benchmark)


@pytest.mark.benchmark(group="capture: end to end vs in memory")
def test_verify_batch_in_memory(benchmark: BenchmarkFixture, record: Recorder, cap: Capture, repeat: int) -> None:
    lists = [cap.packets[i : i + 4096] for i in range(0, len(cap.packets), 4096)]
    runs: list[list[Any]] = []
    benchmark.pedantic(
        lambda v: runs.append([v.verify_batch(p) for p in lists]),
        setup=lambda: ((kbmfast.Verifier(cap.table),), {}),
        rounds=repeat,
    )
    assert all(counts(r) == cap.truth for r in runs)
    record(len(cap.packets))
    keep_best("verify_batch", benchmark)


@pytest.mark.benchmark(group="capture: ratios")
def test_capture_ratio_summary(benchmark: BenchmarkFixture, record_property: Callable[[str, object], None]) -> None:
    """Print the ratios (no assertion on them: timing depends on the machine).

    It asks for the benchmark fixture (and times nothing of interest) only so that it runs under
    --benchmark-only, as in CI.
    """
    benchmark.pedantic(lambda: None, rounds=1)
    if not {"end to end", "verify_buffer", "verify_batch"} <= set(_best):
        pytest.skip("the timed benchmarks did not run (--benchmark-disable?)")
    lines = [f"capture of {UPDATES} packets, {PEERS} peers (best rounds):"]
    for mode in ("end to end", "end to end, --quiet"):
        if mode not in _best:
            continue
        e2e = _best[mode]
        for name in ("verify_buffer", "verify_batch"):
            ratio = _best[name] / e2e
            record_property(f"ratio_{mode}_vs_{name}", ratio)
            lines.append(f"  kbmfast verify ({mode}) runs at {ratio:.2f} x the speed of {name} in memory")
            if "key file load" in _best:
                lines.append(f"    ({_best[name] / (e2e - _best['key file load']):.2f} x without loading the key file)")
    lines_s = _best.get("end to end")
    for mode in ("end to end, --quiet", "end to end", "end to end, --json", "end to end, --acks-out"):
        if mode in _best:
            rel = f" ({_best[mode] / lines_s:.2f} x the lines)" if lines_s else ""
            lines.append(f"  kbmfast verify ({mode}): {_best[mode]:.2f} s{rel}")
    if "gen" in _best:
        lines.append(f"  kbmfast gen: {_best['gen']:.1f} s, peak RSS {_best['gen peak RSS MB']:.0f} MB")
    print("\n".join(lines))
