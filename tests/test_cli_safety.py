"""The command line as people use it (issue 10): outputs never clobber inputs and are written
whole or not at all; ordinary errors end in one message and the documented status, never a
traceback; SIGINT, SIGTERM and a closed pipe stop a command at a batch boundary, with the
lines, the acknowledgements and the state describing the same prefix, and a way to resume.

The signal and pipe tests run ``kbmfast`` in a real subprocess and send real signals (once the
process has printed something) or close the reading end of its standard output.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kbmfast
from kbmfast import _outputs, _stateformat, capture, cli

FRAME_LINE = re.compile(r"^\s+(\d+)\s+\d+\.\d{6}\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s+\S+ > \S+.*)?$")
UPDATES = 6000


def kbmfast_argv(*args: str) -> list[str]:
    return [sys.executable, "-P", "-m", "kbmfast.cli", *args]


def run_kbmfast(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(kbmfast_argv(*args), capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    d = tmp_path_factory.mktemp("safety")
    paths = {"pcap": d / "t.pcap", "keys": d / "t.keys.toml", "truth": d / "t.truth"}
    argv = ["gen", "--peers", "30", "--updates", str(UPDATES), "--seed", "9", "--out", str(paths["pcap"])]
    assert cli.main([*argv, "--truth", str(paths["truth"])]) == 0
    return paths


def truth_of(made: dict[str, pathlib.Path]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in made["truth"].read_text().splitlines()]


def frame_lines(text: str) -> list[tuple[int, str, str, str]]:
    """(frame, home, sequence, verdict) of each text line."""
    out = []
    for line in text.splitlines():
        m = FRAME_LINE.match(line)
        if m:
            out.append((int(m.group(1)), m.group(3), m.group(5), m.group(6)))
    return out


def resume_point(err: str) -> int:
    m = re.search(r"after (\d+) frames of", err)
    assert m, err
    n = int(m.group(1))
    assert (f"--skip {n}" in err) == (n > 0)
    return n


def acks_in(path: pathlib.Path) -> int:
    with capture.CaptureReader(path) as r:
        return sum(len(b) for b in r.batches())


def state_of(path: pathlib.Path) -> dict[str, int | None]:
    done = run_kbmfast("state", "show", str(path), "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr
    docs = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    return {d["address"]: d["last_sequence"] for d in docs}


def check_prefix(
    made: dict[str, pathlib.Path],
    n: int,
    state: pathlib.Path,
    acks: pathlib.Path | None,
    lines: list[tuple[int, str, str, str]] | None,
) -> None:
    """Everything written describes exactly frames 1..n: lines, acknowledgements, state."""
    truth = [t for t in truth_of(made) if t["frame"] <= n]
    if lines is not None:
        assert [f for f, *_ in lines] == list(range(1, n + 1))
        assert [v for *_, v in lines] == [t["verdict"] for t in truth]
        want: dict[str, int | None] = {}
        for _, home, seq, verdict in lines:
            if verdict == "ACCEPTED":
                want[home] = int(seq)
        got = {a: s for a, s in state_of(state).items() if s is not None}
        assert got == want
    if acks is not None:
        assert acks_in(acks) == sum(1 for t in truth if t["ba_status"] is not None)


def read_until_a_frame_line(stream: Any) -> str:
    seen = ""
    while True:
        line = stream.readline()
        assert line, f"no frame line before EOF: {seen[-500:]}"
        seen += line
        if FRAME_LINE.match(line):
            return seen


# ---------------------------------------------------------------------------------------------
# Item 1 and 2: outputs


def test_acks_out_onto_the_capture_is_refused(tmp_path: pathlib.Path, made: dict[str, pathlib.Path]) -> None:
    """The issue's data loss: ``--acks-out same.pcap`` truncated the capture to 24 bytes."""
    same = tmp_path / "same.pcap"
    same.write_bytes(made["pcap"].read_bytes())
    hard = tmp_path / "hard.pcap"
    os.link(same, hard)
    soft = tmp_path / "soft.pcap"
    soft.symlink_to(same)
    keys, state = str(made["keys"]), str(tmp_path / "s.state")
    for acks in (same, hard, soft, made["keys"]):
        done = run_kbmfast("verify", str(same), "--keys", keys, "--acks-out", str(acks))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "same file" in done.stderr and str(acks) in done.stderr
    done = run_kbmfast("verify", str(same), "--keys", keys, "--state", str(same))
    assert done.returncode == 2 and "same file" in done.stderr
    done = run_kbmfast("verify", str(same), "--keys", keys, "--state", state, "--acks-out", state)
    assert done.returncode == 2 and "same file" in done.stderr
    assert same.read_bytes() == made["pcap"].read_bytes()
    assert made["keys"].stat().st_size > 100


