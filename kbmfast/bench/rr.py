"""``kbmfast bench``'s return-routability rows: RR Binding Updates verified and HoTI/CoTI
answered by the C core, batch 4096, one core, against the SHA-1 ceiling of the same run.

SHA-1 compressions per operation (csrc/rr.c), each message fitting one block:
- RR Binding Update (96 bytes, Nonce Indices): home and care-of keygen tokens, HMAC with Kcn's
  midstates (inner 1 + outer 1, twice: 4); Kbm = SHA1(16 bytes) (1); Kbm's HMAC midstates
  (inner and outer pad blocks: 2); the authenticator over 52 bytes (inner 1 + outer 1: 2). 9.
- Home / Care-of Test: one keygen token (2).
These are the counts RFC 6275 §5.2.5's formulas need, none skipped (home keygen token =
First(64, HMAC_SHA1(Kcn, home address | nonce | 0)), care-of with 1; Kbm = SHA1(home token |
care-of token); authenticator = First(96, HMAC_SHA1(Kbm, care-of | CN | MH data))), with Kcn's
midstates computed once per Kcn, not per packet.
The rate is reported as a fraction of (compressions/s ÷ that count): 1.0 would be pure SHA-1.
"""

from __future__ import annotations

import hashlib
from array import array
from itertools import accumulate
from typing import Any

import kbmfast

from .. import _rr
from ..reference.rr import build_init

RR_BU_COMPRESSIONS = 9
REPLY_COMPRESSIONS = 2
CN = bytes.fromhex("20010db8000300000000000000000300")


class _Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _address(prefix: int, i: int) -> bytes:
    return (prefix << 64 | (i + 1)).to_bytes(16, "big")


def rr_workload(peers: int, rounds: int, seed: int = 0) -> tuple[Any, bytes, array[int], bytes, array[int]]:
    """(ReturnRoutability, RR BUs, their offsets, HoTI/CoTI stream, its offsets): ``peers`` mobile
    nodes that ran RR once (tokens from the CN's replies), each sending ``rounds`` BUs."""
    rr = kbmfast.ReturnRoutability(kcn=hashlib.sha1(b"bench%d" % seed).digest(), clock=_Clock())
    inits: list[bytes] = []
    packets: list[list[bytes]] = [[] for _ in range(rounds)]
    with kbmfast.Verifier(kbmfast.KeyTable(), return_routability=rr) as v:
        for i in range(peers):
            home, care_of = _address(0x20010DB8_0001_0000, i), _address(0x20010DB8_0002_0000, i)
            hoti = build_init(_rr.MH_HOTI, i.to_bytes(8, "big"), home, CN)
            coti = build_init(_rr.MH_COTI, i.to_bytes(8, "big"), care_of, CN)
            inits += [hoti, coti]
            hot, cot = v.reply(hoti), v.reply(coti)
            assert hot is not None and cot is not None
            kbm = hashlib.sha1(hot[56:64] + cot[56:64]).digest()
            indices = (hot[46] << 8 | hot[47], cot[46] << 8 | cot[47])
            for r in range(rounds):
                packets[r].append(
                    kbmfast.build_binding_update(
                        kbm, home=home, care_of=care_of, correspondent=CN, sequence=r, lifetime=400, nonce_indices=indices
                    )
                )
    flat = [p for rnd in packets for p in rnd]
    return (
        rr,
        b"".join(flat),
        array("Q", accumulate(map(len, flat), initial=0)),
        b"".join(inits),
        array("Q", accumulate(map(len, inits), initial=0)),
    )


def rr_plans(peers: int, rounds: int, batch: int, seed: int, bench: Any) -> list[Any]:
    """The two Plans (``bench.Plan``): RR BU verification and HoTI/CoTI answering, C, ``batch``.
    ``bench`` is kbmfast.bench.measures (passed in by kbmfast.bench.report.run)."""
    BenchError, Plan, _timed, split_buffer = bench.BenchError, bench.Plan, bench._timed, bench.split_buffer

    rr, buf, offs, init_buf, init_offs = rr_workload(peers, rounds, seed)
    bu_pairs = split_buffer(buf, offs, batch)
    init_pairs = split_buffer(init_buf, init_offs, batch)

    def verify_once() -> float:
        with kbmfast.Verifier(kbmfast.KeyTable(), return_routability=rr) as v:
            dt, verdicts = _timed(lambda: [v.verify_buffer(b, o) for b, o in bu_pairs])
        if any(x != 0 for vs in verdicts for x in vs):
            raise BenchError("C verify_buffer, RR Binding Updates: not all accepted")
        return float(dt)

    def reply_once() -> float:
        with kbmfast.Verifier(kbmfast.KeyTable(), return_routability=rr) as v:
            dt, out = _timed(lambda: [v.reply_buffer(b, o) for b, o in init_pairs])
        if sum(len(o[0]) for o in out) != 64 * (len(init_offs) - 1):
            raise BenchError("C reply_buffer: not every HoTI/CoTI answered")
        return float(dt)

    return [
        Plan("c.rr.verify_buffer", f"C verify_buffer, RR BUs, batch {batch}", len(offs) - 1, verify_once, batch,
             "rr-verifications"),
        Plan("c.rr.reply_buffer", f"C reply_buffer, HoTI/CoTI, batch {batch}", len(init_offs) - 1, reply_once,
             batch, "replies"),
    ]  # fmt: skip


_PER_OP = {"rr-verifications": RR_BU_COMPRESSIONS, "replies": REPLY_COMPRESSIONS}


def rr_ratio(m: Any, ceiling: float) -> dict[str, float]:
    """For an RR measure: its SHA-1 compressions per operation and its rate as a fraction of
    (compressions/s ÷ that count); {} for any other measure."""
    per = _PER_OP.get(m.unit)
    if per is None:
        return {}
    return {"compressions_per_op": per, "of_compressions_per_op": m.best / (2 * ceiling / per)}  # ceiling = compr./s ÷ 2


def rr_rows(measures: Any, ceiling: float, row: Any, si: Any) -> list[str]:
    """The report's RR lines: rate, and its fraction of (compressions/s ÷ compressions per op)."""
    out = []
    for m in measures:
        q = rr_ratio(m, ceiling)
        if q:
            label = m.label + f" ({q['compressions_per_op']:.0f} compressions)"
            out.append(row(label, si(m.best), si(m.median), "", "", f"{q['of_compressions_per_op']:.2f}"))
    return out
