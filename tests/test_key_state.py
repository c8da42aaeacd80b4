"""The replay guarantee tied to the key itself (issue 9 item 1): the state file records a salted
fingerprint of each peer's key, so no key-table bookkeeping (epochs, remove + re-add, key files
without an ``epoch`` line, workers whose tables differ) can start a used key's count over.

The reproductions of the issue come first, then a model-based test (hypothesis stateful testing)
on both backends: random add/rekey/remove/re-add, key-file reloads, restarts, two verifiers on one
file (C) and captured-and-replayed Binding Updates, against a model that predicts every verdict
and every refusal. Its invariant: no (peer, key, sequence) is accepted twice, and nothing is
accepted under a key after another key of that peer has been accepted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import kbmfast
import kbmfast.reference
from kbmfast import Verdict

HOME, CARE_OF, CN = "2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3"
OLD, KEY = bytes(range(20)), bytes(range(100, 120))


def bu(kb: types.ModuleType, key: bytes, sequence: int, home: str = HOME) -> bytes:
    return bytes(kb.build_binding_update(key, home=home, care_of=CARE_OF, correspondent=CN, sequence=sequence, lifetime=8))


def verdicts(cn: Any, kb: types.ModuleType, key: bytes, *sequences: int) -> list[str]:
    return [cn.verify(bu(kb, key, s)).verdict.name for s in sequences]


def rekeyed_table() -> kbmfast.KeyTable:
    """HOME rekeyed online from OLD to KEY: the table says epoch 1."""
    keys = kbmfast.KeyTable()
    keys.add_kbm(HOME, OLD)
    keys.add_kbm(HOME, KEY)
    assert keys.epoch(HOME) == 1
    return keys


def without_epoch(keys: kbmfast.KeyTable, path: str) -> None:
    """Save ``keys`` the way the README writes a key file by hand: no ``epoch`` lines."""
    keys.save(path)
    with open(path) as f:
        text = f.read()
    text = re.sub(r"(?m)^epoch = \d+\n", "", text)
    assert "epoch" not in text
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("state", [False, True], ids=["memory", "file"])
def test_remove_and_readd_the_same_key_keeps_its_count(kb: types.ModuleType, tmp_path: Any, state: bool) -> None:
    """Issue 9 item 1, first reproduction: remove(H) + add_kbm(H, K) put the epoch back to 0 and
    the count with it; seq 65535 and the replay of seq 0 were ACCEPTED."""
    keys = rekeyed_table()
    with kb.Verifier(keys, state=os.path.join(tmp_path, "s") if state else None) as cn:
        assert verdicts(cn, kb, KEY, 0, 32767, 32768, 32769) == ["ACCEPTED"] * 3 + ["KEY_EXHAUSTED"]
        keys.remove(HOME)
        with pytest.raises(ValueError, match="home 2001:db8:1::1: this key is used up"):
            keys.add_kbm(HOME, KEY)
        assert HOME not in keys
        assert "ACCEPTED" not in verdicts(cn, kb, KEY, 65535, 0)
        keys.add_kbm(HOME, bytes(range(50, 70)))  # a new key is the way on
        assert cn.verify(bu(kb, KEY, 0)).verdict == Verdict.BAD_AUTHENTICATOR


def test_readd_before_exhaustion_goes_on_counting(kb: types.ModuleType) -> None:
    keys = rekeyed_table()
    with kb.Verifier(keys) as cn:
        assert verdicts(cn, kb, KEY, 0, 32767) == ["ACCEPTED"] * 2
        keys.remove(HOME)
        keys.add_kbm(HOME, KEY, epoch=0)
        assert verdicts(cn, kb, KEY, 65535, 32768, 0, 65535) == [
            "SEQUENCE_OUT_OF_WINDOW",
            "ACCEPTED",
            "SEQUENCE_OUT_OF_WINDOW",  # the captured seq 0 stays old
            "KEY_EXHAUSTED",
        ]


def test_key_file_without_epoch_and_a_restart_keep_the_count(kb: types.ModuleType, tmp_path: Any) -> None:
    """Issue 9 item 1, second reproduction: the rekeyed key written to a key file without an
    ``epoch`` line, the verifier restarted: the replay of seq 0 was ACCEPTED."""
    state, keyfile = os.path.join(tmp_path, "s"), os.path.join(tmp_path, "k.toml")
    keys = rekeyed_table()
    with kb.Verifier(keys, state=state) as cn:
        assert verdicts(cn, kb, KEY, 0, 32767) == ["ACCEPTED"] * 2
    without_epoch(keys, keyfile)
    with kb.Verifier(kb.KeyTable.load(keyfile), state=state) as cn:
        assert verdicts(cn, kb, KEY, 65535, 0, 32768, 0, 32769) == [
            "SEQUENCE_OUT_OF_WINDOW",
            "SEQUENCE_OUT_OF_WINDOW",
            "ACCEPTED",
            "SEQUENCE_OUT_OF_WINDOW",
            "KEY_EXHAUSTED",
        ]
    with pytest.raises(ValueError, match="home 2001:db8:1::1: this key is used up"):
        kb.Verifier(kb.KeyTable.load(keyfile), state=state)
    old = kbmfast.KeyTable()
    old.add_kbm(HOME, OLD)
    old.save(keyfile)  # OLD was never used here: it may come back, and its count is its own
    with kb.Verifier(kb.KeyTable.load(keyfile), state=state) as cn:
        assert verdicts(cn, kb, OLD, 32770, 32769) == ["ACCEPTED", "SEQUENCE_OUT_OF_WINDOW"]
    with pytest.raises(ValueError, match="home 2001:db8:1::1: this is an earlier key"):
        kb.Verifier(rekeyed_table(), state=state)


WORKER = r"""
import sys
import kbmfast
keys = kbmfast.KeyTable.load(sys.argv[1])
with kbmfast.Verifier(keys, state=sys.argv[2]) as cn:
    for line in sys.stdin:
        print("verdict", cn.verify(bytes.fromhex(line)).verdict.name, flush=True)
