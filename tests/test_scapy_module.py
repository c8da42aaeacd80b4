"""kbmfast.scapy with Scapy 2.8: sign, verify and conversions, on BUs and BAs with every option."""

from __future__ import annotations

import pytest

pytest.importorskip("scapy.layers.inet6")
from scapy.layers.inet6 import (
    HAO,
    MIP6MH_BA,
    MIP6MH_BU,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrRouting,
    MIP6OptAltCoA,
    MIP6OptBindingAuthData,
    MIP6OptBRAdvice,
    MIP6OptNonceIndices,
    MIP6OptUnknown,
    Pad1,
    PadN,
)
from scapy.layers.l2 import Ether

import kbmfast
import kbmfast.scapy as ks

KBM = bytes.fromhex("06fe1294dedbb6b085227e37ea4f9a198700c9f4")
HOME, AWAY, CN, ALT = "2001:db8:1::100", "2001:db8:2::200", "2001:db8:3::300", "2001:db8:2::201"

BU_CASES = [
    {},
    {"alternate_care_of": ALT},
    {"nonce_indices": (3, 4)},
    {"alternate_care_of": ALT, "nonce_indices": (5, 6)},
    {"lifetime": 0},
    {"care_of": HOME, "lifetime": 0},
    {"ack": False},
]


def bu_args(extra: dict[str, object]) -> dict[str, object]:
    args: dict[str, object] = {"home": HOME, "care_of": AWAY, "correspondent": CN, "sequence": 0x1234, "lifetime": 420}
    args.update(extra)
    return args


@pytest.mark.parametrize("extra", BU_CASES, ids=lambda e: ",".join(e) or "plain")
def test_conversions_round_trip_binding_updates(extra: dict[str, object]) -> None:
    raw = kbmfast.build_binding_update(KBM, **bu_args(extra))
    parsed = kbmfast.parse_packet(raw)
    pkt = ks.to_scapy(parsed)
    assert bytes(pkt) == raw
    assert ks.from_scapy(pkt) == parsed
    assert ks.from_scapy(IPv6(raw)) == parsed
    assert ks.verify(pkt, KBM).verdict == kbmfast.Verdict.ACCEPTED


@pytest.mark.parametrize("status", [0, 129, 131, 135, 174])
@pytest.mark.parametrize("at_home", [False, True])
def test_conversions_round_trip_binding_acks(status: int, at_home: bool) -> None:
    raw = kbmfast.build_binding_ack(
        KBM, home=HOME, care_of=HOME if at_home else AWAY, correspondent=CN, sequence=77, status=status, lifetime=400
    )
    parsed = kbmfast.parse_packet(raw)
    assert bytes(ks.to_scapy(parsed)) == raw
    assert ks.from_scapy(IPv6(raw)) == parsed


@pytest.mark.parametrize("extra", BU_CASES, ids=lambda e: ",".join(e) or "plain")
def test_sign_rebuilds_what_kbmfast_builds(extra: dict[str, object]) -> None:
    """Zero the authenticator and checksum of a kbmfast BU, re-dissect (PadN + HAO), sign."""
    raw = bytearray(kbmfast.build_binding_update(KBM, **bu_args(extra)))
    mh = kbmfast.parse_packet(bytes(raw)).mh_offset
    raw[mh + 4 : mh + 6] = b"\0\0"
    raw[-12:] = bytes(12)
    signed = ks.sign(IPv6(bytes(raw)), KBM)
    assert bytes(signed) == kbmfast.build_binding_update(KBM, **bu_args(extra))
    assert bytes(IPv6(bytes(signed))) == bytes(signed)  # the checksum survives re-dissection
    assert ks.from_scapy(signed).checksum_valid


