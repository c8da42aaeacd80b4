"""kbmfast verify / gen / keys generate, end to end through the command line."""

from __future__ import annotations

import io
import json
import os
import pathlib
import stat
import sys

import pytest

import kbmfast
import kbmfast.reference
from kbmfast import capture, cli, gen
from kbmfast.cli import verify as tools_cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    d = tmp_path_factory.mktemp("gen")
    paths = {"pcap": d / "t.pcap", "keys": d / "t.keys.toml", "truth": d / "t.truth"}
    assert cli.main(["gen", "--peers", "25", "--updates", "2500", "--seed", "5", "--out", str(paths["pcap"]),
                     "--truth", str(paths["truth"])]) == 0  # fmt: skip
    return paths


def truth_of(path: pathlib.Path) -> list[tuple[int, str, int | None]]:
    return [(e["frame"], e["verdict"], e["ba_status"]) for e in map(json.loads, path.read_text().splitlines())]


@pytest.mark.parametrize("backend", ["c", "reference"])
def test_verify_reproduces_the_truth(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str], backend: str) -> None:
    code, out, _ = run(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--json", "--backend", backend,
                        "--batch", "300"], capsys)  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    summary = lines.pop()["summary"]
    assert [(d["frame"], d["verdict"], d["ba_status"]) for d in lines] == truth_of(made["truth"])
    assert summary["mobility_packets"] == len(lines) == summary["frames"]
    assert sum(summary["verdicts"].values()) == len(lines)
    kinds = {e["verdict"] for e in map(json.loads, made["truth"].read_text().splitlines())}
    assert {"ACCEPTED", "SEQUENCE_OUT_OF_WINDOW", "BAD_AUTHENTICATOR", "NOT_CONFIGURED", "MALFORMED"} <= kinds


def test_gen_is_deterministic_and_keys_are_private(tmp_path: pathlib.Path, made: dict[str, pathlib.Path]) -> None:
    for fmt in ("pcap", "pcapng"):
        out = tmp_path / f"again.{fmt}"
        # both formats write again.keys.toml: the second run needs --force
        argv = ["gen", "--peers", "25", "--updates", "2500", "--seed", "5", "--out", str(out), "--format", fmt]
        assert cli.main(argv + (["--force"] if fmt == "pcapng" else [])) == 0
        if fmt == "pcap":
            assert out.read_bytes() == made["pcap"].read_bytes()
        keys = tmp_path / "again.keys.toml"
        assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
        assert keys.read_text() == made["keys"].read_text()
    other = tmp_path / "other.pcap"
    cli.main(["gen", "--peers", "25", "--updates", "2500", "--seed", "6", "--out", str(other)])
    assert other.read_bytes() != made["pcap"].read_bytes()


def test_gen_shares_and_mix(tmp_path: pathlib.Path) -> None:
    t = gen.generate(40, 4000, seed=1, mix={"replay": 0.1, "forged": 0.0, "unknown": 0.0, "malformed": 0.0})
    kinds = [e.kind for e in t.truth]
    assert kinds.count("replay") > 300 and "forged" not in kinds
    assert any(k.startswith("deregistration-at-home") for k in kinds) and any("alternate" in k for k in kinds)
    assert any("nonce-indices" in k for k in kinds)
    with pytest.raises(ValueError):
        gen.parse_mix("replay=0.5,forged=0.6")
    with pytest.raises(ValueError):
        gen.parse_mix("bogus=0.1")


