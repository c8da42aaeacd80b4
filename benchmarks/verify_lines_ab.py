"""``kbmfast verify`` against ``verify_buffer`` on the same capture, in one process (CPU time).

Usage: python -P benchmarks/verify_lines_ab.py DIR [ROUNDS] [MODES]

DIR holds bench.pcap and bench.keys.toml (as benchmarks/test_capture_bench.py writes them; make
them with ``--make PEERS UPDATES``). Each round runs ``verify_buffer`` over the capture's batches
in memory (a fresh Verifier), then ``kbmfast verify`` through ``cli.main`` with stdout to
/dev/null for each mode (lines, quiet, json); the best round of each is printed, wall and
process CPU time (both threads), with its ratio to ``verify_buffer``. Run it with two builds one
after the other (``taskset -c 1``) for a before/after on a shared machine: the CPU ratios are
what a busy machine leaves comparable.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import kbmfast
from kbmfast import cli, gen
from kbmfast.capture import CaptureReader, PcapWriter

MODES = {"lines": [], "quiet": ["--quiet"], "json": ["--json"]}


def make(root: pathlib.Path, peers: int, updates: int) -> None:
    traffic = gen.generate(peers, updates, seed=2024)
    with open(root / "bench.pcap", "wb") as f:
        w = PcapWriter(f, linktype=1)
        for frame, us in traffic.frames:
            w.write(frame, us)
    traffic.keys.save(root / "bench.keys.toml")


def main() -> None:
    root = pathlib.Path(sys.argv[1])
    if sys.argv[2:3] == ["--make"]:
        make(root, int(sys.argv[3]), int(sys.argv[4]))
        return
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    modes = sys.argv[3].split(",") if len(sys.argv) > 3 else list(MODES)
    pcap, keys = str(root / "bench.pcap"), str(root / "bench.keys.toml")
    with CaptureReader(pcap) as r:
        batches = list(r.batches())
    table = kbmfast.KeyTable.load(keys)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def keep(name: str, w: float, c: float) -> None:
        wall[name], cpu[name] = min(wall.get(name, w), w), min(cpu.get(name, c), c)

    for _ in range(rounds):
        v = kbmfast.Verifier(table)
        t, c = time.perf_counter(), time.process_time()
        for b in batches:
            v.verify_buffer(b.data, b.offsets)
        keep("verify_buffer", time.perf_counter() - t, time.process_time() - c)
        for mode in modes:
            saved = sys.stdout
            with open(os.devnull, "w") as null:
                sys.stdout = null
                try:
                    t, c = time.perf_counter(), time.process_time()
                    assert cli.main(["verify", pcap, "--keys", keys, *MODES[mode]]) == 0
                    keep(mode, time.perf_counter() - t, time.process_time() - c)
                finally:
                    sys.stdout = saved
    for name in wall:
        print(
            f"{name:15} wall {wall[name]:6.3f} s ratio {wall['verify_buffer'] / wall[name]:.2f} | "
            f"cpu {cpu[name]:6.3f} s ratio {cpu['verify_buffer'] / cpu[name]:.2f}"
        )


if __name__ == "__main__":
    main()
