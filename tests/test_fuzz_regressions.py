"""Replays every fuzzer finding (tests/fuzz/crashes/) and the fuzzers' own seeds through both backends."""

from __future__ import annotations

import pathlib
import random

from strategies import RandomDraw, any_packet

import kbmfast
import kbmfast.reference

CRASHES = sorted(p for p in (pathlib.Path(__file__).parent / "fuzz" / "crashes").iterdir() if p.name != "README")


def agree(data: bytes) -> None:
    outcomes = []
    for kb in (kbmfast, kbmfast.reference):
        try:
            outcomes.append(kb.parse_packet(data))
        except kb.MalformedPacket as e:
            outcomes.append(str(e))
    assert outcomes[0] == outcomes[1]
    results = [kb.Verifier(kb.KeyTable()).verify(data) for kb in (kbmfast, kbmfast.reference)]
    assert results[0] == results[1]


def test_fuzzer_findings_seeds_and_their_truncations() -> None:
    for path in CRASHES:
        agree(path.read_bytes())
    draw = RandomDraw(random.Random(11))
    for _ in range(100):
        packet = any_packet(draw)
        for cut in (len(packet), len(packet) - 1, 48, 40, 7, 0):
            agree(packet[: max(cut, 0)])