def test_text_output_fast_and_plain_agree(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    args = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--batch", "777"]
    code, fast_out, _ = run(args, capsys)  # C walker and C lines (when the core is built)
    assert code == 0 and "ACCEPTED" in fast_out
    monkeypatch.setattr(capture, "HAVE_C", False)
    code, numpy_out, _ = run(args, capsys)  # numpy reader and column-wise lines
    assert code == 0 and numpy_out == fast_out
    monkeypatch.setattr(capture, "np", None)
    code, plain_out, _ = run(args, capsys)  # the plain Python reader and formatter
    assert code == 0 and plain_out == fast_out
    body = fast_out.splitlines()
    assert body[1] == tools_cli.HEADER
    truth = truth_of(made["truth"])
    for line, (frame, verdict, ba) in zip(body[2 : 2 + len(truth)], truth, strict=True):
        cols = line.split()
        assert int(cols[0]) == frame and cols[6] == verdict and cols[7] == ("-" if ba is None else str(ba))


def test_acks_out_matches_results(
    tmp_path: pathlib.Path, made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    acks = tmp_path / "acks.pcap"
    code, out, _ = run(
        ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--acks-out", str(acks), "--batch", "400"], capsys
    )
    assert code == 0
    keys = kbmfast.KeyTable.load(made["keys"])
    with capture.CaptureReader(made["pcap"]) as r:
        packets = [b.packet(i) for b in r.batches() for i in range(len(b))]
    with kbmfast.Verifier(keys) as v:
        expected = [a for a in map(v.acknowledge, v.verify_batch(packets, results=True)) if a is not None]
    with capture.CaptureReader(acks) as r:
        got = [b.packet(i) for b in r.batches() for i in range(len(b))]
    assert got == expected and len(got) > 100
    assert f"acknowledgements written{len(got):>10}" in out


def test_state_file_carries_over(
    tmp_path: pathlib.Path, made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "cn.state")
    args = ["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--state", state, "--json"]
    run(args, capsys)
    _, out, _ = run(args, capsys)
    summary = json.loads(out.splitlines()[-1])["summary"]["verdicts"]
    assert summary["ACCEPTED"] == 0 and summary["SEQUENCE_OUT_OF_WINDOW"] > 0


def test_two_captures_share_one_sequence_table(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["verify", str(made["pcap"]), str(made["pcap"]), "--keys", str(made["keys"]), "--json"], capsys)
    lines = [json.loads(x) for x in out.splitlines()[:-1]]
    n = len(lines) // 2
    assert all(d["verdict"] != "ACCEPTED" for d in lines[n:])


def test_damaged_capture(tmp_path: pathlib.Path, made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(made["pcap"].read_bytes()[:-50])
    code, out, err = run(["verify", str(cut), "--keys", str(made["keys"]), "--json"], capsys)
    assert code == 1
    assert "at frame 2500" in err and "byte offset" in err and "2499 frames before it were verified" in err
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 2500 and lines[-1]["summary"]["frames"] == 2499


def test_usage_errors(tmp_path: pathlib.Path, made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    open_keys = tmp_path / "open.toml"
    open_keys.write_text(made["keys"].read_text())
    open_keys.chmod(0o644)
    code, _, err = run(["verify", str(made["pcap"]), "--keys", str(open_keys)], capsys)
    assert code == 2 and "chmod 600" in err
    assert run(["verify", str(made["pcap"])], capsys)[0] == 2
    assert run(["verify", "--demo", "--keys", str(made["keys"])], capsys)[0] == 2
    code, _, err = run(["verify", str(tmp_path / "missing.pcap"), "--keys", str(made["keys"])], capsys)
    assert code == 1 and "missing.pcap" in err


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["verify", "--demo"], capsys)
    assert code == 0 and err == ""
    assert f"{'mobility packets':<24}{tools_cli.SAMPLE_GEN['updates']:>10}" in out
    assert "SEQUENCE_OUT_OF_WINDOW" in out and "BAD_AUTHENTICATOR" in out


def test_demo_sample_matches_gen(tmp_path: pathlib.Path) -> None:
    """The bundled sample is what kbmfast gen writes for its documented arguments."""
    from importlib import resources

    out = tmp_path / "s.pcap"
    s = tools_cli.SAMPLE_GEN
    assert cli.main(["gen", "--peers", str(s["peers"]), "--updates", str(s["updates"]), "--seed", str(s["seed"]),
                     "--out", str(out)]) == 0  # fmt: skip
    samples = resources.files("kbmfast") / "samples"
    assert out.read_bytes() == (samples / tools_cli.SAMPLE_CAPTURE).read_bytes()
    assert (tmp_path / "s.keys.toml").read_text() == (samples / tools_cli.SAMPLE_KEYS).read_text()


def test_no_progress_bar_when_stderr_is_not_a_tty(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", str(made["pcap"]), "--keys", str(made["keys"])], capsys)[2] == ""
    fake = io.StringIO()
    fake.isatty = lambda: True  # type: ignore[method-assign]
    p = tools_cli._Progress(fake)
    with capture.CaptureReader(made["pcap"]) as r:
        list(r.batches())
        p.show("x.pcap", r)
    assert "x.pcap" in fake.getvalue() and "100%" in fake.getvalue()


@pytest.mark.parametrize("kind", ["kbm", "kcn"])
def test_keys_generate(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    out = tmp_path / "k.toml"
    code, _, _ = run(
        ["keys", "generate", "--peers", "5", "--out", str(out), "--prefix", "2001:db8:7::/64", "--kind", kind], capsys
    )
    assert code == 0 and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    table = kbmfast.KeyTable.load(out)
    assert sorted(map(str, table)) == [f"2001:db8:7::{i}" for i in range(1, 6)]
    assert {p.kind for p in table.peers()} == {1 if kind == "kbm" else 2}
    assert len({bytes(p.key) for p in table.peers()}) == 5
    assert run(["keys", "generate", "--peers", "5", "--out", str(out)], capsys)[0] == 2  # no overwrite
    assert run(["keys", "generate", "--peers", "5", "--out", str(out), "--force"], capsys)[0] == 0
    assert run(["keys", "generate", "--peers", "300", "--out", str(tmp_path / "x"), "--prefix", "2001:db8::/120"], capsys)[0] == 2


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["verify"], ["gen"], ["keys", "generate"]):
        with pytest.raises(SystemExit):
            cli.main([*cmd, "--help"])
        out = capsys.readouterr().out
        assert "usage: kbmfast" in out


def test_cli_entry_does_not_import_numpy_for_help() -> None:
    import subprocess

    code = "import sys, kbmfast.cli; kbmfast.cli.build_parser(); print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_quiet_prints_only_the_summary(made: dict[str, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, quiet, _ = run(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--quiet"], capsys)
    code2, full, _ = run(["verify", str(made["pcap"]), "--keys", str(made["keys"])], capsys)
    assert code == code2 == 0
    assert quiet.strip() and full.endswith(quiet) and quiet.lstrip("\n").startswith("verdict")
    code, quiet_json, _ = run(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--quiet", "--json"], capsys)
    assert len(quiet_json.splitlines()) == 1 and "summary" in json.loads(quiet_json)
