"""Return routability (RFC 6275 §5.2, §9.4, §9.5.1): the CN's replies and RR Binding Updates.

An independent oracle: the keygen tokens and Kbm are computed here with the standard library's
``hmac`` and ``hashlib`` from the RFC's formulas, never with kbmfast's helpers; the time is a
fake clock moved by the tests (no sleeping). Every test runs on both backends (``kb``).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import ipaddress
import struct
import tracemalloc
import types
from array import array
from typing import Any

import pytest
from helpers import a16, custom_bu, with_checksum

from kbmfast import Verdict
from kbmfast.reference import wire

HOME, AWAY, CN, HOME2 = "2001:db8:1::100", "2001:db8:2::200", "2001:db8:3::300", "2001:db8:1::101"
KCN = bytes(range(100, 120))


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(kcn: bytes, address: str, nonce: bytes, which: int) -> bytes:
    """RFC 6275 §5.2.5: First(64, HMAC_SHA1(Kcn, address | nonce | which))."""
    return hmac.new(kcn, a16(address) + nonce + bytes((which,)), hashlib.sha1).digest()[:8]


def init(mh_type: int, cookie: bytes, src: str, dst: str = CN) -> bytes:
    """A HoTI (1) or CoTI (2) built here from the RFC's layout (not kbmfast's builder)."""
    mh = bytearray(struct.pack("!BBBBHH", 59, 1, mh_type, 0, 0, 0) + cookie)
    mh[4:6] = struct.pack("!H", wire.mh_checksum(a16(src), a16(dst), bytes(mh)))
    return struct.pack("!IHBB", 0x60000000, len(mh), 135, 64) + a16(src) + a16(dst) + bytes(mh)


class Session:
    """A CN with RR on backend ``kb``, and a mobile node's view computed by hand."""

    def __init__(self, kb: types.ModuleType, *, keys: Any = None, max_peers: int = 16384, **verifier: Any) -> None:
        self.kb = kb
        self.clock = Clock()
        self.rr = kb.ReturnRoutability(kcn=KCN, nonce_interval=30, clock=self.clock, max_peers=max_peers)
        self.keys = keys if keys is not None else kb.KeyTable()
        self.v = kb.Verifier(self.keys, return_routability=self.rr, **verifier)

    def tests(self, home: str = HOME, care_of: str = AWAY) -> tuple[Any, Any]:
        hot = self.v.reply(init(1, b"homecook", home))
        cot = self.v.reply(init(2, b"careof!!", care_of))
        return self.kb.parse_packet(hot).message, self.kb.parse_packet(cot).message

    def bu(self, hot: Any, cot: Any, *, home: str = HOME, care_of: str = AWAY, seq: int = 1, lifetime: int = 1000) -> bytes:
        dereg = lifetime == 0
        kbm = hashlib.sha1(hot.token + (b"" if dereg else cot.token)).digest()
        return bytes(
            self.kb.build_binding_update(
                kbm,
                home=home,
                care_of=care_of,
                correspondent=CN,
                sequence=seq,
                lifetime=lifetime,
                nonce_indices=(hot.nonce_index, cot.nonce_index),
            )
        )


# ---------------------------------------------------------------------------------------------
# The secrets


def test_return_routability_repr_and_arguments(kb: types.ModuleType) -> None:
    rr = kb.ReturnRoutability(kcn=KCN)
    assert KCN.hex() not in repr(rr) and str(KCN) not in repr(rr)
    snap = rr.snapshot(current=True)
    assert KCN.hex() not in repr(snap) and snap.nonces[0].hex() not in repr(snap)
    for bad in (b"short", "x" * 20, 7):
        with pytest.raises(ValueError, match="kcn"):
            kb.ReturnRoutability(kcn=bad)
    for interval in (0, 241, "30", True):
        with pytest.raises(ValueError, match="nonce_interval"):
            kb.ReturnRoutability(nonce_interval=interval)
    with pytest.raises(TypeError, match="clock"):
        kb.ReturnRoutability(clock=5)
    with pytest.raises(ValueError, match="max_peers"):
        kb.ReturnRoutability(max_peers=0)
    with pytest.raises(TypeError, match="return_routability"):
        kb.Verifier(kb.KeyTable(), return_routability="yes")
    with pytest.raises(ValueError, match="compat"):
        kb.Verifier(kb.KeyTable(), compat="rfc2002")
    assert len(kb.ReturnRoutability().snapshot().kcn) == 20  # drawn from secrets


