"""--shard i/n for kbmfast verify and gen, and kbmfast state merge: n shards equal one serial run."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
from test_tools import run

from kbmfast import _shard, capture, cli, gen

N = 3


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A generated capture with non-mobility frames (ARP, IPv4, a truncated IPv6 header) mixed in."""
    d = tmp_path_factory.mktemp("shard")
    traffic = gen.generate(30, 1500, seed=11)
    paths = {"pcap": d / "t.pcap", "keys": d / "t.keys.toml", "seed": d / "seed.state"}
    with open(paths["pcap"], "wb") as f:
        w = capture.PcapWriter(f, linktype=1)
        for i, (frame, us) in enumerate(traffic.frames):
            w.write(frame, us)
            if i % 97 == 0:
                w.write(frame[:12] + b"\x08\x06" + bytes(28), us)  # ARP
                w.write(frame[:12] + b"\x86\xdd" + frame[14:40], us)  # IPv6 cut short
    paths["keys"].write_text(traffic.keys.to_toml())
    paths["keys"].chmod(0o600)
    assert cli.main(["state", "new", str(paths["seed"])]) == 0
    return paths


def verify(
    made: dict[str, pathlib.Path], tmp: pathlib.Path, name: str, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[str, pathlib.Path]:
    state = tmp / f"{name}.state"
    shutil.copyfile(made["seed"], state)
    code, out, err = run(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), *extra], capsys)
    assert code == 0, err
    return out, state


@pytest.mark.parametrize(("backend", "as_json"), [("c", False), ("c", True), ("reference", True)])
def test_shards_equal_one_serial_run(
    made: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], backend: str, as_json: bool
) -> None:
    extra = ["--backend", backend, "--batch", "200"] + (["--json"] if as_json else [])
    serial, serial_state = verify(made, tmp_path, "serial", extra, capsys)
    shards = [verify(made, tmp_path, f"s{i}", [*extra, "--shard", f"{i}/{N}"], capsys) for i in range(N)]

    if as_json:

        def split(text: str) -> tuple[list[str], dict[str, object]]:
            lines = text.splitlines()
            return lines[:-1], json.loads(lines[-1])["summary"]

        lines, summary = split(serial)
        parts = [split(out) for out, _ in shards]
        union = sorted((line for part, _ in parts for line in part), key=lambda s: json.loads(s)["frame"])
        assert union == lines  # verdict for verdict, in the serial order once sorted by frame
        assert all(part for part, _ in parts)  # every shard had work
        for key in ("mobility_packets", "other_frames", "frames"):
            assert sum(s[key] for _, s in parts) == summary[key]  # type: ignore[misc]
        assert summary["other_frames"] > 0
        for verdict, count in summary["verdicts"].items():  # type: ignore[attr-defined]
            assert sum(s["verdicts"][verdict] for _, s in parts) == count  # type: ignore[index]
    else:

        def packet_lines(text: str) -> list[str]:
            return [line for line in text.splitlines() if line[:8].strip().isdigit()]

        union = sorted((line for out, _ in shards for line in packet_lines(out)), key=lambda s: int(s.split()[0]))
        assert union == packet_lines(serial) and union

    # The shards' state files merge into the serial run's, byte for byte once both are compacted.
    merged = tmp_path / "merged.state"
    assert run(["state", "merge", *(str(s) for _, s in shards), "--output", str(merged)], capsys)[0] == 0
    compact = tmp_path / "serial.compact"
    assert run(["state", "compact", str(serial_state), "--output", str(compact)], capsys)[0] == 0
    assert merged.read_bytes() == compact.read_bytes()
    # Given out of shard order, the merge is not the serial state.
    wrong = tmp_path / "wrong.state"
    assert run(["state", "merge", *(str(s) for _, s in reversed(shards)), "--output", str(wrong)], capsys)[0] == 0
    assert wrong.read_bytes() != compact.read_bytes()


