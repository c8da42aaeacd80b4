"""Known answers: the spec-derived packets (self-computed), Scapy's vectors, and oracles."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vectors import (
    BA_PACKET,
    BU_AUTH,
    BU_PACKET,
    CARE_OF,
    CARE_OF_NONCE,
    CN,
    DEREG_MH,
    DRAFT_KBM,
    DRAFT_MH,
    HOME,
    HOME_NONCE,
    KBM,
    KBM_DEREG,
    KCN,
    SCAPY,
)

import kbmfast
import kbmfast.reference

# ---- From the spec text (self-computed from the spec, not third-party) ------------------------


def test_spec_kbm_derivation(kb: types.ModuleType) -> None:
    assert kb.derive_kbm(KCN, HOME_NONCE, CARE_OF_NONCE, home=HOME, care_of=CARE_OF) == KBM
    dereg = kb.derive_kbm(KCN, HOME_NONCE, CARE_OF_NONCE, home=HOME, care_of=CARE_OF, deregistration=True)
    assert dereg == KBM_DEREG


def test_spec_binding_update_packet(kb: types.ModuleType) -> None:
    bu = kb.build_binding_update(KBM, home=HOME, care_of=CARE_OF, correspondent=CN, sequence=0x1234, lifetime=420)
    assert bu == BU_PACKET
    assert kb.authenticator(KBM, CARE_OF, CN, BU_PACKET[64:]) == BU_AUTH


def test_spec_binding_ack_packet(kb: types.ModuleType) -> None:
    ba = kb.build_binding_ack(KBM, home=HOME, care_of=CARE_OF, correspondent=CN, sequence=0x1234, status=0, lifetime=420)
    assert ba == BA_PACKET


def test_spec_deregistration(kb: types.ModuleType) -> None:
    bu = kb.build_binding_update(KBM_DEREG, home=HOME, care_of=CARE_OF, correspondent=CN, sequence=0x1235, lifetime=0)
    assert bu[64:] == DEREG_MH
    # the MAC's care-of address is the home address when de-registering
    assert kb.authenticator(KBM_DEREG, HOME, CN, DEREG_MH) == DEREG_MH[-12:]


def test_spec_draft_variant(kb: types.ModuleType) -> None:
    bu = kb.build_binding_update(DRAFT_KBM, home=HOME, care_of=CARE_OF, correspondent=CN, sequence=0x1234, lifetime=420)
    assert bu[64:] == DRAFT_MH


def test_spec_verifier_accepts_and_acknowledges(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kcn(HOME, KCN, HOME_NONCE, CARE_OF_NONCE)
    with kb.Verifier(keys) as cn:
        result = cn.verify(BU_PACKET)
        assert result.verdict == kb.Verdict.ACCEPTED
        assert result.ba_status == 0
        assert cn.acknowledge(result) == BA_PACKET
        dereg = BU_PACKET[:64] + DEREG_MH
        assert cn.verify(dereg).verdict == kb.Verdict.ACCEPTED
        assert cn.last_sequence(HOME) == 0x1235


@pytest.mark.parametrize(
    ("last", "accept", "reject"),
    [(15, [16, 32782], [0, 15, 32783, 65535]), (65535, [0, 1, 32766], [32767, 65535])],
)
def test_spec_sequence_window(kb: types.ModuleType, last: int, accept: list[int], reject: list[int]) -> None:
    assert all(kb.sequence_newer(x, last) for x in accept)
    assert not any(kb.sequence_newer(x, last) for x in reject)


# ---- Scapy's vectors (third-party) ----------------------------------------------------------


@pytest.mark.parametrize(("name", "hexpacket", "checksum"), SCAPY, ids=[v[0] for v in SCAPY])
def test_scapy_vectors_parse(kb: types.ModuleType, name: str, hexpacket: str, checksum: int) -> None:
    packet = bytes.fromhex(hexpacket)
    if name.startswith("BRR, Payload Proto 0xff"):
        # RFC 6275 §9.2: a receiver discards Payload Proto != 59 (its checksum is still right)
        with pytest.raises(kb.MalformedPacket) as err:
            kb.parse_packet(packet)
        assert err.value.offset == 40
        assert "Payload Proto" in str(err.value)
        return
    parsed = kb.parse_packet(packet)
    assert parsed.checksum == checksum
    assert parsed.checksum_valid


def test_scapy_vector_hao_pseudo_source(kb: types.ModuleType) -> None:
    """The NEMO vector's checksum only works with the HAO address as pseudo-source."""
    packet = bytes.fromhex(SCAPY[7][1])
    parsed = kb.parse_packet(packet)
    assert parsed.home_address == ipaddress.IPv6Address("2001:db8::cafe")
    assert parsed.checksum_valid
    bu = parsed.message
    assert isinstance(bu, kb.BindingUpdate)
    assert (bu.sequence, bu.flags, bu.lifetime) == (0, 0xD000, 42 * 4)
    assert bu.options[1] == kb.AlternateCareOfAddress(ipaddress.IPv6Address("::"))
    assert bu.options[3] == kb.UnknownOption(6, bytes.fromhex("0040") + bytes(16))