def test_nonces_every_interval_kept_240_seconds(kb: types.ModuleType) -> None:
    clock = Clock()
    rr = kb.ReturnRoutability(kcn=KCN, nonce_interval=30, clock=clock)
    first = rr.snapshot(current=True)
    assert len(first.nonces) == 1 and len(first.nonces[0]) == 8
    clock.now += 29.9
    assert rr.snapshot(current=True).nonces == first.nonces  # not yet a new one
    clock.now += 0.1
    assert len(rr.snapshot(current=True).nonces) == 2
    clock.now += 209.99  # the first is 239.99 s old
    assert rr.snapshot().nonce(first.oldest & 0xFFFF) == first.nonces[0]
    clock.now += 0.01
    assert rr.snapshot().nonce(first.oldest & 0xFFFF) is None


# ---------------------------------------------------------------------------------------------
# HoTI -> HoT, CoTI -> CoT


def test_home_and_care_of_tests_match_the_rfc_formulas(kb: types.ModuleType) -> None:
    s = Session(kb)
    hot_packet = s.v.reply(init(1, b"cookie-h", HOME))
    cot_packet = s.v.reply(init(2, b"cookie-c", AWAY))
    nonce = s.rr.snapshot().nonces[-1]
    index = s.rr.snapshot().newest & 0xFFFF
    hot, cot = kb.parse_packet(hot_packet), kb.parse_packet(cot_packet)
    # addressed back: from the CN to the home address (through the HA) / to the care-of address
    assert (str(hot.source), str(hot.destination), hot.home_address, hot.routing_address) == (CN, HOME, None, None)
    assert (str(cot.source), str(cot.destination)) == (CN, AWAY)
    assert hot.checksum_valid and cot.checksum_valid
    assert hot.message == kb.HomeTest(index, b"cookie-h", token(KCN, HOME, nonce, 0))
    assert cot.message == kb.CareOfTest(index, b"cookie-c", token(KCN, AWAY, nonce, 1))
    assert len(hot_packet) == len(cot_packet) == 64


def test_bad_init_messages_get_no_reply(kb: types.ModuleType) -> None:
    s = Session(kb)
    good = init(1, b"cookie-h", HOME)
    assert s.v.reply(good) is not None
    hao = wire.home_address_header(a16(HOME))
    mh = good[40:]
    with_hao = wire.ipv6_header(60, len(hao) + len(mh), a16(AWAY), a16(CN)) + hao + mh
    coti_hao = bytearray(with_hao)
    coti_hao[len(hao) + 40 + 2] = 2
    rh = wire.routing_header_2(a16(HOME))
    with_rh = wire.ipv6_header(43, len(rh) + len(mh), a16(HOME), a16(CN)) + rh + mh
    short = bytearray(good[:48])  # an 8-byte MH: Header Len 0
    short[4:6] = (8).to_bytes(2, "big")
    short[41] = 0
    bad = {
        "hoti-with-hao": with_checksum(with_hao),
        "coti-with-hao": with_checksum(bytes(coti_hao)),
        "routing-header": with_checksum(with_rh),
        "header-len-0": with_checksum(bytes(short)),
        "bad-checksum": good[:-1] + bytes((good[-1] ^ 1,)),
        "truncated": good[:-1],
        "multicast-source": init(1, b"cookie-h", "ff02::1"),
        "link-local-source": init(1, b"cookie-h", "fe80::1"),
        "multicast-destination": init(1, b"cookie-h", HOME, "ff02::1"),
        "payload-proto": with_checksum(good[:40] + b"\x06" + good[41:]),
        "a-binding-update": s.bu(*s.tests()),
        "a-home-test": s.v.reply(good),
        "too-long": long_init(2088),
    }
    for name, packet in bad.items():
        assert s.v.reply(packet) is None, name
    stream = [good, *bad.values(), init(2, b"cookie-c", AWAY)]
    out, ends = s.v.reply_buffer(b"".join(stream), array("Q", _offsets(stream)))
    sizes = [ends[i + 1] - ends[i] for i in range(len(stream))]
    assert sizes == [64] + [0] * len(bad) + [64]
    assert out[:64] == s.v.reply(good)
    without = kb.Verifier(kb.KeyTable())
    assert without.reply(good) is None
    assert without.reply_buffer(good, array("Q", [0, len(good)]))[1].tolist() == [0, 0]


