"""atheris harness: both backends on the same hostile bytes must answer alike.

Run: python tests/fuzz/fuzz_differential.py [-max_total_time=N] [CORPUS_DIR ...]
Any disagreement in parse_packet (value or exception text) or in a verify() Result raises,
which atheris reports with the input that caused it.
"""

from __future__ import annotations

import sys

import atheris

import kbmfast
import kbmfast.reference

KCN = bytes(range(1, 21))
KBM = bytes.fromhex("06fe1294dedbb6b085227e37ea4f9a198700c9f4")


def verifiers() -> tuple[object, object]:
    out = []
    for kb in (kbmfast, kbmfast.reference):
        keys = kb.KeyTable()
        keys.add_kcn("2001:db8:1::100", KCN, bytes(range(0xA0, 0xA8)), bytes(range(0xB0, 0xB8)))
        keys.add_kbm("2001:db8::1", KBM)
        out.append(kb.Verifier(keys))
    return out[0], out[1]


C, REF = verifiers()
# return routability: one ReturnRoutability (a clock that never moves) shared by both backends
RR = kbmfast.ReturnRoutability(kcn=KCN, clock=lambda: 1000.0)
RR_C, RR_REF = (kb.Verifier(kb.KeyTable(), return_routability=RR) for kb in (kbmfast, kbmfast.reference))


def outcome(fn: object, data: bytes) -> object:
    try:
        return fn(data)  # type: ignore[operator]
    except kbmfast.MalformedPacket as e:
        return ("MalformedPacket", str(e))


def test_one(data: bytes) -> None:
    a, b = outcome(kbmfast.parse_packet, data), outcome(kbmfast.reference.parse_packet, data)
    if a != b:
        raise AssertionError(f"parse_packet differs on {data.hex()}: {a!r} != {b!r}")
    ra, rb = C.verify(data), REF.verify(data)
    if ra != rb:
        raise AssertionError(f"verify differs on {data.hex()}: {ra!r} != {rb!r}")
    ha, hb = RR_C.reply(data), RR_REF.reply(data)
    if ha != hb:
        raise AssertionError(f"reply differs on {data.hex()}: {ha!r} != {hb!r}")
    ra, rb = RR_C.verify(data), RR_REF.verify(data)
    if ra != rb:
        raise AssertionError(f"RR verify differs on {data.hex()}: {ra!r} != {rb!r}")


if __name__ == "__main__":
    atheris.instrument_all()  # coverage of the reference's Python (the C side is the libFuzzer run's)
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
