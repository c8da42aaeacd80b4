"""kbmfast verify on captures as they really are (issue 10 items 7 and 8): both directions
(Binding Acknowledgements checked as the mobile node would), why a packet is MALFORMED, and
frames cut by the capture's snap length. Through the real command line in a subprocess."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import random
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest
from helpers import not_under_asan, tool_env

import kbmfast
from kbmfast import gen
from kbmfast.capture import HAVE_C, LINKTYPE_RAW, CaptureReader, PcapWriter, write_pcapng
from kbmfast.cli import verify as tools_cli

CN = ipaddress.IPv6Address("2001:db8:3::1")
OTHER_CN = ipaddress.IPv6Address("2001:db8:3::2")


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-P", "-m", "kbmfast.cli", "verify", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def json_run(*args: str) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    done = verify(*args, "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]  # (an editable build may print)
    return docs[:-1], docs[-1]["summary"], done.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A gen capture, its acknowledgements (--acks-out) and the two merged in time order."""
    d = tmp_path_factory.mktemp("directions")
    paths = {"pcap": d / "g.pcap", "keys": d / "g.keys.toml", "acks": d / "acks.pcap", "both": d / "both.pcap"}
    traffic = gen.generate(15, 1500, seed=11)
    with open(paths["pcap"], "wb") as f:
        w = PcapWriter(f, linktype=1)
        for frame, us in traffic.frames:
            w.write(frame, us)
    traffic.keys.save(paths["keys"])
    done = verify(str(paths["pcap"]), "--keys", str(paths["keys"]), "--acks-out", str(paths["acks"]), "--quiet")
    assert done.returncode == 0, done.stderr
    # Merged as mergecap does: by time, the acknowledgement (same time as its Binding Update) first.
    frames = [(us, 1, b"\x02\0\0\0\0\x01\x02\0\0\0\0\xfe\x86\xdd" + p) for p, us in _packets(paths["pcap"])]
    frames += [(us, 0, b"\x02\0\0\0\0\xfe\x02\0\0\0\0\x01\x86\xdd" + p) for p, us in _packets(paths["acks"])]
    frames.sort(key=lambda f: f[:2])
    with open(paths["both"], "wb") as f:
        w = PcapWriter(f, linktype=1)
        for us, _, frame in frames:
            w.write(frame, us)
    return paths


def _packets(path: pathlib.Path) -> list[tuple[bytes, int]]:
    with CaptureReader(path) as r:
        return [(b.packet(i), b.times[i]) for b in r.batches() for i in range(len(b))]


def test_both_directions(made: dict[str, pathlib.Path]) -> None:
    """The issue: every BA of a merged capture was MALFORMED. Now each is BA_VALID (checked with the
    peer's key, matched to its Binding Update), counted apart, and the BUs' verdicts do not move."""
    bus, bu_summary, _ = json_run(str(made["pcap"]), "--keys", str(made["keys"]))
    rows, summary, _ = json_run(str(made["both"]), "--keys", str(made["keys"]))
    acks = len(_packets(made["acks"]))
    assert acks > 100
    assert summary["verdicts"] == bu_summary["verdicts"]
    assert summary["acknowledgements"]["BA_VALID"] == acks
    assert sum(summary["acknowledgements"].values()) == acks
    assert summary["mobility_packets"] == len(bus) + acks
    ba_rows = [r for r in rows if r["type"] == "BA"]
    assert len(ba_rows) == acks and {r["verdict"] for r in ba_rows} == {"BA_VALID"}
    assert all(r["source"] == str(CN) and r["home"] and r["care_of"] == r["destination"] for r in ba_rows)
    assert [(r["verdict"], r["ba_status"]) for r in rows if r["type"] == "BU"] == [(r["verdict"], r["ba_status"]) for r in bus]
    # the text lines say the same
    done = verify(str(made["both"]), "--keys", str(made["keys"]))
    assert done.returncode == 0 and f"BA_VALID{acks:>{34 - 8}}" in done.stdout
    assert sum(" BA_VALID " in line for line in done.stdout.splitlines()) == acks + 0


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="mergecap (Debian package wireshark-common) not installed")
def test_both_directions_mergecap(made: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """The issue's own recipe: mergecap of a gen capture and its --acks-out."""
    both = tmp_path / "m.pcap"
    subprocess.run(
        ["mergecap", "-w", str(both), str(made["pcap"]), str(made["acks"])], check=True, capture_output=True, env=tool_env()
    )
    _, summary, _ = json_run(str(both), "--keys", str(made["keys"]))
    acks = len(_packets(made["acks"]))
    assert summary["acknowledgements"]["BA_VALID"] == acks and summary["verdicts"]["MALFORMED"] < 50


def _raw_capture(path: pathlib.Path, packets: list[bytes]) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=LINKTYPE_RAW)
        for k, p in enumerate(packets):
            w.write(p, 1_700_000_000_000_000 + k)


