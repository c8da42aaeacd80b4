"""`kbmfast verify` on captures with extreme timestamps, and on a capture that changes while it is
read (issue 9, items 9 and 10), through the real command in a child process."""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess
import sys

import pytest

import kbmfast
from kbmfast.capture import ENGINES, LINKTYPE_RAW, PCAP_MAX_TIME_US, PCAPNG_SHB, CaptureReader

CLI = "import sys; from kbmfast.cli import main; sys.exit(main(sys.argv[1:]))"  # the console script
KBM = bytes(range(20))
HOME, CARE_OF, CN = "2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1"


def bu(seq: int) -> bytes:
    return kbmfast.build_binding_update(KBM, home=HOME, care_of=CARE_OF, correspondent=CN, sequence=seq, lifetime=60)


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> pathlib.Path:
    table = kbmfast.KeyTable()
    table.add_kbm(HOME, KBM)
    path = tmp_path / "cn.keys"
    table.save(path)
    return path


def pcap(records: list[tuple[int, int, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
    out += [struct.pack("<IIII", sec, usec, len(p), len(p)) + p for sec, usec, p in records]
    return b"".join(out)


def block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def pcapng(tsresol: int, stamps: list[int]) -> bytes:
    """One interface (raw IP) with if_tsresol ``tsresol``; a Binding Update per timestamp."""
    shb = block(PCAPNG_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + struct.pack("<HHB3x", 9, 1, tsresol) + bytes(4))
    epbs = [
        block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(p), len(p)) + p)
        for t, p in zip(stamps, (bu(i) for i in range(len(stamps))), strict=True)
    ]
    return shb + idb + b"".join(epbs)


def verify(capture: pathlib.Path, keys: pathlib.Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-P", "-c", CLI, "verify", str(capture), "--keys", str(keys), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def ack_times(path: pathlib.Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    out, pos = [], 24
    while pos < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        out.append((sec, usec))
        pos += 16 + caplen
    return out


# ---------------------------------------------------------------------------------------------
# Item 9: timestamps


def test_pcap_fraction_of_a_second_too_large_is_damage(tmp_path: pathlib.Path, keys: pathlib.Path) -> None:
    capture = tmp_path / "t.pcap"
    capture.write_bytes(pcap([(0xFFFFFFFF, 999_999, bu(1)), (0xFFFFFFFF, 0xFFFFFFFF, bu(2)), (5, 0, bu(3))]))
    for engine in ENGINES:  # the three readers agree on the damage and what comes before it
        with CaptureReader(capture) as r:
            frames = [f for b in r.batches(engine=engine) for f in b.frames]
            assert frames == [1] and r.error is not None
            assert "fraction of a second is 4294967295 (a second is 1000000)" in str(r.error)
            assert "frame 2" in str(r.error)
    acks = tmp_path / "acks.pcap"
    run = verify(capture, keys, "--acks-out", str(acks))
    assert "Traceback" not in run.stderr
    assert run.returncode == 1, run.stderr
    assert "fraction of a second is 4294967295" in run.stderr and "the 1 frames before it were verified" in run.stderr
    assert ack_times(acks) == [(0xFFFFFFFF, 999_999)]  # the latest time a pcap holds, exactly


def test_nanosecond_pcap_fraction_limit(tmp_path: pathlib.Path) -> None:
    capture = tmp_path / "t.pcap"
    data = bytearray(pcap([(1, 999_999_999, bu(1)), (1, 1_000_000_000, bu(2))]))
    data[0:4] = struct.pack("<I", 0xA1B23C4D)
    capture.write_bytes(data)
    for engine in ENGINES:
        with CaptureReader(capture) as r:
            assert [t for b in r.batches(engine=engine) for t in b.times] == [1_999_999]
            assert r.error is not None and "(a second is 1000000000)" in str(r.error)


@pytest.mark.parametrize(
    ("tsresol", "stamp", "expected"),
    [
        (0, 2**40, (0xFFFFFFFF, 999_999)),  # units of a second, far past 2106: clamped
        (0x80, 2**33, (0xFFFFFFFF, 999_999)),  # units of 2^-0 s: clamped too
        (127, 2**64 - 1, (0, 0)),  # units of 10^-127 s: exactly 0
        (0xFF, 2**64 - 1, (0, 0)),  # units of 2^-127 s: exactly 0
        (9, 1_717_200_000_123_456_789, (1_717_200_000, 123_456)),  # nanoseconds
        (6, 2**63 - 1, (0xFFFFFFFF, 999_999)),  # the latest µs time a Batch holds: clamped
    ],
)
def test_acks_out_any_pcapng_time(
    tmp_path: pathlib.Path, keys: pathlib.Path, tsresol: int, stamp: int, expected: tuple[int, int]
) -> None:
    capture = tmp_path / "t.pcapng"
    capture.write_bytes(pcapng(tsresol, [stamp]))
    acks = tmp_path / "acks.pcap"
    run = verify(capture, keys, "--acks-out", str(acks), "--json")
    assert "Traceback" not in run.stderr
    assert run.returncode == 0, run.stderr
    assert '"ACCEPTED"' in run.stdout
    assert ack_times(acks) == [expected]
    assert ("stamped with the latest time a pcap holds" in run.stderr) == (expected == (0xFFFFFFFF, 999_999))


def test_pcap_writer_clamps_to_its_range() -> None:
    import io

    from kbmfast.capture import PcapWriter

    w = PcapWriter(io.BytesIO())
    for t in (-1, 0, PCAP_MAX_TIME_US, PCAP_MAX_TIME_US + 1, 2**63 - 1):
        w.write(b"x", t)
    assert w.count == 5 and w.clamped == 3


# ---------------------------------------------------------------------------------------------
# Item 10: a capture that shrinks while it is read


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    from kbmfast import cli

    d = tmp_path_factory.mktemp("big")
    paths = {"pcap": d / "big.pcap", "keys": d / "big.keys"}
    assert cli.main(["gen", "--peers", "50", "--updates", "20000", "--seed", "9", "--out", str(paths["pcap"]),
                     "--keys", str(paths["keys"])]) == 0  # fmt: skip
    return paths


@pytest.mark.parametrize("size", ["half", "zero"])
def test_capture_truncated_while_verify_reads_it(tmp_path: pathlib.Path, big: dict[str, pathlib.Path], size: str) -> None:
    """The child verifies a 2.5 MB capture and writes its lines to a pipe we stop reading, so it
    is blocked early in the file; the file is then cut, and the child must report it (exit 1)
    instead of dying of SIGBUS (it used to read through a memory mapping)."""
    capture = tmp_path / "t.pcap"
    capture.write_bytes(big["pcap"].read_bytes())
    total = capture.stat().st_size
    argv = [sys.executable, "-P", "-c", CLI, "verify", str(capture), "--keys", str(big["keys"]), "--batch", "500"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = b"#"
        while line and not line.startswith(b"   frame"):  # its first lines: mid-file now
            line = child.stdout.readline()
        os.truncate(capture, total // 2 if size == "half" else 0)
        out, err = child.communicate(timeout=300)
    finally:
        child.kill()
        child.wait()
    text = err.decode()
    assert child.returncode == 1, (child.returncode, text[-2000:])  # -7 would be SIGBUS
    assert "Traceback" not in text
    assert f"the file changed while it was read: {total} bytes when opened" in text
    assert "frames before it were verified" in text
    assert b"mobility packets" in out  # the summary of what was verified


@pytest.mark.parametrize("window", [4096, 1 << 20])
def test_every_engine_reports_a_file_cut_after_open(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, window: int) -> None:
    """Cut after the reader opened the file (mid-record and on a record boundary, in the first
    window or a later one): each engine hands out the same packets before the cut, then the
    same CaptureChangedError."""
    from kbmfast import capture

    monkeypatch.setattr(capture, "WINDOW", window)
    data = pcap([(1_700_000_000 + i, i, bu(i)) for i in range(300)])
    record = 16 + len(bu(0))
    path = tmp_path / "t.pcap"
    for cut in (24 + 150 * record, 24 + 150 * record + 37, 24 + 299 * record + 5):
        seen = []
        for engine in ENGINES:
            path.write_bytes(data)
            with CaptureReader(path) as r:
                os.truncate(path, cut)
                got = [(f, t) for b in r.batches(64, engine=engine) for f, t in zip(b.frames, b.times, strict=True)]
                assert isinstance(r.error, capture.CaptureChangedError), (engine, r.error)
                assert f"{len(data)} bytes when opened, {cut} could be read" in str(r.error)
                seen.append((got, str(r.error), r.frames, r.position))
        assert seen[0] == seen[1] == seen[2]
        assert len(seen[0][0]) == (cut - 24) // record