"""


def test_two_workers_with_different_epochs_share_one_count(tmp_path: Any) -> None:
    """Issue 9 item 1, third reproduction: one worker rekeyed online (epoch 1), another process
    loading the same key from a file (epoch 0): each acceptance reset the other's count and the
    replay of seq 0 was ACCEPTED."""
    state, keyfile = os.path.join(tmp_path, "s"), os.path.join(tmp_path, "k.toml")
    keys = rekeyed_table()
    without_epoch(keys, keyfile)
    assert kbmfast.KeyTable.load(keyfile).epoch(HOME) == 0
    with kbmfast.Verifier(keys, state=state) as here:
        worker = subprocess.Popen(
            [sys.executable, "-P", "-c", WORKER, keyfile, state],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdin is not None and worker.stdout is not None

        def there(sequence: int) -> str:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(bu(kbmfast, KEY, sequence).hex() + "\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
            while line and not line.startswith("verdict "):  # an editable install's rebuild notes
                line = worker.stdout.readline()
            return line.split()[-1] if line else "worker ended"

        try:
            assert verdicts(here, kbmfast, KEY, 0) == ["ACCEPTED"]
            assert there(32767) == "ACCEPTED"
            assert verdicts(here, kbmfast, KEY, 32768) == ["ACCEPTED"]
            assert there(0) == "SEQUENCE_OUT_OF_WINDOW"
            assert there(32769) == "KEY_EXHAUSTED"
            assert verdicts(here, kbmfast, KEY, 65535, 0) == ["KEY_EXHAUSTED", "SEQUENCE_OUT_OF_WINDOW"]
        finally:
            worker.stdin.close()
            rc = worker.wait(timeout=60)
            worker.stdout.close()
            assert rc == 0


def test_a_worker_with_an_older_key_is_refused_once_the_new_one_is_used(tmp_path: Any) -> None:
    """Two verifiers on one file whose tables disagree: the first acceptance under the new key
    moves the old one into the slot's history, and the old one is refused from then on."""
    state = os.path.join(tmp_path, "s")
    old_table, new_table = kbmfast.KeyTable(), kbmfast.KeyTable()
    old_table.add_kbm(HOME, OLD)
    new_table.add_kbm(HOME, KEY)
    with kbmfast.Verifier(old_table, state=state) as lagging, kbmfast.Verifier(new_table, state=state) as current:
        assert verdicts(lagging, kbmfast, OLD, 10) == ["ACCEPTED"]
        assert verdicts(current, kbmfast, KEY, 11) == ["ACCEPTED"]
        res = lagging.verify(bu(kbmfast, OLD, 12))
        assert res.verdict == Verdict.KEY_EXHAUSTED and res.ba_status == 129
        assert lagging.keys_near_limit() == [res.home]  # an earlier key counts as used up
        assert verdicts(current, kbmfast, KEY, 12) == ["ACCEPTED"]


