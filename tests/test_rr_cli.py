"""Return routability on the command line: ``kbmfast serve --rr`` against ``kbmfast mn --rr``
in network namespaces (tests/netns.py), ``--compat rfc3775``, and ``kbmfast verify --rr``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import test_mn
import test_serve
from helpers import custom_bu, tool_env
from netns import CN, COA, MobileNode, Net
from test_serve import HOME, KBM, Serve, python_cmd, root

import kbmfast
from kbmfast import cli
from kbmfast.cli import verify as tools_cli

HOME_RR = "2001:db8:1::900"  # in no key file: a mobile node that only return routability serves

net = test_mn.net  # the MN namespace routes to the CN


mn = test_serve.mn


def start(net: Net, tmp: Path, *extra: str) -> Serve:
    return Serve(net, tmp, *extra)


def mn_cmd(net: Net, home: str, *how: str) -> list[str]:
    cmd = ["ip", "netns", "exec", net.mn, *python_cmd(), "mn", "-i", net.mn_if, "--home", home, "--care-of", COA]
    return [*cmd, "--correspondent", CN, "--timeout", "0.5", "--retries", "2", *how]


def mn_run(net: Net, home: str, *how: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(mn_cmd(net, home, *how), capture_output=True, text=True, timeout=60, env=tool_env())
    assert "Traceback" not in done.stderr, done.stderr
    return done


@root
def test_unconfigured_mn_gets_a_binding_by_rr(net: Net, tmp_path: Path) -> None:
    serve = start(net, tmp_path, "--rr")
    try:
        assert any("with return routability" in line for line in serve.lines)
        proc = subprocess.Popen(
            mn_cmd(net, HOME_RR, "--rr", "--lifetime", "600"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=tool_env(),
        )  # fmt: skip
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("registered"):
                break
        if not lines[-1].startswith("registered"):
            proc.wait(timeout=30)
            raise AssertionError((lines, proc.stderr.read() if proc.stderr else None))
        assert lines[-1].startswith(f"registered {HOME_RR} at {COA} with {CN}")
        assert any(line.startswith(f"return routability with {CN}") for line in lines)
        assert "status 0, lifetime 420 s" in lines[-1]  # verified by the MN; capped at MAX_RR_BINDING_LIFETIME
        snap = serve.snapshot()
        assert [(b["home"], b["care_of"], b["lifetime"]) for b in snap["bindings"]] == [(HOME_RR, COA, 420)]
        assert snap["rr_replies"]["HoT"] >= 1 and snap["rr_replies"]["CoT"] >= 1  # a first try may be lost to ND
        assert snap["ba_sent"] == {"0": 1}
        assert snap["packets"]["ACCEPTED"] == 1
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "de-registered" in out.splitlines()[-1] and "status 0" in out.splitlines()[-1]
        assert serve.snapshot()["bindings"] == []
    finally:
        assert serve.stop() == 0, serve.lines


@root
def test_configured_mn_needs_no_rr_and_its_rr_bu_is_refused(net: Net, tmp_path: Path) -> None:
    serve = start(net, tmp_path, "--rr")
    try:
        done = mn_run(net, HOME, "--keys", str(serve.keys), "--count", "1")
        assert done.returncode == 0, done.stderr
        assert "return routability" not in done.stdout
        snap = serve.snapshot()
        assert snap["rr_replies"] == {} and snap["packets"].get("NOT_BINDING_UPDATE", 0) == 0  # no HoTI/CoTI
        # the configured home address through RR: answered (an init is stateless), never bound
        done = mn_run(net, HOME, "--rr", "--count", "1")
        assert done.returncode == 1 and "no acknowledgement from" in done.stderr, done
        assert "return routability with" in done.stdout
        snap = serve.snapshot()
        assert snap["packets"]["BAD_AUTHENTICATOR"] >= 1 and snap["bindings"] == []
    finally:
        assert serve.stop() == 0, serve.lines


@root
def test_no_reply_without_rr(net: Net, tmp_path: Path) -> None:
    serve = start(net, tmp_path)
    try:
        done = mn_run(net, HOME_RR, "--rr", "--count", "1")
        assert done.returncode == 1 and "return routability: no Home Test and Care-of Test" in done.stderr, done
        snap = serve.snapshot()
        assert snap["packets"]["NOT_BINDING_UPDATE"] == 6 and snap["rr_replies"] == {}  # 3 tries x (HoTI, CoTI)
        assert snap["capture"]["sent"] == 0
    finally:
        assert serve.stop() == 0, serve.lines


@root
def test_rr_error_acks_are_unauthenticated_and_rate_limited(net: Net, tmp_path: Path, mn: MobileNode) -> None:
    serve = start(net, tmp_path, "--rr", "--error-burst", "2", "--error-rate", "0.001")
    try:
        for seq in range(5):  # indices never handed out: 138, without an authenticator
            mn.send(custom_bu(bytes(20), home=HOME_RR, care_of=COA, correspondent=CN, sequence=seq, nonce_indices=(7, 9)))
        acks = mn.wait_acks(2)
        time.sleep(0.3)
        assert len(mn.acks) == 2  # the others are rate-limited
        for ack in acks:
            msg = kbmfast.parse_packet(ack).message
            assert isinstance(msg, kbmfast.BindingAck) and msg.status == 138
            assert not any(isinstance(o, kbmfast.BindingAuthorizationData) for o in msg.options)
        snap = serve.snapshot()
        assert snap["packets"]["NONCES_EXPIRED"] == 5 and snap["ba_sent"] == {"138": 2} and snap["ba_rate_limited"] == 3
    finally:
        assert serve.stop() == 0, serve.lines


@root
def test_compat_rfc3775_on_serve(net: Net, tmp_path: Path, mn: MobileNode) -> None:
    same = custom_bu(KBM, home=HOME, care_of=HOME, correspondent=CN, sequence=30, mac_care_of=HOME)
    # care-of = home with a non-zero lifetime: RFC 6275 answers 174; RFC 3775 de-registers
    for extra, status in (((), 174), (("--compat", "rfc3775"), 0)):
        serve = start(net, tmp_path, *extra)
        try:
            mn.acks.clear()
            mn.send(same)
            (ack,) = mn.wait_acks(1)
            parsed = kbmfast.parse_packet(ack)
            msg = parsed.message
            assert isinstance(msg, kbmfast.BindingAck) and msg.status == status
            bad = [o for o in msg.options if isinstance(o, kbmfast.BindingAuthorizationData)]
            assert bad[0].authenticator == kbmfast.authenticator(KBM, HOME, CN, ack[parsed.mh_offset :])
            assert serve.snapshot()["bindings"] == []
        finally:
            assert serve.stop() == 0, serve.lines
            (tmp_path / "cn.state").unlink()


# ---- kbmfast verify --rr: a correspondent's run replayed from a capture ---------------------

KCN_RR = bytes(range(200, 220))
T0_US = 1_700_000_000_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _rr_run(backend: Any, kcn: bytes, compat: str = "rfc6275") -> tuple[list[tuple[int, bytes]], list[int], list[bytes]]:
    """A correspondent (the library, with Kcn ``kcn`` and derived nonces) and an unconfigured
    mobile node over 300 s, and a configured one: the capture (time µs, packet), the library's
    verdict per packet (RR_REPLIED for an answered init) and what the correspondent sends."""
    clock = Clock()
    rr = backend.ReturnRoutability(kcn, clock=clock, derive_nonces=True)
    keys = backend.KeyTable()
    keys.add_kbm(HOME, KBM)
    cn = backend.Verifier(keys, return_routability=rr, compat=compat)
    bul = backend.BindingUpdateList(HOME_RR, clock=clock)
    capture: list[tuple[int, bytes]] = []
    verdicts: list[int] = []
    sent: list[bytes] = []

    def at(seconds: float, packet: bytes) -> bytes | None:
        when = T0_US + int(seconds * 1e6)
        clock.t = when / 1e6
        capture.append((when, packet))
        r = cn.verify(packet)
        out = None
        if r.verdict == kbmfast.Verdict.NOT_BINDING_UPDATE and (out := cn.reply(packet)) is not None:
            verdicts.append(tools_cli.V_RR_REPLIED)
        else:
            verdicts.append(int(r.verdict))
            out = cn.acknowledge(r) if r.ba_status is not None else None
        if out is not None:
            sent.append(out)
        return out

    def rr_exchange(seconds: float) -> None:
        for init in bul.return_routability(CN, care_of=COA):
            reply = at(seconds, init)
            assert reply is not None
            at(seconds + 0.001, reply)  # the HoT/CoT in the capture too (both directions)
            assert bul.process_test(reply)

    rr_exchange(0)
    first = bul.binding_update(CN, care_of=COA, lifetime=600)
    ack = at(1, first)
    assert ack is not None and bul.process_ack(ack).verdict == kbmfast.Verdict.ACCEPTED
    at(2, first)  # a replay: 135
    at(3, kbmfast.build_binding_update(KBM, home=HOME, care_of=COA, correspondent=CN, sequence=9, lifetime=60))
    # a configured peer's RR Binding Update: never judged with RR keys
    at(4, custom_bu(bytes(20), home=HOME, care_of=COA, correspondent=CN, sequence=10, nonce_indices=(0, 0)))
    at(5, custom_bu(KBM, home=HOME, care_of=HOME, correspondent=CN, sequence=11, mac_care_of=HOME))  # 174 / RFC 3775
    rr_exchange(100)  # a second nonce
    at(101, bul.binding_update(CN, care_of=COA, lifetime=600))
    at(300, first)  # its nonce is gone: 138
    at(301, bul.binding_update(CN, care_of=COA, lifetime=0))  # de-registration, home token from t=100
    cn.close()
    return capture, verdicts, sent


def _pcap(path: Path, records: list[tuple[int, bytes]]) -> Path:
    from kbmfast.capture import PcapWriter

    with path.open("wb") as f:
        w = PcapWriter(f)
        for when, packet in records:
            w.write(packet, when)
    return path


def _read_pcap(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    at, out = 24, []
    while at < len(raw):
        n = int.from_bytes(raw[at + 8 : at + 12], "little")
        out.append(raw[at + 16 : at + 16 + n])
        at += 16 + n
    return out


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _key_file(path: Path) -> Path:
    keys = kbmfast.KeyTable()
    keys.add_kbm(HOME, KBM)
    keys.save(path)
    return path


@pytest.mark.parametrize("compat", ["rfc6275", "rfc3775"])
@pytest.mark.parametrize("backend", ["c", "reference"])
def test_verify_replays_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, compat: str) -> None:
    import kbmfast.reference

    capture, expected, sent = _rr_run(kbmfast if backend == "c" else kbmfast.reference, KCN_RR, compat)
    names = {tools_cli.V_RR_REPLIED: "RR_REPLIED", **{int(v): v.name for v in kbmfast.Verdict}}
    assert [names[v] for v in expected] == [
        *["RR_REPLIED", "NOT_BINDING_UPDATE"] * 2, "ACCEPTED", "SEQUENCE_OUT_OF_WINDOW", "ACCEPTED", "BAD_AUTHENTICATOR",
        "INVALID_CARE_OF" if compat == "rfc6275" else "ACCEPTED",
        *["RR_REPLIED", "NOT_BINDING_UPDATE"] * 2, "ACCEPTED", "NONCES_EXPIRED", "ACCEPTED",
    ]  # fmt: skip
    pcap = _pcap(tmp_path / "rr.pcap", capture)
    kcn = _private(tmp_path / "kcn", KCN_RR.hex() + "\n")
    acks = tmp_path / "acks.pcap"
    argv = ["verify", str(pcap), "--keys", str(_key_file(tmp_path / "k.toml")), "--json", "--rr", "--rr-kcn-file", str(kcn)]
    argv += ["--acks-out", str(acks), "--backend", backend, "--compat", compat, "--batch", "3"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    summary = lines.pop()["summary"]
    assert [(d["frame"], d["code"]) for d in lines] == list(enumerate(expected, 1))
    assert [d["verdict"] for d in lines] == [names[v] for v in expected]
    assert summary["rr_replied"] == 4 and summary["acks_written"] == len(sent)
    assert _read_pcap(acks) == sent  # HoT, CoT and acknowledgements, byte for byte
    assert KCN_RR.hex() not in out + err

    # without the Kcn, the same capture cannot be verified: the tokens are not this run's
    assert cli.main(["verify", str(pcap), "--keys", str(tmp_path / "k.toml"), "--json", "--rr", "--backend", backend]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()[:-1]]
    assert lines[4]["verdict"] == "BAD_AUTHENTICATOR" and lines[0]["verdict"] == "RR_REPLIED"


def test_verify_compat_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = custom_bu(KBM, home=HOME, care_of=HOME, correspondent=CN, sequence=11, mac_care_of=HOME)
    pcap = _pcap(tmp_path / "same.pcap", [(T0_US, same)])
    keys = _key_file(tmp_path / "k.toml")
    for extra, verdict, status in (((), "INVALID_CARE_OF", 174), (("--compat", "rfc3775"), "ACCEPTED", 0)):
        assert cli.main(["verify", str(pcap), "--keys", str(keys), "--json", *extra]) == 0
        line = json.loads(capsys.readouterr().out.splitlines()[0])
        assert (line["verdict"], line["ba_status"]) == (verdict, status)


def test_verify_without_rr_replies_to_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture, _, _ = _rr_run(kbmfast, KCN_RR)
    pcap = _pcap(tmp_path / "rr.pcap", capture)
    assert cli.main(["verify", str(pcap), "--keys", str(_key_file(tmp_path / "k.toml")), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["verdict"] == "NOT_BINDING_UPDATE" and lines[4]["verdict"] == "NOT_CONFIGURED"
    assert "rr_replied" not in lines[-1]["summary"]


def _one_line(done: subprocess.CompletedProcess[str], status: int, words: str) -> None:
    assert done.returncode == status, done
    assert "Traceback" not in done.stderr and KCN_RR.hex() not in done.stderr + done.stdout
    last = [line for line in done.stderr.splitlines() if not line.startswith(test_mn.NOISE)]
    assert (len(last) == 1 or last[0].startswith("usage:")) and words in last[-1], done.stderr


def test_bad_input(tmp_path: Path) -> None:
    pcap = _pcap(tmp_path / "rr.pcap", _rr_run(kbmfast, KCN_RR)[0])
    keys = _key_file(tmp_path / "k.toml")

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [*python_cmd(), "verify", str(pcap), "--keys", str(keys), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=tool_env())

    good = _private(tmp_path / "good", KCN_RR.hex())
    _one_line(verify("--rr-kcn-file", str(good)), 2, "--rr-kcn-file needs --rr")
    for name, text, mode in (
        ("short", KCN_RR.hex()[:-2], 0o600),
        ("long", KCN_RR.hex() + "00", 0o600),
        ("nothex", KCN_RR.hex()[:-1] + "g", 0o600),
        ("two", KCN_RR.hex()[:20] + " " + KCN_RR.hex()[20:], 0o600),
    ):
        _one_line(verify("--rr", "--rr-kcn-file", str(_private(tmp_path / name, text, mode))), 2, "40 hexadecimal digits")
    _one_line(verify("--rr", "--rr-kcn-file", str(_private(tmp_path / "open", KCN_RR.hex(), 0o644))), 2, "chmod 600")
    _one_line(verify("--rr", "--rr-kcn-file", str(tmp_path / "missing")), 2, "missing")
    _one_line(verify("--rr", "--skip", "2"), 2, "--skip")
    _one_line(verify("--compat", "rfc9999"), 2, "invalid choice")
    assert verify("--rr", "--rr-kcn-file", str(good), "--quiet").returncode == 0

    serve = [*python_cmd(), "serve", "-i", "lo", "--keys", str(keys), "--state", str(tmp_path / "s"), "--rr"]
    done = subprocess.run([*serve, "--workers", "2"], capture_output=True, text=True, timeout=60, env=tool_env())
    _one_line(done, 2, "--workers 1")

    def mn(*how: str) -> subprocess.CompletedProcess[str]:
        cmd = [*python_cmd(), "mn", "-i", "lo", "--home", HOME_RR, "--care-of", COA, "--correspondent", CN, *how]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=tool_env())

    _one_line(mn(), 2, "give --keys KEYS or --rr")
    _one_line(mn("--rr", "--keys", str(keys)), 2, "give --keys KEYS or --rr")


def test_derived_nonces_replay_and_random_ones_do_not() -> None:
    def nonces(**kw: Any) -> list[bytes]:
        clock = Clock()
        rr = kbmfast.ReturnRoutability(KCN_RR, clock=clock, **kw)
        out = []
        for t in (0, 31, 62):
            clock.t = t
            out.append(rr.snapshot(current=True).nonces[-1])
        return out

    derived = nonces(derive_nonces=True)
    assert derived == nonces(derive_nonces=True) and len(set(derived)) == 3
    assert nonces() != nonces() and not set(nonces()) & set(derived)
    other = kbmfast.ReturnRoutability(bytes(20), clock=Clock(), derive_nonces=True)
    assert other.snapshot(current=True).nonces[0] != derived[0]  # a function of Kcn


@root
def test_verify_live_rr_shows_replies(net: Net, tmp_path: Path, mn: MobileNode) -> None:
    keys = _key_file(tmp_path / "k.toml")
    cmd = ["ip", "netns", "exec", net.cn, *python_cmd(), "verify", "-i", net.cn_if, "--keys", str(keys), "--json", "--rr"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tool_env())
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while "capturing on" not in (line := proc.stderr.readline()):
            assert line, "verify -i ended early"
        bul = kbmfast.BindingUpdateList(HOME_RR)
        rr_bu = custom_bu(bytes(20), home=HOME_RR, care_of=COA, correspondent=CN, sequence=5, nonce_indices=(0, 0))
        for p in (*bul.return_routability(CN, care_of=COA), rr_bu):
            mn.send(p)
        records = (json.loads(x) for x in iter(proc.stdout.readline, "") if x.startswith("{"))
        lines = [next(records) for _ in range(3)]
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGINT)  # SIGINT ends it with the summary, status 0
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert [(d["type"], d["verdict"]) for d in lines] == [
        ("HoTI", "RR_REPLIED"),
        ("CoTI", "RR_REPLIED"),
        ("BU", "BAD_AUTHENTICATOR"),
    ]
    assert json.loads(rest.splitlines()[-1])["summary"]["rr_replied"] == 2


@root
def test_mn_reruns_rr_after_a_serve_restart(net: Net, tmp_path: Path) -> None:
    """A restarted ``serve --rr`` has a new Kcn and no nonces: the mobile node's next refresh
    names unknown indices, gets 138, runs RR again and is registered again."""
    serve = start(net, tmp_path, "--rr")
    cmd = mn_cmd(net, HOME_RR, "--rr", "--interval", "1", "--retries", "5")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tool_env())
    assert proc.stdout is not None
    try:
        lines = iter(proc.stdout.readline, "")
        assert any(line.startswith("registered") for line in lines)
        assert serve.stop() == 0, serve.lines
        serve = start(net, tmp_path, "--rr")
        seen = []
        for line in lines:
            seen.append(line)
            if line.startswith("registered"):
                break
        assert any("answered 138 (nonce indices expired): rerunning return routability" in x for x in seen), seen
        assert seen[-1].startswith(f"registered {HOME_RR}") and "status 0" in seen[-1], seen
        assert [b["home"] for b in serve.snapshot()["bindings"]] == [HOME_RR]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        assert serve.stop() == 0, serve.lines


# ---- Server.handle's RR path, without a network ----------------------------------------------


class FakeCapture:
    """What Server.handle sends, in order: (packet index, bytes)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send(self, index: int, packet: bytes) -> bool:
        self.sent.append((index, bytes(packet)))
        return True

    def answer(self, index: int, kbm: Any, fields: Any) -> bool:
        from kbmfast.live import build_ack

        return self.send(index, build_ack(kbm, fields))

    def acknowledge_accepted(self, verifier: Any, batch: Any, before_send: Any = None) -> tuple[memoryview, bytearray, int]:
        """LiveCapture.acknowledge_accepted's contract (kbm_live_ack), in Python: the accepted
        BUs of configured peers (not RR, not compat's care-of = home), records, then the BAs."""
        import struct

        from kbmfast.fast import _DETAIL
        from kbmfast.live import ACCEPT_FORMAT, build_ack
        from kbmfast.reference.verifier import current_kbm
        from kbmfast.serve import ack_fields

        records, acks, handled = [], [], bytearray(batch.n)
        for i in range(batch.n):
            detail = _DETAIL.unpack_from(batch.details, _DETAIL.size * i)
            if batch.verdicts[i] != 0 or detail[6] >= 0:
                continue
            home, care_of, granted, fields = ack_fields(batch.packet(i), 0, detail, verifier.max_lifetime)
            if verifier.compat == "rfc3775" and detail[3] != 0 and home == care_of:
                continue
            found = None if fields is None else current_kbm(verifier.keys, home, care_of, detail[3] == 0)
            if found is not None:
                acks.append((i, build_ack(found[1], fields)))
            handled[i] = 1
            ack = 0 if fields is None else 2 if found is None else 1
            records.append(struct.pack(ACCEPT_FORMAT, home, care_of, i, granted, detail[2], ack))
        raw = memoryview(b"".join(records))
        if before_send is not None:
            before_send(raw)
        return raw, handled, sum(self.send(i, p) for i, p in acks)