def test_init_addresses_at_the_edges(kb: types.ModuleType) -> None:
    """The usual 56-byte init is judged from its words in C (rr.c check_plain): every rule of
    the general path at its edges, singly and in one reply_buffer call."""
    s = Session(kb)
    answered = {
        "::2": True,  # not the unspecified or loopback address
        "::1": False,
        "::": False,
        "::100:0:0:0:1": True,  # a byte set in the middle
        "fe80::1": False,  # link-local: fe80::/10
        "febf::1": False,
        "fec0::1": True,
        "fe7f::1": True,
        "ff02::1": False,
        "fd00::1": True,
    }
    stream = []
    for src, ok in answered.items():
        for mh_type, cookie in ((1, b"cookie-h"), (2, b"cookie-c")):
            packet = init(mh_type, cookie, src)
            assert (s.v.reply(packet) is not None) == ok, src
            stream.append(packet)
    for dst, ok in {"::": False, "::1": True, "ff02::1": False, "feff::1": True, "fe80::1": True}.items():
        packet = init(1, b"cookie-h", HOME, dst)
        assert (s.v.reply(packet) is not None) == ok, dst
        stream.append(packet)
    version = bytearray(init(1, b"cookie-h", HOME))
    version[0] = 0x70  # not IPv6 (the checksum does not cover it)
    stream.append(bytes(version))
    assert s.v.reply(bytes(version)) is None
    out, ends = s.v.reply_buffer(b"".join(stream), array("Q", _offsets(stream)))
    for i, packet in enumerate(stream):
        assert out[ends[i] : ends[i + 1]] == (s.v.reply(packet) or b""), i


def long_init(total: int) -> bytes:
    """A HoTI padded with PadN options to ``total`` bytes."""
    body = bytearray(init(1, b"cookie-h", HOME)[40:])
    left = total - 40 - len(body)
    while left:
        n = min(left, 257) if left - min(left, 257) != 1 else 200
        body += wire.padding(n)
        left -= n
    body[1] = len(body) // 8 - 1
    return with_checksum(wire.ipv6_header(135, len(body), a16(HOME), a16(CN)) + bytes(body))


def test_longest_answered_init(kb: types.ModuleType) -> None:
    s = Session(kb)
    assert s.v.reply(long_init(2048)) is not None
    assert s.v.reply(long_init(2056)) is None


def _offsets(stream: list[bytes]) -> list[int]:
    out = [0]
    for p in stream:
        out.append(out[-1] + len(p))
    return out