def test_stdout_appended_to_the_capture_is_refused(tmp_path: pathlib.Path, made: dict[str, pathlib.Path]) -> None:
    same = tmp_path / "same.pcap"
    same.write_bytes(made["pcap"].read_bytes())
    with open(same, "a") as out:
        done = subprocess.run(
            kbmfast_argv("verify", str(same), "--keys", str(made["keys"]), "--json"),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2 and "standard output is the same file" in done.stderr
    data = same.read_bytes()  # (an editable install's rebuild may print a line of its own)
    assert data.startswith(made["pcap"].read_bytes()) and b'"frame"' not in data[len(made["pcap"].read_bytes()) :]


def test_gen_refuses_existing_and_shared_outputs(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "k.toml"
    keys.write_text("precious\n")
    out = tmp_path / "t.pcap"
    argv = ["gen", "--peers", "3", "--updates", "20", "--out", str(out)]
    assert cli.main([*argv, "--keys", str(keys)]) == 2
    assert "exists" in capsys.readouterr().err and keys.read_text() == "precious\n" and not out.exists()
    assert cli.main([*argv, "--keys", str(out)]) == 2  # --keys equal to --out
    assert "same file" in capsys.readouterr().err and not out.exists()
    assert cli.main([*argv, "--keys", str(tmp_path / "." / "t.pcap"), "--force"]) == 2
    dangling = tmp_path / "dangling"
    dangling.symlink_to(out)  # t.pcap does not exist yet: both would write it
    assert cli.main([*argv, "--keys", str(dangling), "--force"]) == 2
    dangling.unlink()
    assert cli.main([*argv, "--truth", str(keys), "--keys", str(keys), "--force"]) == 2
    assert keys.read_text() == "precious\n" and not out.exists()
    assert cli.main([*argv, "--keys", str(keys), "--force"]) == 0
    assert len(kbmfast.KeyTable.load(keys)) == 3 and stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_state_compact_output_onto_its_input_is_refused(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.state"
    _stateformat.write(state, bytes(16), [(bytes(15) + b"\x01", 0, ())])
    before = state.read_bytes()
    link = tmp_path / "link.state"
    os.link(state, link)
    for output in (state, link):
        assert cli.main(["state", "compact", str(state), "--output", str(output)]) == 2
        assert "same file" in capsys.readouterr().err
    assert state.read_bytes() == before


def test_output_file_is_whole_or_absent(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"good")
    f = _outputs.OutputFile(str(target))
    f.stream.write(b"half")
    f.discard()
    assert target.read_bytes() == b"good" and os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(RuntimeError), _outputs.output_files([(str(target), True), (str(tmp_path / "b"), False)]) as files:
        files[0].stream.write(b"new")
        raise RuntimeError("failed half-way")
    assert target.read_bytes() == b"good" and os.listdir(tmp_path) == ["out.bin"]
    with _outputs.output_files([(str(target), True)]) as files:
        assert stat.S_IMODE(os.fstat(files[0].stream.fileno()).st_mode) == 0o600
        assert os.path.basename(files[0].tmp or "").startswith(".out.bin.")
        files[0].stream.write(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["out.bin"]


def test_keys_generate_to_stdout(tmp_path: pathlib.Path) -> None:
    done = run_kbmfast("keys", "generate", "--peers", "2", "--out", "-", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.count("[[peer]]") == 2
    assert not (tmp_path / "-").exists()


def test_version() -> None:
    done = run_kbmfast("--version")
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == cli.version_text()


# ---------------------------------------------------------------------------------------------
# Item 5: ordinary errors


def error_cases(tmp: pathlib.Path, made: dict[str, pathlib.Path]) -> Iterator[tuple[list[str], int, str]]:
    """(argv, exit status, text the message must hold) for every command."""
    afile = tmp / "afile"
    afile.write_text("x")
    keydir = tmp / "keydir"
    keydir.mkdir(mode=0o700, exist_ok=True)
    pcap, keys = str(made["pcap"]), str(made["keys"])
    missing, under_file, nodir = str(tmp / "missing"), str(afile / "x"), str(tmp / "nodir" / "a")
    state = tmp / "good.state"
    if not state.exists():
        _stateformat.write(state, bytes(16), [])
    yield ["verify", pcap, "--keys", str(keydir)], 2, str(keydir)
    yield ["verify", pcap, "--keys", missing], 2, missing
    yield ["verify", pcap, "--keys", keys, "--acks-out", nodir], 2, nodir
    yield ["verify", pcap, "--keys", keys, "--acks-out", under_file], 2, under_file
    yield ["verify", pcap, "--keys", keys, "--acks-out", str(keydir)], 2, str(keydir)
    yield ["verify", pcap, "--keys", keys, "--state", nodir], 2, nodir
    yield ["verify", pcap, "--keys", keys, "--state", str(keydir)], 2, str(keydir)
    yield ["verify", pcap, "--keys", keys, "--state", under_file], 2, under_file
    yield ["verify", missing, "--keys", keys], 1, missing
    yield ["verify", str(keydir), "--keys", keys], 1, str(keydir)
    yield ["gen", "--peers", "2", "--updates", "5", "--out", nodir], 2, nodir
    yield ["gen", "--peers", "2", "--updates", "5", "--out", under_file], 2, under_file
    yield ["gen", "--peers", "2", "--updates", "5", "--out", str(tmp / "g.pcap"), "--truth", nodir], 2, nodir
    yield ["gen", "--peers", "2", "--updates", "5", "--out", str(keydir)], 2, str(keydir)
    yield ["keys", "generate", "--peers", "2", "--out", nodir], 2, nodir
    yield ["keys", "generate", "--peers", "2", "--out", under_file], 2, under_file
    for verb in ("show", "check", "compact"):
        yield ["state", verb, missing], 1, missing
        yield ["state", verb, str(keydir)], 1, str(keydir)
        yield ["state", verb, str(afile)], 1, str(afile)
    yield ["state", "compact", str(state), "--output", nodir], 1, nodir
    yield ["state", "compact", str(state), "--output", under_file], 1, under_file
    yield ["state", "compact", str(state), "--drop-unconfigured", "--keys", str(keydir)], 1, str(keydir)
    yield (
        ["bench", "--quick", "--plot", nodir + ".png"],
        2 if _has_matplotlib() else 1,
        "nodir" if _has_matplotlib() else "matplotlib",
    )


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_no_traceback_for_ordinary_errors(tmp_path: pathlib.Path, made: dict[str, pathlib.Path]) -> None:
    """Every command through missing files, directories, paths under a regular file (what a
    read-only directory is to root) and the like: one line naming the path, the status."""
    for argv, status, text in error_cases(tmp_path, made):
        done = run_kbmfast(*argv)
        assert "Traceback" not in done.stderr, (argv, done.stderr)
        assert done.returncode == status, (argv, done.returncode, done.stderr)
        assert text in done.stderr, (argv, done.stderr)
        assert not done.stderr.startswith("kbmfast: error"), (argv, done.stderr)
    assert not (tmp_path / "g.pcap").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_state_error_is_not_prefixed_twice(tmp_path: pathlib.Path, made: dict[str, pathlib.Path]) -> None:
    bad = tmp_path / "bad.state"
    bad.write_bytes(b"not a state file" * 8)
    done = run_kbmfast("verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"kbmfast verify: state file {bad}: not a kbmfast state file" in done.stderr
    assert "state file: state file" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Item 4: signals and pipes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("with_acks", [False, True], ids=["c-lines", "acks"])
def test_verify_stops_at_a_batch_boundary_and_resumes(
    tmp_path: pathlib.Path, made: dict[str, pathlib.Path], sig: signal.Signals, with_acks: bool
) -> None:
    state, acks = tmp_path / "s.state", tmp_path / "a.pcap"
    argv = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--batch", "100"]
    argv += ["--acks-out", str(acks)] if with_acks else []
    child = subprocess.Popen(kbmfast_argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    text = read_until_a_frame_line(child.stdout)
    child.send_signal(sig)
    text += child.stdout.read()
    err = child.stderr.read()
    assert child.wait(timeout=300) == 128 + sig
    assert "Traceback" not in err and f"interrupted by {sig.name}" in err
    n = resume_point(err)
    assert 100 <= n < UPDATES
    lines = frame_lines(text)
    check_prefix(made, n, state, acks if with_acks else None, lines)
    assert re.search(rf"^frames\s+{n}$", text, re.M)
    # The rest, with --skip N on the same state: together, exactly what the truth says.
    more = ["--acks-out", str(tmp_path / "b.pcap")] if with_acks else []
    done = run_kbmfast("verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--skip", str(n), *more)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    rest = frame_lines(done.stdout)
    assert [f for f, *_ in lines + rest] == list(range(1, UPDATES + 1))
    assert [v for *_, v in lines + rest] == [t["verdict"] for t in truth_of(made)]
    if with_acks:
        total = acks_in(acks) + acks_in(tmp_path / "b.pcap")
        assert total == sum(1 for t in truth_of(made) if t["ba_status"] is not None)


def test_verify_json_interrupted(tmp_path: pathlib.Path, made: dict[str, pathlib.Path]) -> None:
    argv = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--json", "--batch", "100"]
    child = subprocess.Popen(kbmfast_argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    while not first.startswith("{"):
        first = child.stdout.readline()
    child.send_signal(signal.SIGINT)
    docs = [json.loads(x) for x in (first + child.stdout.read()).splitlines() if x.startswith("{")]
    err = child.stderr.read()
    assert child.wait(timeout=300) == 130 and "Traceback" not in err
    n = resume_point(err)
    summary = docs[-1]["summary"]
    assert summary["frames"] == n and summary["interrupted"] == {"capture": str(made["pcap"]), "skip": n}
    assert [d["frame"] for d in docs[:-1]] == list(range(1, n + 1))


def pipe_of_one_page() -> tuple[int, int]:
    """A pipe that holds one page (4096 bytes): a batch's lines (about 15 KB) cannot fit."""
    import fcntl

    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    return r, w


def waits_in_pipe_write(pid: int) -> bool:
    """The process's main thread sleeps in write(2) on a full pipe (its kernel wait channel)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().endswith("pipe_write")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ and FIONREAD on a pipe: Linux")
@pytest.mark.parametrize("unbuffered", [True, False], ids=["python-u", "buffered"])
@pytest.mark.parametrize("mode", ["c-lines", "acks", "json"])
def test_verify_signal_during_a_blocked_write_loses_no_line(
    tmp_path: pathlib.Path, made: dict[str, pathlib.Path], mode: str, unbuffered: bool
) -> None:
    """The signal arrives while ``kbmfast verify`` waits in write(2) on a full pipe, part of a
    batch's lines written. Under ``python -u`` / PYTHONUNBUFFERED standard output is a raw
    FileIO: write(2) returns that part, and the rest of the batch was dropped (lines 1..n with a
    hole, or a JSON line cut in the middle). Every line of 1..n must arrive, whole."""
    state, acks = tmp_path / "s.state", tmp_path / "a.pcap"
    argv = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--batch", "100"]
    argv += {"c-lines": [], "acks": ["--acks-out", str(acks)], "json": ["--json"]}[mode]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    r, w = pipe_of_one_page()
    try:
        child = subprocess.Popen(kbmfast_argv(*argv), stdout=w, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(w)
    assert child.stderr is not None
    with open(r, "rb") as out:
        # The pipe full: the child waits inside the write of the first batch, part of it
        # written (the header went first, and a batch's lines are longer than the pipe).
        deadline = time.monotonic() + 120
        while not waits_in_pipe_write(child.pid):
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the child never waited in write(2) on the full pipe"
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        text = out.read().decode()
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == 143 and "Traceback" not in err, err
    n = resume_point(err)
    assert 100 <= n < UPDATES
    if mode == "json":
        docs = [json.loads(x) for x in text.splitlines() if x.startswith("{")]  # each whole
        assert [d["frame"] for d in docs[:-1]] == list(range(1, n + 1))
        assert docs[-1]["summary"]["frames"] == n
    else:
        check_prefix(made, n, state, acks if mode == "acks" else None, frame_lines(text))
        assert re.search(rf"^frames\s+{n}$", text, re.M)


@pytest.mark.parametrize("raw", [True, False], ids=["python-u", "buffered"])
def test_stdout_writes_everything_into_a_non_blocking_pipe(raw: bool) -> None:
    """Standard output on a non-blocking pipe (shared with another program that set it so): a
    full pipe takes part of a write or none of it; Stdout waits and writes the rest."""
    import io
    import threading

    data = bytes(range(256)) * 1000  # several times what the pipe holds
    r, w = os.pipe()
    os.set_blocking(w, False)
    binary: Any = io.FileIO(w, "w") if raw else io.BufferedWriter(io.FileIO(w, "w"))
    stream = io.TextIOWrapper(binary, encoding="utf-8", write_through=raw)
    got = bytearray()

    def drain() -> None:
        with open(r, "rb", buffering=0) as f:
            while piece := f.read(1000):
                got.extend(piece)
                time.sleep(0.0005)  # slower than the writer: the pipe fills

    reader = threading.Thread(target=drain)
    reader.start()
    out = _outputs.Stdout(stream)
    assert out.write("# text\n") and out.write(data) and out.write(memoryview(data)) and out.flush()
    stream.close()
    reader.join()
    assert bytes(got) == b"# text\n" + data + data


@pytest.mark.parametrize("with_acks", [False, True], ids=["c-lines", "acks"])
def test_verify_into_a_closed_pipe(tmp_path: pathlib.Path, made: dict[str, pathlib.Path], with_acks: bool) -> None:
    """``kbmfast verify ... | head -1``: a quiet stop (141), state and acks on the same prefix."""
    state, acks = tmp_path / "s.state", tmp_path / "a.pcap"
    argv = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--batch", "100"]
    argv += ["--acks-out", str(acks)] if with_acks else []
    child = subprocess.Popen(kbmfast_argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    read_until_a_frame_line(child.stdout)
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(timeout=300) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "standard output closed" in err
    n = resume_point(err)
    assert 100 <= n <= UPDATES
    check_prefix(made, n, state, acks if with_acks else None, None)
    # The state holds exactly frames 1..n: the rest, verified on it, gets the truth's verdicts
    # (a state ahead would reject accepted updates, one behind would accept replays).
    if n < UPDATES:
        done = run_kbmfast("verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", str(state), "--skip", str(n))
        assert done.returncode == 0
        assert [v for *_, v in frame_lines(done.stdout)] == [t["verdict"] for t in truth_of(made)][n:]


def big_state(path: pathlib.Path, slots: int) -> None:
    _stateformat.write(
        path, bytes(16), [(b"\x20\x01\x0d\xb8" + bytes(8) + i.to_bytes(4, "big"), 0, ()) for i in range(1, slots + 1)]
    )


def test_state_show_into_a_closed_pipe_and_interrupted(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "big.state"
    big_state(state, 30000)
    for json_flag in ([], ["--json"]):
        child = subprocess.Popen(
            kbmfast_argv("state", "show", str(state), *json_flag), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stderr is not None
        child.stdout.readline()
        child.stdout.close()
        err = child.stderr.read()
        assert child.wait(timeout=300) == 141 and "Traceback" not in err and "standard output closed" in err
    child = subprocess.Popen(
        kbmfast_argv("state", "show", str(state), "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    while not first.startswith("{"):
        first = child.stdout.readline()
    child.send_signal(signal.SIGINT)
    out = first + child.stdout.read()
    err = child.stderr.read()
    assert child.wait(timeout=300) == 130 and "Traceback" not in err
    m = re.search(r"interrupted by SIGINT after (\d+) of 30000 slots", err)
    assert m and int(m.group(1)) == sum(1 for x in out.splitlines() if x.startswith("{")) < 30000


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_gen_interrupted_while_writing_leaves_the_old_files(tmp_path: pathlib.Path, sig: signal.Signals) -> None:
    """A signal while gen writes its truth (a FIFO read slowly): the existing capture and key
    file are untouched, no temporary file remains."""
    out, keys, fifo = tmp_path / "t.pcap", tmp_path / "t.keys.toml", tmp_path / "truth.fifo"
    out.write_bytes(b"old capture")
    keys.write_text("old keys")
    os.mkfifo(fifo)
    argv = ["gen", "--peers", "20", "--updates", "3000", "--out", str(out), "--truth", str(fifo), "--force"]
    child = subprocess.Popen(kbmfast_argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    with open(fifo) as truth:
        assert json.loads(truth.readline())["frame"] == 1
        child.send_signal(sig)
        truth.read()
    err = child.stderr.read()
    assert child.wait(timeout=300) == 128 + sig
    assert "Traceback" not in err and f"interrupted by {sig.name}; no file was written" in err
    assert out.read_bytes() == b"old capture" and keys.read_text() == "old keys"
    assert sorted(os.listdir(tmp_path)) == ["t.keys.toml", "t.pcap", "truth.fifo"]


def test_bench_interrupted(tmp_path: pathlib.Path) -> None:
    """Ctrl-C at a terminal (SIGINT to the whole process group, forked children included)
    while the two-process measure runs: one line, status 130, its temporary directory removed."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    argv = kbmfast_argv("bench", "--quick", "--peers", "300", "--rounds", "2", "--repeat", "200", "--big-peers", "0")
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        # Wait for a state file of the processes measure: forked children are running then.
        while not any(f.startswith("state.") for d in tmp_path.glob("kbmfast-bench-*") for f in os.listdir(d)):
            assert child.poll() is None
            time.sleep(0.001)
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "interrupted by SIGINT" in err
    assert "verifications/s" not in out
    assert not any(p.startswith("kbmfast-bench-") for p in os.listdir(tmp_path))


# ---------------------------------------------------------------------------------------------
# Item 6: the progress bar and --quiet


def test_progress_bar_stays_off_the_lines_terminal(tmp_path: pathlib.Path) -> None:
    """A real terminal (a pty) for stderr: no bar when the lines go to that same terminal, a bar
    with --quiet or when the lines go elsewhere (a file, another terminal)."""
    from kbmfast.cli import verify as tools_cli

    master, slave = os.openpty()
    other_master, other_slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as err, open(slave, "w", closefd=False) as out:
            assert not tools_cli._Progress(err, out).on
            assert tools_cli._Progress(err, out, quiet=True).on
            with open(tmp_path / "lines", "w") as lines:
                assert tools_cli._Progress(err, lines).on
            with open(other_slave, "w", closefd=False) as elsewhere:
                assert tools_cli._Progress(err, elsewhere).on
        with open(tmp_path / "err", "w") as err, open(slave, "w", closefd=False) as out:
            assert not tools_cli._Progress(err, out, quiet=True).on  # stderr not a terminal
    finally:
        for fd in (master, slave, other_master, other_slave):
            os.close(fd)


def test_quiet_summary_has_no_leading_blank_line(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict ") and f"mobility packets{UPDATES:>18}" in out


def test_skip_counts_only_the_frames_verified(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    for skip, want in ((0, UPDATES), (1234, UPDATES - 1234), (UPDATES + 5, 0)):
        assert cli.main(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--json", "--skip", str(skip)]) == 0
        docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert docs[-1]["summary"]["frames"] == docs[-1]["summary"]["mobility_packets"] == want
        assert [d["frame"] for d in docs[:-1]] == list(range(skip + 1, UPDATES + 1))
    assert cli.main(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--skip", "-1"]) == 2