def _live_batch(cn: kbmfast.Verifier, packets: list[bytes]) -> Any:
    """A batch as LiveCapture.batch makes it: the RR secrets pushed, then kbm_verify."""
    from array import array
    from itertools import accumulate

    from kbmfast._native_edge import ffi, lib
    from kbmfast.fast import _DETAIL
    from kbmfast.live import Batch

    n, data = len(packets), b"".join(packets)
    offsets = array("Q", accumulate(map(len, packets), initial=0))
    verdicts, details = bytearray(n), bytearray(_DETAIL.size * n)
    cn._push(cn._handle())
    fb = ffi.from_buffer
    rc = lib.kbm_verify(
        cn._handle(), data, len(data), fb("uint64_t[]", offsets), n, fb("uint8_t[]", verdicts),
        fb("kbm_detail[]", details), ffi.new("size_t *"),
    )  # fmt: skip
    assert rc == 0
    return Batch(n, memoryview(data), offsets, verdicts, details, [T0_US] * n, list(range(1, n + 1)))


def _rr_server() -> tuple[kbmfast.Verifier, Any, FakeCapture, Any, list[bytes]]:
    """A Server whose verifier has a configured peer (HOME), an RFC 4449 one (HOME2), return
    routability and compat rfc3775; a FakeCapture; an RR mobile node and its two inits."""
    from test_serve import CN_NONCE, HN, HOME2, KCN

    from kbmfast.serve import Server

    keys = kbmfast.KeyTable()
    keys.add_kbm(HOME, KBM)
    keys.add_kcn(HOME2, KCN, HN, CN_NONCE)
    clock = Clock()
    cn = kbmfast.Verifier(keys, return_routability=kbmfast.ReturnRoutability(clock=clock), compat="rfc3775")
    bul = kbmfast.BindingUpdateList(HOME_RR, clock=clock)
    return cn, Server(cn), FakeCapture(), bul, list(bul.return_routability(CN, care_of=COA))