def test_dask_bag_over_shards(made: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The docs/tools.md recipe, on Dask's local threaded scheduler.
    import dask.bag as db

    def one(i: int) -> str:
        state = tmp_path / f"d{i}.state"
        shutil.copyfile(made["seed"], state)
        args = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--quiet", "--shard", f"{i}/{N}"]
        assert cli.main(args) == 0
        return str(state)

    states = db.from_sequence(range(N), npartitions=N).map(one).compute(scheduler="synchronous")
    capsys.readouterr()
    merged = tmp_path / "merged.state"
    assert run(["state", "merge", *states, "--output", str(merged)], capsys)[0] == 0
    _, serial_state = verify(made, tmp_path, "serial", ["--quiet"], capsys)
    compact = tmp_path / "serial.compact"
    assert run(["state", "compact", str(serial_state), "--output", str(compact)], capsys)[0] == 0
    assert merged.read_bytes() == compact.read_bytes()


def test_gen_shards_equal_one_run(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["gen", "--peers", "12", "--updates", "400", "--seed", "3"]
    assert run([*base, "--out", str(tmp_path / "all.pcap"), "--truth", str(tmp_path / "all.truth")], capsys)[0] == 0
    truths, counts = [], []
    for i in range(N):
        out = tmp_path / f"g{i}.pcap"
        assert run([*base, "--out", str(out), "--truth", str(tmp_path / f"g{i}.truth"), "--shard", f"{i}/{N}"], capsys)[0] == 0
        truths += (tmp_path / f"g{i}.truth").read_text().splitlines()
        with capture.CaptureReader(out) as reader:
            batches = list(reader.batches())
        counts.append(sum(len(b) for b in batches))
        for b in batches:  # every frame of shard i's capture belongs to shard i
            assert {_shard.packet_shard(b.packet(k), N) for k in range(len(b))} == {i}
        assert (tmp_path / f"g{i}.keys.toml").read_text() == (tmp_path / "all.keys.toml").read_text()
    whole = (tmp_path / "all.truth").read_text().splitlines()
    assert sorted(truths, key=lambda s: json.loads(s)["frame"]) == whole
    assert sum(counts) == len(whole) and all(counts)


def test_the_hash_is_the_documented_one() -> None:
    import hashlib

    home = bytes.fromhex("20010db8000100000000000000000007")
    assert _shard.address_shard(home, 5) == int.from_bytes(hashlib.sha256(home).digest()[:8], "big") % 5
    assert _shard.address_shard(home, 1) == 0


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1", "a/b", "0/0", "1/2/3", ""])
def test_bad_shard_is_refused(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str], text: str) -> None:
    code, _, err = run(["verify", str(made["pcap"]), "--keys", str(made["keys"]), f"--shard={text}"], capsys)
    assert code == 2 and "--shard" in err and "Traceback" not in err


def test_merge_refuses_different_salts(
    made: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.state", tmp_path / "b.state"
    assert run(["state", "new", str(a)], capsys)[0] == 0
    assert run(["state", "new", str(b)], capsys)[0] == 0
    out = tmp_path / "m.state"
    code, _, err = run(["state", "merge", str(a), str(b), "--output", str(out)], capsys)
    assert code == 1 and "salt" in err and not out.exists()
    code, _, err = run(["state", "new", str(a)], capsys)
    assert code == 2 and "exists" in err


def test_shards_acks_equal_one_serial_run(
    made: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def acks(path: pathlib.Path) -> list[tuple[int, bytes]]:
        with capture.CaptureReader(path) as reader:
            return [(b.times[k], b.packet(k)) for b in reader.batches() for k in range(len(b))]

    verify(made, tmp_path, "serial", ["--quiet", "--acks-out", str(tmp_path / "serial.acks")], capsys)
    union = []
    for i in range(N):
        verify(made, tmp_path, f"s{i}", ["--quiet", "--acks-out", str(tmp_path / f"s{i}.acks"), "--shard", f"{i}/{N}"], capsys)
        union += acks(tmp_path / f"s{i}.acks")
    serial = acks(tmp_path / "serial.acks")
    assert serial and sorted(union) == sorted(serial)


def test_a_stopped_shard_resumes_as_that_shard(
    made: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `kbmfast verify --shard 1/3 | head`: the resume hint keeps --shard, and resuming with it
    # completes exactly the shard's uninterrupted run.
    import re
    import subprocess
    import sys

    full, _ = verify(made, tmp_path, "full", ["--shard", f"1/{N}", "--batch", "50"], capsys)
    state = tmp_path / "stopped.state"
    shutil.copyfile(made["seed"], state)
    argv = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--batch", "50", "--shard", f"1/{N}"]
    child = subprocess.Popen([sys.executable, "-P", "-m", "kbmfast.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    head = b"".join(child.stdout.readline() for _ in range(5))
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == 141, err
    m = re.search(r"--skip (\d+) --shard 1/3 with the same", err)
    assert m, err
    code, rest, _ = run([*argv, "--skip", m.group(1)], capsys)
    assert code == 0

    def packet_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line[:8].strip().isdigit()]

    n = int(m.group(1))
    before = [line for line in packet_lines(full) if int(line.split()[0]) <= n]
    assert packet_lines(head.decode())[: len(before)] == before[: len(packet_lines(head.decode()))]
    assert before + packet_lines(rest) == packet_lines(full)