def test_sign_fixes_scapys_padn_hao_checksum() -> None:
    """Scapy's own checksum of a re-dissected PadN + HAO BU is wrong."""
    good = kbmfast.build_binding_update(KBM, **bu_args({}))
    redissected = IPv6(good)
    del redissected[MIP6MH_BU].cksum
    assert not ks.from_scapy(IPv6(bytes(redissected))).checksum_valid  # Scapy's own is wrong
    assert bytes(ks.sign(redissected, KBM)) == good


def test_sign_a_scapy_built_bu_with_every_option() -> None:
    pkt = (
        IPv6(src=AWAY, dst=CN)
        / IPv6ExtHdrDestOpt(options=[HAO(hoa=HOME)])
        / MIP6MH_BU(
            seq=9,
            flags="A",
            mhtime=100,
            autopad=0,
            options=[
                Pad1(),
                PadN(optdata=b"\0"),
                MIP6OptAltCoA(acoa=ALT),
                MIP6OptNonceIndices(olen=4, hni=1, coni=2),
                MIP6OptUnknown(otype=42, odata=b"xy"),
                PadN(optdata=bytes(4)),  # 64 bytes in all
                MIP6OptBindingAuthData(olen=12),
            ],
        )
    )
    signed = ks.sign(pkt, KBM)
    parsed = ks.from_scapy(signed)
    assert parsed.checksum_valid and parsed.home_address == kbmfast.parse_packet(bytes(signed)).home_address
    result = ks.verify(signed, KBM)
    assert result.verdict == kbmfast.Verdict.ACCEPTED
    assert (str(result.home), str(result.care_of), result.sequence, result.lifetime) == (HOME, ALT, 9, 400)
    # a Verifier keeps state: the same packet again is a replay
    keys = kbmfast.KeyTable()
    keys.add_kbm(HOME, KBM)
    with kbmfast.Verifier(keys) as v:
        assert ks.verify(signed, v).verdict == kbmfast.Verdict.ACCEPTED
        assert ks.verify(signed, v).verdict == kbmfast.Verdict.SEQUENCE_OUT_OF_WINDOW
    assert ks.verify(signed, keys).verdict == kbmfast.Verdict.ACCEPTED  # a KeyTable: fresh state
    assert ks.verify(signed, bytes(20)).verdict == kbmfast.Verdict.BAD_AUTHENTICATOR
    assert bytes(ks.to_scapy(parsed)) == bytes(signed)


def test_sign_a_scapy_built_ba_with_refresh_advice_inside_ethernet() -> None:
    pkt = (
        Ether()
        / IPv6(src=CN, dst=AWAY)
        / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOME])
        / MIP6MH_BA(status=0, flags=0, seq=5, mhtime=10, autopad=0,
                    options=[MIP6OptBRAdvice(rinter=30), PadN(optdata=b""), MIP6OptBindingAuthData(olen=12)])
    )  # fmt: skip
    signed = ks.sign(pkt, KBM)
    assert isinstance(signed, Ether)
    parsed = ks.from_scapy(signed)
    assert parsed.checksum_valid and str(parsed.routing_address) == HOME
    msg = parsed.message
    assert isinstance(msg, kbmfast.BindingAck)
    assert msg.options[0] == kbmfast.BindingRefreshAdvice(120)
    # The MN's side agrees: a Binding Update List with this correspondent accepts it
    expected = kbmfast.authenticator(KBM, AWAY, CN, bytes(signed[IPv6])[parsed.mh_offset :])
    assert msg.options[-1].authenticator == expected


def test_sign_refuses_scapys_default_bad_length() -> None:
    pkt = IPv6(src=HOME, dst=CN) / MIP6MH_BU(seq=1, flags="A", options=[MIP6OptBindingAuthData()])
    with pytest.raises((ValueError, kbmfast.MalformedPacket)):
        ks.sign(pkt, KBM)


def test_type_errors() -> None:
    with pytest.raises(TypeError):
        ks.to_scapy(b"not a packet")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ks.verify(IPv6(kbmfast.build_binding_update(KBM, **bu_args({}))), "key")