def test_a_flood_of_init_messages_creates_no_state(kb: types.ModuleType) -> None:
    s = Session(kb)
    stream = [
        init(1 + i % 2, i.to_bytes(8, "big"), f"2001:db8:{i % 65536:x}::{i // 65536 + 1:x}")
        for i in range(20000 if kb.backend == "c" else 2000)
    ]
    buf, offs = b"".join(stream), array("Q", _offsets(stream))
    s.v.reply_buffer(buf, offs)
    gc.collect()
    # Only what kbmfast's own code allocates counts: threads left by earlier tests (flushers,
    # servers' readers) allocate meanwhile, and that is not this test's business.
    mine = [tracemalloc.Filter(True, "*/kbmfast/*"), tracemalloc.Filter(False, "*/kbmfast/_lifecycle.py")]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(mine)
        for _ in range(3):
            out, ends = s.v.reply_buffer(buf, offs)
            del out, ends
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(mine)
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024
    assert len(s.rr.snapshot().nonces) == 1
    # and no RR peer was remembered: a BU from one of them is judged afresh
    hot, cot = s.tests()
    assert s.v.verify(s.bu(hot, cot)).verdict == Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------
# RR Binding Updates


def test_rr_binding_update_accepted_and_acknowledged(kb: types.ModuleType) -> None:
    s = Session(kb)
    hot, cot = s.tests()
    r = s.v.verify(s.bu(hot, cot, seq=10, lifetime=1000))
    assert r.verdict == Verdict.ACCEPTED and r.nonce_indices == (hot.nonce_index, cot.nonce_index)
    ack = s.v.acknowledge(r)
    ba = kb.parse_packet(ack)
    assert ba.message.status == 0 and ba.message.lifetime == 420  # MAX_RR_BINDING_LIFETIME
    assert str(ba.routing_address) == HOME and str(ba.destination) == AWAY
    kbm = hashlib.sha1(hot.token + cot.token).digest()
    mh = ack[ba.mh_offset :]
    want = hmac.new(kbm, a16(AWAY) + a16(CN) + (mh[:4] + b"\0\0" + mh[6:])[:-12], hashlib.sha1).digest()[:12]
    assert mh[-12:] == want
    # the sequence rules of configured peers
    replay = s.v.verify(s.bu(hot, cot, seq=10))
    assert (replay.verdict, replay.ba_status, replay.last_sequence) == (Verdict.SEQUENCE_OUT_OF_WINDOW, 135, 10)
    assert kb.parse_packet(s.v.acknowledge(replay)).message.sequence == 10
    assert s.v.verify(s.bu(hot, cot, seq=11)).verdict == Verdict.ACCEPTED
    capped = kb.Verifier(kb.KeyTable(), return_routability=s.rr, max_lifetime=100)
    r = capped.verify(s.bu(hot, cot, seq=12, lifetime=400))
    assert kb.parse_packet(capped.acknowledge(r)).message.lifetime == 100


def test_rr_bu_wrong_tokens_and_bad_authenticator(kb: types.ModuleType) -> None:
    s = Session(kb)
    hot, cot = s.tests()
    other = kb.CareOfTest(cot.nonce_index, cot.cookie, bytes(8))
    r = s.v.verify(s.bu(hot, other))
    assert (r.verdict, r.ba_status) == (Verdict.BAD_AUTHENTICATOR, None)
    # tokens for another care-of address do not verify from this one
    hot2, cot2 = s.tests(care_of="2001:db8:2::201")
    assert s.v.verify(s.bu(hot2, cot2)).verdict == Verdict.BAD_AUTHENTICATOR
    # a BU without Nonce Indices from an unconfigured peer: nothing to verify it with
    kbm = hashlib.sha1(hot.token + cot.token).digest()
    plain = kb.build_binding_update(kbm, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, lifetime=8)
    assert s.v.verify(plain).verdict == Verdict.NOT_CONFIGURED


def test_without_return_routability_rr_bus_are_not_configured(kb: types.ModuleType) -> None:
    s = Session(kb)
    bu = s.bu(*s.tests())
    r = kb.Verifier(kb.KeyTable()).verify(bu)
    assert (r.verdict, r.ba_status, r.nonce_indices) == (Verdict.NOT_CONFIGURED, None, None)


