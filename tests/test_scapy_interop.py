"""Scapy (a dissector nobody here wrote) reads what kbmfast builds, field by field."""

from __future__ import annotations

import types

import pytest

scapy_inet6 = pytest.importorskip("scapy.layers.inet6")
IPv6 = scapy_inet6.IPv6
MIP6MH_BU = scapy_inet6.MIP6MH_BU
MIP6MH_BA = scapy_inet6.MIP6MH_BA

HOME, AWAY, CN, ALT = "2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3", "2001:db8:4::4"
KBM = bytes(range(20))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"alternate_care_of": ALT},
        {"nonce_indices": (3, 4)},
        {"alternate_care_of": ALT, "nonce_indices": (5, 6)},
        {"lifetime": 0},
    ],
)
def test_scapy_dissects_binding_updates(kb: types.ModuleType, extra: dict[str, object]) -> None:
    args: dict[str, object] = {"home": HOME, "care_of": AWAY, "correspondent": CN, "sequence": 77, "lifetime": 400}
    args.update(extra)
    packet = kb.build_binding_update(KBM, **args)
    ours = kb.parse_packet(packet)
    p = IPv6(packet)
    assert p.src == AWAY and p.dst == CN
    assert p[scapy_inet6.HAO].hoa == HOME
    bu = p[MIP6MH_BU]
    assert (bu.nh, bu.mhtype, bu.seq, bu.mhtime) == (59, 5, 77, args["lifetime"] // 4)
    assert bu.flags.A and not bu.flags.H and not bu.flags.K
    assert bu.cksum == ours.checksum
    types_seen = [o.otype for o in bu.options if o.otype not in (0, 1)]
    expected = ([3] if "alternate_care_of" in extra else []) + ([4] if "nonce_indices" in extra else []) + [5]
    assert types_seen == expected
    bad = bu.options[-1]
    assert bad.olen == 12  # Scapy's own default would be 16
    auth = bad.authenticator
    assert (auth.to_bytes(12, "big") if isinstance(auth, int) else bytes(auth)) == ours.message.options[-1].authenticator
    if "alternate_care_of" in extra:
        assert next(o for o in bu.options if o.otype == 3).acoa == ALT
    if "nonce_indices" in extra:
        ni = next(o for o in bu.options if o.otype == 4)
        assert (ni.hni, ni.coni) == extra["nonce_indices"]


def test_scapy_agrees_on_binding_ack(kb: types.ModuleType) -> None:
    packet = kb.build_binding_ack(KBM, home=HOME, care_of=AWAY, correspondent=CN, sequence=9, status=135, lifetime=0)
    p = IPv6(packet)
    assert p[scapy_inet6.IPv6ExtHdrRouting].type == 2
    assert p[scapy_inet6.IPv6ExtHdrRouting].addresses == [HOME]
    ba = p[MIP6MH_BA]
    assert (ba.status, ba.flags, ba.seq, ba.mhtime) == (135, 0, 9, 0)
    # with no Home Address option Scapy's checksum is right: recomputing it gives ours
    rebuilt = p.copy()
    del rebuilt[MIP6MH_BA].cksum
    assert IPv6(bytes(rebuilt))[MIP6MH_BA].cksum == ba.cksum


def test_a_scapy_built_update_verifies(kb: types.ModuleType) -> None:
    """A BU crafted in Scapy, signed with kbmfast's authenticator, is accepted."""
    bad = scapy_inet6.MIP6OptBindingAuthData(olen=12, authenticator=0)
    mh = MIP6MH_BU(seq=321, flags="A", mhtime=25, options=[scapy_inet6.PadN(optdata=b"\0" * 4), bad])
    pkt = IPv6(src=AWAY, dst=CN) / scapy_inet6.IPv6ExtHdrDestOpt(options=[scapy_inet6.HAO(hoa=HOME)]) / mh
    raw = bytearray(bytes(pkt))
    mh_off = kb.parse_packet(bytes(raw)).mh_offset
    raw[-12:] = kb.authenticator(KBM, AWAY, CN, bytes(raw[mh_off:]))
    # Scapy's checksum of the signed packet: re-dissect, drop the checksum, rebuild
    signed = IPv6(bytes(raw))
    del signed[MIP6MH_BU].cksum
    final = bytes(signed)
    parsed = kb.parse_packet(final)
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KBM)
    verdict = kb.Verifier(keys).verify(final).verdict
    if parsed.checksum_valid:
        assert verdict == kb.Verdict.ACCEPTED
    else:
        # Scapy's known quirk: with PadN + HAO it sums over the care-of address
        assert verdict == kb.Verdict.BAD_CHECKSUM
        fixed = bytearray(final)
        fixed[mh_off + 4 : mh_off + 6] = b"\0\0"
        from kbmfast.reference import wire

        good = wire.mh_checksum(parsed.home_address.packed, parsed.destination.packed, bytes(fixed[mh_off:]))
        fixed[mh_off + 4 : mh_off + 6] = good.to_bytes(2, "big")
        assert kb.Verifier(keys).verify(bytes(fixed)).verdict == kb.Verdict.ACCEPTED
