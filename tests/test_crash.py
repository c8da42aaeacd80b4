"""kill -9 at random instants: no Binding Update accepted before a crash is ever accepted again.

A child process verifies a stream of Binding Updates against a state file, one at a time,
printing the index of each acceptance as soon as ``verify`` has returned, and adding peers now
and then (so kills also land in the middle of slot appends). The parent SIGKILLs it at a random
instant, checks that the state file still opens, that every acceptance the child reported is
now refused, and restarts a child a little before where the last one stopped (so replays
across the crash are tried too). Over the whole run no acceptance may be reported twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import types
from array import array

import pytest

import kbmfast
import kbmfast.reference

CHILD = textwrap.dedent(
    """
    import sys
    from array import array
    import {module} as kb
    keys = kb.KeyTable.load(sys.argv[1])
    data = open(sys.argv[2], "rb").read()
    offsets = array("Q")
    offsets.frombytes(open(sys.argv[3], "rb").read())
    start = int(sys.argv[5])
    cn = kb.Verifier(keys, state=sys.argv[4], sync="close")
    print("ready", flush=True)
    for i in range(start, len(offsets) - 1):
        if i % 97 == 0:
            keys.add_kbm("2001:db8:9::%x" % i, i.to_bytes(4, "big") + bytes(16))
        if cn.verify(data[offsets[i] : offsets[i + 1]]).verdict == 0:
            print(i, flush=True)
    print("end", flush=True)
    """
)

PEERS, ROUNDS = 300, 200


def stream(kb: types.ModuleType, tmp: str) -> tuple[dict[str, str], list[bytes], list[tuple[int, int]]]:
    keys = kbmfast.KeyTable()
    homes = [f"2001:db8:1::{i + 1:x}" for i in range(PEERS)]
    kbms = [(i + 1).to_bytes(2, "big") + bytes(range(18)) for i in range(PEERS)]
    for home, kbm in zip(homes, kbms, strict=True):
        keys.add_kbm(home, kbm)
    rng = random.Random(1)
    start = [rng.randrange(65536) for _ in range(PEERS)]
    packets, ids = [], []
    for r in range(ROUNDS):
        for i in range(PEERS):
            seq = (start[i] + 2 * r) % 65536
            packets.append(
                kbmfast.build_binding_update(
                    kbms[i], home=homes[i], care_of="2001:db8:2::1", correspondent="2001:db8:3::1", sequence=seq, lifetime=60
                )
            )
            ids.append((i, seq))
    files = {name: os.path.join(tmp, name) for name in ("keys.toml", "packets", "offsets", "state")}
    keys.save(files["keys.toml"])
    with open(files["packets"], "wb") as f:
        f.write(b"".join(packets))
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    with open(files["offsets"], "wb") as f:
        f.write(offsets.tobytes())
    return files, packets, ids


def run_child(kb: types.ModuleType, files: dict[str, str], start: int) -> subprocess.Popen[str]:
    code = CHILD.format(module=kb.__name__)
    argv = [sys.executable, "-P", "-c", code, files["keys.toml"], files["packets"], files["offsets"], files["state"], str(start)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reported(child: subprocess.Popen[str]) -> list[int]:
    """Indices the child said it accepted. Read through the same buffered stream that found
    "ready" (communicate() would skip what that stream already buffered)."""
    assert child.stdout is not None and child.stderr is not None
    out = child.stdout.read()
    child.stderr.read()
    child.wait(timeout=120)
    lines = out.split("\n")[:-1]  # the last piece is empty, or a line the kill cut: not reported
    return [int(x) for x in lines if x.isdigit()]


def crash_loop(kb: types.ModuleType, tmp: str, cycles: int, processes: int) -> None:
    files, packets, ids = stream(kb, tmp)
    seed = int(os.environ.get("KBMFAST_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed {seed} (replay with KBMFAST_CRASH_SEED={seed})")
    rng = random.Random(seed)
    seen: dict[tuple[int, int], int] = {}
    resume = 0
    keys = kbmfast.KeyTable.load(files["keys.toml"])
    for cycle in range(cycles):
        children = [run_child(kb, files, max(0, resume - rng.randrange(0, 400))) for _ in range(processes)]
        for child in children:
            assert child.stdout is not None
            while (line := child.stdout.readline()) and line.strip() != "ready":
                pass  # (an editable install may print its rebuild first)
            assert line.strip() == "ready", child.stderr.read() if child.stderr else ""
        time.sleep(rng.uniform(0.0, 0.08))
        for child in children:
            child.send_signal(signal.SIGKILL)
        accepted: list[int] = []
        for child in children:
            accepted += reported(child)
        for i in accepted:
            assert ids[i] not in seen, f"cycle {cycle}: {ids[i]} accepted again (first in cycle {seen[ids[i]]})"
            seen[ids[i]] = cycle
        # the file still opens (no torn header or slot), and nothing reported is accepted again
        with kb.Verifier(keys, state=files["state"]) as cn:
            for i in accepted[-50:]:
                assert cn.verify(packets[i]).verdict != kb.Verdict.ACCEPTED, f"cycle {cycle}: packet {i} replayed"
        if accepted:
            resume = max(resume, max(accepted) + 1)
        if resume >= len(packets):
            break
    assert seen, "the children never got to accept anything: kills came too early"
    print(f"{cycle + 1} kills, {len(seen)} acceptances, none repeated")


@pytest.mark.slow
def test_sigkill_c_one_process(tmp_path: os.PathLike[str]) -> None:
    crash_loop(kbmfast, str(tmp_path), int(os.environ.get("KBMFAST_CRASH_CYCLES", "150")), 1)


@pytest.mark.slow
def test_sigkill_c_two_processes(tmp_path: os.PathLike[str]) -> None:
    crash_loop(kbmfast, str(tmp_path), int(os.environ.get("KBMFAST_CRASH_CYCLES", "150")) // 2, 2)


@pytest.mark.slow
def test_sigkill_reference(tmp_path: os.PathLike[str]) -> None:
    crash_loop(kbmfast.reference, str(tmp_path), int(os.environ.get("KBMFAST_CRASH_CYCLES", "150")) // 3, 1)
