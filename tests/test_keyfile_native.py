"""Issue 14 item 4: the C reader of the key file's simple form (csrc/keyfile.c) and the Python
loader accept and refuse exactly the same files, with the same tables and the same messages."""

from __future__ import annotations

import ipaddress
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kbmfast
import kbmfast.reference
from kbmfast._keys import KIND_KBM, KeyTable

_HOMES = [str(ipaddress.IPv6Address("2001:db8:1::") + i) for i in range(1, 6)] + ["2001:DB8::7", "fe80::1", "::ffff:1.2.3.4"]


@st.composite
def key_files(draw: st.DrawFn) -> tuple[str, bool]:
    """A key file as save() writes it, then perhaps mutated (lines, bytes, fields)."""
    table = KeyTable()
    for i, home in enumerate(draw(st.lists(st.sampled_from(_HOMES[:6]), max_size=5, unique=True))):
        epoch = draw(st.none() | st.integers(0, 0xFFFF))
        if draw(st.booleans()):
            table.add_kbm(home, bytes([i]) + draw(st.binary(min_size=19, max_size=19)), epoch=epoch)  # unique keys
        else:
            table.add_kcn(
                home,
                bytes([i]) + draw(st.binary(min_size=19, max_size=40)),
                draw(st.binary(min_size=1, max_size=64)),
                draw(st.binary(min_size=1, max_size=64)),
                epoch=epoch,
            )
    lines = table.to_toml().split("\n")
    mutations = draw(st.integers(0, 3))
    for _ in range(mutations):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        what = draw(st.sampled_from(["drop", "repeat", "swap", "byte", "replace", "insert"]))
        if what == "drop":
            del lines[i]
        elif what == "repeat":
            lines.insert(i, lines[i])
        elif what == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        elif what == "byte" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            c = draw(st.sampled_from(list('0aAfFgG:." =#[]\t\r\x00é9')))
            lines[i] = lines[i][:j] + c + lines[i][j + 1 :]
        elif what == "replace":
            lines[i] = draw(
                st.sampled_from(
                    [
                        "version = 2", "version = 1", "epoch = 65536", "epoch = 007", "epoch = 1", 'kbm = "00"',
                        'home = "' + draw(st.sampled_from(_HOMES)) + '"', 'kbm = "' + "ab" * 20 + '"', "[peer]",
                        'home_nonce = "01"', 'care_of_nonce = "02 03"', 'kcn = "' + "0f" * 20 + '"', "[[peer]]", "",
                    ]
                )
            )  # fmt: skip
        elif what == "insert":
            lines.insert(i, draw(st.sampled_from(["[[peer]]", "# note", "home = 1", "version = 1", "x = 1"])))
    end = draw(st.sampled_from(["", "\n", "\r\n"]))
    return "\n".join(lines) + end, mutations == 0 and end != "\r\n"


def _outcome(path: str, native: bool) -> tuple[str, object, bool]:
    try:
        table = KeyTable._load(path, native=native)
    except kbmfast.KeyFileError as e:
        return "refused", str(e), False
    took = table.packed() is not None
    peers = [(p.home, p.kind, bytes(p.key), p.home_nonce, p.care_of_nonce, p.epoch) for p in table.peers()]
    return "accepted", peers, took


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=key_files())
def test_native_reader_matches_python(case: tuple[str, bool]) -> None:
    text, as_saved = case
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cn.keys")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        native, python = _outcome(path, True), _outcome(path, False)
        assert native[:2] == python[:2]
        assert not python[2]
        if as_saved:  # a file as save() writes it is read in C
            assert native[2]


