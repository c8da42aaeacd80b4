"""End to end: ``kbmfast mn`` in one network namespace against ``kbmfast serve`` in another
(tests/netns.py), and the example script examples/cn-and-mn.sh."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_serve
from helpers import tool_env
from netns import CN, COA, Net, run
from test_serve import HOME, Serve, key_file, python_cmd, root

ROOT = Path(__file__).resolve().parent.parent
MN_NFT = """
table inet kbmfast {
  chain output {
    type filter hook output priority 0; policy accept;
    icmpv6 type parameter-problem drop
  }
}
"""


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    n = Net()
    try:
        run("ip", "-6", "route", "add", CN, "dev", n.mn_if, ns=n.mn)  # the CN is on the link
        run("nft", "-f", "-", ns=n.mn, input=MN_NFT)  # no Parameter Problem for the BAs' RH2
        yield n
    finally:
        n.close()


serve = test_serve.serve  # the same fixture, on this module's net (which routes to the CN)


def mn_cmd(net: Net, serve: Serve, *extra: str, state: Path | None = None) -> list[str]:
    cmd = ["ip", "netns", "exec", net.mn, *python_cmd(), "mn", "-i", net.mn_if, "--home", HOME, "--care-of", COA]
    cmd += ["--correspondent", CN, "--keys", str(serve.keys), "--timeout", "0.5", "--retries", "3"]
    if state is not None:
        cmd += ["--state", str(state)]
    return cmd + list(extra)


def mn_run(net: Net, serve: Serve, *extra: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(mn_cmd(net, serve, *extra, state=state), capture_output=True, text=True, timeout=30)
    assert "Traceback" not in done.stderr, done.stderr
    return done


#: what an editable install's rebuild on import prints (a development checkout only)
NOISE = ("Running cmake", "ninja:", "-- ")


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(NOISE)]


def bindings(serve: Serve) -> list[dict]:
    return serve.snapshot()["bindings"]  # type: ignore[no-any-return]


@root
def test_registers_refreshes_and_deregisters(net: Net, serve: Serve, tmp_path: Path) -> None:
    done = mn_run(net, serve, "--count", "2", "--interval", "0.2", "--lifetime", "60", state=tmp_path / "mn.state")
    assert done.returncode == 0, done.stderr
    lines = lines_of(done.stdout)
    registered = [line for line in lines if line.startswith(f"registered {HOME} at {COA} with {CN}")]
    assert len(registered) == 2 and all("status 0, lifetime 60 s" in line for line in registered), lines
    seqs = [int(line.split("sequence ")[1].split(",")[0]) for line in registered]
    assert seqs[1] == (seqs[0] + 1) & 0xFFFF
    assert lines[-1].startswith(f"de-registered {HOME} with {CN}: sequence {(seqs[1] + 1) & 0xFFFF}, status 0")
    snap = serve.snapshot()
    assert snap["packets"] == {"ACCEPTED": 3} and snap["ba_sent"] == {"0": 3}
    assert snap["bindings"] == []


@root
def test_resynchronises_after_a_135(net: Net, serve: Serve, tmp_path: Path) -> None:
    state = tmp_path / "mn.state"
    assert mn_run(net, serve, "--count", "1", state=state).returncode == 0
    shutil.copy(state, tmp_path / "old.state")  # a backup of the mobile node's state
    assert mn_run(net, serve, "--count", "1", state=state).returncode == 0
    shutil.copy(tmp_path / "old.state", state)  # rolled back: its next sequence was used already
    done = mn_run(net, serve, "--count", "1", state=state)
    assert done.returncode == 0, done.stderr
    lines = lines_of(done.stdout)
    assert lines[0].startswith(f"sequence out of window: {CN} last accepted "), lines
    last = int(lines[0].split("last accepted ")[1].split(";")[0])
    assert lines[1].startswith(f"registered {HOME}") and f"sequence {(last + 1) & 0xFFFF}, status 0" in lines[1]
    assert lines[2].startswith("de-registered")
    assert serve.snapshot()["ba_sent"] == {"0": 6, "135": 1}


@root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_deregisters(net: Net, serve: Serve, tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        mn_cmd(net, serve, "--interval", "0.3", state=tmp_path / "mn.state"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        while first.startswith(NOISE):
            first = proc.stdout.readline()
        assert first.startswith(f"registered {HOME}"), first + proc.stderr.read() if proc.stderr else ""
        assert [b["home"] for b in bindings(serve)] == [HOME]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"{sig.name}: de-registering" in out and "de-registered" in lines_of(out)[-1]
    assert bindings(serve) == []


def _one_line_error(done: subprocess.CompletedProcess[str], status: int, words: str) -> None:
    assert done.returncode == status, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert (len(lines) >= 1 and lines[-1].startswith("kbmfast mn: ")) or lines[-1].startswith("usage:") or "error:" in lines[-1]
    assert words in lines[-1], done.stderr


@root
def test_bad_input(net: Net, tmp_path: Path) -> None:
    keys = key_file(tmp_path / "k.keys")

    def mn(*args: str, prefix: tuple[str, ...] = (), **opts: str) -> subprocess.CompletedProcess[str]:
        given = {"-i": "lo", "--home": HOME, "--care-of": COA, "--correspondent": CN, "--keys": str(keys)}
        given.update({k.replace("_", "-"): v for k, v in opts.items()})
        argv = [a for kv in given.items() for a in kv]
        cmd = [*prefix, *python_cmd(), "mn", *argv, "--timeout", "0.1", "--retries", "0", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=tool_env())

    _one_line_error(mn(**{"-i": "kbmnosuch0"}), 1, "kbmnosuch0: no such interface")
    no_raw = ("setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw")
    _one_line_error(mn(prefix=no_raw), 1, "CAP_NET_RAW")
    _one_line_error(mn(**{"--home": "2001:db8::zz"}), 2, "not an IPv6 address")
    _one_line_error(mn(**{"--care-of": HOME}), 2, "--care-of")
    _one_line_error(mn(**{"--keys": str(tmp_path / "missing")}), 2, "missing")
    _one_line_error(mn(**{"--home": "2001:db8:1::999"}), 2, "no peer with home address 2001:db8:1::999")
    _one_line_error(mn(**{"--home": "2001:db8:1::200"}), 2, "Kcn")
    loose = tmp_path / "loose.keys"
    loose.write_bytes(keys.read_bytes())
    loose.chmod(0o644)
    _one_line_error(mn(**{"--keys": str(loose)}), 2, "loose.keys")
    _one_line_error(mn("--lifetime", "5"), 2, "multiple of 4")
    _one_line_error(mn(), 1, "Network is unreachable")  # no route to the CN on lo
    # no correspondent running: the registration gives up after its retries, one line, status 1
    _one_line_error(mn(prefix=("ip", "netns", "exec", net.mn), **{"-i": net.mn_if}), 1, "no acknowledgement from")


@root
def test_example_script(tmp_path: Path) -> None:
    """examples/cn-and-mn.sh (the README's "Run a correspondent node") from set-up to clean-up."""
    before = set(run("ip", "netns", "list").split())
    kbmfast_bin = tmp_path / "kbmfast"
    san = " ".join(f"{k}={os.environ[k]}" for k in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC") if k in os.environ)
    kbmfast_bin.write_text(f'#!/bin/sh\nexec env {san} "{sys.executable}" -P -m kbmfast.cli "$@"\n')
    kbmfast_bin.chmod(0o755)
    done = subprocess.run(
        ["bash", str(ROOT / "examples" / "cn-and-mn.sh"), str(kbmfast_bin)],
        capture_output=True,
        text=True,
        timeout=60,
        env=tool_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("registered 2001:db8:1::1 at 2001:db8:2::200 with 2001:db8:3::300") == 2
    assert "de-registered 2001:db8:1::1 with 2001:db8:3::300" in out
    during, after = out.split("== while registered:")[1].split("== after the de-registration:")
    assert '"home": "2001:db8:1::1"' in during and "bindings: []" in after
    assert "3 packets (3 accepted)" in out and "3 BAs sent" in out
    assert set(run("ip", "netns", "list").split()) == before  # cleaned up


def test_bench_serve_needs_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``kbmfast bench --serve`` without root: one line, status 1, nothing created."""
    from kbmfast import cli
    from kbmfast.bench import serve as serve_bench

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["bench", "--serve", "--quick"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kbmfast bench: --serve needs root (it creates network namespaces and a veth pair)"]
    # each step sends at most STEP_SECONDS of traffic, at least MIN_STEP packets, at most the capture
    assert serve_bench.step_packets(2000, 100_000) == max(serve_bench.MIN_STEP, 4000)
    assert serve_bench.step_packets(1_000_000, 100_000) == serve_bench.step_packets(0, 100_000) == 100_000


@root
def test_only_authenticated_acknowledgements_count(net: Net, tmp_path: Path) -> None:
    """A correspondent played here answers each Binding Update first with a BA under a wrong
    key, then with the right one: mn reports the first, ignores it, and registers on the second."""
    import threading

    from netns import in_netns

    import kbmfast
    from kbmfast.link import Link

    run("ip", "-6", "route", "replace", COA, "dev", net.cn_if, ns=net.cn)  # the fake CN answers by route
    keys = key_file(tmp_path / "k.keys")
    link: Link = in_netns(net.cn, lambda: Link(net.cn_if))
    verifier = kbmfast.Verifier(kbmfast.KeyTable.load(keys))
    answered: list[int] = []
    stop = threading.Event()

    def correspondent() -> None:
        while not stop.is_set():
            packet = link.receive(0.1)
            if packet is None:
                continue
            try:
                r = verifier.verify(packet)
            except kbmfast.MalformedPacket:
                continue
            if r.verdict != kbmfast.Verdict.ACCEPTED:
                continue
            fields = {"home": HOME, "care_of": COA, "correspondent": CN, "sequence": r.sequence, "status": 0}
            link.send(kbmfast.build_binding_ack(bytes(20), lifetime=r.lifetime or 0, **fields))  # wrong key
            link.send(verifier.acknowledge(r))
            answered.append(r.sequence)

    t = threading.Thread(target=correspondent, daemon=True)
    t.start()
    try:
        cmd = ["ip", "netns", "exec", net.mn, *python_cmd(), "mn", "-i", net.mn_if, "--home", HOME, "--care-of", COA]
        cmd += ["--correspondent", CN, "--keys", str(keys), "--count", "1", "--timeout", "2", "--retries", "1"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    finally:
        stop.set()
        t.join()
        link.close()
    assert done.returncode == 0, done.stderr
    lines = lines_of(done.stdout)
    ignored = f"ignored an acknowledgement from {CN}: bad_authenticator"
    assert lines == [ignored, lines[1], ignored, lines[3]], lines
    assert lines[1].startswith(f"registered {HOME}") and f"sequence {answered[0]}, status 0" in lines[1]
    assert lines[3].startswith(f"de-registered {HOME} with {CN}: sequence {answered[1]}, status 0")
