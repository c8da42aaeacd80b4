"""Key tables and key files: one key per peer, no key byte in any output, private files only."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import pytest
from vectors import CARE_OF_NONCE, HOME, HOME_NONCE, KCN

import kbmfast

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


# -- issue 9 item 11: what ssh checks of a private key, on the descriptor it reads -------------


def _private_file(path: str, text: str = "version = 1\n") -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_key_file_owned_by_another_user_is_refused(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user (the suite runs as root in CI)")
    path = _private_file(os.path.join(tmp_path, "keys.toml"))
    os.chown(path, 65534, 65534)  # 0600, but nobody's
    with pytest.raises(kb.KeyFileError, match="owned by uid 65534") as err:
        kb.KeyTable.load(path)
    assert path in str(err.value) and "chown 0" in str(err.value)


_LOAD = "import sys, {module} as kb\ntry:\n    kb.KeyTable.load(sys.argv[1])\nexcept kb.KeyFileError as e:\n    print(e)\n"


def test_fifo_at_the_key_path_does_not_hang(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.toml")
    os.mkfifo(path, 0o600)
    done = subprocess.run(
        [sys.executable, "-P", "-c", _LOAD.format(module=kb.__name__), path], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"key file {path} is a FIFO: a key file must be a regular file" in done.stdout


def test_key_file_symlink_and_directory_are_refused(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    real = _private_file(os.path.join(tmp_path, "real.toml"))
    link = os.path.join(tmp_path, "link.toml")
    os.symlink(real, link)
    with pytest.raises(kb.KeyFileError, match="is a symbolic link") as err:
        kb.KeyTable.load(link)
    assert link in str(err.value)
    directory = os.path.join(tmp_path, "keys.d")
    os.mkdir(directory, 0o700)
    with pytest.raises(kb.KeyFileError, match="is a directory: a key file must be a regular file"):
        kb.KeyTable.load(directory)
    with pytest.raises(kb.KeyFileError, match="is a character device"):
        kb.KeyTable.load("/dev/null")
    assert len(kb.KeyTable.load(real)) == 0


def test_key_file_size_cap(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = _private_file(os.path.join(tmp_path, "huge.toml"))
    os.truncate(path, (256 << 20) + 1)  # sparse: nothing is written
    with pytest.raises(kb.KeyFileError, match=r"268435457 bytes, more than a key file may be \(256 MiB\)") as err:
        kb.KeyTable.load(path)
    assert path in str(err.value)


# -- issue 10 item 3: a peer listed twice --------------------------------------------------------


@pytest.mark.parametrize("quote", ['"', "'"], ids=["save-layout", "tomllib"])
def test_peer_listed_twice_is_refused(kb: types.ModuleType, tmp_path: os.PathLike[str], quote: str) -> None:
    entries = [("2001:db8::1", KEY), ("2001:db8::2", bytes(20)), ("2001:db8::1", bytes(range(20)))]
    text = "".join(f'[[peer]]\nhome = "{home}"\nkbm = {quote}{key.hex()}{quote}\n\n' for home, key in entries)
    path = _private_file(os.path.join(tmp_path, "keys.toml"), text)
    with pytest.raises(kb.KeyFileError, match=r"peer 2001:db8::1 is listed twice \(entries 1 and 3\)") as err:
        kb.KeyTable.load(path)
    assert path in str(err.value) and KEY.hex()[:10] not in str(err.value)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom kbmfast.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-P", "-c", code, *argv], capture_output=True, text=True, timeout=120)


def test_cli_refuses_a_peer_listed_twice_and_warns_about_no_peers(tmp_path: os.PathLike[str]) -> None:
    capture = os.path.join(os.path.dirname(kbmfast.__file__), "samples", "sample.pcap")
    text = f'[[peer]]\nhome = "2001:db8::1"\nkbm = "{KEY.hex()}"\n' * 2
    twice = _private_file(os.path.join(tmp_path, "twice.toml"), text)
    done = _cli("verify", capture, "--keys", twice, "--quiet")
    assert done.returncode == 2
    assert "peer 2001:db8::1 is listed twice (entries 1 and 2)" in done.stderr and "Traceback" not in done.stderr
    empty = _private_file(os.path.join(tmp_path, "empty.toml"), "# no peers yet\n")
    done = _cli("verify", capture, "--keys", empty, "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"key file {empty} lists no peers: every Binding Update will be NOT_CONFIGURED" in done.stderr


# -- issue 9 item 15: a key change is all or nothing across the verifiers sharing a table -------


def test_key_change_refused_by_one_verifier_changes_none(kb: types.ModuleType) -> None:
    class Refusing(kb.Verifier):  # type: ignore[name-defined,misc]
        refuse = False

        def _on_key_change(self, home: bytes, peer: object) -> None:
            if self.refuse:
                raise kb.KbmError("refused")
            super()._on_key_change(home, peer)

    new = bytes(range(1, 21))
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)

    def bu(key: bytes, seq: int) -> bytes:
        return kb.build_binding_update(
            key, home=HOME, care_of="2001:db8:5::5", correspondent="2001:db8::9", sequence=seq, lifetime=8
        )  # type: ignore[no-any-return]

    with kb.Verifier(keys) as first, Refusing(keys) as second:
        second.refuse = True
        with pytest.raises(kb.KbmError, match="refused"):
            keys.add_kbm(HOME, new)  # the first verifier is told before the second refuses
        assert keys.epoch(HOME) == 0
        assert first.verify(bu(new, 1)).verdict == kb.Verdict.BAD_AUTHENTICATOR
        assert first.verify(bu(KEY, 2)).verdict == kb.Verdict.ACCEPTED
        with pytest.raises(kb.KbmError, match="refused"):
            keys.remove(HOME)
        assert HOME in keys
        assert first.verify(bu(KEY, 3)).verdict == kb.Verdict.ACCEPTED
        with pytest.raises(kb.KbmError, match="refused"):
            keys.add_kbm("2001:db8::77", new)  # a new peer: removed again from the first
        assert "2001:db8::77" not in keys
        other = kb.build_binding_update(
            new, home="2001:db8::77", care_of="2001:db8:5::5", correspondent="2001:db8::9", sequence=1, lifetime=8
        )
        assert first.verify(other).verdict == kb.Verdict.NOT_CONFIGURED
        second.refuse = False
        keys.add_kbm(HOME, new)
        assert first.verify(bu(new, 4)).verdict == kb.Verdict.ACCEPTED
        assert second.verify(bu(new, 5)).verdict == kb.Verdict.ACCEPTED


def test_reference_never_uses_a_key_being_overwritten() -> None:
    """The reference verifier copies a peer's key, then checks the peer was not wiped meanwhile
    (a rekey or remove in another thread): it never MACs with a half- or fully-zeroed key."""
    from kbmfast._keys import KeyTable
    from kbmfast.reference.verifier import current_kbm, peer_kbm

    keys = KeyTable()
    keys.add_kbm(HOME, KEY)
    home = keys.peer(next(iter(keys)).packed)
    assert home is not None
    hoa, coa = home.home, bytes(15) + b"\x09"
    keys.add_kbm(HOME, bytes(range(1, 21)))  # the rekey overwrites the old peer's key
    assert home.wiped and peer_kbm(home, hoa, coa, False) is None
    found = current_kbm(keys, hoa, coa, False)
    assert found is not None and bytes(found[1]) == bytes(range(1, 21))
    keys.remove(HOME)
    assert current_kbm(keys, hoa, coa, False) is None


@pytest.mark.parametrize("from_file", [False, True])
def test_key_removed_while_a_verifier_is_built_reaches_it(
    kb: types.ModuleType, tmp_path: os.PathLike[str], from_file: bool
) -> None:
    """A peer removed by another thread while a Verifier reads the table is removed from that
    Verifier too: reading the peers and subscribing to changes are one step under the table's
    lock (before, a removal in between was missed and the removed key kept authorizing)."""
    import threading
    import time

    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    if from_file:  # the C backend's packed key-file path
        path = os.path.join(tmp_path, "k.toml")
        keys.save(path)
        keys = kb.KeyTable.load(path)
    removed = threading.Event()

    def remove() -> None:
        keys.remove(HOME)
        removed.set()

    subscribe = keys.subscribe

    def slow_subscribe(method: object) -> None:  # the window between reading and subscribing
        thread.start()
        time.sleep(0.3)
        subscribe(method)

    thread = threading.Thread(target=remove)
    keys.subscribe = slow_subscribe  # type: ignore[method-assign]
    verifier = kb.Verifier(keys)
    thread.join(10)
    assert removed.is_set()
    bu = kb.build_binding_update(KEY, home=HOME, care_of="2001:db8:5::5", correspondent="2001:db8::9", sequence=1, lifetime=8)
    assert verifier.verify(bu).verdict == kb.Verdict.NOT_CONFIGURED
    verifier.close()