def test_server_handle_rr_and_compat_answers_are_acknowledge_s() -> None:
    from test_serve import CN_NONCE, HN, HOME2, KCN

    from kbmfast.fast import _result

    cn, server, cap, bul, inits = _rr_server()
    server.handle(cap, _live_batch(cn, [*inits, custom_bu(KBM, home=HOME, care_of=COA, correspondent=CN, sequence=1)]))
    assert [(i, p) for i, p in cap.sent[:2]] == [(0, cn.reply(inits[0])), (1, cn.reply(inits[1]))]
    assert [i for i, _ in cap.sent] == [0, 1, 2]  # the configured peer's BA by the fast path
    assert all(bul.process_test(p) for _, p in cap.sent[:2])

    # an RR registration; an RFC 4449 peer at home with a lifetime (RFC 3775: a de-registration,
    # Kbm from the home token only); RR indices never handed out (138, no authenticator)
    dereg_kbm = kbmfast.derive_kbm(KCN, HN, CN_NONCE, home=HOME2, care_of=HOME2, deregistration=True)
    packets = [
        bul.binding_update(CN, care_of=COA, lifetime=600),
        custom_bu(dereg_kbm, home=HOME2, care_of=HOME2, correspondent=CN, sequence=3, mac_care_of=HOME2),
        custom_bu(bytes(20), home="2001:db8:1::901", care_of=COA, correspondent=CN, sequence=1, nonce_indices=(9, 9)),
    ]
    cap.sent.clear()
    batch = _live_batch(cn, packets)
    server.handle(cap, batch)
    from kbmfast.fast import _DETAIL

    expected = [
        (i, cn.acknowledge(_result(p, batch.verdicts[i], _DETAIL.unpack_from(batch.details, _DETAIL.size * i))))
        for i, p in enumerate(packets)
    ]
    assert list(batch.verdicts) == [0, 0, int(kbmfast.Verdict.NONCES_EXPIRED)]
    assert cap.sent == expected
    assert bul.process_ack(cap.sent[0][1]).verdict == kbmfast.Verdict.ACCEPTED
    snap = server.snapshot()
    assert [(b["home"], b["lifetime"]) for b in snap["bindings"]] == [(HOME, 420), (HOME_RR, 420)]  # RR: at most 420
    assert snap["rr_replies"] == {"CoT": 1, "HoT": 1} and snap["ba_sent"] == {"0": 3, "138": 1}
    cn.close()


