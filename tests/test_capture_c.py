"""The C capture walker and line formatter (csrc/capture.c, csrc/format.c) against their Python oracles.

- hostile captures: pcap and pcapng (several sections, both byte orders, many interfaces with
  every kind of if_tsresol, Enhanced, obsolete and Simple Packet Blocks, every link type) and
  thousands of damaged variants of them (cut, bytes flipped, length fields overwritten): the C
  engine gives exactly the plain walk's packets, frame numbers, times, counts and damage;
- the text lines: ``kbm_format_lines`` against ``kbmfast.cli.verify.format_plain`` on packets of every
  shape and every verdict, odd addresses (IPv4-mapped and -compatible, ::) included;
- the key file's fast path against tomllib.
"""

from __future__ import annotations

import ipaddress
import pathlib
import random
import struct
import tomllib
from typing import Any

import pytest

from kbmfast import _keys, gen
from kbmfast.capture import HAVE_C, PCAPNG_SHB, Batch, CaptureReader, fields_plain
from kbmfast.cli import verify as tools_cli

pytestmark = pytest.mark.skipif(not HAVE_C, reason="the C core is not built")

if HAVE_C:
    from kbmfast._native_edge import ffi, lib


@pytest.fixture(scope="module")
def traffic() -> gen.Traffic:
    return gen.generate(6, 120, seed=5)


def wrap(linktype: int, packet: bytes, i: int) -> bytes:
    if linktype == 1:
        tags = [b"", b"\x81\x00\x00\x05", b"\x88\xa8\x00\x05\x81\x00\x00\x07"][i % 3]
        return bytes(12) + tags + b"\x86\xdd" + packet + bytes(i % 5)
    if linktype in (101, 229, 12, 14):
        return packet
    if linktype == 113:
        return bytes(14) + b"\x86\xdd" + packet
    if linktype == 276:
        return b"\x86\xdd" + bytes(18) + packet
    if linktype == 0:
        return struct.pack("<I" if i % 2 else ">I", (10, 24, 28, 30)[i % 4]) + packet
    if linktype == 108:
        return struct.pack(">I", 24) + packet
    return packet  # an unsupported link type: other frames


LINKTYPES = (1, 101, 229, 12, 14, 113, 276, 0, 108, 147)


def pcap(frames: list[bytes], linktype: int, order: str, nano: bool) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        out.append(struct.pack(order + "IIII", 1_700_000_000 + i, (i * 7919) % (10**9 if nano else 10**6), len(f), len(f)) + f)
    return b"".join(out)


