"""The C peer index: each bucket names its peer and that peer's sequence slot (so the verifier
prefetches both at once), and the slot stays the peer's through every change to the table and
across state compaction, which renumbers slots. kbm_verifier_check_index walks the whole index.

Both backends verify the same packets where the outcome is the contract; the index check is the
C core's own."""

from __future__ import annotations

import hashlib
import os
import pathlib
import types
from array import array

import pytest

import kbmfast
from kbmfast import _stateformat as fmt
from kbmfast._native_edge import lib
from kbmfast.cli import main

CN = "2001:db8:ffff::1"


def home(i: int) -> str:
    return f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1"


def key(i: int, generation: int = 0) -> bytes:
    return hashlib.sha256(f"{i}/{generation}".encode()).digest()[:20]


def bu(kb: types.ModuleType, i: int, seq: int, generation: int = 0) -> bytes:
    return kb.build_binding_update(  # type: ignore[no-any-return]
        key(i, generation), home=home(i), care_of=f"2001:db8:c0::{i + 1:x}", correspondent=CN, sequence=seq, lifetime=8
    )


def verify_all(v: object, packets: list[bytes]) -> list[int]:
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    return list(v.verify_buffer(b"".join(packets), offsets))  # type: ignore[attr-defined]


def faults(v: kbmfast.Verifier) -> int:
    return int(lib.kbm_verifier_check_index(v._handle()))


def test_index_stays_right_across_add_remove_rekey() -> None:
    keys = kbmfast.KeyTable()
    for i in range(300):
        keys.add_kbm(home(i), key(i))
    with kbmfast.Verifier(keys) as v:
        assert faults(v) == 0
        assert verify_all(v, [bu(kbmfast, i, 1) for i in range(300)]) == [0] * 300
        for i in range(0, 300, 3):  # removals move peers down in the new index
            keys.remove(home(i))
        assert faults(v) == 0
        for i in range(1, 300, 3):  # rekeys replace peers in place
            keys.add_kbm(home(i), key(i, 1))
        for i in range(300, 400):  # additions after removals
            keys.add_kbm(home(i), key(i))
        for i in range(0, 60, 3):  # back again: their slots (and sequence numbers) are kept
            keys.add_kbm(home(i), key(i, 2))
        assert faults(v) == 0
        packets, want = [], []
        for i in range(400):
            gen = 1 if i < 300 and i % 3 == 1 else 2 if i < 60 and i % 3 == 0 else 0
            configured = i >= 300 or i % 3 != 0 or i < 60
            packets += [bu(kbmfast, i, 2, gen), bu(kbmfast, i, 2, gen)]  # the second: a replay
            want += [0, 7] if configured else [4, 4]
        assert verify_all(v, packets) == want
        for i in range(1, 300, 3):  # a rekeyed peer counts on in its own slot
            assert v.last_sequence(home(i)) == 2


def test_many_peers_and_unknown_homes(kb: types.ModuleType) -> None:
    """Enough peers that 13-bit bucket tags collide along probe chains (each collision is a peer
    compared and passed over), and homes never configured that walk the chains to their end."""
    n = 20000
    keys = kb.KeyTable()
    for i in range(n):
        keys.add_kbm(home(i), key(i))
    packets = [bu(kb, i, 5) for i in range(0, 2 * n, 7)]
    want = [0 if i < n else 4 for i in range(0, 2 * n, 7)]
    with kb.Verifier(keys) as v:
        assert verify_all(v, packets) == want
        assert verify_all(v, packets) == [7 if w == 0 else 4 for w in want]
        if kb is kbmfast:
            assert faults(v) == 0