def test_acknowledgement_verdicts(tmp_path: pathlib.Path) -> None:
    """Each BA verdict from a packet built for it; --correspondent keeps one CN's packets."""
    rng = random.Random(3)
    home, other = ipaddress.IPv6Address("2001:db8:1::1"), ipaddress.IPv6Address("2001:db8:1::2")
    unknown = ipaddress.IPv6Address("2001:db8:99::1")
    care_of = ipaddress.IPv6Address("2001:db8:2::7")
    kbm, wrong = rng.randbytes(20), rng.randbytes(20)
    keys = kbmfast.KeyTable()
    keys.add_kbm(home, kbm)
    keys.add_kbm(other, rng.randbytes(20))
    keys.save(tmp_path / "k.toml")

    def ba(key: bytes, seq: int, h: ipaddress.IPv6Address = home, cn: ipaddress.IPv6Address = CN) -> bytes:
        return kbmfast.build_binding_ack(key, home=h, care_of=care_of, correspondent=cn, sequence=seq, status=0, lifetime=60)

    bu = kbmfast.build_binding_update(kbm, home=home, care_of=care_of, correspondent=CN, sequence=100, lifetime=60)
    bad_sum = bytearray(ba(kbm, 100))
    bad_sum[-1] ^= 1
    packets = [
        bu,  # 1 ACCEPTED
        ba(kbm, 100),  # 2 BA_VALID, answers frame 1
        ba(kbm, 101),  # 3 BA_UNMATCHED: authentic, but no BU 101 was seen
        ba(wrong, 100),  # 4 BA_BAD_AUTHENTICATOR
        ba(kbm, 5, h=unknown),  # 5 BA_NOT_CONFIGURED
        bytes(bad_sum),  # 6 BA_BAD_CHECKSUM
        ba(kbm, 7, cn=OTHER_CN),  # 7 BA_VALID: no BU to that CN was seen (sequence not judged)
    ]
    _raw_capture(tmp_path / "c.pcap", packets)
    rows, summary, _ = json_run(str(tmp_path / "c.pcap"), "--keys", str(tmp_path / "k.toml"))
    assert [r["verdict"] for r in rows] == [
        "ACCEPTED",
        "BA_VALID",
        "BA_UNMATCHED",
        "BA_BAD_AUTHENTICATOR",
        "BA_NOT_CONFIGURED",
        "BA_BAD_CHECKSUM",
        "BA_VALID",
    ]
    assert summary["verdicts"]["ACCEPTED"] == 1 and summary["verdicts"]["MALFORMED"] == 0
    assert summary["acknowledgements"] == {
        "BA_VALID": 2,
        "BA_UNMATCHED": 1,
        "BA_BAD_AUTHENTICATOR": 1,
        "BA_NO_AUTHORIZATION": 0,
        "BA_NOT_CONFIGURED": 1,
        "BA_BAD_CHECKSUM": 1,
    }
    assert rows[1]["home"] == str(home) and rows[1]["care_of"] == str(care_of) and rows[1]["sequence"] == 100
    rows, summary, _ = json_run(str(tmp_path / "c.pcap"), "--keys", str(tmp_path / "k.toml"), "--correspondent", str(OTHER_CN))
    assert [r["frame"] for r in rows] == [7] and summary["other_frames"] == 6
    done = verify(str(tmp_path / "c.pcap"), "--keys", str(tmp_path / "k.toml"), "--correspondent", "nonsense")
    assert done.returncode == 2 and "--correspondent" in done.stderr and "Traceback" not in done.stderr


def test_malformed_lines_carry_the_reason(tmp_path: pathlib.Path) -> None:
    """Lines and JSON name the parse error and its byte offset; the C and Python answers agree."""
    traffic = gen.generate(5, 400, seed=2, mix={"replay": 0, "forged": 0, "unknown": 0, "malformed": 0.2})
    traffic.keys.save(tmp_path / "k.toml")
    with open(tmp_path / "m.pcap", "wb") as f:
        w = PcapWriter(f, linktype=1)
        for frame, us in traffic.frames:
            w.write(frame, us)
    rows, summary, _ = json_run(str(tmp_path / "m.pcap"), "--keys", str(tmp_path / "k.toml"))
    bad = [r for r in rows if r["verdict"] == "MALFORMED"]
    assert len(bad) == summary["verdicts"]["MALFORMED"] > 5
    packets = {i + 1: f[14:] for i, (f, _) in enumerate(traffic.frames)}
    for r in bad:
        code, offset = tools_cli.malformed_reason(packets[r["frame"]])
        assert r["reason"] == tools_cli.REASON_NAMES[code] and r["offset"] == offset
    assert {r["reason"] for r in bad} >= {"PAYLOAD_LENGTH", "PAYLOAD_PROTO"}
    assert all(r["reason"] is None for r in rows if r["verdict"] != "MALFORMED")
    done = verify(str(tmp_path / "m.pcap"), "--keys", str(tmp_path / "k.toml"))
    for r in bad:
        line = next(x for x in done.stdout.splitlines() if x.split()[:1] == [str(r["frame"])])
        assert line.endswith(f"  {r['reason']}@{r['offset']}")


