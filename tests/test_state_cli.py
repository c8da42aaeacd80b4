"""kbmfast state show | check | compact, on sound and damaged files."""

from __future__ import annotations

import json
import os
import types

import pytest
from helpers import a16

from kbmfast import _stateformat as fmt
from kbmfast.cli import main

HOME, AWAY, CN = "2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3"
KEY = bytes(range(60, 80))


def populated(kb: types.ModuleType, path: str) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.add_kbm("2001:db8:1::2", bytes(20))
    with kb.Verifier(keys, state=path) as cn:
        bu = kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=4242, lifetime=8)
        assert cn.verify(bu).verdict == kb.Verdict.ACCEPTED


def test_show_and_check(kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(tmp_path, "s")
    populated(kb, path)
    assert main(["state", "check", path]) == 0
    assert "sound, 2 slots" in capsys.readouterr().out
    assert main(["state", "show", "--json", path]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_address = {row.pop("address"): row for row in rows}
    home = by_address[HOME]
    assert len(home.pop("key")) == 8 and home == {"last_sequence": 4242, "advance": 0, "earlier_keys": 0}
    assert by_address["2001:db8:1::2"] == {"last_sequence": None, "advance": 0, "key": "-", "earlier_keys": 0}
    assert main(["state", "show", path]) == 0
    assert "4242" in capsys.readouterr().out


def test_check_refuses_damage(tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(tmp_path, "s")
    with open(path, "wb") as f:
        f.write(b"KBMSTATE" + bytes(10))
    assert main(["state", "check", path]) == 1
    assert "truncated" in capsys.readouterr().err


def test_compact_shrinks_and_keeps_state(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "s")
    populated(kb, path)
    before = os.path.getsize(path)
    assert main(["state", "compact", path]) == 0
    assert os.path.getsize(path) == 64 + 2 * 64 <= before
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with kb.Verifier(keys, state=path) as cn:
        assert cn.last_sequence(HOME) == 4242


def test_compact_drops_unconfigured_only_when_asked(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path, keyfile = os.path.join(tmp_path, "s"), os.path.join(tmp_path, "k.toml")
    populated(kb, path)
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.save(keyfile)
    assert main(["state", "compact", path, "--drop-unconfigured"]) == 2
    assert main(["state", "compact", path, "--keys", keyfile, "--drop-unconfigured"]) == 0
    assert [fmt._show(a) for a, _, _ in fmt.read_slots(path)[1]] == [HOME]


def test_salvage(kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(tmp_path, "s")
    salt = bytes(range(16))
    good = fmt.pack_word(True, 7, 0, 99)
    a, b, c = (bytes(15) + bytes((i,)) for i in (0x21, 0x22, 0x23))
    slots = [
        fmt.encode_slot(salt, 0, a, good),
        fmt.encode_slot(salt, 1, b, 40000 << 17),  # an impossible advance
        fmt.encode_slot(salt, 2, c, good),
        fmt.encode_slot(salt, 3, c, good),
    ]
    with open(path, "wb") as f:
        f.write(fmt.new_header(5, salt) + b"".join(slots))  # the count also overstates
    assert main(["state", "check", path]) == 1
    capsys.readouterr()
    assert main(["state", "compact", "--salvage", path]) == 0
    err = capsys.readouterr().err
    assert "slot 1, address ::22 (as stored): impossible sequence advance: dropped" in err and "rekey that peer" in err
    assert "address ::23 had two slots: dropped both" in err and "header says 5" in err
    assert fmt.read_slots(path) == (salt, [(a, good, ())])
    with kb.Verifier(kb.KeyTable(), state=path) as cn:  # usable again
        assert cn.last_sequence("::21") == 7


def test_lowered_count_is_found_refused_and_salvaged(
    kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9 item 5: lowering the header's slot count used to pass 'state check' and let a
    verifier re-create the missing peers' slots fresh (their replays then ACCEPTED)."""
    path = os.path.join(tmp_path, "s")
    populated(kb, path)
    with open(path, "r+b") as f:
        f.seek(fmt.COUNT_OFFSET)
        f.write((1).to_bytes(4, "little"))  # 2 slots -> 1, its check left as it was
    assert main(["state", "check", path]) == 1
    assert "damaged header" in capsys.readouterr().err
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with pytest.raises(kb.StateFileError, match="damaged header"):
        kb.Verifier(keys, state=path)
    assert main(["state", "compact", "--salvage", path]) == 0
    assert "judging every slot by its own check" in capsys.readouterr().err
    with kb.Verifier(keys, state=path) as cn:  # both slots found again by their own checks
        assert cn.last_sequence(HOME) == 4242
        bu = kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=4242, lifetime=8)
        assert cn.verify(bu).verdict == kb.Verdict.SEQUENCE_OUT_OF_WINDOW


@pytest.mark.parametrize("damage", ["address", "garbage past the count", "wiped"])
def test_check_finds_slot_damage_and_salvage_names_the_address(
    kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    path = os.path.join(tmp_path, "s")
    populated(kb, path)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        first = fmt.HEADER_SIZE
        if damage == "address":
            data[first + 15] ^= 1  # HOME's slot now names another address
        elif damage == "garbage past the count":
            at = fmt.HEADER_SIZE + 5 * fmt.SLOT_SIZE + 3  # not the slot a crashed append may leave
            data[len(data) :] = bytes(max(0, at + 1 - len(data)))
            data[at] = 7
        else:
            data[first : first + fmt.SLOT_SIZE] = bytes(fmt.SLOT_SIZE)
        f.seek(0)
        f.write(data)
    assert main(["state", "check", path]) == 1
    assert "corrupt" in capsys.readouterr().err or damage == "garbage past the count"
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with pytest.raises(kb.StateFileError):
        kb.Verifier(keys, state=path)
    if damage == "garbage past the count":
        return
    assert main(["state", "compact", "--salvage", path]) == 0
    err = capsys.readouterr().err
    if damage == "address":
        assert "slot 0, address 2001:db8:1:0:0:0:0:0 (as stored)" not in err
        assert f"address {fmt._show(bytes(data[first : first + 16]))} (as stored)" in err and "rekey that peer" in err
    else:
        assert "slot 0 was wiped" in err and "rekey every peer not in the salvaged file" in err


def test_version_1_is_refused_and_migrated(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path, keyfile = os.path.join(tmp_path, "s"), os.path.join(tmp_path, "k.toml")
    other = bytes(15) + b"\x09"
    v1_word = 4242 | 1 << 16 | 300 << 32 | 1 << 48  # seq 4242, advance 300, epoch 1
    with open(path, "wb") as f:
        f.write(b"KBMSTATE" + bytes.fromhex("01000000 40000000 20000000 00000000") + (2).to_bytes(8, "little") + bytes(32))
        f.write(a16(HOME) + v1_word.to_bytes(8, "little") + bytes(8) + other + (7 | 1 << 16).to_bytes(8, "little") + bytes(8))
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.save(keyfile)
    with pytest.raises(kb.StateFileError, match=r"version 1 .* state migrate"):
        kb.Verifier(keys, state=path)
    assert main(["state", "migrate", path, "--keys", keyfile]) == 0
    with kb.Verifier(keys, state=path, rekey_limit=301) as cn:
        assert cn.last_sequence(HOME) == 4242 and cn.last_sequence("::9") == 7
        bu = kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=4243, lifetime=8)
        assert cn.verify(bu).verdict == kb.Verdict.ACCEPTED  # the advance went on: 300 + 1
        bu = kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=4244, lifetime=8)
        assert cn.verify(bu).verdict == kb.Verdict.KEY_EXHAUSTED


def test_count_lowered_under_a_running_verifier_is_refused(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    """Damage done while a verifier runs is found when it next reads the count (an append)."""
    path = os.path.join(tmp_path, "s")
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.add_kbm("2001:db8:1::2", bytes(20))
    with kb.Verifier(keys, state=path) as cn:
        with open(path, "r+b") as f:
            f.seek(fmt.COUNT_OFFSET)
            f.write((1).to_bytes(4, "little"))
        with pytest.raises(kb.StateFileError, match=path):
            keys.add_kbm("2001:db8:1::3", bytes(range(1, 21)))
        assert "2001:db8:1::3" not in keys
        bu = kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=1, lifetime=8)
        assert cn.verify(bu).verdict == kb.Verdict.ACCEPTED  # the slots it already has are sound