def test_rfc4449_flag_follows_the_peer() -> None:
    """The bucket says whether its peer has RFC 4449 extras (the verifier reads them only then):
    a peer turned from a configured Kbm into a Kcn and back is verified with the right key."""
    keys = kbmfast.KeyTable()
    for i in range(64):
        keys.add_kbm(home(i), key(i))
    care_of = "2001:db8:c0::99"

    def kcn_bu(i: int, seq: int) -> bytes:
        kbm = kbmfast.derive_kbm(key(i, 7), b"hn", b"cn", home=home(i), care_of=care_of, deregistration=False)
        return kbmfast.build_binding_update(  # type: ignore[no-any-return]
            kbm, home=home(i), care_of=care_of, correspondent=CN, sequence=seq, lifetime=8
        )

    with kbmfast.Verifier(keys) as v:
        for i in range(0, 64, 2):
            keys.add_kcn(home(i), key(i, 7), b"hn", b"cn")
        assert faults(v) == 0
        packets = [kcn_bu(i, 1) if i % 2 == 0 else bu(kbmfast, i, 1) for i in range(64)]
        assert verify_all(v, packets) == [0] * 64
        for i in range(0, 64, 4):  # back to a configured Kbm
            keys.add_kbm(home(i), key(i, 8))
        keys.remove(home(2))
        assert faults(v) == 0
        packets = [bu(kbmfast, i, 2, 8) if i % 4 == 0 else kcn_bu(i, 2) if i % 2 == 0 else bu(kbmfast, i, 2) for i in range(64)]
        assert verify_all(v, packets) == [4 if i == 2 else 0 for i in range(64)]


def test_slots_follow_compaction(tmp_path: os.PathLike[str]) -> None:
    """compact --drop-unconfigured renumbers the slots after the dropped ones: a Verifier on the
    compacted file must name (and count in) each peer's new slot."""
    path, keyfile = os.path.join(tmp_path, "cn.state"), os.path.join(tmp_path, "keys.toml")
    fmt.create(path)
    keys = kbmfast.KeyTable()
    for i in range(40):
        keys.add_kbm(home(i), key(i))
    with kbmfast.Verifier(keys, state=path) as v:
        assert verify_all(v, [bu(kbmfast, i, 100 + i) for i in range(40)]) == [0] * 40
    for i in range(0, 40, 2):
        keys.remove(home(i))
    keys.save(keyfile)
    assert main(["state", "compact", path, "--keys", keyfile, "--drop-unconfigured"]) == 0
    slots = [fmt._show(a) for a, _, _ in fmt.read_slots(path)[1]]
    assert slots == [home(i) for i in range(1, 40, 2)]  # renumbered: 0, 1, 2, ...
    with kbmfast.Verifier(keys, state=path) as v:
        assert faults(v) == 0
        for i in range(1, 40, 2):
            assert v.last_sequence(home(i)) == 100 + i
        packets = [bu(kbmfast, i, s) for i in range(1, 40, 2) for s in (100 + i, 101 + i)]
        assert verify_all(v, packets) == [7, 0] * 20
        assert faults(v) == 0


def test_huge_page_backing_gives_the_same_verdicts(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """From 2 MiB up the peer and bucket arrays are 2 MiB-aligned mappings advised
    MADV_HUGEPAGE (the in-memory slots too); KBMFAST_HUGEPAGES=0 keeps the heap allocations.
    Both give the same index and the same verdicts, in memory and with a state file: 40 000
    peers (a 2.5 MiB peer array), a seventh of them, replays, unknown homes, then a removal and
    a rekey (copies of the index, each allocated anew) and more packets."""
    n = 40000
    packets = [bu(kbmfast, i, 1) for i in range(0, n, 7)] + [bu(kbmfast, i, 1) for i in range(0, n, 700)]
    packets += [bu(kbmfast, i, 1) for i in range(n, n + 50)]  # never configured
    after = [bu(kbmfast, 7, 2)] + [bu(kbmfast, i, 2) for i in range(0, n, 350)] + [bu(kbmfast, 14, 3, 1)]
    results = []
    for setting in ("1", "0"):
        monkeypatch.setenv("KBMFAST_HUGEPAGES", setting)
        for state in (None, tmp_path / f"state.{setting}"):
            keys = kbmfast.KeyTable()
            for i in range(n):
                keys.add_kbm(home(i), key(i))
            with kbmfast.Verifier(keys, state=state) as v:
                assert faults(v) == 0
                first = verify_all(v, packets)
                keys.remove(home(7))
                keys.add_kbm(home(14), key(14, 1))
                assert faults(v) == 0
                results.append((first, verify_all(v, after)))
    accepted = len(range(0, n, 7))
    assert results[0][0][:accepted] == [0] * accepted
    assert results[0][0][accepted:] == [7] * len(range(0, n, 700)) + [4] * 50
    assert results[0][1] == [4] + [0] * len(range(0, n, 350)) + [0]  # home 7 removed
    assert all(r == results[0] for r in results)