def test_mobile_node_refuses_an_earlier_key(kb: types.ModuleType, tmp_path: Any) -> None:
    state = os.path.join(tmp_path, "mn")
    mn = kb.BindingUpdateList(HOME, state=state)
    mn.add(CN, OLD)
    mn.binding_update(CN, care_of=CARE_OF, lifetime=8)
    mn.add(CN, KEY)
    with pytest.raises(ValueError, match="earlier Kbm"):
        mn.add(CN, OLD)
    mn.close()


def test_history_bound(kb: types.ModuleType) -> None:
    """A slot remembers 9 earlier keys: the 10th key back may come again (documented bound)."""
    keys = kbmfast.KeyTable()
    with kb.Verifier(keys) as cn:
        for n in range(11):
            keys.add_kbm(HOME, bytes([n]) * 20)
            assert verdicts(cn, kb, bytes([n]) * 20, 100 + n) == ["ACCEPTED"]
        for n in range(1, 10):
            with pytest.raises(ValueError, match="this is an earlier key"):
                keys.add_kbm(HOME, bytes([n]) * 20)
        keys.add_kbm(HOME, bytes(20))  # key 0 has left the history
        assert verdicts(cn, kb, bytes(20), 100, 111) == ["SEQUENCE_OUT_OF_WINDOW", "ACCEPTED"]


# ---------------------------------------------------------------------------------------------
# The model

LIMIT = 6  # a small rekey_limit, so exhaustion is reachable in a few steps
KEYS = 10  # keys per peer: the current one and 9 earlier ones fill a slot's history exactly
PEERS = ("2001:db8:10::1", "2001:db8:20::2")  # a draft Kbm peer and an RFC 4449 Kcn peer
STEPS = st.sampled_from([1, 1, 1, 2, 3, 5, 7, 32767, 32768, 40000])


def key_material(peer: int, n: int) -> tuple[bytes, bytes, bytes]:
    """Key ``n`` of a peer: a Kbm, or a Kcn with nonces (odd n share the Kcn of n - 1 and differ
    only in the care-of nonce: still another key)."""

    def h(label: str, size: int) -> bytes:
        return hashlib.sha256(f"{peer}/{label}".encode()).digest()[:size]

    if peer == 0:
        return h(f"kbm{n}", 20), b"", b""
    return h(f"kcn{n - n % 2}", 24), h("hn", 8), h(f"cn{n}", 8)