def block(order: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(order + "II", btype, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)


TSRESOL = [None, 6, 9, 3, 0, 0x80 | 20, 0x80 | 0, 0x80 | 100, 25, 19, 20]


def pcapng(packets: list[bytes], order: str, seed: int) -> bytes:
    """One section: an IDB per (link type, if_tsresol) pair, then packet blocks of every kind."""
    rng = random.Random(seed)
    bom = 0x1A2B3C4D
    out = [block(order, PCAPNG_SHB, struct.pack(order + "IHHq", bom, 1, 0, -1))]
    ifaces = []
    for k in range(18):  # more than the walker's first table (16): the table grows
        lt, res = LINKTYPES[k % len(LINKTYPES)], TSRESOL[k % len(TSRESOL)]
        opts = b"" if res is None else struct.pack(order + "HH", 2, 3) + b"ab\0\0" + struct.pack(order + "HHB3x", 9, 1, res)
        out.append(block(order, 1, struct.pack(order + "HHI", lt, 0, 0) + opts + struct.pack(order + "HH", 0, 0)))
        ifaces.append(lt)
    for i, p in enumerate(packets):
        k = rng.randrange(len(ifaces))
        frame = wrap(ifaces[k], p, i)
        ts = rng.choice([1_700_000_000_123_456, 1_700_000_000, 2**40 + i, 0])
        if rng.random() < 0.01:  # past the int64 µs range for most resolutions: damage
            ts = rng.choice([2**63 + i, 2**64 - 1])
        kind = rng.choice((6, 6, 2, 3, 5))
        if kind == 6:
            out.append(
                block(order, 6, struct.pack(order + "IIIII", k, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame)
            )
        elif kind == 2:
            body = struct.pack(order + "HHIIII", k, 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame
            out.append(block(order, 2, body))
        elif kind == 3 and ifaces[0] == 1:
            out.append(block(order, 3, struct.pack(order + "I", len(frame) + rng.choice((0, 0, 9))) + frame))
        else:  # a block of another type, skipped
            out.append(block(order, 0x0BAD, b"xyz"))
    return b"".join(out)


def read(path: pathlib.Path, engine: str, size: int) -> tuple[list[tuple[int, int, bytes]], tuple[object, ...]]:
    with CaptureReader(path) as r:
        got = [(b.frames[i], b.times[i], b.packet(i)) for b in r.batches(size, engine=engine) for i in range(len(b))]
        return got, (r.frames, r.other, r.position, repr(r.error))


def same(path: pathlib.Path, size: int = 5) -> tuple[object, ...]:
    want = read(path, "plain", 64)
    assert read(path, "c", size) == want
    return want[1]


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        d = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            d = d[: rng.randrange(len(d) + 1)]
        elif kind == 1:
            for _ in range(rng.randrange(1, 8)):
                d[rng.randrange(len(d))] = rng.randrange(256)
        elif kind == 2:
            at = rng.randrange(len(d) - 4)
            d[at : at + 4] = struct.pack("<I", rng.choice((0, 3, 11, 12, 13, 16, 0x40001, 0xFFFFFFFF, rng.randrange(2**32))))
        else:
            at = rng.randrange(len(d))
            d[at:at] = bytes(rng.randrange(1, 9))
        out.append(bytes(d))
    return out


@pytest.mark.parametrize("linktype", LINKTYPES)
def test_pcap_every_link_type_order_and_resolution(tmp_path: pathlib.Path, traffic: gen.Traffic, linktype: int) -> None:
    packets = [f[14:] for f, _ in traffic.frames[:40]]
    for order in "<>":
        for nano in (False, True):
            path = tmp_path / "t.pcap"
            path.write_bytes(pcap([wrap(linktype, p, i) for i, p in enumerate(packets)], linktype, order, nano))
            frames, other, _, error = same(path)
            assert frames == 40 and error == "None"
            assert other == (40 if linktype == 147 else 0)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_sections_interfaces_and_block_kinds(tmp_path: pathlib.Path, traffic: gen.Traffic, order: str) -> None:
    packets = [f[14:] for f, _ in traffic.frames[:60]]
    path = tmp_path / "t.pcapng"
    two = pcapng(packets[:30], order, 1) + pcapng(packets[30:], ">" if order == "<" else "<", 2)
    path.write_bytes(two)
    frames, _, _, _ = same(path)
    assert isinstance(frames, int) and frames > 10


def test_damaged_captures_read_alike(tmp_path: pathlib.Path, traffic: gen.Traffic) -> None:
    packets = [f[14:] for f, _ in traffic.frames[:12]]
    rng = random.Random(4449)
    seeds = [
        pcap([wrap(1, p, i) for i, p in enumerate(packets)], 1, "<", False),
        pcap([wrap(0, p, i) for i, p in enumerate(packets)], 0, ">", True),
        pcapng(packets, "<", 3),
        pcapng(packets, ">", 4),
    ]
    path = tmp_path / "m"
    damaged = 0
    for data in seeds:
        for variant in mutations(data, rng, 300):
            path.write_bytes(variant)
            try:
                CaptureReader(path).close()
            except Exception:  # not a capture any more: both engines are never reached
                continue
            damaged += same(path)[3] != "None"
    assert damaged > 100


@pytest.mark.parametrize("window", [24, 97, 4096])
def test_small_windows_read_alike(
    tmp_path: pathlib.Path, traffic: gen.Traffic, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """The C walker reads the file a window at a time (capture.WINDOW): records and blocks that
    straddle windows, larger than a window, or damaged across one read as the plain walk has them."""
    from kbmfast import capture

    monkeypatch.setattr(capture, "WINDOW", window)
    packets = [f[14:] for f, _ in traffic.frames[:30]]
    rng = random.Random(window)
    seeds = [
        pcap([wrap(1, p, i) for i, p in enumerate(packets)], 1, "<", False),
        pcap([wrap(113, p, i) for i, p in enumerate(packets)], 113, ">", True),
        pcapng(packets[:15], "<", 5) + pcapng(packets[15:], ">", 6),
    ]
    path = tmp_path / "w"
    for data in seeds:
        for variant in [data, *mutations(data, rng, 40)]:
            path.write_bytes(variant)
            try:
                CaptureReader(path).close()
            except Exception:  # not a capture any more
                continue
            for size in (3, 1000):
                same(path, size)
            with CaptureReader(path) as r:  # the packets arrive in full chunks whatever the window
                sizes = [c.n for c in r.chunks(4)]
                assert all(n == 4 for n in sizes[:-1])


def test_timestamp_past_the_int64_range_is_damage(tmp_path: pathlib.Path) -> None:
    packet = bytes.fromhex("6000000000083b40") + bytes(32) + bytes.fromhex("3b00000000000000")
    o = "<"
    idb = block(o, 1, struct.pack(o + "HHI", 101, 0, 0) + struct.pack(o + "HHB3x", 9, 1, 0) + bytes(4))
    ok, bad = 10**12, 2**62
    epb = [
        block(o, 6, struct.pack(o + "IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(packet), len(packet)) + packet) for t in (ok, bad)
    ]
    path = tmp_path / "t.pcapng"
    path.write_bytes(block(o, PCAPNG_SHB, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)) + idb + b"".join(epb))
    frames, _, _, error = same(path)
    assert frames == 1 and "64-bit microsecond range" in str(error) and "frame 2" in str(error)


# ---------------------------------------------------------------------------------------------
# The text lines


def odd_packets(traffic: gen.Traffic, rng: random.Random) -> list[bytes]:
    base = [f[14:] for f, _ in traffic.frames[:200]]
    out = list(base)
    for p in base[:60]:
        q = bytearray(p)
        for _ in range(rng.randrange(1, 4)):
            q[rng.randrange(40, len(q))] = rng.randrange(256)
        out.append(bytes(q))
        out.append(bytes(p[: rng.randrange(40, len(p))]))
    addresses = [bytes(16), bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4]), bytes(12) + bytes([1, 2, 3, 4]), bytes(15) + b"\x01"]
    addresses += [bytes.fromhex("20010db8000000000001000000000000"), bytes.fromhex("fe800000000000000000000000000001")]
    for a in addresses:
        p = bytearray(base[0])
        p[8:24] = a
        out.append(bytes(p))
        if len(p) >= 66:
            p[50:66] = a  # the Home Address option's address in the usual layout
            out.append(bytes(p))
    return out


def c_lines(batch: Batch, verdicts: bytes, slots: int = 8) -> bytes:
    cache = ffi.new("kbm_addr_slot[]", slots)  # few slots: collisions overwrite entries
    out = bytearray(len(batch) * lib.KBM_LINE_MAX)
    written = ffi.new("size_t *")
    dotted = int(str(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4")
    fb = ffi.from_buffer
    n = lib.kbm_format_lines(
        fb("uint8_t[]", batch.data),
        len(batch.data),
        fb("uint64_t[]", batch.offsets),
        fb("uint64_t[]", batch.frames),
        fb("int64_t[]", batch.times),
        fb("uint8_t[]", verdicts),
        len(batch),
        cache,
        slots,
        dotted,
        fb("char[]", out),
        len(out),
        written,
    )
    assert n == len(batch)
    return bytes(out[: written[0]])


def test_format_lines_equals_format_plain(traffic: gen.Traffic) -> None:
    from array import array

    rng = random.Random(7)
    packets = odd_packets(traffic, rng)
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    frames = array("Q", [rng.choice((1, 99_999_999, 123_456_789_012, rng.randrange(1, 10**6))) for _ in packets])
    times = array("q", [rng.choice((0, 5, 1_700_000_000_000_001, 10**17 + 7, rng.randrange(2**62))) for _ in packets])
    batch = Batch(b"".join(packets), offsets, frames, times)
    verdicts = bytes(rng.randrange(len(tools_cli._VERDICT_NAMES)) for _ in packets)
    want = tools_cli.format_plain(batch, fields_plain(batch), list(verdicts), tools_cli._Addresses()).encode()
    assert c_lines(batch, verdicts) == want
    assert c_lines(batch, verdicts, slots=1 << 12) == want


def test_address_text_equals_python() -> None:
    rng = random.Random(1)
    out = ffi.new("char[]", lib.KBM_ADDR_TEXT_MAX)
    dotted = int(str(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4")
    samples = [bytes(16), bytes(15) + b"\x01", bytes(10) + b"\xff\xff" + bytes(4), bytes(12) + b"\x01\x02\x03\x04"]
    for _ in range(3000):
        groups = [rng.choice((0, 0, 1, 0xFFFF, rng.randrange(65536))) for _ in range(8)]
        samples.append(struct.pack(">8H", *groups))
    for a in samples:
        n = lib.kbm_ipv6_text(a, dotted, out)
        assert ffi.unpack(out, n).decode() == str(ipaddress.IPv6Address(a)) == tools_cli.ipv6_text(a)


# ---------------------------------------------------------------------------------------------
# The key file's fast path


def _simple_toml(text: str) -> dict[str, Any] | None:
    """_keys._simple_toml on the file's bytes, its in-place values (memoryviews) as text."""
    doc = _keys._simple_toml(bytearray(text.encode()))
    if doc is None:
        return None

    def text(table: dict[str, Any]) -> dict[str, Any]:
        return {k: bytes(v).decode() if isinstance(v, memoryview) else v for k, v in table.items()}

    plain = text(doc)
    if "peer" in doc:
        plain["peer"] = [text(t) for t in doc["peer"]]
    return plain


def test_simple_toml_is_tomllib_or_declines(tmp_path: pathlib.Path) -> None:
    table = gen.generate(8, 10, seed=3).keys
    table.save(tmp_path / "k.toml")
    text = (tmp_path / "k.toml").read_text()
    assert _simple_toml(text) == tomllib.loads(text)
    variants = [
        text,
        text.replace("epoch = 0", "epoch = 00", 1),  # not TOML: declined, tomllib refuses it
        text.replace("[[peer]]\n", "[[peer]]\nversion = 1\n", 1),  # a key inside a peer table
        text + 'home = "::1"\n',  # a second home in the last table: tomllib refuses
        text.replace("version = 1\n", ""),
        text.replace('kbm = "', 'kbm = "\\u0041', 1),  # an escape: declined
        "",
        "version = 1\nversion = 1\n",
        text.replace("\n", "\r\n"),
        'home = "2001:db8::1"\n[[peer]]\n',
    ]
    for v in variants:
        fast = _simple_toml(v)
        try:
            slow: object = tomllib.loads(v)
        except tomllib.TOMLDecodeError:
            slow = None
        assert fast is None or fast == slow, v[:200]
    assert _simple_toml(variants[1]) is None and _simple_toml(variants[3]) is None
