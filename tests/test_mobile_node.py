"""The mobile node's Binding Update List against a correspondent node."""

from __future__ import annotations

import itertools
import os
import types

import pytest

HOME = "2001:db8:1::100"
AWAY = "2001:db8:2::200"
CN = "2001:db8:3::300"
KEY = bytes(range(50, 70))


def pair(kb: types.ModuleType, state: str | None = None) -> tuple[object, object]:
    mn = kb.BindingUpdateList(HOME, state=state)
    mn.add(CN, KEY)
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    return mn, kb.Verifier(keys)


def test_updates_and_acks(kb: types.ModuleType) -> None:
    mn, cn = pair(kb)
    seqs = []
    for _ in range(3):
        r = cn.verify(mn.binding_update(CN, care_of=AWAY, lifetime=400))
        assert r.verdict == kb.Verdict.ACCEPTED
        seqs.append(r.sequence)
        ack = mn.process_ack(cn.acknowledge(r))
        assert (ack.verdict, ack.ba_status, ack.sequence) == (kb.Verdict.ACCEPTED, 0, r.sequence)
    assert all(kb.sequence_newer(b, a) for a, b in itertools.pairwise(seqs))
    r = cn.verify(mn.binding_update(CN, care_of=AWAY, lifetime=0))  # de-registration
    assert r.verdict == kb.Verdict.ACCEPTED
    assert mn.process_ack(cn.acknowledge(r)).verdict == kb.Verdict.ACCEPTED


def test_resync_on_authenticated_135(kb: types.ModuleType) -> None:
    mn, cn = pair(kb)
    first = mn.binding_update(CN, care_of=AWAY, lifetime=400)
    assert cn.verify(first).verdict == kb.Verdict.ACCEPTED
    # a second mobile node state (say, restored from an old backup) falls behind
    behind = kb.BindingUpdateList(HOME)
    behind.add(CN, KEY)
    stale = behind.binding_update(CN, care_of=AWAY, lifetime=400)
    r = cn.verify(stale)
    if r.verdict == kb.Verdict.ACCEPTED:  # its random start happened to be newer: make it stale
        r = cn.verify(stale)
    assert r.verdict == kb.Verdict.SEQUENCE_OUT_OF_WINDOW
    ba = cn.acknowledge(r)
    # an unauthenticated 135 changes nothing
    forged = bytearray(ba)
    forged[-1] ^= 1
    assert behind.process_ack(bytes(forged)).verdict in (kb.Verdict.BAD_CHECKSUM, kb.Verdict.BAD_AUTHENTICATOR)
    got = behind.process_ack(ba)
    assert (got.verdict, got.ba_status, got.last_sequence) == (kb.Verdict.SEQUENCE_OUT_OF_WINDOW, 135, r.last_sequence)
    assert cn.verify(behind.binding_update(CN, care_of=AWAY, lifetime=400)).verdict == kb.Verdict.ACCEPTED


def test_one_kbm_per_correspondent(kb: types.ModuleType) -> None:
    mn = kb.BindingUpdateList(HOME)
    mn.add(CN, KEY)
    with pytest.raises(ValueError, match="another correspondent"):
        mn.add("2001:db8:3::301", KEY)
    with pytest.raises(KeyError):
        mn.binding_update("2001:db8:3::302", care_of=AWAY, lifetime=4)
    assert "KEY" not in repr(mn) and KEY.hex() not in repr(mn)


def test_state_never_reuses_a_sequence(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "mn.state")
    mn, cn = pair(kb, state=path)
    r1 = cn.verify(mn.binding_update(CN, care_of=AWAY, lifetime=400))
    mn.close()
    restarted = kb.BindingUpdateList(HOME, state=path)
    restarted.add(CN, KEY)
    r2 = cn.verify(restarted.binding_update(CN, care_of=AWAY, lifetime=400))
    assert r1.verdict == r2.verdict == kb.Verdict.ACCEPTED
    assert r2.sequence == (r1.sequence + 1) % 65536


def test_needs_rekey(kb: types.ModuleType) -> None:
    """The MN's count matches the CN's: 32769 Binding Updates (an advance of 32768) per key."""
    mn, cn = pair(kb)
    packets = []
    while not mn.needs_rekey(CN):
        packets.append(mn.binding_update(CN, care_of=AWAY, lifetime=400))
    assert len(packets) == 32769
    assert set(cn.verify_batch(packets)) == {kb.Verdict.ACCEPTED}
    assert cn.verify(mn.binding_update(CN, care_of=AWAY, lifetime=400)).verdict == kb.Verdict.KEY_EXHAUSTED
    mn.add(CN, bytes(range(20)))  # a new key: a fresh sequence space
    assert not mn.needs_rekey(CN)
