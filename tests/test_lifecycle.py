"""Flush policy, keys near their rekey limit, closing at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types

import pytest

from kbmfast._lifecycle import Durability

HOME, AWAY, CN = "2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3"
KEY = bytes(range(30, 50))


def bu(kb: types.ModuleType, seq: int) -> bytes:
    return kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=seq, lifetime=60)  # type: ignore[no-any-return]


@pytest.mark.parametrize("bad", ["sometimes", 0, -5, 1.5, True, 10**9])
def test_sync_argument_checked(kb: types.ModuleType, bad: object) -> None:
    with pytest.raises(ValueError, match="sync"):
        kb.Verifier(kb.KeyTable(), sync=bad)


@pytest.mark.parametrize("sync", ["always", "close", 5])
def test_sync_policies_keep_state(kb: types.ModuleType, tmp_path: os.PathLike[str], sync: object) -> None:
    path = os.path.join(tmp_path, "s")
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with kb.Verifier(keys, state=path, sync=sync) as cn:
        assert cn.verify(bu(kb, 9)).verdict == kb.Verdict.ACCEPTED
        cn.flush()
        with kb.Verifier(keys, state=path) as other:  # another reader sees it at once
            assert other.last_sequence(HOME) == 9


def test_durability_always_flushes_every_call() -> None:
    calls: list[int] = []
    d = Durability("always", lambda: calls.append(1))
    d.changed()
    d.changed()
    assert len(calls) == 2


def test_durability_interval_flushes_in_background() -> None:
    flushed = threading.Event()
    d = Durability(20, flushed.set)
    assert not flushed.is_set()
    d.changed()
    assert flushed.wait(timeout=10)


def test_durability_close_never_flushes_by_itself() -> None:
    calls: list[int] = []
    d = Durability("close", lambda: calls.append(1))
    d.changed()
    assert not d.due(1e12) and calls == []


def test_keys_near_limit(kb: types.ModuleType) -> None:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    keys.add_kbm("2001:db8:1::2", bytes(20))
    with kb.Verifier(keys, rekey_limit=100) as cn:
        assert cn.keys_near_limit() == []
        assert cn.verify(bu(kb, 1)).verdict == kb.Verdict.ACCEPTED
        assert cn.verify(bu(kb, 90)).verdict == kb.Verdict.ACCEPTED
        assert cn.keys_near_limit() == []  # advance 89 < 90
        assert cn.verify(bu(kb, 91)).verdict == kb.Verdict.ACCEPTED
        assert [str(a) for a in cn.keys_near_limit()] == [HOME]
        assert [str(a) for a in cn.keys_near_limit(0.95)] == []
        keys.add_kbm(HOME, bytes(range(1, 21)))  # rekey: a fresh sequence space
        assert cn.keys_near_limit() == []
        with pytest.raises(ValueError, match="fraction"):
            cn.keys_near_limit(0)


def test_open_verifiers_are_closed_at_exit(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    """A process that exits without close() still leaves its acceptances flushed and readable."""
    path = os.path.join(tmp_path, "s")
    code = (
        f"import {kb.__name__} as kb\n"
        "keys = kb.KeyTable(); keys.add_kbm(%r, %r)\n"
        "cn = kb.Verifier(keys, state=%r, sync='close')\n"
        "p = kb.build_binding_update(%r, home=%r, care_of=%r, correspondent=%r, sequence=77, lifetime=8)\n"
        "assert cn.verify(p).verdict == 0\n"
    ) % (HOME, KEY, path, KEY, HOME, AWAY, CN)
    subprocess.run([sys.executable, "-P", "-c", code], check=True, capture_output=True)
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    with kb.Verifier(keys, state=path) as cn:
        assert cn.last_sequence(HOME) == 77


_FORK_FLUSH = """
import os, select, sys
import {module} as kb
home, away, cn_addr, key, parent_state, child_state = {args!r}
keys = kb.KeyTable(); keys.add_kbm(home, key)
parent = kb.Verifier(keys, state=parent_state, sync=5)  # the parent's flusher thread runs
flushed_r, flushed_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        child_keys = kb.KeyTable(); child_keys.add_kbm(home, key)
        cn = kb.Verifier(child_keys, state=child_state, sync=5)
        durability = cn._durability
        real = durability._flush
        def flush():
            real()
            os.write(flushed_w, b"F")
        durability._flush = flush
        packet = kb.build_binding_update(key, home=home, care_of=away, correspondent=cn_addr, sequence=41, lifetime=8)
        assert cn.verify(packet).verdict == kb.Verdict.ACCEPTED
        os.read(go_r, 1)  # stays alive, never closing the verifier, until the parent has looked
    finally:
        os._exit(0)
ready, _, _ = select.select([flushed_r], [], [], 30)  # a guard against hanging, not a timing
try:
    if not ready:
        sys.exit("the child's verifier never flushed")
    with kb.Verifier(kb.KeyTable(), state=child_state) as reader:
        last = reader.last_sequence(home)
    print(last)
finally:
    os.write(go_w, b"x")
    os.waitpid(pid, 0)
    parent.close()
"""


def test_interval_sync_flushes_in_a_forked_child(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    """Issue 9 item 8: the flusher thread does not survive fork(); the child gets its own."""
    args = (HOME, AWAY, CN, KEY, os.path.join(tmp_path, "parent"), os.path.join(tmp_path, "child"))
    code = _FORK_FLUSH.format(module=kb.__name__, args=args)
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1:] == ["41"]


def test_flusher_survives_members_added_while_it_runs() -> None:
    """Durabilities registered from several threads while the flusher copies its member set
    (WeakSet: "Set changed size during iteration") must not kill the flusher thread."""
    from kbmfast._lifecycle import _Flusher

    flushed = threading.Event()
    keep = Durability(1, flushed.set)  # flushed by the thread once the churn is over
    stop = time.monotonic() + 1.5

    def churn() -> None:
        while time.monotonic() < stop:
            for _ in range(50):
                Durability(1, lambda: None)  # dropped at once: added, then collected

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _Flusher.instance().thread.is_alive()
    keep.changed()
    assert flushed.wait(5), "the flusher no longer flushes"