@pytest.mark.skipif(not HAVE_C, reason="the C core is not built")
def test_malformed_reason_c_equals_python() -> None:
    from kbmfast._native_edge import ffi, lib

    rng = random.Random(5)
    traffic = gen.generate(6, 200, seed=4)
    base = [f[14:] for f, _ in traffic.frames]
    samples = list(base)
    for p in base:
        for _ in range(3):
            q = bytearray(p)
            for _ in range(rng.randrange(1, 3)):
                q[rng.randrange(0, len(q))] = rng.randrange(256)
            samples.append(bytes(q))
        samples.append(p[: rng.randrange(0, len(p))])
    ack = kbmfast.build_binding_ack(bytes(20), home="2001:db8:1::1", care_of="2001:db8:2::1", correspondent=CN,
                                    sequence=1, status=0, lifetime=4)  # fmt: skip
    samples.append(ack)
    where = ffi.new("uint32_t *")
    seen = set()
    for p in samples:
        code = lib.kbm_malformed_reason(p, len(p), where)
        assert (code, where[0] if code else 0) == tools_cli.malformed_reason(p), p.hex()
        seen.add(code)
    assert tools_cli.WHY_ROUTING_HEADER in seen and len(seen) > 6


def _snapped(src: pathlib.Path, dst: pathlib.Path, snap: int, pcapng: bool) -> None:
    """What ``editcap -s snap`` writes: each frame cut to snap bytes, its original length kept."""
    frames = []
    with open(src, "rb") as f:
        raw = f.read()
    pos = 24
    while pos < len(raw):
        sec, usec, caplen, _ = (int.from_bytes(raw[pos + k : pos + k + 4], "little") for k in (0, 4, 8, 12))
        frames.append((raw[pos + 16 : pos + 16 + caplen], sec * 1_000_000 + usec))
        pos += 16 + caplen
    with open(dst, "wb") as out:
        if pcapng:
            write_pcapng(out, [(f[:snap], us) for f, us in frames])
            return
        out.write(raw[:24])
        for f, us in frames:
            cut = f[:snap]
            out.write((us // 1_000_000).to_bytes(4, "little") + (us % 1_000_000).to_bytes(4, "little"))
            out.write(len(cut).to_bytes(4, "little") + len(f).to_bytes(4, "little") + cut)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_snap_length(made: dict[str, pathlib.Path], tmp_path: pathlib.Path, fmt: str) -> None:
    """``editcap -s 96`` made every frame MALFORMED with no hint: now TRUNCATED, with the hint."""
    snapped = tmp_path / f"s.{fmt}"
    _snapped(made["pcap"], snapped, 96, fmt == "pcapng")
    rows, summary, err = json_run(str(snapped), "--keys", str(made["keys"]))
    cut = [r for r in rows if r["verdict"] == "TRUNCATED"]
    if fmt == "pcap":  # classic pcap keeps the original length: every long frame is cut
        assert len(cut) == summary["truncated"] > len(rows) // 2
        assert "snap length" in err and "tcpdump -s 0" in err
        assert all(r["reason"] == "SNAP_LENGTH" and r["offset"] == 96 - 14 for r in cut)
        assert summary["verdicts"]["MALFORMED"] < len(rows) // 10
    else:  # write_pcapng records the cut length as the original: a short frame, not a cut one
        assert not cut and "snap length" not in err


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (Debian package wireshark-common) not installed")
def test_snap_length_editcap(made: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    for fmt in ("pcap", "pcapng"):
        snapped = tmp_path / f"e.{fmt}"
        subprocess.run(
            ["editcap", "-F", fmt, "-s", "96", str(made["pcap"]), str(snapped)],
            check=True,
            capture_output=True,
            env=tool_env(),
        )
        rows, summary, err = json_run(str(snapped), "--keys", str(made["keys"]))
        assert summary["truncated"] == sum(r["verdict"] == "TRUNCATED" for r in rows) > len(rows) // 2
        assert "larger snap length" in err


# ---------------------------------------------------------------------------------------------
# Item 9: a capture on standard input, read as it comes


def _records(path: pathlib.Path) -> tuple[bytes, list[bytes]]:
    """A classic pcap's file header and its records (header and data each)."""
    raw = path.read_bytes()
    records, pos = [], 24
    while pos < len(raw):
        caplen = int.from_bytes(raw[pos + 8 : pos + 12], "little")
        records.append(raw[pos : pos + 16 + caplen])
        pos += 16 + caplen
    return raw[:24], records


def _stream_verify(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-P", "-m", "kbmfast.cli", "verify", "-", *args]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE)


def _line_with(proc: subprocess.Popen[bytes], want: bytes, timeout: float = 60) -> bytes:
    """Read proc's stdout until a line starts with ``want`` (its frame number); fail on EOF."""
    import select
    import time

    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if not ready:
            continue
        line = proc.stdout.readline()
        assert line, f"EOF before a line for {want!r}: {seen[-300:]!r}"
        seen += line
        if line.lstrip().startswith(want + b" "):
            return line
    raise AssertionError(f"no line for {want!r} within {timeout} s: {seen[-300:]!r}")


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_stdin_lines_arrive_before_eof(made: dict[str, pathlib.Path], tmp_path: pathlib.Path, fmt: str) -> None:
    """``tcpdump -w - | kbmfast verify -``: a line per packet as it arrives, the pipe still open."""
    header, records = _records(made["both"])
    if fmt == "pcapng":
        frames = [(r[16:], int.from_bytes(r[:4], "little") * 1_000_000 + int.from_bytes(r[4:8], "little")) for r in records]
        with open(tmp_path / "b.pcapng", "wb") as f:
            write_pcapng(f, frames)
        raw = (tmp_path / "b.pcapng").read_bytes()
        shb_idb = raw[: 28 + 20]
        blocks, pos = [], len(shb_idb)
        while pos < len(raw):
            total = int.from_bytes(raw[pos + 4 : pos + 8], "little")
            blocks.append(raw[pos : pos + total])
            pos += total
        header, records = shb_idb, blocks
    proc = _stream_verify("--keys", str(made["keys"]), "-l")  # stdout is a pipe here, not a terminal
    assert proc.stdin is not None
    try:
        proc.stdin.write(header)
        for k in range(3):  # slowly: each record on its own, half of the first one late
            if k == 0:
                proc.stdin.write(records[0][:10])
                proc.stdin.flush()
                time.sleep(0.2)
                proc.stdin.write(records[0][10:])
            else:
                proc.stdin.write(records[k])
            proc.stdin.flush()
            line = _line_with(proc, str(k + 1).encode())
            assert b" > " in line
        out, err = proc.communicate(b"".join(records[3:]), timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert f"frames{len(records):>{34 - 6}}".encode() in out


def test_stdin_count_stops_early(made: dict[str, pathlib.Path]) -> None:
    """-c COUNT: COUNT frames, then the summary, while the writer still has more to send."""
    header, records = _records(made["both"])
    proc = _stream_verify("--keys", str(made["keys"]), "-c", "5", "--json")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(header + b"".join(records[:20]))
    proc.stdin.flush()
    out = proc.stdout.read()  # the verifier ends on its own: stdin is still open
    proc.stdin.close()
    proc.wait(timeout=60)
    docs = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    assert [d["frame"] for d in docs[:-1]] == [1, 2, 3, 4, 5] and docs[-1]["summary"]["frames"] == 5
    assert proc.returncode == 0


@not_under_asan
def test_stdin_in_bounded_memory(made: dict[str, pathlib.Path]) -> None:
    """A large capture through a pipe: peak RSS stays far below the bytes piped (it read the
    whole pipe before: 419 MB RSS for a 380 MB pipe)."""
    import threading

    header, records = _records(made["pcap"])
    block = b"".join(records)
    repeat = (256 << 20) // len(block) + 1
    proc = _stream_verify("--keys", str(made["keys"]), stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    peak: list[int] = []

    def write() -> None:
        assert proc.stdin is not None
        proc.stdin.write(header)
        for _ in range(repeat):
            proc.stdin.write(block)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=600)
    with open(f"/proc/{proc.pid}/status") as status:  # before EOF: the child is still running
        peak = [int(x.split()[1]) for x in status if x.startswith("VmHWM:")]
    proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    piped_mb, peak_mb = repeat * len(block) >> 20, peak[0] >> 10
    print(f"piped {piped_mb} MB, peak RSS {peak_mb} MB")
    assert piped_mb >= 256 and peak_mb < 160


# ---------------------------------------------------------------------------------------------
# Item 10: --json written in C, byte for byte what format_json writes


@pytest.mark.skipif(not HAVE_C, reason="the C core is not built")
def test_format_json_c_equals_python() -> None:
    from array import array

    from test_capture_c import odd_packets

    from kbmfast.capture import Batch, fields_plain

    rng = random.Random(8)
    traffic = gen.generate(10, 300, seed=5)
    packets = odd_packets(traffic, rng)
    packets.append(kbmfast.build_binding_ack(bytes(20), home="2001:db8:1::1", care_of="2001:db8:2::1", correspondent=CN,
                                             sequence=9, status=135, lifetime=0))  # fmt: skip
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    frames = array("Q", [rng.choice((1, 123_456_789_012, rng.randrange(1, 10**6))) for _ in packets])
    times = array("q", [rng.choice((0, 5, 1_700_000_000_000_001, rng.randrange(2**62))) for _ in packets])
    batch = Batch(b"".join(packets), offsets, frames, times)
    verdicts = array("B", [rng.randrange(len(tools_cli._VERDICT_NAMES)) for _ in packets])
    name = 'a "quoted" name\\ é.pcap'
    want = tools_cli.format_json(batch, fields_plain(batch), list(verdicts), tools_cli._Addresses(), name).encode()
    lines = tools_cli._CLines(None, False, tools_cli._Directions(kbmfast.KeyTable(), kbmfast))
    lines.name = json.dumps(name).encode()
    got = bytes(lines.lines(batch.data, batch.offsets, batch.frames, batch.times, verdicts, len(batch), bytearray()))
    assert got == want
    assert all(json.loads(line)["capture"] == name for line in got.decode().splitlines())


@not_under_asan
def test_gen_streams_in_bounded_memory(tmp_path: pathlib.Path) -> None:
    """gen held every frame (3.1 GB RSS for 3 M packets); now a checked chunk at a time. The
    same bytes as gen.generate, and a peak RSS that does not grow with the number of frames."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    peaks = {}
    for updates in (2_000, 120_000):
        out = tmp_path / f"g{updates}.pcap"
        argv = [sys.executable, "-P", "-m", "kbmfast.cli", "gen", "--peers", "400", "--updates", str(updates)]
        argv += ["--out", str(out), "--truth", str(tmp_path / f"t{updates}"), "--seed", "3"]
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600, check=True)
        peaks[updates] = int(done.stdout.split()[-1]) >> 10
    print(f"gen peak RSS: {peaks} MB")
    size = (tmp_path / "g120000.pcap").stat().st_size >> 20
    assert size > 10 and peaks[120_000] < peaks[2_000] + 25  # all in memory: ~150 MB more
    traffic = gen.generate(400, 2_000, seed=3)
    frames = [(b.packet(i), b.times[i]) for b in CaptureReader(tmp_path / "g2000.pcap").batches() for i in range(len(b))]
    assert [(f[14:], us) for f, us in traffic.frames] == frames
    truth = [json.loads(x) for x in (tmp_path / "t2000").read_text().splitlines()]
    assert [(e.frame, e.kind, e.verdict.name, e.ba_status) for e in traffic.truth] == [
        (t["frame"], t["kind"], t["verdict"], t["ba_status"]) for t in truth
    ]


def test_acks_out_in_c_equals_python(
    made: dict[str, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--acks-out written in C (kbm_write_acks) is byte for byte what the Python path (Results
    and Verifier.acknowledge) writes: Kbm and Kcn peers, de-registrations, Alternate Care-of
    Addresses, statuses 0 and 135; with the text lines, --json and --quiet, small batches."""
    from kbmfast import capture, cli

    outs = {}
    for mode in ("c", "python"):
        if mode == "python":
            monkeypatch.setattr(capture, "HAVE_C", False)
        for extra in ([], ["--json"], ["--quiet", "--batch", "97"]):
            acks = tmp_path / f"{mode}{len(extra)}.pcap"
            assert cli.main(["verify", str(made["pcap"]), "--keys", str(made["keys"]), "--acks-out", str(acks), *extra]) == 0
            outs[mode, len(extra)] = acks.read_bytes()
    assert len(set(outs.values())) == 1
    assert outs["c", 0] == made["acks"].read_bytes()
    with CaptureReader(made["acks"]) as r:
        statuses = {b.packet(i)[-26] for b in r.batches() for i in range(len(b))}  # BA Status, 26 bytes from the end
    assert {0, 135} <= statuses