def _write(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_saved_file_takes_the_native_path(tmp_path: os.PathLike[str]) -> None:
    table = KeyTable()
    table.add_kbm("2001:db8:1::1", bytes(range(20)), epoch=7)
    table.add_kcn("2001:db8:1::2", bytes(range(1, 33)), b"\x01\x02", b"\x03", epoch=None)
    path = _write(os.path.join(tmp_path, "cn.keys"), table.to_toml())
    loaded = KeyTable.load(path)
    packed = loaded.packed()
    assert packed is not None and len(loaded) == 2
    assert repr(loaded) == "<KeyTable: 2 peers>"
    assert loaded.epoch("2001:db8:1::1") == 7  # unpacks
    assert loaded.packed() is None and not any(packed.material)  # the packed keys are wiped
    assert [(p.kind, bytes(p.key)) for p in loaded.peers()] == [(KIND_KBM, bytes(range(20))), (2, bytes(range(1, 33)))]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('home = "2001:db8:1::1"\nkbm = "' + "11" * 20 + '"\n[[peer]]\nhome = "2001:db8:1::1"\nkbm = "' + "22" * 20 + '"\n',
         r"peer 2001:db8:1::1 is listed twice \(entries 1 and 2\)"),
        ('home = "2001:db8:1::1"\nkbm = "' + "11" * 20 + '"\n[[peer]]\nhome = "2001:db8:1::2"\nkbm = "' + "11" * 20 + '"\n',
         r"peer #2: home 2001:db8:1::2: this key is already configured for another peer"),
        ('home = "2001:db8:1::1"\nkbm = "' + "11" * 19 + '"\n', r"peer #1: kbm: must be 20 bytes, not 19"),
        ('home = "2001:db8:1::1"\nkbm = "' + "1g" * 20 + '"\n', r"peer #1: 'kbm' is not valid hex"),
        ('home = "2001:db8:1::1"\nkcn = "' + "11" * 20 + '"\nhome_nonce = "01"\n',
         r"peer #1: 'care_of_nonce' must be a hex string"),
        ('home = "2001:db8:1::1"\nkbm = "' + "11" * 20 + '"\nepoch = 65536\n', r"peer #1: epoch: must be an int in 0..65535"),
    ],
)  # fmt: skip
def test_refusals_name_the_entry(tmp_path: os.PathLike[str], body: str, message: str) -> None:
    path = _write(os.path.join(tmp_path, "cn.keys"), "version = 1\n\n[[peer]]\n" + body)
    for native in (True, False):
        with pytest.raises(kbmfast.KeyFileError, match=message):
            KeyTable._load(path, native=native)


def test_packed_table_serves_both_backends(tmp_path: os.PathLike[str]) -> None:
    kbm = bytes(range(20))
    table = KeyTable()
    table.add_kbm("2001:db8:1::1", kbm)
    path = _write(os.path.join(tmp_path, "cn.keys"), table.to_toml())
    cn = "2001:db8::1"
    packet = kbmfast.build_binding_update(
        kbm, home="2001:db8:1::1", care_of="2001:db8:2::1", correspondent=cn, sequence=5, lifetime=64
    )
    for backend in (kbmfast, kbmfast.reference):
        keys = KeyTable.load(path)
        with backend.Verifier(keys) as v:
            assert v.verify(packet).verdict is kbmfast.Verdict.ACCEPTED
        keys.add_kbm("2001:db8:1::3", bytes(range(1, 21)))  # a change after a packed load
        assert len(keys) == 2


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.sampled_from([0, 0, 0, 1, 0xABC, 0xFFFF, 0x10]), min_size=8, max_size=8))
def test_canonical_homes_take_the_native_path(words: list[int]) -> None:
    """csrc/keyfile.c's own inet_ntop (RFC 5952) agrees with Python's text of every address it
    reads: a saved file with any such home is read in C, to the same bytes."""
    address = ipaddress.IPv6Address(sum(w << (16 * (7 - i)) for i, w in enumerate(words)))
    text = f'[[peer]]\nhome = "{address}"\nkbm = "{"11" * 20}"\n'
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(os.path.join(tmp, "cn.keys"), text)
        native = KeyTable.load(path)
        took = native.packed() is not None
        assert list(native) == [address]
        assert took == (address.packed[:10] != bytes(10))  # the first 80 bits zero: Python's way
