"""A/B of C ``verify_buffer`` across builds and kernels, interleaved on one pinned core.

    python benchmarks/ab_verify.py [--cpu 1] [--runs 9] [--peers 10000] [--rounds 10]
        [--traffic minimal|shapes|rejects] NAME=PYTHON[:PATH][@KERNEL] ...

Each NAME runs in its own process: PYTHON is its interpreter, PATH (optional) is put first on
its sys.path (a source tree with a built ``kbmfast/_native*.so``: another checkout built
beside this one), KERNEL (optional) its ``KBMFAST_KERNEL``. Every process builds the same
workload (``kbmfast.bench.make_workload``: minimal Binding Updates, random peer order, every
verdict checked), pins itself to ``--cpu``, and then the parent asks each for one timed run
in turn, ``--runs`` rounds, so load from elsewhere on a shared machine hits all of them alike.
Times are the verifying thread's CPU time (time.thread_time: a run preempted by another job
is not charged the wait). Prints each one's median and best verifications/s, and ratios of
medians to the first. With ``--traffic shapes|rejects`` it also prints the ceiling for that
mix, measured between the rounds on the same core: the best kernel's compressions/s (every
kernel this CPU runs, ``kbm_bench_kernel``, thread CPU time, best of the rounds) divided by the
compressions per packet the mix needs (``Traffic.compressions``: ``workload.mix_compressions``),
and each NAME's median against it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import os, sys, time
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
os.sched_setaffinity(0, {int(sys.argv[2])})
import kbmfast
from kbmfast import bench
peers, rounds, traffic = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if traffic == "minimal":
    w = bench.make_workload(peers, rounds, 0)
    want = bytes(len(w))
else:
    w = bench.make_traffic(traffic, peers, peers * rounds, 0)
    want = w.verdicts
pairs = bench.split_buffer(w.buffer, w.offsets, 4096)
print(kbmfast.kernel, flush=True)
for line in sys.stdin:
    v = kbmfast.Verifier(w.keys)
    t = time.thread_time()
    outs = [v.verify_buffer(b, o) for b, o in pairs]
    dt = time.thread_time() - t
    if b"".join(bytes(x) for x in outs) != want:
        sys.exit("a verdict differs from the expected one")
    print(dt, flush=True)
"""


def main() -> int:
    """Run the A/B and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--peers", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=10, help="packets per peer (default 10)")
    ap.add_argument(
        "--traffic",
        choices=("minimal", "shapes", "rejects"),
        default="minimal",
        help="minimal Binding Updates (default), or kbmfast.gen traffic (bench.make_traffic)",
    )
    ap.add_argument("spec", nargs="+")
    a = ap.parse_args()
    procs = []
    for spec in a.spec:
        name, _, rest = spec.partition("=")
        rest, _, kernel = rest.partition("@")
        python, _, path = rest.partition(":")
        env = dict(os.environ)
        env.pop("KBMFAST_KERNEL", None)
        if kernel:
            env["KBMFAST_KERNEL"] = kernel
        p = subprocess.Popen(
            [python or sys.executable, "-P", "-c", CHILD, path, str(a.cpu), str(a.peers), str(a.rounds), a.traffic],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        procs.append((name, p))
    rates: dict[str, float] = {}
    per_packet = 0.0
    if a.traffic != "minimal":
        os.sched_setaffinity(0, {a.cpu})
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from kbmfast import bench
        from kbmfast import fast as _fast
        from kbmfast._native_edge import lib

        t = bench.make_traffic(a.traffic, a.peers, a.peers * a.rounds, 0)
        per_packet = t.compressions / len(t.packets)
        usable = [(i, name) for i, (name, ok, _) in enumerate(_fast.kernel_table()) if ok]

        def ceiling_round() -> None:
            for i, name in usable:
                blocks = 200_000 if name == "portable" else 2_000_000
                t0 = time.thread_time()
                lib.kbm_bench_kernel(i, blocks)
                rates[name] = max(rates.get(name, 0.0), blocks / (time.thread_time() - t0))

    kernels = {}
    for name, p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        while line.startswith(("Running", "ninja", "--", "[")):  # an editable install rebuilding
            line = p.stdout.readline().strip()
        kernels[name] = line
    times: dict[str, list[float]] = {name: [] for name, _ in procs}
    for _ in range(a.runs):
        for name, p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            times[name].append(float(p.stdout.readline()))
        if per_packet:
            ceiling_round()
    n = a.peers * a.rounds
    first = statistics.median(times[procs[0][0]])
    print(
        f"C verify_buffer, {a.traffic} traffic, {a.peers} peers x {a.rounds}, batch 4096, CPU {a.cpu}, {a.runs} interleaved runs"
    )
    ceiling = max(rates.values()) / per_packet if per_packet else 0.0
    if ceiling:
        best_kernel = max(rates, key=lambda k: rates[k])
        kinds = ", ".join(f"{k} {r / 1e6:.1f} M" for k, r in rates.items())
        print(f"compressions/s: {kinds}; the mix needs {per_packet:.3f} per packet")
        print(f"ceiling for this mix: {ceiling / 1e6:.2f} M/s ({best_kernel} / {per_packet:.3f})")
    print(f"{'name':<16}{'kernel':<10}{'median':>12}{'best':>12}{'x first':>9}" + (f"{'of ceiling':>12}" if ceiling else ""))
    for name, p in procs:
        med, best = statistics.median(times[name]), min(times[name])
        row = f"{name:<16}{kernels[name]:<10}{n / med / 1e6:>10.2f} M{n / best / 1e6:>10.2f} M{first / med:>9.2f}"
        print(row + (f"{n / med / ceiling:>12.2f}" if ceiling else ""))
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
