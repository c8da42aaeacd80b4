"""kbmfast.capture: pcap/pcapng reading on every link type, trimming, damage, fast == plain.

Captures come from kbmfast gen and from other tools (editcap, text2pcap, tcpdump, mergecap) where
they are installed, and from tcpdump's own test captures.
"""

from __future__ import annotations

import pathlib
import shutil
import struct
import subprocess

import pytest
from helpers import tool_env

import kbmfast
from kbmfast import capture, gen
from kbmfast.capture import Batch, CaptureError, CaptureReader, PcapWriter, fields_fast, fields_plain, write_pcapng

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus" / "tcpdump"
HAS_NUMPY = capture.np is not None


@pytest.fixture(scope="module")
def traffic() -> gen.Traffic:
    return gen.generate(15, 1200, seed=11)


def write_pcap(
    path: pathlib.Path, frames: list[tuple[bytes, int]], linktype: int = 1, order: str = "<", nano: bool = False
) -> None:
    magic = capture.PCAP_MAGIC_NS if nano else capture.PCAP_MAGIC_US
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for frame, us in frames:
        sec, frac = divmod(us, 1_000_000)
        out.append(struct.pack(order + "IIII", sec, frac * 1000 if nano else frac, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def read_all(path: pathlib.Path, fast: bool = True, size: int = 500) -> tuple[list[Batch], CaptureReader]:
    with CaptureReader(path) as r:
        batches = list(r.batches(size, fast=fast))
        return batches, r


def packets(batches: list[Batch]) -> list[tuple[int, int, bytes]]:
    return [(b.frames[i], b.times[i], b.packet(i)) for b in batches for i in range(len(b))]


def read_engine(path: pathlib.Path, engine: str, size: int = 500) -> tuple[list[Batch], CaptureReader]:
    with CaptureReader(path) as r:
        batches = list(r.batches(size, engine=engine))
        return batches, r


def check_same_both_ways(path: pathlib.Path) -> list[tuple[int, int, bytes]]:
    """Every engine (C walker, numpy, plain Python) reads ``path`` alike: packets, frame numbers,
    times, counts, progress and damage (the plain walk is the oracle)."""
    plain, r1 = read_all(path, fast=False)
    got = packets(plain)
    seen = (r1.frames, r1.other, r1.position, repr(r1.error))
    for size in (500, 7):
        c, rc = read_engine(path, "c", size)
        assert packets(c) == got
        assert (rc.frames, rc.other, rc.position, repr(rc.error)) == seen
        assert all(len(b) == size for b in c[:-1])
    if HAS_NUMPY:
        fast, r2 = read_all(path, fast=True)
        assert packets(fast) == got
        fast, r2 = read_engine(path, "numpy")
        assert packets(fast) == got
        assert (r1.frames, r1.other, repr(r1.error)) == (r2.frames, r2.other, repr(r2.error))
        for b in fast:
            f1, f2 = fields_fast(b), fields_plain(b)
            assert [int(x) for x in f1.mh_type] == f2.mh_type
            assert [int(x) for x in f1.seq] == f2.seq and [int(x) for x in f1.units] == f2.units
            assert [bytes(x) for x in f1.home] == f2.home and [bytes(x) for x in f1.care_of] == f2.care_of
    return got


def test_gen_pcap_reads_back_exactly(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, traffic.frames)
    got = check_same_both_ways(path)
    assert [(n, t, p) for n, t, p in got] == [(i, us, f[14:]) for i, (f, us) in enumerate(traffic.frames, 1)]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_byte_orders_and_resolutions(tmp_path: pathlib.Path, traffic: gen.Traffic, order: str, nano: bool) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, traffic.frames[:200], order=order, nano=nano)
    got = check_same_both_ways(path)
    assert [t for _, t, _ in got] == [us for _, us in traffic.frames[:200]]


def test_pcapng_reads_like_pcap(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcapng"
    write_pcap(a, traffic.frames)
    with open(b, "wb") as f:
        write_pcapng(f, traffic.frames)
    assert check_same_both_ways(a) == check_same_both_ways(b)


def _frames_for(linktype: int, packet: bytes) -> list[bytes]:
    """Ways to wrap one IPv6 packet for a link type (all must read the same)."""
    if linktype == 1:
        eth = bytes(12)
        return [
            eth + b"\x86\xdd" + packet,
            eth + b"\x81\x00\x00\x05\x86\xdd" + packet,  # 802.1Q
            eth + b"\x88\xa8\x00\x05\x81\x00\x00\x07\x86\xdd" + packet,  # QinQ
            eth + b"\x86\xdd" + packet + bytes(4),  # FCS / trailer
        ]
    if linktype in (101, 229):
        return [packet]
    if linktype == 113:
        return [bytes(14) + b"\x86\xdd" + packet]
    if linktype == 276:
        return [b"\x86\xdd" + bytes(18) + packet]
    if linktype == 0:
        return [struct.pack("<I", 24) + packet, struct.pack(">I", 30) + packet, struct.pack("<I", 28) + packet]
    if linktype == 108:
        return [struct.pack(">I", 24) + packet]
    raise AssertionError(linktype)


@pytest.mark.parametrize("linktype", [0, 1, 101, 108, 113, 229, 276])
def test_link_types(tmp_path: pathlib.Path, traffic: gen.Traffic, linktype: int) -> None:
    bu = traffic.frames[0][0][14:]
    frames = _frames_for(linktype, bu)
    noise = {1: bytes(12) + b"\x08\x06" + bytes(28), 0: struct.pack("<I", 2) + bytes(20)}.get(linktype, b"\x45" + bytes(19))
    path = tmp_path / "l.pcap"
    write_pcap(path, [(f, 1_700_000_000_000_000 + i) for i, f in enumerate([*frames, noise])], linktype=linktype)
    got = check_same_both_ways(path)
    assert [p for _, _, p in got] == [bu] * len(frames)
    _, r = read_all(path)
    assert (r.frames, r.other, r.error) == (len(frames) + 1, 1, None)


def test_trailing_bytes_are_trimmed_and_short_frames_kept(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    bu = traffic.frames[0][0][14:]
    eth = bytes(12) + b"\x86\xdd"
    frames = [eth + bu + b"\xaa" * 6, eth + bu[:-5]]
    path = tmp_path / "t.pcap"
    write_pcap(path, [(f, 1_700_000_000_000_000) for f in frames])
    got = [p for _, _, p in check_same_both_ways(path)]
    assert got == [bu, bu[:-5]]
    keys = traffic.keys
    assert list(kbmfast.Verifier(keys).verify_batch(got)) == [kbmfast.Verdict.ACCEPTED, kbmfast.Verdict.MALFORMED]


def test_extension_header_chains(tmp_path: pathlib.Path) -> None:
    def ipv6(nh: int, payload: bytes) -> bytes:
        return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x02" + payload

    mh = b"\x3b\x00\x00\x00\x00\x00\x00\x00"  # a BRR
    hbh = b"\x3c\x00" + b"\x01\x04" + bytes(4)  # -> Destination Options
    dest = b"\x2b\x00" + b"\x01\x04" + bytes(4)  # -> Routing
    rh = b"\x87\x00\x00\x00" + bytes(4)  # -> MH
    frag = b"\x87\x00\x00\x01" + bytes(4)
    cases = [
        (ipv6(135, mh), True),
        (ipv6(0, hbh + dest + rh + mh), True),
        (ipv6(60, b"\x87\x00\x01\x04" + bytes(4) + mh), True),
        (ipv6(44, frag + mh), False),  # fragments are not reassembled
        (ipv6(58, bytes(8)), False),  # ICMPv6
        (ipv6(0, b"\x3c"), False),  # chain cut short
    ]
    path = tmp_path / "x.pcap"
    write_pcap(path, [(p, 1_700_000_000_000_000) for p, _ in cases], linktype=229)
    got = check_same_both_ways(path)
    assert [n for n, _, _ in got] == [i for i, (_, mob) in enumerate(cases, 1) if mob]


@pytest.mark.parametrize("cut", [3, 20, 100])
def test_damaged_pcap_reports_frame_and_offset(tmp_path: pathlib.Path, traffic: gen.Traffic, cut: int) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, traffic.frames[:50])
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    offset = 24 + sum(16 + len(f) for f, _ in traffic.frames[:49])
    for engine in ("plain", "c", "numpy") if HAS_NUMPY else ("plain", "c"):
        batches, r = read_engine(path, engine, size=7)
        assert r.error is not None and (r.error.frame, r.error.offset) == (50, offset)
        assert [n for n, _, _ in packets(batches)] == list(range(1, 50))
        assert "frame 50" in str(r.error) and f"byte offset {offset}" in str(r.error)


def test_damaged_pcapng(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    path = tmp_path / "t.pcapng"
    with open(path, "wb") as f:
        write_pcapng(f, traffic.frames[:10])
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-10]))
    for engine in ("plain", "c"):
        batches, r = read_engine(path, engine)
        assert r.error is not None and r.error.frame == 10 and len(packets(batches)) == 9
    check_same_both_ways(path)
    data[-4:] = b"\0\0\0\0"  # trailing length wrong
    path.write_bytes(bytes(data))
    for engine in ("plain", "c"):
        _, r = read_engine(path, engine)
        assert r.error is not None and "trailing length" in r.error.reason
    check_same_both_ways(path)


