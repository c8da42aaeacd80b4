"""Concurrency: exactly-once acceptance under threads, and the GIL released while C works."""

from __future__ import annotations

import threading
import types

import kbmfast

CN = "2001:db8:3::300"


def packets_for(kb: types.ModuleType, peers: int, rounds: int) -> tuple[object, list[bytes], list[tuple[int, int]]]:
    keys = kb.KeyTable()
    homes = [f"2001:db8:1::{i + 1:x}" for i in range(peers)]
    kbms = [bytes([i % 251, i // 251 % 251]) + bytes(range(18)) for i in range(peers)]
    for home, kbm in zip(homes, kbms, strict=True):
        keys.add_kbm(home, kbm)
    packets, ids = [], []
    for r in range(rounds):
        for i in range(peers):
            seq = (60000 + r * 3) % 65536  # wraps through 0
            packets.append(
                kb.build_binding_update(
                    kbms[i], home=homes[i], care_of="2001:db8:2::1", correspondent=CN, sequence=seq, lifetime=60
                )
            )
            ids.append((i, seq))
    return keys, packets, ids


def exactly_once(kb: types.ModuleType, peers: int, rounds: int, threads: int = 4, chunk: int = 1000) -> None:
    keys, packets, ids = packets_for(kb, peers, rounds)
    verifier = kb.Verifier(keys)
    accepted: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def run(t: int) -> None:
        start.wait()
        for base in range(0, len(packets), chunk):
            verdicts = verifier.verify_batch(packets[base : base + chunk])
            accepted[t].extend(base + i for i, v in enumerate(verdicts) if v == kb.Verdict.ACCEPTED)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    everything = sorted(i for acc in accepted for i in acc)
    assert everything == list(range(len(packets)))  # every (peer, sequence) once, none twice
    assert len({ids[i] for i in everything}) == len(packets)


def test_threads_accept_exactly_once_c() -> None:
    exactly_once(kbmfast, peers=1000, rounds=100)  # 100k packets, 4 threads


def test_threads_accept_exactly_once_reference() -> None:
    exactly_once(kbmfast.reference, peers=100, rounds=20)


def test_gil_released_during_c_calls() -> None:
    from kbmfast._native_edge import ffi, lib

    flag = ffi.new("int *")
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(lib.kbm_test_wait(flag, 1 << 40)))
    waiter.start()
    flag[0] = 1  # only possible while the waiting C call does not hold the GIL
    waiter.join(timeout=60)
    assert got == [1]


def test_peers_change_while_verifying() -> None:
    """Adding and removing peers under verifying threads: no crash, no torn answer."""
    keys, packets, _ = packets_for(kbmfast, peers=200, rounds=20)
    verifier = kbmfast.Verifier(keys)
    stop = threading.Event()
    seen: set[int] = set()

    def verify() -> None:
        while not stop.is_set():
            seen.update(verifier.verify_batch(packets[:2000]))

    workers = [threading.Thread(target=verify) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(300):
        home = f"2001:db8:7::{i + 1:x}"
        keys.add_kbm(home, bytes([i % 256, i // 256]) + bytes(18))
        if i % 2:
            keys.remove(home)
    stop.set()
    for w in workers:
        w.join()
    assert seen <= {kbmfast.Verdict.ACCEPTED, kbmfast.Verdict.SEQUENCE_OUT_OF_WINDOW}
    assert len(keys) == 350


def test_close_while_another_thread_verifies() -> None:
    """close() never pulls memory from under a call in flight (it used to: SIGSEGV)."""
    keys, packets, _ = packets_for(kbmfast, peers=100, rounds=20)
    big = packets * 50  # 100k packets: each call takes a while
    buf = b"".join(big)
    from array import array

    offsets = array("Q", [0])
    for p in big:
        offsets.append(offsets[-1] + len(p))
    verifier = kbmfast.Verifier(keys)
    outcome: list[str] = []
    started = threading.Event()

    def hammer() -> None:
        try:
            while True:
                started.set()
                verifier.verify_buffer(buf, offsets)
        except ValueError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=hammer)
    worker.start()
    started.wait()
    verifier.close()
    again = kbmfast.Verifier(keys)  # may reuse the address range the old one had
    assert again.verify_batch(packets[:100]) == array("B", [0] * 100)
    worker.join(timeout=120)
    assert outcome == ["this Verifier is closed"]


def test_fork_child_refuses_inherited_verifier() -> None:
    import os

    keys, packets, _ = packets_for(kbmfast, peers=10, rounds=2)
    verifier = kbmfast.Verifier(keys)
    assert verifier.verify(packets[0]).verdict == kbmfast.Verdict.ACCEPTED
    pid = os.fork()
    if pid == 0:  # the child: the inherited one refuses, a new one works
        code = 1
        try:
            verifier.verify(packets[1])
        except ValueError as e:
            code = 0 if "before a fork" in str(e) else 2
        if code == 0 and kbmfast.Verifier(keys).verify(packets[1]).verdict != kbmfast.Verdict.ACCEPTED:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert verifier.verify(packets[1]).verdict == kbmfast.Verdict.ACCEPTED  # the parent's is untouched