def _python_rule(batch: Any, compat: bool) -> list[int]:
    """What serve_rr.handle answered before kbm_rr_select, in Python, as the oracle: verdicts
    only RR gives, acknowledged BUs with Nonce Indices, compat's care-of = home BUs."""
    from kbmfast import serve_rr
    from kbmfast.fast import _DETAIL

    out = []
    for i in range(batch.n):
        code = batch.verdicts[i]
        if code in serve_rr._RR_ONLY:
            out.append(i)
        elif code in serve_rr._ANSWERED:
            d = _DETAIL.unpack_from(batch.details, _DETAIL.size * i)
            at = batch.offsets[i]
            same = batch.data[at + d[0] : at + d[0] + 16] == batch.data[at + d[1] : at + d[1] + 16]
            if d[6] >= 0 or (compat and d[3] != 0 and d[0] >= 0 and same):
                out.append(i)
    return out


def test_server_handle_touches_only_rr_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve_rr.handle unpacks the details of the packets it answers only (kbm_rr_select finds
    them in C), not those of every accepted Binding Update of a configured peer."""
    from test_serve import CN_NONCE, HN, HOME2, KCN

    from kbmfast import serve_rr

    cn, server, cap, bul, inits = _rr_server()
    server.handle(cap, _live_batch(cn, inits))
    assert all(bul.process_test(p) for _, p in cap.sent)
    dereg_kbm = kbmfast.derive_kbm(KCN, HN, CN_NONCE, home=HOME2, care_of=HOME2, deregistration=True)
    configured = [custom_bu(KBM, home=HOME, care_of=COA, correspondent=CN, sequence=s) for s in range(1, 40)]
    packets = [
        *configured[:20],
        bul.binding_update(CN, care_of=COA, lifetime=600),  # RR, accepted
        custom_bu(dereg_kbm, home=HOME2, care_of=HOME2, correspondent=CN, sequence=3, mac_care_of=HOME2),  # compat
        *configured[20:],
        configured[0],  # a replay of a configured peer's: 135, the fast path's
        custom_bu(bytes(20), home="2001:db8:1::901", care_of=COA, correspondent=CN, sequence=1, nonce_indices=(9, 9)),
        *inits,  # answered again
        b"\x60junk",
    ]
    batch = _live_batch(cn, packets)
    want = _python_rule(batch, compat=True)
    assert want == [20, 21, 42]
    not_bu = [i for i in range(batch.n) if batch.verdicts[i] == kbmfast.Verdict.NOT_BINDING_UPDATE]
    assert not_bu == [43, 44]  # the junk is malformed
    assert serve_rr.select(batch, True, True) == (want, not_bu)
    assert serve_rr.select(batch, False, False)[1] == []

    class Counting:
        size = serve_rr._DETAIL.size

        def __init__(self) -> None:
            self.calls: list[int] = []

        def unpack_from(self, buf: Any, at: int) -> Any:
            self.calls.append(at // self.size)
            return serve_rr._DETAIL_REAL.unpack_from(buf, at)

    monkeypatch.setattr(serve_rr, "_DETAIL_REAL", serve_rr._DETAIL, raising=False)
    counting = Counting()
    monkeypatch.setattr(serve_rr, "_DETAIL", counting)
    cap.sent.clear()
    assert server.handle(cap, batch) is None
    assert sorted(set(counting.calls)) == want
    cn.close()


def test_rr_select_checks_bounds() -> None:
    """Details pointing past their packet, or offsets past the buffer, are skipped, not read."""
    from array import array

    from kbmfast import serve_rr
    from kbmfast.fast import _DETAIL
    from kbmfast.live import Batch

    data = bytes(100)
    details = _DETAIL.pack(90, 0, 1, 5, 0, 0, -1) + _DETAIL.pack(0, 20, 1, 5, 0, 0, -1) + _DETAIL.pack(0, 16, 1, 5, 0, 0, -1)
    batch = Batch(3, memoryview(data), array("Q", [0, 100, 200, 100]), bytearray(3), bytearray(details), [0] * 3, [1, 2, 3])
    assert serve_rr.select(batch, True, True) == ([], [])
    same = bytearray(_DETAIL.pack(0, 16, 1, 5, 0, 0, -1) * 3)
    batch = Batch(3, memoryview(data), array("Q", [0, 100, 100, 100]), bytearray(3), same, [0] * 3, [1, 2, 3])
    assert serve_rr.select(batch, True, True) == ([0], [])  # packets 1 and 2 are empty
    assert serve_rr.select(batch, True, False) == ([], [])  # care-of = home only matters under compat
    short = Batch(4, memoryview(data), array("Q", [0] * 5), bytearray(4), bytearray(details), [0] * 4, [1] * 4)
    with pytest.raises(ValueError, match="fewer"):
        serve_rr.select(short, True, True)
