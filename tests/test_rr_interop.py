"""Return-routability messages against dissectors nobody here wrote: Scapy builds HoTI, CoTI and
the RR Binding Update that kbmfast answers and verifies; Scapy and tshark read every RR message
kbmfast builds (HoTI, CoTI, HoT, CoT, RR BU, the BAs with and without authenticator), tshark
with no expert info at all. Keygen tokens and Kbm come from hmac/hashlib and the RFC formulas.
"""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import shutil
import subprocess
import types

import pytest
from helpers import a16, tool_env

from kbmfast import Verdict
from kbmfast.capture import PcapWriter

inet6 = pytest.importorskip("scapy.layers.inet6")
IPv6, HAO, DestOpts = inet6.IPv6, inet6.HAO, inet6.IPv6ExtHdrDestOpt
TSHARK = shutil.which("tshark")

HOME, AWAY, CN = "2001:db8:1::100", "2001:db8:2::200", "2001:db8:3::300"
KCN = bytes(range(40, 60))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _token(address: str, nonce: bytes, which: int) -> bytes:
    return hmac.new(KCN, a16(address) + nonce + bytes((which,)), hashlib.sha1).digest()[:8]


def _exchange(kb: types.ModuleType) -> dict[str, bytes]:
    """Scapy's inits answered by kbmfast, Scapy's RR BU verified; every packet on the way."""
    rr = kb.ReturnRoutability(kcn=KCN, clock=Clock())
    v = kb.Verifier(kb.KeyTable(), return_routability=rr)
    hoti = bytes(IPv6(src=HOME, dst=CN) / inet6.MIP6MH_HoTI(cookie=b"H" * 8))
    coti = bytes(IPv6(src=AWAY, dst=CN) / inet6.MIP6MH_CoTI(cookie=b"C" * 8))
    hot_b, cot_b = v.reply(hoti), v.reply(coti)
    assert hot_b is not None and cot_b is not None
    nonce = rr.snapshot().nonces[-1]
    hot, cot = IPv6(hot_b), IPv6(cot_b)
    assert (hot.src, hot.dst, cot.src, cot.dst) == (CN, HOME, CN, AWAY)
    h, c = hot[inet6.MIP6MH_HoT], cot[inet6.MIP6MH_CoT]
    assert (h.mhtype, h.len, bytes(h.cookie), bytes(h.token)) == (3, 2, b"H" * 8, _token(HOME, nonce, 0))
    assert (c.mhtype, c.len, bytes(c.cookie), bytes(c.token)) == (4, 2, b"C" * 8, _token(AWAY, nonce, 1))
    # Scapy's own checksum of the reply agrees with ours
    again = IPv6(hot_b)
    del again[inet6.MIP6MH_HoT].cksum
    assert IPv6(bytes(again))[inet6.MIP6MH_HoT].cksum == h.cksum
    kbm = hashlib.sha1(bytes(h.token) + bytes(c.token)).digest()

    def bu(auth: bytes) -> bytes:
        mh = inet6.MIP6MH_BU(
            seq=9,
            flags="A",
            mhtime=100,
            options=[
                inet6.MIP6OptNonceIndices(olen=4, hni=h.index, coni=c.index),
                inet6.MIP6OptBindingAuthData(olen=12, authenticator=int.from_bytes(auth, "big")),
            ],
        )
        return bytes(IPv6(src=AWAY, dst=CN) / DestOpts(options=[HAO(hoa=HOME)]) / mh)

    draft = bu(bytes(12))
    mh = draft[40 + 24 :]
    auth = hmac.new(kbm, a16(AWAY) + a16(CN) + (mh[:4] + b"\0\0" + mh[6:])[:-12], hashlib.sha1).digest()[:12]
    rr_bu = bu(auth)
    result = v.verify(rr_bu)
    assert result.verdict == Verdict.ACCEPTED, result
    ack = v.acknowledge(result)
    clock = rr.clock
    assert isinstance(clock, Clock)
    clock.now += 240
    expired = v.verify(bu(auth))
    assert expired.verdict == Verdict.NONCES_EXPIRED
    # what kbmfast itself builds on the mobile node's side
    bul = kb.BindingUpdateList(HOME, clock=clock)
    mn_hoti, mn_coti = bul.return_routability(CN, care_of=AWAY)
    assert bul.process_test(v.reply(mn_hoti)) and bul.process_test(v.reply(mn_coti))
    mn_bu = bul.binding_update(CN, care_of=AWAY, lifetime=400)
    return {
        "hoti": mn_hoti,
        "coti": mn_coti,
        "hot": hot_b,
        "cot": cot_b,
        "rr-bu": mn_bu,
        "rr-ba": ack,
        "rr-ba-138": v.acknowledge(expired),
        "rr-dereg": bul.binding_update(CN, care_of=HOME, lifetime=0),
    }


def test_scapy_built_rr_messages_are_answered_and_verified(kb: types.ModuleType) -> None:
    packets = _exchange(kb)
    ba = IPv6(packets["rr-ba"])[inet6.MIP6MH_BA]
    assert (ba.status, ba.seq, ba.mhtime) == (0, 9, 100)
    assert IPv6(packets["rr-ba-138"])[inet6.MIP6MH_BA].status == 138
    hoti = IPv6(packets["hoti"])
    assert hoti.src == HOME and inet6.MIP6MH_HoTI in hoti and HAO not in hoti
    coti = IPv6(packets["coti"])
    assert coti.src == AWAY and inet6.MIP6MH_CoTI in coti
    bu = IPv6(packets["rr-bu"])[inet6.MIP6MH_BU]
    assert [o.otype for o in bu.options if o.otype > 1] == [4, 5]


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package: tshark)")
def test_tshark_dissects_every_rr_message_without_expert_info(kb: types.ModuleType, tmp_path: pathlib.Path) -> None:
    packets = _exchange(kb)
    path = tmp_path / "rr.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for i, p in enumerate(packets.values()):
            w.write(p, 1_700_000_000_000_000 + i)
    fields = ["mip6.mhtype", "mip6.hoti.cookie", "mip6.coti.cookie", "mip6.hot.nindex", "mip6.cot.nindex",
              "mip6.ni.hni", "mip6.ba.status", "_ws.expert.message", "_ws.malformed"]  # fmt: skip
    cmd = [str(TSHARK), "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a"]
    for field in fields:
        cmd += ["-e", field]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=tool_env()).stdout
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
    assert [r["mip6.mhtype"] for r in rows] == ["1", "2", "3", "4", "5", "6", "6", "5"]
    for name, row in zip(packets, rows, strict=True):
        assert row["_ws.expert.message"] == "" and row["_ws.malformed"] == "", (name, row)
    assert rows[0]["mip6.hoti.cookie"] and rows[1]["mip6.coti.cookie"]
    assert rows[6]["mip6.ba.status"] == "138"
