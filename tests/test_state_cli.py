"""kbmfast state show | check | compact, on sound and damaged files."""

from __future__ import annotations

import json
import os
import types

import pytest

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
    assert {"address": HOME, "last_sequence": 4242, "advance": 0, "epoch": 0} in rows
    assert {"address": "2001:db8:1::2", "last_sequence": None, "advance": 0, "epoch": 0} in rows
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
    assert os.path.getsize(path) == 64 + 2 * 32 <= before
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
    assert [str(fmt._show(a)) for a, _ in fmt.read_slots(path)] == [HOME]


def test_salvage(kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(tmp_path, "s")
    good = fmt.pack_word(True, 7, 0, 0).to_bytes(8, "little")
    a, b, c = (bytes(15) + bytes((i,)) for i in (0x21, 0x22, 0x23))
    slots = [a + good + bytes(8), b + (1 << 20).to_bytes(8, "little") + bytes(8), c + good + bytes(8), c + good + bytes(8)]
    with open(path, "wb") as f:
        f.write(fmt.new_header(5) + b"".join(slots))  # the count also overstates
    assert main(["state", "check", path]) == 1
    capsys.readouterr()
    assert main(["state", "compact", "--salvage", path]) == 0
    err = capsys.readouterr().err
    assert "slot 1 is corrupt" in err and "two slots" in err and "header says 5" in err
    assert fmt.read_slots(path) == [(a, int.from_bytes(good, "little"))]
    with kb.Verifier(kb.KeyTable(), state=path) as cn:  # usable again
        assert cn.last_sequence("::21") == 7
