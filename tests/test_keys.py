"""Key tables and key files: one key per peer, no key byte in any output, private files only."""

from __future__ import annotations

import logging
import os
import types

import pytest
from vectors import CARE_OF_NONCE, HOME, HOME_NONCE, KCN

KEY = bytes(range(100, 120))


def test_add_and_remove(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.add_kcn("2001:db8::2", KCN, HOME_NONCE, CARE_OF_NONCE)
    assert HOME in keys and "2001:db8::2" in keys and len(keys) == 2
    assert "2001:db8::3" not in keys and "junk" not in keys
    assert {str(h) for h in keys} == {HOME, "2001:db8::2"}
    keys.remove(HOME)
    assert HOME not in keys and len(keys) == 1
    with pytest.raises(KeyError):
        keys.remove(HOME)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda k: k.add_kbm(HOME, bytes(19)), ValueError, "20 bytes"),
        (lambda k: k.add_kbm(HOME, "00" * 20), TypeError, "bytes-like"),
        (lambda k: k.add_kbm("not an address", KEY), ValueError, "home"),
        (lambda k: k.add_kbm(12, KEY), TypeError, "home"),
        (lambda k: k.add_kcn(HOME, bytes(19), b"n", b"n"), ValueError, "at least 20"),
        (lambda k: k.add_kcn(HOME, KCN, b"", b"n"), ValueError, "home_nonce"),
        (lambda k: k.add_kcn(HOME, KCN, b"n", bytes(65)), ValueError, "care_of_nonce"),
        (lambda k: k.add_kbm(HOME, KEY, epoch=70000), ValueError, "epoch"),
    ],
)
def test_bad_keys(kb: types.ModuleType, call: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call(kb.KeyTable())  # type: ignore[operator]


def test_one_key_per_peer(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with pytest.raises(ValueError, match="another peer") as err:
        keys.add_kbm("2001:db8::2", KEY)
    assert KEY.hex() not in str(err.value)
    keys.add_kcn("2001:db8::3", KCN, HOME_NONCE, CARE_OF_NONCE)
    with pytest.raises(ValueError, match="another peer"):
        keys.add_kcn("2001:db8::4", KCN, b"other", b"nonces")
    keys.add_kbm(HOME, KEY)  # the same peer again: fine, not a rekey
    assert keys.epoch(HOME) == 0
    keys.add_kbm(HOME, bytes(20))  # a rekey bumps the epoch
    assert keys.epoch(HOME) == 1
    keys.add_kbm("2001:db8::2", KEY)  # the old key is free again


def test_no_key_bytes_anywhere(kb: types.ModuleType, tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.add_kcn("2001:db8::2", KCN, HOME_NONCE, CARE_OF_NONCE)
    texts = [repr(keys), str(keys), repr(keys.peers()), str(keys.peers())]
    with kb.Verifier(keys, state=os.path.join(tmp_path, "s")) as cn:
        texts.append(repr(cn))
    for secret in (KEY, KCN):
        for text in [*texts, caplog.text]:
            assert secret.hex() not in text and repr(secret) not in text
    with open(os.path.join(tmp_path, "s"), "rb") as f:
        state = f.read()
    assert KEY not in state and KCN not in state


def test_key_file_round_trip(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.add_kcn("2001:db8::2", KCN, HOME_NONCE, CARE_OF_NONCE, epoch=7)
    path = os.path.join(tmp_path, "keys.toml")
    keys.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = kb.KeyTable.load(path)
    assert set(loaded) == set(keys)
    assert loaded.epoch("2001:db8::2") == 7
    bu = kb.build_binding_update(KEY, home=HOME, care_of="2001:db8:5::5", correspondent="2001:db8::9", sequence=1, lifetime=8)
    with kb.Verifier(loaded) as cn:
        assert cn.verify(bu).verdict == kb.Verdict.ACCEPTED


def test_key_file_must_be_private(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.toml")
    kb.KeyTable().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(kb.KeyFileError, match="chmod 600") as err:
        kb.KeyTable.load(path)
    assert path in str(err.value)
    os.chmod(path, 0o600)
    assert len(kb.KeyTable.load(path)) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[peer]]\nhome = '2001:db8::1'\nkbm = 'zz" + KEY.hex() + "'\n", "not valid hex"),
        ("[[peer]]\nhome = '2001:db8::1'\nkbm = '" + KEY.hex()[:-2] + "'\n", "20 bytes"),
        ("[[peer]]\nhome = '2001:db8::1'\n", "needs either"),
        ("[[peer]]\nhome = 'nope'\nkbm = '" + KEY.hex() + "'\n", "home"),
        ("[[peer]]\nhome = '2001:db8::1'\nkbm = '" + KEY.hex() + "'\nextra = 1\n", "unexpected fields"),
        ("version = 2\n", "version"),
        ("peer = 'x'\n", "array of tables"),
        ("[[peer]\nkbm = '" + KEY.hex() + "'\n", "not valid TOML"),
    ],
)
def test_key_file_errors(kb: types.ModuleType, tmp_path: os.PathLike[str], content: str, message: str) -> None:
    path = os.path.join(tmp_path, "keys.toml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    with pytest.raises(kb.KeyFileError, match=message) as err:
        kb.KeyTable.load(path)
    assert KEY.hex()[:10] not in str(err.value)
    assert path in str(err.value)


def test_missing_key_file(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(kb.KeyFileError, match="cannot open"):
        kb.KeyTable.load(os.path.join(tmp_path, "absent.toml"))