@pytest.mark.parametrize(
    ("age_home", "age_care_of", "verdict", "status"),
    [
        (239.99, 239.99, Verdict.ACCEPTED, 0),
        (240, 200, Verdict.HOME_NONCE_EXPIRED, 136),
        (200, 240, Verdict.CARE_OF_NONCE_EXPIRED, 137),
        (240, 240, Verdict.NONCES_EXPIRED, 138),
    ],
)
def test_nonce_indices_just_valid_and_just_expired(
    kb: types.ModuleType, age_home: float, age_care_of: float, verdict: Verdict, status: int
) -> None:
    s = Session(kb)
    start = s.clock.now
    hot0, cot0 = s.tests()
    s.clock.now = start + 40
    hot1, cot1 = s.tests()
    assert hot1.nonce_index == hot0.nonce_index + 1
    home = hot0 if age_home >= age_care_of else hot1
    care_of = cot0 if age_care_of >= age_home else cot1
    s.clock.now = start + max(age_home, age_care_of)
    r = s.v.verify(s.bu(home, care_of))
    assert (r.verdict, r.ba_status) == (verdict, status)
    ack = s.v.acknowledge(r)
    ba = kb.parse_packet(ack)
    assert ba.checksum_valid and ba.message.status == status and ba.message.sequence == 1
    if status:  # no Kbm for an expired nonce: the BA goes without authenticator
        assert not any(isinstance(o, kb.BindingAuthorizationData) for o in ba.message.options)
        assert ba.message.lifetime == 0


def test_deregistration_needs_the_home_token_only(kb: types.ModuleType) -> None:
    s = Session(kb)
    hot, _ = s.tests()
    bogus = kb.CareOfTest(0xBEEF, b"", bytes(8))  # the care-of index is ignored (§5.2.6)
    kbm = hashlib.sha1(hot.token).digest()
    at_home = kb.build_binding_update(
        kbm, home=HOME, care_of=HOME, correspondent=CN, sequence=3, lifetime=0, nonce_indices=(hot.nonce_index, 0xBEEF)
    )
    r = s.v.verify(at_home)
    assert r.verdict == Verdict.ACCEPTED, r
    ba = kb.parse_packet(s.v.acknowledge(r))
    assert ba.message.lifetime == 0 and ba.destination == ipaddress.IPv6Address(HOME)
    away = s.bu(hot, bogus, seq=4, lifetime=0)
    assert s.v.verify(away).verdict == Verdict.ACCEPTED
    # a registration with home token only does not verify
    assert s.v.verify(s.bu(hot, bogus, seq=5)).verdict == Verdict.CARE_OF_NONCE_EXPIRED


def test_nonce_index_wraps(kb: types.ModuleType) -> None:
    s = Session(kb)
    s.rr._next = 65535  # the next nonce's index is 65535, the one after it 0
    hot_a, cot_a = s.tests()
    s.clock.now += 30
    hot_b, cot_b = s.tests()
    assert (hot_a.nonce_index, hot_b.nonce_index) == (65535, 0)
    assert s.v.verify(s.bu(hot_a, cot_b, seq=1)).verdict == Verdict.ACCEPTED
    assert s.v.verify(s.bu(hot_b, cot_a, seq=2)).verdict == Verdict.ACCEPTED
    assert s.v.verify(s.bu(hot_b, kb.CareOfTest(1, b"", bytes(8)), seq=3)).verdict == Verdict.CARE_OF_NONCE_EXPIRED


def test_a_configured_peer_is_never_verified_with_rr_keys(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, bytes(range(20)))
    s = Session(kb, keys=keys)
    hot, cot = s.tests()
    r = s.v.verify(s.bu(hot, cot))
    assert (r.verdict, r.ba_status, r.nonce_indices) == (Verdict.BAD_AUTHENTICATOR, None, None)
    # its own key still works, Nonce Indices or not (RFC 4449 §3)
    bu = kb.build_binding_update(bytes(range(20)), home=HOME, care_of=AWAY, correspondent=CN, sequence=1, lifetime=8)
    assert s.v.verify(bu).verdict == Verdict.ACCEPTED


