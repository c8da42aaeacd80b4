"""Soak: 2 threads x 10 M packets (a fifth of them hostile) on shared verifiers; memory stays flat."""

from __future__ import annotations

import os
import random
import threading
from array import array

import pytest

import kbmfast
import kbmfast.reference

PEERS, ROUNDS = 2000, 100
PER_THREAD = int(os.environ.get("KBMFAST_SOAK_PACKETS", 10_000_000))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pool() -> tuple[kbmfast.KeyTable, list[bytes]]:
    rng = random.Random(5)
    keys = kbmfast.KeyTable()
    homes = [f"2001:db8:1::{i + 1:x}" for i in range(PEERS)]
    kbms = [rng.randbytes(20) for _ in range(PEERS)]
    for home, kbm in zip(homes, kbms, strict=True):
        keys.add_kbm(home, kbm)
    start = [rng.randrange(65536) for _ in range(PEERS)]
    packets: list[bytes] = []
    for r in range(ROUNDS):
        for i in range(PEERS):
            args = {"home": homes[i], "care_of": "2001:db8:2::1", "correspondent": "2001:db8:3::1", "lifetime": 60}
            good = kbmfast.build_binding_update(kbms[i], sequence=(start[i] + r) % 65536, **args)
            packets.append(good)
            if rng.random() < 0.25:  # 20 % of the whole stream is hostile
                kind = rng.randrange(4)
                if kind == 0 and packets:
                    bad = rng.choice(packets)  # a replay
                elif kind == 1:
                    forged = bytearray(good)
                    forged[-1] ^= 0x5A
                    bad = bytes(forged)  # a forgery (bad checksum or, re-summed, bad authenticator)
                elif kind == 2:
                    bad = kbmfast.build_binding_update(rng.randbytes(20), sequence=r, **{**args, "home": "2001:db8:7::7"})
                else:
                    bad = good[: rng.randrange(len(good))]  # truncated
                packets.append(bad)
    return keys, packets


@pytest.mark.slow
def test_soak_two_threads() -> None:
    keys, packets = pool()
    buf = b"".join(packets)
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    batches = [(offsets[i], array("Q", [o - offsets[i] for o in offsets[i : i + 4097]])) for i in range(0, len(packets), 4096)]
    view = memoryview(buf)
    passes = max(1, PER_THREAD // len(packets))
    sizes: list[int] = []
    counts = [0, 0]
    for _ in range(passes):
        cn = kbmfast.Verifier(keys)
        barrier = threading.Barrier(2)

        def run(t: int, cn: kbmfast.Verifier = cn, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for base, offs in batches:
                counts[t] += len(cn.verify_buffer(view[base:], offs))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cn.close()
        del cn
        sizes.append(rss_bytes())
    print(f"soak: {passes} passes, {counts} packets per thread, RSS {sizes[0] >> 20} -> {sizes[-1] >> 20} MiB")
    assert counts[0] == counts[1] == passes * len(packets)
    assert sizes[-1] - sizes[min(2, len(sizes) - 1)] < 16 << 20  # flat after warm-up

    # every verdict equals the reference's on a sample (one thread, fresh verifiers)
    sample = packets[:20000]
    ref_keys = kbmfast.reference.KeyTable()
    for peer in keys.peers():
        ref_keys.add_kbm(peer.home, bytes(peer.key))
    assert kbmfast.Verifier(keys).verify_batch(sample) == kbmfast.reference.Verifier(ref_keys).verify_batch(sample)