def test_scapy_binding_error_fields(kb: types.ModuleType) -> None:
    be = kb.parse_packet(bytes.fromhex(SCAPY[9][1])).message
    assert be == kb.BindingError(2, ipaddress.IPv6Address("1::2"), ())


# ---- oracles: hmac and hashlib compute what the spec says, on any input ----------------------

addresses = st.binary(min_size=16, max_size=16).filter(lambda a: a[0] != 0)


@given(
    kbm=st.binary(min_size=20, max_size=20),
    co=addresses,
    cn=addresses,
    body=st.binary(min_size=0, max_size=300),
)
def test_authenticator_matches_hmac_oracle(kbm: bytes, co: bytes, cn: bytes, body: bytes) -> None:
    mh = body + bytes((5, 12)) + bytes(12)
    zeroed = mh[:4] + b"\0\0" + mh[6:] if len(mh) >= 6 else mh
    expected = hmac.new(kbm, co + cn + zeroed[:-12], hashlib.sha1).digest()[:12]
    for kb in (kbmfast, kbmfast.reference):
        assert kb.authenticator(kbm, co, cn, mh) == expected


@given(
    kcn=st.binary(min_size=20, max_size=100),
    hn=st.binary(min_size=1, max_size=64),
    cn=st.binary(min_size=1, max_size=64),
    home=addresses,
    coa=addresses,
    dereg=st.booleans(),
)
def test_derive_kbm_matches_oracle(kcn: bytes, hn: bytes, cn: bytes, home: bytes, coa: bytes, dereg: bool) -> None:
    hkt = hmac.new(kcn, home + hn + b"\0", hashlib.sha1).digest()[:8]
    ckt = b"" if dereg else hmac.new(kcn, coa + cn + b"\1", hashlib.sha1).digest()[:8]
    expected = hashlib.sha1(hkt + ckt).digest()
    for kb in (kbmfast, kbmfast.reference):
        assert kb.derive_kbm(kcn, hn, cn, home=home, care_of=coa, deregistration=dereg) == expected


@given(new=st.integers(0, 65535), last=st.integers(0, 65535))
def test_sequence_window_algebra(new: int, last: int) -> None:
    forward = kbmfast.sequence_newer(new, last)
    backward = kbmfast.sequence_newer(last, new)
    assert forward == kbmfast.reference.sequence_newer(new, last)
    assert not (forward and backward)  # never both newer than each other
    diff = (new - last) % 65536
    if diff not in (0, 32768):
        assert forward != backward  # otherwise exactly one is newer
    else:
        assert not forward and not backward


def test_sequence_window_size() -> None:
    """Exactly 32767 values are newer than any given one."""
    for last in (0, 1, 15, 32767, 32768, 65535):
        assert sum(kbmfast.sequence_newer(x, last) for x in range(65536)) == 32767


# ---- the abi3 build ---------------------------------------------------------------------------


def test_native_module_is_abi3() -> None:
    from kbmfast import _native_edge

    assert _native_edge._native.__file__.endswith(".abi3.so")
    assert kbmfast.kernel in ("portable", "sha-ni", "avx2", "avx512")
