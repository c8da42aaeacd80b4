"""The correspondent node: every verdict, every BA status, the order of the checks, state."""

from __future__ import annotations

import ipaddress
import os
import types
from array import array

import pytest
from helpers import a16, custom_bu, with_checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import BU_PACKET, CARE_OF_NONCE, CN, HOME, HOME_NONCE, KCN

KEY = bytes(range(100, 120))
OTHER = bytes(range(200, 220))
AWAY = "2001:db8:5::5"


def make(kb: types.ModuleType, **kw: object) -> object:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    return kb.Verifier(keys, **kw)


def bu(kb: types.ModuleType, seq: int, *, key: bytes = KEY, lifetime: int = 420, **kw: object) -> bytes:
    args = {"home": HOME, "care_of": AWAY, "correspondent": CN, "sequence": seq, "lifetime": lifetime}
    args.update(kw)
    return kb.build_binding_update(key, **args)  # type: ignore[no-any-return]


# ---- every verdict ------------------------------------------------------------------------------


def test_accepted(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        r = cn.verify(bu(kb, 10))
        assert r == kb.Result(
            kb.Verdict.ACCEPTED,
            home=ipaddress.IPv6Address(HOME),
            care_of=ipaddress.IPv6Address(AWAY),
            correspondent=ipaddress.IPv6Address(CN),
            sequence=10,
            lifetime=420,
            ack=True,
            ba_status=0,
            last_sequence=None,
            source=ipaddress.IPv6Address(AWAY),
        )
        assert cn.last_sequence(HOME) == 10


@pytest.mark.parametrize(
    "mangle",
    [
        "truncated",
        "routing-header",
        "hao-link-local",
        "bad-not-last",
        "h-with-nonce",
        "source-multicast",
        "care-of-loopback",
        "bad-length-16",
    ],
)
def test_malformed(kb: types.ModuleType, mangle: str) -> None:
    good = bu(kb, 10)
    if mangle == "truncated":
        packet = good[:-1]
    elif mangle == "routing-header":
        packet = kb.build_binding_ack(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, status=0, lifetime=0)
    elif mangle == "hao-link-local":
        packet = custom_bu(KEY, home="fe80::1", care_of=AWAY, correspondent=CN, sequence=1)
    elif mangle == "bad-not-last":
        mh = bytearray(good[64:]) + bytes((1, 0))  # PadN(2) after BAD, 8 bytes in all
        mh += bytes((0, 0, 0, 0, 0, 0))
        mh[1] = len(mh) // 8 - 1
        packet = with_checksum(good[:4] + (len(mh) + 24).to_bytes(2, "big") + good[6:64] + bytes(mh))
    elif mangle == "h-with-nonce":
        packet = custom_bu(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, flags=0xC000, nonce_indices=(1, 2))
    elif mangle == "source-multicast":
        packet = custom_bu(KEY, home=HOME, care_of="ff02::1", correspondent=CN, sequence=1, alternate_care_of=AWAY)
    elif mangle == "care-of-loopback":
        packet = custom_bu(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, alternate_care_of="::1")
    else:
        p = bytearray(good)
        p[64 + 19] = 16  # BAD Option Length 16 (Scapy's default) overruns the MH
        packet = with_checksum(bytes(p))
    with make(kb) as cn:
        r = cn.verify(packet)
        assert r == kb.Result(kb.Verdict.MALFORMED)
        assert cn.acknowledge(r) is None
        assert cn.last_sequence(HOME) is None


def test_bad_checksum(kb: types.ModuleType) -> None:
    p = bytearray(bu(kb, 10))
    p[64 + 5] ^= 1
    with make(kb) as cn:
        assert cn.verify(bytes(p)).verdict == kb.Verdict.BAD_CHECKSUM


def test_checksum_checked_before_options(kb: types.ModuleType) -> None:
    """RFC 6275 §9.2: a bad checksum is discarded before anything else in the MH is looked at."""
    p = bytearray(bu(kb, 10))
    p[64 + 19] = 16
    with make(kb) as cn:
        assert cn.verify(bytes(p)).verdict == kb.Verdict.BAD_CHECKSUM


@pytest.mark.parametrize("which", ["ack", "brr", "unknown-type"])
def test_not_binding_update(kb: types.ModuleType, which: str) -> None:
    if which == "ack":
        packet = kb.build_binding_ack(KEY, home=HOME, care_of=HOME, correspondent=CN, sequence=1, status=0, lifetime=0)
    else:
        mh = bytearray(b"\x3b\x00\x00\x00\x00\x00\x00\x00")
        if which == "unknown-type":
            mh[0], mh[2] = 0xFF, 42  # unknown types win over Payload Proto (RFC 6275 §9.2 order)
        packet = with_checksum(bytes.fromhex("6000000000088740") + a16(AWAY) + a16(CN) + bytes(mh))
    with make(kb) as cn:
        assert cn.verify(packet) == kb.Result(kb.Verdict.NOT_BINDING_UPDATE)


def test_not_configured(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        r = cn.verify(bu(kb, 10, home="2001:db8:9::9"))
        assert r.verdict == kb.Verdict.NOT_CONFIGURED
        assert r.ba_status is None and cn.acknowledge(r) is None


def test_missing_authorization(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        r = cn.verify(custom_bu(None, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, with_bad=False))
        assert r.verdict == kb.Verdict.MISSING_AUTHORIZATION
        assert cn.acknowledge(r) is None


def test_bad_authenticator(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        r = cn.verify(bu(kb, 10, key=OTHER))
        assert r.verdict == kb.Verdict.BAD_AUTHENTICATOR
        assert cn.acknowledge(r) is None
        assert cn.last_sequence(HOME) is None


def test_home_registration_needs_authentication_first(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        forged = custom_bu(OTHER, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, flags=0xC000)
        assert cn.verify(forged).verdict == kb.Verdict.BAD_AUTHENTICATOR
        r = cn.verify(custom_bu(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, flags=0xC000))
        assert (r.verdict, r.ba_status) == (kb.Verdict.HOME_REGISTRATION, 131)
        assert cn.last_sequence(HOME) is None


def test_sequence_out_of_window(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        assert cn.verify(bu(kb, 10)).verdict == kb.Verdict.ACCEPTED
        for seq in (10, 9, 10 + 32768):
            r = cn.verify(bu(kb, seq))
            assert (r.verdict, r.ba_status, r.last_sequence) == (kb.Verdict.SEQUENCE_OUT_OF_WINDOW, 135, 10)
        assert cn.verify(bu(kb, 10 + 32767)).verdict == kb.Verdict.ACCEPTED


def test_invalid_care_of(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        r = cn.verify(bu(kb, 10, care_of=HOME))
        assert (r.verdict, r.ba_status) == (kb.Verdict.INVALID_CARE_OF, 174)
        # de-registration from home is fine
        assert cn.verify(bu(kb, 11, care_of=HOME, lifetime=0)).verdict == kb.Verdict.ACCEPTED


def test_key_exhausted_and_rekey(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with kb.Verifier(keys, rekey_limit=10) as cn:
        assert cn.verify(bu(kb, 100)).verdict == kb.Verdict.ACCEPTED
        assert cn.verify(bu(kb, 110)).verdict == kb.Verdict.ACCEPTED  # advance 10: at the limit
        r = cn.verify(bu(kb, 111))
        assert (r.verdict, r.ba_status) == (kb.Verdict.KEY_EXHAUSTED, 129)
        assert cn.last_sequence(HOME) == 110
        keys.add_kbm(HOME, OTHER)  # rekey: a fresh sequence space
        assert cn.verify(bu(kb, 112)).verdict == kb.Verdict.BAD_AUTHENTICATOR
        assert cn.verify(bu(kb, 112, key=OTHER)).verdict == kb.Verdict.ACCEPTED
        assert cn.verify(bu(kb, 111, key=OTHER)).verdict == kb.Verdict.SEQUENCE_OUT_OF_WINDOW


def test_rekey_limit_bounds(kb: types.ModuleType) -> None:
    with pytest.raises(ValueError, match="32768"):
        make(kb, rekey_limit=32769)
    with pytest.raises(ValueError):
        make(kb, rekey_limit=0)
    with pytest.raises(TypeError, match="KeyTable"):
        kb.Verifier({})


# ---- acknowledgements ---------------------------------------------------------------------------


def parse_ba(kb: types.ModuleType, packet: bytes) -> object:
    parsed = kb.parse_packet(packet)
    assert parsed.checksum_valid
    assert isinstance(parsed.message, kb.BindingAck)
    assert parsed.message.flags == 0  # K = 0 from a correspondent
    assert isinstance(parsed.message.options[-1], kb.BindingAuthorizationData)
    return parsed


@pytest.mark.parametrize(
    ("case", "status"),
    [("accepted", 0), ("replay", 135), ("home", 131), ("care-of", 174), ("exhausted", 129), ("dereg", 0)],
)
def test_acknowledge_statuses(kb: types.ModuleType, case: str, status: int) -> None:
    with make(kb, rekey_limit=50, max_lifetime=200) as cn:
        assert cn.verify(bu(kb, 7)).verdict == kb.Verdict.ACCEPTED
        packet = {
            "accepted": lambda: bu(kb, 8),
            "replay": lambda: bu(kb, 7),
            "home": lambda: custom_bu(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=8, flags=0xC000),
            "care-of": lambda: bu(kb, 8, care_of=HOME),
            "exhausted": lambda: bu(kb, 100),
            "dereg": lambda: bu(kb, 8, lifetime=0),
        }[case]()
        r = cn.verify(packet)
        assert r.ba_status == status
        ba = cn.acknowledge(r)
        parsed = parse_ba(kb, ba)
        msg = parsed.message
        assert msg.status == status
        assert msg.sequence == (7 if status == 135 else 8 if case != "exhausted" else 100)
        assert msg.lifetime == (200 if case == "accepted" else 0)  # granted <= max_lifetime; 0 when rejected
        assert parsed.source == ipaddress.IPv6Address(CN)
        dest = HOME if case == "care-of" else AWAY
        assert parsed.destination == ipaddress.IPv6Address(dest)  # to the BU's source
        assert parsed.routing_address == (None if dest == HOME else ipaddress.IPv6Address(HOME))
        mac_care_of = HOME if case in ("dereg", "care-of") else AWAY
        assert kb.authenticator(KEY, mac_care_of, CN, ba[parsed.mh_offset :]) == msg.options[-1].authenticator


def test_acknowledge_none_when_not_asked(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        r = cn.verify(bu(kb, 7, ack=False))
        assert r.verdict == kb.Verdict.ACCEPTED and r.ack is False and r.ba_status is None
        assert cn.acknowledge(r) is None
        r = cn.verify(bu(kb, 7, ack=False))  # a 135 is sent even when A = 0
        assert r.ba_status == 135 and cn.acknowledge(r) is not None


def test_acknowledge_alternate_care_of(kb: types.ModuleType) -> None:
    """The BA goes to the BU's source; its MAC uses the registered (alternate) care-of address."""
    with make(kb) as cn:
        r = cn.verify(bu(kb, 7, alternate_care_of="2001:db8:6::6"))
        assert r.verdict == kb.Verdict.ACCEPTED and r.care_of == ipaddress.IPv6Address("2001:db8:6::6")
        ba = cn.acknowledge(r)
        parsed = parse_ba(kb, ba)
        assert parsed.destination == ipaddress.IPv6Address(AWAY)
        assert kb.authenticator(KEY, "2001:db8:6::6", CN, ba[parsed.mh_offset :]) == parsed.message.options[-1].authenticator


# ---- flipping every bit of a valid Binding Update ----------------------------------------------


def expected_for_flip(byte: int, bit: int) -> set[int]:
    """What a one-bit flip at this place of the §8.3 BU must give (values of Verdict)."""
    if byte == 0:
        return {1} if bit >= 4 else {0}  # version / traffic class
    if byte in (1, 2, 3, 7):
        return {0}  # traffic class, flow label, hop limit: not protected, not checked
    if byte in (4, 5, 6, 40, 41, 46, 47, 65):
        return {1}  # lengths (IPv6, extension header, MH Header Len), next headers, HAO type and length
    if 8 <= byte < 24:
        return {6}  # source = care-of address: only the MAC covers it
    if 24 <= byte < 40 or 48 <= byte < 64 or byte >= 64:
        return {2}  # destination, HoA (pseudo-header) and the whole MH: the checksum
    # the PadN before the HAO: ignored, malformed, or swallowing the HAO (then the checksum fails)
    return {0, 1, 2}


def test_every_bit_flip(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kcn(HOME, KCN, HOME_NONCE, CARE_OF_NONCE)
    flipped = []
    for byte in range(len(BU_PACKET)):
        for bit in range(8):
            p = bytearray(BU_PACKET)
            p[byte] ^= 1 << bit
            flipped.append((byte, bit, bytes(p)))
    for byte, bit, packet in flipped:
        with kb.Verifier(keys) as cn:
            got = cn.verify(packet).verdict
            assert got in expected_for_flip(byte, bit), (byte, bit, got)
            if got != kb.Verdict.ACCEPTED:
                assert cn.last_sequence(HOME) is None


# ---- batches ---------------------------------------------------------------------------------


def test_batch_in_order(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        assert list(cn.verify_batch([bu(kb, 5), bu(kb, 6)])) == [0, 0]
        assert list(cn.verify_batch([bu(kb, 8), bu(kb, 7), bu(kb, 8)])) == [0, 7, 7]
    with make(kb) as a, make(kb) as b:
        packets = [bu(kb, s) for s in (1, 3, 2, 3, 4)] + [b"", b"\x60" * 60, BU_PACKET]
        results = a.verify_batch(packets, results=True)
        assert results == [b.verify(p) for p in packets]
        assert [r.verdict for r in results] == [0, 0, 7, 7, 0, 1, 1, 6]  # HOME has another key here


def test_verify_buffer(kb: types.ModuleType) -> None:
    packets = [bu(kb, s) for s in range(1, 40, 3)] + [b"junk", bu(kb, 2)]
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    with make(kb) as a, make(kb) as b:
        buf = bytearray(b"".join(packets))
        got = a.verify_buffer(buf, offsets)
        assert isinstance(got, array) and got.typecode == "B"
        assert got == b.verify_batch(packets)
        assert a.verify_buffer(b"", array("Q", [0])) == array("B")


def test_verify_buffer_numpy(kb: types.ModuleType) -> None:
    np = pytest.importorskip("numpy")
    packets = [bu(kb, s) for s in (1, 2, 3)]
    offsets = np.cumsum([0] + [len(p) for p in packets]).astype(np.uint64)
    with make(kb) as cn:
        assert list(cn.verify_buffer(np.frombuffer(b"".join(packets), dtype=np.uint8), offsets)) == [0, 0, 0]


@pytest.mark.parametrize(
    ("offsets", "error", "message"),
    [
        (array("I", [0, 10]), ValueError, "unsigned 64-bit"),
        (array("q", [0, 10]), ValueError, "unsigned 64-bit"),
        (array("Q", [0, 20, 10]), ValueError, "decreasing at index 2"),
        (array("Q", [0, 1000]), ValueError, "past the end"),
        (array("Q"), ValueError, "n \\+ 1"),
        ([0, 10], TypeError, "uint64"),
    ],
)
def test_verify_buffer_bad_offsets(kb: types.ModuleType, offsets: object, error: type, message: str) -> None:
    with make(kb) as cn, pytest.raises(error, match=message):
        cn.verify_buffer(bytes(100), offsets)


def test_bad_arguments(kb: types.ModuleType) -> None:
    with make(kb) as cn:
        with pytest.raises(TypeError, match="packet"):
            cn.verify("not bytes")
        with pytest.raises(TypeError, match=r"packets\[1\]"):
            cn.verify_batch([b"", 5])
        with pytest.raises(TypeError, match="Result"):
            cn.acknowledge(None)
        with pytest.raises(ValueError, match="home"):
            cn.last_sequence("nonsense")
    with pytest.raises(ValueError, match="closed"):
        cn.verify(b"")


# ---- unauthenticated input never changes state -------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_unauthenticated_never_changes_state(kb: types.ModuleType, data: st.DataObject) -> None:
    with make(kb) as cn:
        assert cn.verify(bu(kb, 1000)).verdict == kb.Verdict.ACCEPTED
        base = bytearray(bu(kb, data.draw(st.integers(0, 65535))))
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(base) - 1))
            base[i] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            try:
                base = bytearray(with_checksum(bytes(base)))
            except Exception:
                pass
        r = cn.verify(bytes(base))
        if r.verdict != kb.Verdict.ACCEPTED:
            assert cn.last_sequence(HOME) == 1000
        if kb.Verdict.ACCEPTED < r.verdict <= kb.Verdict.BAD_AUTHENTICATOR:
            assert r.ba_status is None and cn.acknowledge(r) is None


# ---- persistent state ---------------------------------------------------------------------------


def test_state_survives_restart(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "seq.state")
    with make(kb, state=path) as cn:
        assert cn.verify(bu(kb, 500)).verdict == kb.Verdict.ACCEPTED
    assert os.stat(path).st_mode & 0o777 == 0o600
    with make(kb, state=path) as cn:
        assert cn.last_sequence(HOME) == 500
        assert cn.verify(bu(kb, 500)).verdict == kb.Verdict.SEQUENCE_OUT_OF_WINDOW
        assert cn.verify(bu(kb, 501)).verdict == kb.Verdict.ACCEPTED
    with make(kb, state=path) as cn:
        assert cn.last_sequence(HOME) == 501
        assert cn.last_sequence("2001:db8:9::9") is None


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated"),
        (b"KBMSTATE" + bytes(20), "truncated"),
        (b"NOTSTATE" + bytes(56), "not a kbmfast state file"),
        (b"KBMSTATE" + (3).to_bytes(4, "little") + bytes(52), "newer"),
        (b"KBMSTATE" + (2).to_bytes(4, "little") + bytes(52), "corrupt header"),
        (b"KBMSTATE" + bytes.fromhex("01000000 40000000 20000000 00000000") + bytes(40), "version 1 .*state migrate"),
    ],
)
def test_state_file_refused(kb: types.ModuleType, tmp_path: os.PathLike[str], content: bytes, message: str) -> None:
    path = _write(os.path.join(tmp_path, "bad.state"), content)
    with pytest.raises(kb.StateFileError, match=message) as err:
        make(kb, state=path)
    assert path in str(err.value)


def test_state_file_bad_slots(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    from kbmfast import _stateformat as fmt

    salt = bytes(range(16))
    slot = fmt.encode_slot(salt, 0, a16(HOME), fmt.pack_word(True, 5, 0, 7))
    good = fmt.new_header(2, salt) + slot
    lowered = bytearray(good[:64])
    lowered[24] = 1  # the count says 1, its check still says 2
    cases = {
        "count past end": (good, "truncated"),
        "repeated": (good + fmt.encode_slot(salt, 1, a16(HOME), 0), "repeats an address"),
        "moved": (fmt.new_header(1, salt) + fmt.encode_slot(salt, 1, a16(HOME), 0), "slot 0 .* is corrupt"),
        "advance": (fmt.new_header(1, salt) + fmt.encode_slot(salt, 0, a16(HOME), 40000 << 17), "slot 0 .* is corrupt"),
        "history": (fmt.new_header(1, salt) + fmt.encode_slot(salt, 0, a16(HOME), 0, (0, 5)), "slot 0 .* is corrupt"),
        "other salt": (fmt.new_header(1, bytes(16)) + slot, "slot 0 .* is corrupt"),
        "count lowered": (lowered + slot + fmt.encode_slot(salt, 1, a16(AWAY), 0), "damaged header"),
        "past the count": (fmt.new_header(0, salt) + slot + slot, "past the 0 slots"),
    }
    for name, (content, message) in cases.items():
        path = _write(os.path.join(tmp_path, name), content)
        with pytest.raises(kb.StateFileError, match=message):
            make(kb, state=path)


def test_verify_buffer_misaligned_offsets(kb: types.ModuleType) -> None:
    """Offsets in a view that does not start on an 8-byte boundary are read correctly."""
    packets = [bu(kb, s) for s in (1, 2, 3)]
    raw = bytearray(1) + array("Q", [0, 96, 192, 288]).tobytes()
    offsets = memoryview(raw)[1:].cast("Q")
    with make(kb) as cn:
        assert list(cn.verify_buffer(b"".join(packets), offsets)) == [0, 0, 0]
