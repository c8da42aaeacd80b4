"""Return routability on the command line: ``kbmfast serve --rr`` against ``kbmfast mn --rr``
in network namespaces (tests/netns.py), ``--compat rfc3775``, and ``kbmfast verify --rr``."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import test_mn
import test_serve
from helpers import custom_bu, tool_env
from netns import CN, COA, MobileNode, Net
from test_serve import HOME, KBM, Serve, python_cmd, root

import kbmfast

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