def test_kcn_regeneration_expires_every_index(kb: types.ModuleType) -> None:
    s = Session(kb)
    hot, cot = s.tests()
    s.rr.regenerate()
    assert s.v.verify(s.bu(hot, cot)).verdict == Verdict.NONCES_EXPIRED
    hot2, cot2 = s.tests()
    assert hot2.nonce_index != hot.nonce_index and hot2.token != hot.token
    assert s.v.verify(s.bu(hot2, cot2)).verdict == Verdict.ACCEPTED


def test_rr_table_is_bounded(kb: types.ModuleType) -> None:
    s = Session(kb, max_peers=2)
    homes = ["2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"]
    tests = {h: s.tests(home=h) for h in homes}
    assert [s.v.verify(s.bu(*tests[h], home=h)).verdict for h in homes] == [
        Verdict.ACCEPTED,
        Verdict.ACCEPTED,
        Verdict.RR_TABLE_FULL,
    ]
    r = s.v.verify(s.bu(*tests[homes[2]], home=homes[2], seq=2))
    assert (r.verdict, r.ba_status) == (Verdict.RR_TABLE_FULL, 130)
    assert kb.parse_packet(s.v.acknowledge(r)).message.status == 130  # authenticated: RR key
    # once every nonce the entries were written under has expired, they make room
    s.clock.now += 240
    fresh = s.tests(home=homes[2])
    assert s.v.verify(s.bu(*fresh, home=homes[2], seq=3)).verdict == Verdict.ACCEPTED
    # the old entries are gone: a new sequence number from scratch is fine
    again = s.tests(home=homes[0])
    assert s.v.verify(s.bu(*again, home=homes[0], seq=1)).verdict == Verdict.ACCEPTED


def test_invalid_care_of_for_rr(kb: types.ModuleType) -> None:
    s = Session(kb)
    hot, cot = s.tests(care_of=HOME)
    r = s.v.verify(s.bu(hot, cot, care_of=HOME, lifetime=400))
    assert (r.verdict, r.ba_status) == (Verdict.INVALID_CARE_OF, 174)


# ---------------------------------------------------------------------------------------------
# compat="rfc3775" (UMIP)

KBM = bytes(range(20))


def _compat(kb: types.ModuleType, compat: str) -> Any:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KBM)
    return kb.Verifier(keys, compat=compat)


@pytest.mark.parametrize(("compat", "verdict"), [("rfc6275", Verdict.INVALID_CARE_OF), ("rfc3775", Verdict.ACCEPTED)])
def test_at_home_with_a_lifetime(kb: types.ModuleType, compat: str, verdict: Verdict) -> None:
    v = _compat(kb, compat)
    bu = custom_bu(KBM, home=HOME, care_of=HOME, correspondent=CN, sequence=1, lifetime_units=100)
    r = v.verify(bu)
    assert r.verdict == verdict
    ba = kb.parse_packet(v.acknowledge(r))
    assert ba.message.status == (174 if compat == "rfc6275" else 0)


@pytest.mark.parametrize(("compat", "verdict"), [("rfc6275", Verdict.BAD_AUTHENTICATOR), ("rfc3775", Verdict.ACCEPTED)])
def test_deregistration_maced_over_the_care_of_address(kb: types.ModuleType, compat: str, verdict: Verdict) -> None:
    v = _compat(kb, compat)
    bu = custom_bu(KBM, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, lifetime_units=0, mac_care_of=AWAY)
    assert v.verify(bu).verdict == verdict
    # the RFC's form is accepted in both modes
    rfc = custom_bu(KBM, home=HOME, care_of=AWAY, correspondent=CN, sequence=2, lifetime_units=0)
    assert v.verify(rfc).verdict == Verdict.ACCEPTED
    # and a registration MACed over the home address is not
    reg = custom_bu(KBM, home=HOME, care_of=AWAY, correspondent=CN, sequence=3, lifetime_units=5, mac_care_of=HOME)
    assert v.verify(reg).verdict == Verdict.BAD_AUTHENTICATOR


