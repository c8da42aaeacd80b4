"""Interoperability with dissectors nobody here wrote: tshark, tcpdump and Scapy.

Every packet kind kbmfast builds (Binding Updates: plain, Alternate Care-of Address, Nonce
Indices, both, de-registration from abroad and at home; Binding Acknowledgements from the builder,
from ``Verifier.acknowledge`` and from ``kbmfast verify --acks-out``) is dissected by tshark with
no expert info at all (no malformed packet, no warning), and every field equals what kbmfast meant;
tcpdump -v prints the same values; Scapy parses the same fields.

Checksums: Wireshark 4.0's mip6 dissector has no checksum-validation preference and does not
validate the Mobility Header checksum (tshark -G defaultprefs lists none for mip6), and tcpdump
does not either (print-mobility.c: "XXX ip6m_cksum"). The checksum tshark shows is therefore
compared with one computed here from RFC 8200 §8.1 (HoA as pseudo-source for a BU, the type 2
Routing header's address as pseudo-destination for a BA) and with Scapy's in6_chksum on the
packet as tshark's own layers describe it.

These tests skip only when tshark or tcpdump is not installed (Debian packages tshark, tcpdump).
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass

import pytest
from helpers import tool_env

import kbmfast
from kbmfast import cli
from kbmfast.capture import CaptureReader, PcapWriter

TSHARK = shutil.which("tshark")
TCPDUMP = shutil.which("tcpdump")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package: tshark)")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed (Debian package: tcpdump)")

KBM = bytes.fromhex("06fe1294dedbb6b085227e37ea4f9a198700c9f4")
HOME, AWAY, CN, ALT = "2001:db8:1::100", "2001:db8:2::200", "2001:db8:3::300", "2001:db8:2::201"


@dataclass(frozen=True)
class Case:
    name: str
    packet: bytes


def _cases() -> list[Case]:
    bu = dict(home=HOME, care_of=AWAY, correspondent=CN, sequence=0x1234, lifetime=420)
    cases = [
        Case("bu", kbmfast.build_binding_update(KBM, **bu)),
        Case("bu-no-ack", kbmfast.build_binding_update(KBM, **bu, ack=False)),
        Case("bu-altcoa", kbmfast.build_binding_update(KBM, **bu, alternate_care_of=ALT)),
        Case("bu-nonce", kbmfast.build_binding_update(KBM, **bu, nonce_indices=(7, 8))),
        Case("bu-altcoa-nonce", kbmfast.build_binding_update(KBM, **bu, alternate_care_of=ALT, nonce_indices=(9, 10))),
        Case("bu-dereg", kbmfast.build_binding_update(KBM, **{**bu, "lifetime": 0})),
        Case("bu-at-home", kbmfast.build_binding_update(KBM, **{**bu, "care_of": HOME, "lifetime": 0})),
    ]
    for status in (0, 129, 131, 135, 174):
        cases.append(Case(f"ba-{status}", kbmfast.build_binding_ack(KBM, home=HOME, care_of=AWAY, correspondent=CN,
                                                                    sequence=0x1234, status=status, lifetime=400)))  # fmt: skip
    cases.append(Case("ba-at-home", kbmfast.build_binding_ack(KBM, home=HOME, care_of=HOME, correspondent=CN, sequence=5,
                                                              status=0, lifetime=0)))  # fmt: skip
    # BAs that Verifier.acknowledge produces: accepted, replay (135), de-registration, AltCoA.
    keys = kbmfast.KeyTable()
    keys.add_kbm(HOME, KBM)
    with kbmfast.Verifier(keys) as v:
        for name, c in list(zip([c.name for c in cases], [c.packet for c in cases], strict=True))[:7]:
            ack = v.acknowledge(v.verify(c))
            if ack is not None:
                cases.append(Case(f"ack-of-{name}", ack))
        replay = v.verify(cases[0].packet)
        assert replay.verdict == kbmfast.Verdict.SEQUENCE_OUT_OF_WINDOW
        ack = v.acknowledge(replay)
        assert ack is not None
        cases.append(Case("ack-135", ack))
    return cases


CASES = _cases()


def write(path: pathlib.Path, packets: list[bytes]) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for i, p in enumerate(packets):
            w.write(p, 1_700_000_000_000_000 + i)


def ones_sum_checksum(src: bytes, dst: bytes, mh: bytes) -> int:
    mh = mh[:4] + b"\0\0" + mh[6:]
    data = src + dst + struct.pack("!I3xB", len(mh), 135) + mh
    total = sum(struct.unpack(f"!{len(data) // 2}H", data + b"\0" * (len(data) % 2)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


FIELDS = [
    "frame.number", "ipv6.src", "ipv6.dst", "mip6.proto", "mip6.hlen", "mip6.mhtype", "mip6.csum",
    "mip6.bu.seqnr", "mip6.bu.a_flag", "mip6.bu.h_flag", "mip6.bu.l_flag", "mip6.bu.k_flag", "mip6.bu.lifetime",
    "mip6.ba.status", "mip6.ba.k_flag", "mip6.ba.seqnr", "mip6.ba.lifetime",
    "mip6.acoa.acoa", "mip6.ni.hni", "mip6.ni.cni", "mip6.bad.auth",
    "mip6.options.padn", "mip6.options.acoa", "mip6.options.ni", "mip6.options.bad_auth",
    "ipv6.opt.mipv6.home_address", "ipv6.routing.type", "ipv6.routing.segleft", "ipv6.routing.mipv6.home_address",
    "_ws.expert.message", "_ws.malformed",
]  # fmt: skip


def tshark_rows(path: pathlib.Path) -> list[dict[str, str]]:
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=tool_env()).stdout
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


def expected_row(p: bytes) -> dict[str, str]:
    """What each tshark field must say, from kbmfast's own parse."""
    parsed = kbmfast.parse_packet(p)
    m = parsed.message
    mh = p[parsed.mh_offset :]
    home_end = (parsed.home_address or parsed.source).packed
    dst_end = (parsed.routing_address or parsed.destination).packed
    assert ones_sum_checksum(home_end, dst_end, mh) == parsed.checksum and parsed.checksum_valid
    row = {f: "" for f in FIELDS}
    row.update({"ipv6.src": str(parsed.source), "ipv6.dst": str(parsed.destination), "mip6.proto": "59",
                "mip6.hlen": str(mh[1]), "mip6.csum": f"0x{parsed.checksum:04x}",
                "mip6.mhtype": str(mh[2])})  # fmt: skip
    # Every option's bytes, as tshark shows them per option type, in order.
    raw: dict[int, list[str]] = {}
    at = 12
    while at < len(mh):
        n = 1 if mh[at] == 0 else mh[at + 1] + 2
        raw.setdefault(mh[at], []).append(mh[at : at + n].hex())
        at += n
    names = {1: "mip6.options.padn", 3: "mip6.options.acoa", 4: "mip6.options.ni", 5: "mip6.options.bad_auth"}
    assert set(raw) <= set(names)
    for t, values in raw.items():
        row[names[t]] = "|".join(values)
    opts = [o for o in m.options if not isinstance(o, (kbmfast.Pad1, kbmfast.PadN))]
    for o in opts:
        if isinstance(o, kbmfast.AlternateCareOfAddress):
            row["mip6.acoa.acoa"] = str(o.address)
        elif isinstance(o, kbmfast.NonceIndices):
            row["mip6.ni.hni"], row["mip6.ni.cni"] = str(o.home_nonce_index), str(o.care_of_nonce_index)
        elif isinstance(o, kbmfast.BindingAuthorizationData):
            row["mip6.bad.auth"] = o.authenticator.hex()
    if isinstance(m, kbmfast.BindingUpdate):
        row.update({"mip6.bu.seqnr": str(m.sequence), "mip6.bu.a_flag": str(int(m.ack)), "mip6.bu.h_flag": "0",
                    "mip6.bu.l_flag": "0", "mip6.bu.k_flag": "0", "mip6.bu.lifetime": str(m.lifetime // 4)})  # fmt: skip
    else:
        assert isinstance(m, kbmfast.BindingAck)
        row.update({"mip6.ba.status": str(m.status), "mip6.ba.k_flag": str(m.flags >> 7),
                    "mip6.ba.seqnr": str(m.sequence), "mip6.ba.lifetime": str(m.lifetime // 4)})  # fmt: skip
    if parsed.home_address is not None:
        row["ipv6.opt.mipv6.home_address"] = str(parsed.home_address)
    if parsed.routing_address is not None:
        row.update({"ipv6.routing.type": "2", "ipv6.routing.segleft": "1",
                    "ipv6.routing.mipv6.home_address": str(parsed.routing_address)})  # fmt: skip
    return row


@needs_tshark
def test_tshark_dissects_every_kind_as_meant(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "kinds.pcap"
    write(path, [c.packet for c in CASES])
    rows = tshark_rows(path)
    assert len(rows) == len(CASES)
    for case, row in zip(CASES, rows, strict=True):
        expected = expected_row(case.packet)
        expected["frame.number"] = row["frame.number"]
        assert row == expected, case.name


@needs_tshark
def test_tshark_shows_expert_info_for_a_broken_packet(tmp_path: pathlib.Path) -> None:
    """The expert-info column is live: a truncated BU does raise one (so silence above means something)."""
    path = tmp_path / "broken.pcap"
    write(path, [CASES[0].packet[:-6]])
    (row,) = tshark_rows(path)
    assert row["_ws.expert.message"] or row["_ws.malformed"]


@needs_tshark
def test_tshark_on_verify_acks_out(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "t.pcap"
    acks = tmp_path / "acks.pcap"
    assert cli.main(["gen", "--peers", "10", "--updates", "400", "--seed", "2", "--out", str(out)]) == 0
    assert cli.main(["verify", str(out), "--keys", str(tmp_path / "t.keys.toml"), "--json", "--acks-out", str(acks)]) == 0
    with CaptureReader(acks) as r:
        packets = [b.packet(i) for b in r.batches() for i in range(len(b))]
    statuses = {kbmfast.parse_packet(p).message.status for p in packets}  # type: ignore[union-attr]
    assert {0, 135} <= statuses
    rows = tshark_rows(acks)
    assert len(rows) == len(packets)
    for p, row in zip(packets, rows, strict=True):
        expected = expected_row(p)
        expected["frame.number"] = row["frame.number"]
        assert row == expected


@needs_tshark
def test_tshark_finds_the_same_mobility_frames(tmp_path: pathlib.Path) -> None:
    """tshark's mip6 filter and kbmfast's reader pick the same frames of a mixed capture."""
    out = tmp_path / "t.pcap"
    assert cli.main(["gen", "--peers", "5", "--updates", "100", "--seed", "3", "--out", str(out)]) == 0
    eth = bytes(12)
    data = out.read_bytes()
    extra = [eth + b"\x08\x06" + bytes(28), eth + b"\x81\x00\x00\x05\x86\xdd" + CASES[2].packet + bytes(4)]
    tail = b"".join(struct.pack("<IIII", 1_717_300_000, 0, len(f), len(f)) + f for f in extra)
    out.write_bytes(data + tail)
    assert TSHARK is not None
    listed = subprocess.run([TSHARK, "-r", str(out), "-Y", "mipv6", "-T", "fields", "-e", "frame.number"],
                            check=True, capture_output=True, text=True, env=tool_env()).stdout.split()  # fmt: skip
    with CaptureReader(out) as r:
        ours = [int(b.frames[i]) for b in r.batches() for i in range(len(b))]
        assert r.other == 1
    assert ours == [int(n) for n in listed] and len(ours) == 101


@needs_tcpdump
def test_tcpdump_agrees(tmp_path: pathlib.Path) -> None:
    """tcpdump -v -n prints the same type, sequence, flags, lifetime, status and options.

    tcpdump 4.99's mobility_opt_print checks one byte past each option (ND_TCHECK(bp[i + optlen])),
    so an option that ends the packet (Binding Authorization Data, which RFC 6275 requires to be
    last, with no padding after it) is reported as "[|mobility]" instead of "(auth)": a tcpdump bug,
    allowed here and only there.
    """
    path = tmp_path / "kinds.pcap"
    write(path, [c.packet for c in CASES])
    assert TCPDUMP is not None
    lines = subprocess.run(
        [TCPDUMP, "-r", str(path), "-v", "-n"], check=True, capture_output=True, text=True, env=tool_env()
    ).stdout
    lines_list = [x for x in lines.splitlines() if "mobility" in x]
    assert len(lines_list) == len(CASES)
    for case, line in zip(CASES, lines_list, strict=True):
        parsed = kbmfast.parse_packet(case.packet)
        m = parsed.message
        assert f"{parsed.source} > {parsed.destination}" in line, case.name
        if isinstance(m, kbmfast.BindingUpdate):
            a = " A" if m.ack else ""
            assert re.search(rf"mobility: BU seq#={m.sequence}{a} lifetime={m.lifetime}\b", line), (case.name, line)
        else:
            assert isinstance(m, kbmfast.BindingAck)
            assert f"mobility: BA status={m.status} seq#={m.sequence} lifetime={m.lifetime}" in line, (case.name, line)
        if parsed.home_address is not None:
            assert f"(homeaddr: {parsed.home_address})" in line
        if parsed.routing_address is not None:
            assert f"RT6 (len=2, type=2, segleft=1, rsv=0x0, [0]{parsed.routing_address})" in line
        for o in m.options:
            if isinstance(o, kbmfast.AlternateCareOfAddress):
                assert f"(alt-CoA: {o.address})" in line
            if isinstance(o, kbmfast.NonceIndices):
                assert f"(ni: ho=0x{o.home_nonce_index:04x} co=0x{o.care_of_nonce_index:04x})" in line
        assert line.endswith("(auth)") or line.endswith("[|mobility]"), line


def test_scapy_parses_acknowledgements() -> None:
    """Scapy reads the BAs that acknowledge() makes with the fields kbmfast meant, checksum included."""
    inet6 = pytest.importorskip("scapy.layers.inet6")
    for case in CASES:
        if not case.name.startswith(("ack", "ba")):
            continue
        parsed = kbmfast.parse_packet(case.packet)
        p = inet6.IPv6(case.packet)
        ba = p[inet6.MIP6MH_BA]
        m = parsed.message
        assert isinstance(m, kbmfast.BindingAck)
        assert (ba.status, int(ba.flags), ba.seq, ba.mhtime * 4) == (m.status, m.flags >> 5, m.sequence, m.lifetime)
        assert ba.cksum == parsed.checksum
        home = parsed.routing_address or parsed.destination
        mh = case.packet[parsed.mh_offset :]
        zeroed = mh[:4] + b"\0\0" + mh[6:]
        scapy_sum = inet6.in6_chksum(135, inet6.IPv6(src=str(parsed.source), dst=str(home)) / inet6.Raw(zeroed), zeroed)
        assert scapy_sum == parsed.checksum, case.name
        if parsed.routing_address is not None:
            assert p[inet6.IPv6ExtHdrRouting].addresses == [str(ipaddress.IPv6Address(parsed.routing_address))]
