"""Someone else's malformed captures: tcpdump's test suite, copied with its licence into
tests/corpus/tcpdump from the team's shared corpus.

Every packet must get a verdict (never a crash or an out-of-bounds read: the sanitizer run of
this suite checks the second), and both backends must give the same one.
"""

from __future__ import annotations

import pathlib
import struct
import types

import pytest

import kbmfast
import kbmfast.reference

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
PCAPS = sorted((CORPUS / "tcpdump").glob("*.pcap"))


def ipv6_packets(path: pathlib.Path) -> list[bytes]:
    """IPv6 packets of a classic pcap with Ethernet or raw-IPv6 link type (test helper)."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4
    linktype &= 0xFFFF
    out, off = [], 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if linktype == 1:
            if frame[12:14] == b"\x81\x00":
                frame = frame[4:]
            if frame[12:14] != b"\x86\xdd":
                continue
            frame = frame[14:]
        out.append(frame)
    return out


def test_corpus_is_here() -> None:
    assert len(PCAPS) >= 10, f"expected the tcpdump captures under {CORPUS}"


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_every_packet_gets_the_same_verdict(path: pathlib.Path) -> None:
    packets = ipv6_packets(path)
    assert packets
    keys = {}
    for kb in (kbmfast, kbmfast.reference):
        table = kb.KeyTable()
        table.add_kbm("2001:db8::1", bytes(20))  # the captures' home address, with some key
        keys[kb.backend] = table
    c = kbmfast.Verifier(keys["c"]).verify_batch(packets, results=True)
    ref = kbmfast.reference.Verifier(keys["reference"]).verify_batch(packets, results=True)
    assert c == ref
    assert all(r.verdict != kbmfast.Verdict.ACCEPTED for r in c)
    for p in packets:
        outcomes = []
        for kb in (kbmfast, kbmfast.reference):
            try:
                outcomes.append(kb.parse_packet(p))
            except kbmfast.MalformedPacket as e:
                outcomes.append(str(e))
        assert outcomes[0] == outcomes[1]


def test_mobility_capture_rejects_every_binding_update(kb: types.ModuleType) -> None:
    """ipv6_mobility_1: zero checksums and made-up authenticators; options after BAD."""
    packets = ipv6_packets(CORPUS / "tcpdump" / "ipv6_mobility_1.pcap")
    assert len(packets) == 16
    verdicts = kb.Verifier(kb.KeyTable()).verify_batch(packets)
    assert kb.Verdict.ACCEPTED not in verdicts
    assert set(verdicts) <= {kb.Verdict.BAD_CHECKSUM, kb.Verdict.MALFORMED, kb.Verdict.NOT_BINDING_UPDATE}