def test_compat_rfc3775_for_rr_too(kb: types.ModuleType) -> None:
    s = Session(kb, compat="rfc3775")
    hot, _ = s.tests()
    kbm = hashlib.sha1(hot.token).digest()
    bu = custom_bu(
        kbm,
        home=HOME,
        care_of=AWAY,
        correspondent=CN,
        sequence=1,
        lifetime_units=0,
        nonce_indices=(hot.nonce_index, 9),
        mac_care_of=AWAY,
    )
    assert s.v.verify(bu).verdict == Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------
# Arguments, lifecycle, threads


def test_reply_arguments_and_closed_verifier_agree() -> None:
    import kbmfast
    import kbmfast.reference as ref

    answers = []
    for kb in (kbmfast, ref):
        s = Session(kb)
        good = init(1, b"cookie-h", HOME)
        got = []
        for buffer, offsets in [
            (good, array("Q", [0, 30, 20])),
            (good, array("Q", [0, 100])),
            (good, [0, len(good)]),
            ("text", array("Q", [0, 4])),
        ]:
            try:
                got.append(("returned", s.v.reply_buffer(buffer, offsets)))
            except Exception as e:
                got.append(("raised", type(e).__name__, str(e)))
        for packet in (None, "text"):
            try:
                got.append(("returned", s.v.reply(packet)))
            except Exception as e:
                got.append(("raised", type(e).__name__, str(e)))
        s.v.close()
        with pytest.raises(ValueError, match="closed"):
            s.v.reply(good)
        answers.append(got)
    assert answers[0] == answers[1]
    assert all(a[0] == "raised" for a in answers[0][:2])