@pytest.mark.parametrize("content", [b"", b"abc", b"\xd4\xc3\xb2\xa1" + bytes(4), b"hello world, not a capture"])
def test_not_a_capture(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "x"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as e:
        CaptureReader(path)
    assert e.value.frame == 0


def test_timestamps_far_apart_take_the_plain_steps(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    frames = [(f, (i % 3) * 400_000_000 * 1_000_000 + i) for i, (f, _) in enumerate(traffic.frames[:300])]
    path = tmp_path / "t.pcap"
    write_pcap(path, frames)
    got = check_same_both_ways(path)
    assert len(got) == 300


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.pcap")), ids=lambda p: p.name)
def test_tcpdump_corpus_fast_equals_plain(path: pathlib.Path) -> None:
    check_same_both_ways(path)


def test_pcap_writer_round_trip(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    path = tmp_path / "w.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for frame, us in traffic.frames[:5]:
            w.write(frame[14:], us)
    assert [p for _, _, p in check_same_both_ways(path)] == [f[14:] for f, _ in traffic.frames[:5]]


# -- captures written by other tools -----------------------------------------------------------

needs = pytest.mark.skipif


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, env=tool_env())


@needs(shutil.which("editcap") is None, reason="editcap (Debian package wireshark-common / tshark) is not installed")
@pytest.mark.parametrize("fmt", ["pcapng", "nsecpcap", "pcap"])
def test_editcap_conversions(tmp_path: pathlib.Path, traffic: gen.Traffic, fmt: str) -> None:
    src, dst = tmp_path / "a.pcap", tmp_path / f"b.{fmt}"
    write_pcap(src, traffic.frames)
    run("editcap", "-F", fmt, str(src), str(dst))
    assert check_same_both_ways(dst) == check_same_both_ways(src)


@needs(shutil.which("editcap") is None, reason="editcap (Debian package wireshark-common / tshark) is not installed")
def test_editcap_snaplen_truncates_to_malformed(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    src, dst = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_pcap(src, traffic.frames[:30])
    run("editcap", "-s", "100", str(src), str(dst))
    got = check_same_both_ways(dst)
    assert len(got) == 30 and all(len(p) <= 86 for _, _, p in got)


@needs(shutil.which("text2pcap") is None, reason="text2pcap (Debian package wireshark-common / tshark) is not installed")
@pytest.mark.parametrize("linktype", [101, 229, 113, 276, 0])
@pytest.mark.parametrize("ng", [False, True])
def test_text2pcap_link_types(tmp_path: pathlib.Path, traffic: gen.Traffic, linktype: int, ng: bool) -> None:
    bu = traffic.frames[3][0][14:]
    frame = _frames_for(linktype, bu)[0]
    dump = tmp_path / "d.txt"
    dump.write_text(
        "".join(f"{i:06x} " + " ".join(f"{b:02x}" for b in frame[i : i + 16]) + "\n" for i in range(0, len(frame), 16))
    )
    out = tmp_path / "o.cap"
    run("text2pcap", *(["-n"] if ng else []), "-l", str(linktype), str(dump), str(out))
    got = check_same_both_ways(out)
    assert [p for _, _, p in got] == [bu]


@needs(shutil.which("tcpdump") is None, reason="tcpdump (Debian package tcpdump) is not installed")
def test_tcpdump_rewritten_capture(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    src, dst = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_pcap(src, traffic.frames)
    run("tcpdump", "-r", str(src), "-w", str(dst), "ip6")
    assert check_same_both_ways(dst) == check_same_both_ways(src)


@needs(shutil.which("mergecap") is None, reason="mergecap (Debian package wireshark-common / tshark) is not installed")
def test_mergecap_pcapng_of_two_captures(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    a, b, m = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "m.pcapng"
    write_pcap(a, traffic.frames[:100])
    write_pcap(b, traffic.frames[100:200])
    run("mergecap", "-F", "pcapng", "-w", str(m), str(a), str(b))
    got = check_same_both_ways(m)
    assert sorted(p for _, _, p in got) == sorted(f[14:] for f, _ in traffic.frames[:200])