class KeyStateMachine(RuleBasedStateMachine):
    """Workers (verifiers with their own key tables) on one state file, a mobile node per peer,
    and the model of the slot: the key it counts for, its advance, its last sequence, and the keys
    it has left."""

    kb: types.ModuleType = kbmfast
    workers = 1

    @initialize()
    def setup(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kbm-model-")
        self.state = os.path.join(self.dir, "state")
        self.keyfile = os.path.join(self.dir, "keys.toml")
        self.keys_made = [1, 1]
        self.tables = []
        self.verifiers: list[Any] = []
        for _ in range(self.workers):
            table = kbmfast.KeyTable()
            for p in range(2):
                self._add(table, p, 0)
            self.tables.append(table)
            self.verifiers.append(self.kb.Verifier(table, state=self.state, rekey_limit=LIMIT, sync="close"))
        self.configured: list[list[int | None]] = [[0, 0] for _ in range(self.workers)]
        self.mn_seq = [100, 200]
        # the slot: (key it counts for, advance, last sequence) and the keys it has left
        self.slot_key: list[int | None] = [None, None]
        self.advance = [0, 0]
        self.last: list[int | None] = [None, None]
        self.retired: list[set[int]] = [set(), set()]
        self.accepted: set[tuple[int, int, int]] = set()
        self.captured: list[tuple[int, int, int, bytes]] = []
        self.violations: list[str] = []

    def teardown(self) -> None:
        for v in getattr(self, "verifiers", []):
            if v is not None:
                v.close()
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def _add(self, table: kbmfast.KeyTable, peer: int, n: int, epoch: int | None = None) -> None:
        key, hn, cn = key_material(peer, n)
        if peer == 0:
            table.add_kbm(PEERS[peer], key, epoch=epoch)
        else:
            table.add_kcn(PEERS[peer], key, hn, cn, epoch=epoch)

    def _refused(self, peer: int, n: int) -> bool:
        """Whether installing key n for peer must be refused: an earlier key, or the slot's key used up."""
        used_up = self.slot_key[peer] == n and self.last[peer] is not None and self.advance[peer] >= LIMIT
        return n in self.retired[peer] or used_up

    def _packet(self, peer: int, n: int, seq: int) -> bytes:
        key, hn, cn = key_material(peer, n)
        kbm = key if peer == 0 else kbmfast.derive_kbm(key, hn, cn, home=PEERS[peer], care_of=CARE_OF)
        return bytes(
            self.kb.build_binding_update(kbm, home=PEERS[peer], care_of=CARE_OF, correspondent=CN, sequence=seq, lifetime=8)
        )

    def _expect(self, w: int, peer: int, n: int, seq: int) -> Verdict:
        """The verdict the model predicts (docs/state-format.md's rules, in csrc/verify.c's order)."""
        if self.configured[w][peer] is None:
            return Verdict.NOT_CONFIGURED
        if self.configured[w][peer] != n:
            return Verdict.BAD_AUTHENTICATOR
        last = self.last[peer]
        step = 0
        if last is not None:
            step = (seq - last) % 65536
            if not 1 <= step <= 32767:
                return Verdict.SEQUENCE_OUT_OF_WINDOW
        advance = self.advance[peer]
        if self.slot_key[peer] not in (None, n):
            if n in self.retired[peer]:
                return Verdict.KEY_EXHAUSTED
            advance = 0
        if advance + step > LIMIT:
            return Verdict.KEY_EXHAUSTED
        return Verdict.ACCEPTED

    def _verify(self, w: int, peer: int, n: int, seq: int, packet: bytes) -> None:
        expected = self._expect(w, peer, n, seq)
        got = self.verifiers[w].verify(packet).verdict
        assert got == expected, (w, peer, n, seq, got, expected)
        if got != Verdict.ACCEPTED:
            return
        if (peer, n, seq) in self.accepted:
            self.violations.append(f"accepted twice: peer {peer} key {n} seq {seq}")
        if n in self.retired[peer]:
            self.violations.append(f"accepted under an earlier key: peer {peer} key {n}")
        self.accepted.add((peer, n, seq))
        last = self.last[peer]
        step = 0 if last is None else (seq - last) % 65536
        if self.slot_key[peer] not in (None, n):
            self.retired[peer].add(self.slot_key[peer])  # type: ignore[arg-type]
            self.advance[peer] = step
        else:
            self.advance[peer] += step
        self.slot_key[peer] = n
        self.last[peer] = seq

    def _start(self, w: int, table: kbmfast.KeyTable) -> None:
        """A verifier for worker w on ``table``; peers whose keys must be refused are refused,
        then removed from the table (what an operator does) and the start tried again."""
        must = [p for p in range(2) if self.configured[w][p] is not None and self._refused(p, self.configured[w][p])]
        if must:
            named = "|".join(PEERS[p] for p in must)
            with pytest.raises(ValueError, match=f"home ({named}): this (key is used up|is an earlier key)"):
                self.kb.Verifier(table, state=self.state, rekey_limit=LIMIT, sync="close")
        for p in must:
            table.remove(PEERS[p])
            self.configured[w][p] = None
        self.tables[w] = table
        self.verifiers[w] = self.kb.Verifier(table, state=self.state, rekey_limit=LIMIT, sync="close")

    # -- rules ----------------------------------------------------------------------------------

    @rule(w=st.integers(0, 1), peer=st.integers(0, 1), step=STEPS, newest=st.booleans())
    def send(self, w: int, peer: int, step: int, newest: bool) -> None:
        """The mobile node's next Binding Update, under the worker's key or its newest one."""
        w %= self.workers
        n = self.keys_made[peer] - 1 if newest or self.configured[w][peer] is None else self.configured[w][peer]
        assert n is not None
        seq = self.mn_seq[peer] = (self.mn_seq[peer] + step) % 65536
        packet = self._packet(peer, n, seq)
        self.captured.append((peer, n, seq, packet))
        self._verify(w, peer, n, seq, packet)

    @precondition(lambda self: self.captured)
    @rule(w=st.integers(0, 1), pick=st.integers(0, 10**6))
    def replay(self, w: int, pick: int) -> None:
        """An attacker replays any Binding Update captured so far."""
        peer, n, seq, packet = self.captured[pick % len(self.captured)]
        self._verify(w % self.workers, peer, n, seq, packet)

    @rule(w=st.integers(0, 1), peer=st.integers(0, 1), everywhere=st.booleans())
    def rekey(self, w: int, peer: int, everywhere: bool) -> None:
        """A new key, in one worker's table or in all of them (at most KEYS per peer, so the
        slot's history of earlier keys never overflows: test_history_bound covers that)."""
        if self.keys_made[peer] >= KEYS:
            return
        n = self.keys_made[peer]
        self.keys_made[peer] += 1
        for i in range(self.workers) if everywhere else [w % self.workers]:
            self._add(self.tables[i], peer, n)  # a key never seen is never refused
            self.configured[i][peer] = n

    @rule(w=st.integers(0, 1), peer=st.integers(0, 1))
    def rekey_one_worker_and_use_it(self, w: int, peer: int) -> None:
        """One worker gets a new key and accepts under it; the other still has the old one."""
        self.rekey(w, peer, everywhere=False)
        self.send(w, peer, 1, newest=False)

    @rule(w=st.integers(0, 1), peer=st.integers(0, 1), pick=st.integers(0, 100), epoch=st.none() | st.integers(0, 3))
    def readd(self, w: int, peer: int, pick: int, epoch: int | None) -> None:
        """Put back any key the peer ever had (with any epoch, or none): refused exactly when the
        slot has left it or used it up; otherwise its count goes on."""
        w %= self.workers
        n = pick % self.keys_made[peer]
        table = self.tables[w]
        if self._refused(peer, n):
            with pytest.raises(ValueError, match=f"home {PEERS[peer]}: this (key is used up|is an earlier key)"):
                self._add(table, peer, n, epoch)
            assert (PEERS[peer] in table) == (self.configured[w][peer] is not None)  # the table did not change
        else:
            self._add(table, peer, n, epoch)
            self.configured[w][peer] = n

    @precondition(lambda self: any(c is not None for row in self.configured for c in row))
    @rule(w=st.integers(0, 1), peer=st.integers(0, 1))
    def remove(self, w: int, peer: int) -> None:
        w %= self.workers
        if self.configured[w][peer] is not None:
            self.tables[w].remove(PEERS[peer])
            self.configured[w][peer] = None

    @rule(w=st.integers(0, 1), epochs=st.booleans())
    def reload_key_file(self, w: int, epochs: bool) -> None:
        """Save the worker's keys (with or without epoch lines), stop it, start it on the file."""
        w %= self.workers
        self.verifiers[w].close()
        if epochs:
            self.tables[w].save(self.keyfile)
        else:
            without_epoch(self.tables[w], self.keyfile)
        self._start(w, kbmfast.KeyTable.load(self.keyfile))

    @rule(w=st.integers(0, 1))
    def restart(self, w: int) -> None:
        """Stop the worker's verifier and start a new one on the same table and state file."""
        w %= self.workers
        self.verifiers[w].close()
        self._start(w, self.tables[w])

    @invariant()
    def nothing_replayed(self) -> None:
        assert not getattr(self, "violations", []), self.violations


MODEL_SETTINGS = settings(max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class CModel(KeyStateMachine):
    kb = kbmfast
    workers = 2  # two verifiers (each its own mapping and lock) on one file


class ReferenceModel(KeyStateMachine):
    kb = kbmfast.reference
    # The reference is one process per file (no compare-and-swap, docs/state-format.md); two of
    # its verifiers taking turns in one thread, as here, never overlap within an acceptance.
    workers = 2


TestCModel = CModel.TestCase
TestCModel.settings = MODEL_SETTINGS
TestReferenceModel = ReferenceModel.TestCase
TestReferenceModel.settings = MODEL_SETTINGS