def test_threads_verify_and_reply_while_time_moves(kb: types.ModuleType) -> None:
    import threading

    s = Session(kb)
    pairs = [s.tests(home=f"2001:db8:1::{i + 1:x}") for i in range(8)]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for n in range(200):
                home = f"2001:db8:1::{k + 1:x}"
                r = s.v.verify(s.bu(*pairs[k], home=home, seq=n + 1))
                assert r.verdict in (Verdict.ACCEPTED, Verdict.NONCES_EXPIRED), r
                assert s.v.reply(init(1, b"cookie-h", home)) is not None
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):
        s.clock.now += 5  # 250 s in all: the first nonces expire while the threads verify
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_an_older_snapshot_never_replaces_a_newer_one_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads may read the clock in one order and push in the other: the C core keeps
    the newer secrets (else a nonce handed out by one thread would vanish for a moment)."""
    import kbmfast

    s = Session(kbmfast)
    old = s.rr.snapshot(current=True)
    s.clock.now += 30
    hot, cot = s.tests()
    assert hot.nonce_index == (old.newest + 1) & 0xFFFF
    assert s.v.verify(s.bu(hot, cot, seq=1)).verdict == Verdict.ACCEPTED  # pushes the newer secrets
    monkeypatch.setattr(s.rr, "snapshot", lambda now=None, current=False: old)  # a late thread's push
    assert s.v.verify(s.bu(hot, cot, seq=2)).verdict == Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------
# The mobile node's side


def test_mobile_node_runs_return_routability(kb: types.ModuleType) -> None:
    s = Session(kb)
    bul = kb.BindingUpdateList(HOME, clock=s.clock)
    hoti, coti = bul.return_routability(CN, care_of=AWAY)
    assert kb.parse_packet(hoti).source == ipaddress.IPv6Address(HOME)  # through the home agent
    assert kb.parse_packet(coti).source == ipaddress.IPv6Address(AWAY)
    hot, cot = s.v.reply(hoti), s.v.reply(coti)
    # a test answering another init (another cookie) is not taken
    assert not bul.process_test(s.v.reply(init(1, b"notmine!", HOME)))
    assert bul.process_test(hot) and bul.process_test(cot)
    r = s.v.verify(bul.binding_update(CN, care_of=AWAY, lifetime=1000))
    assert r.verdict == Verdict.ACCEPTED
    ack = bul.process_ack(s.v.acknowledge(r))
    assert (ack.verdict, ack.lifetime) == (Verdict.ACCEPTED, 420)
    # the next BU uses the next sequence number and the same tokens
    r2 = s.v.verify(bul.binding_update(CN, care_of=AWAY, lifetime=1000))
    assert r2.verdict == Verdict.ACCEPTED and r2.sequence == (r.sequence + 1) & 0xFFFF
    # the CN forgets its nonces: BA 138, unauthenticated; the MN drops its tokens
    s.rr.regenerate()
    r3 = s.v.verify(bul.binding_update(CN, care_of=AWAY, lifetime=1000))
    assert r3.verdict == Verdict.NONCES_EXPIRED
    assert bul.process_ack(s.v.acknowledge(r3)).verdict == Verdict.NONCES_EXPIRED
    with pytest.raises(ValueError, match="run return routability"):
        bul.binding_update(CN, care_of=AWAY, lifetime=1000)
    # tokens are used for MAX_TOKEN_LIFETIME (210 s) only
    hoti, coti = bul.return_routability(CN, care_of=AWAY)
    assert bul.process_test(s.v.reply(hoti)) and bul.process_test(s.v.reply(coti))
    s.clock.now += 210
    with pytest.raises(ValueError, match="run return routability"):
        bul.binding_update(CN, care_of=AWAY, lifetime=1000)
    # back home: the home token alone, a de-registration
    hoti, _ = bul.return_routability(CN, care_of=AWAY)
    assert bul.process_test(s.v.reply(hoti))
    r4 = s.v.verify(bul.binding_update(CN, care_of=HOME, lifetime=400))
    assert (r4.verdict, r4.lifetime, r4.care_of) == (Verdict.ACCEPTED, 0, ipaddress.IPv6Address(HOME))
    assert bul.process_ack(s.v.acknowledge(r4)).verdict == Verdict.ACCEPTED
    # a correspondent with a preconfigured key needs no RR
    bul.add("2001:db8:3::301", bytes(range(20)))
    with pytest.raises(ValueError, match="preconfigured"):
        bul.return_routability("2001:db8:3::301", care_of=AWAY)


def test_rr_with_an_alternate_care_of_address(kb: types.ModuleType) -> None:
    s = Session(kb)
    alt = "2001:db8:2::2aa"
    hot, cot = s.tests(care_of=alt)  # the CoTI from the address to register
    kbm = hashlib.sha1(hot.token + cot.token).digest()
    indices = (hot.nonce_index, cot.nonce_index)
    bu = kb.build_binding_update(
        kbm, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, lifetime=8, alternate_care_of=alt, nonce_indices=indices
    )
    r = s.v.verify(bu)
    assert (r.verdict, str(r.care_of), str(r.source)) == (Verdict.ACCEPTED, alt, AWAY)
    # tokens for the packet's source address do not do for another care-of address
    hot2, cot2 = s.tests(care_of=AWAY)
    kbm2 = hashlib.sha1(hot2.token + cot2.token).digest()
    bu2 = kb.build_binding_update(
        kbm2, home=HOME, care_of=AWAY, correspondent=CN, sequence=2, lifetime=8, alternate_care_of=alt,
        nonce_indices=(hot2.nonce_index, cot2.nonce_index),
    )  # fmt: skip
    assert s.v.verify(bu2).verdict == Verdict.BAD_AUTHENTICATOR
