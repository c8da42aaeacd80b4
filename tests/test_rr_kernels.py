"""Return routability's batched paths on every SHA-1 kernel: reply_buffer (keygen tokens in
lane groups) and verify_buffer on RR Binding Updates (tokens, Kbm midstates and MACs, each a
batch over a chunk), with each kernel this CPU runs forced by KBMFAST_KERNEL in its own process,
must answer exactly as the reference backend does. The batches mix message types (HoTI, CoTI,
junk; registrations, de-registrations, forgeries, wrong tokens, two-block MACs, configured
peers), have sizes that leave lane groups part-filled, and run while time moves, so that some
Binding Updates of one batch name expired nonces and others live ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from kbmfast import Verdict, fast

KERNELS = [name for name, _, _ in fast.kernel_table()]
RUNNABLE = [name for name, ok, _ in fast.kernel_table() if ok]

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, random, sys
    from array import array
    from itertools import accumulate
    import kbmfast, kbmfast.reference as ref
    from kbmfast.reference.rr import build_init

    rng = random.Random(int(sys.argv[1]))
    CN = bytes.fromhex("20010db8000300000000000000000300")

    class Clock:
        now = 1000.0
        def __call__(self):
            return self.now

    clock = Clock()
    rr = ref.ReturnRoutability(kcn=rng.randbytes(20), nonce_interval=30, clock=clock)
    keys = kbmfast.KeyTable()
    configured = []
    for i in range(8):
        home, kbm = (0x20010DB8_0009_0000 << 64 | (i + 1)).to_bytes(16, "big"), rng.randbytes(20)
        keys.add_kbm(home, kbm)
        configured.append((home, kbm))
    pairs = [(kbmfast.Verifier(keys, return_routability=rr, **kw), ref.Verifier(keys, return_routability=rr, **kw))
             for kw in ({}, {"compat": "rfc3775"})]
    c, r = pairs[0]
    out = {"kernel": kbmfast.kernel, "replies": [], "c": [], "ref": []}

    def offsets(packets):
        return array("Q", accumulate(map(len, packets), initial=0))

    def reply_both(packets):
        buf, offs = b"".join(packets), offsets(packets)
        a, b = c.reply_buffer(buf, offs), r.reply_buffer(buf, offs)
        out["replies"].append([a[0] == b[0] and list(a[1]) == list(b[1]), sum(x < y for x, y in zip(a[1], a[1][1:]))])
        return a

    # The mobile nodes run RR at different times (a nonce every 30 s), in reply batches of
    # sizes that leave lane groups part-filled, mixed with junk and malformed init messages.
    peers = []
    for step in range(40):
        clock.now = 1000.0 + 7.5 * step
        batch, who = [], []
        for _ in range(rng.choice([1, 2, 3, 4, 5, 8, 9, 17])):
            i = len(peers) + len(who)
            home = (0x20010DB8_0001_0000 << 64 | (i + 1)).to_bytes(16, "big")
            care_of = (0x20010DB8_0002_0000 << 64 | (i + 1)).to_bytes(16, "big")
            who.append((home, care_of, len(batch)))
            batch += [build_init(1, rng.randbytes(8), home, CN), build_init(2, rng.randbytes(8), care_of, CN)]
            if rng.randrange(3) == 0:
                junk = bytearray(build_init(rng.choice([1, 2]), rng.randbytes(8), care_of, CN))
                junk[rng.randrange(len(junk))] ^= 1 << rng.randrange(8)
                batch.append(bytes(junk))
            if rng.randrange(4) == 0:
                batch.append(rng.randbytes(rng.randrange(0, 120)))
        order = list(range(len(batch)))
        rng.shuffle(order)
        shuffled = [batch[k] for k in order]
        buf, ends = reply_both(shuffled)
        got = {}
        for k, j in enumerate(order):
            if ends[k + 1] > ends[k]:
                got[j] = buf[ends[k]:ends[k + 1]]
        for home, care_of, j in who:
            hot, cot = got[j], got[j + 1]
            peers.append((home, care_of, hot[56:64], cot[56:64], hot[46] << 8 | hot[47], cot[46] << 8 | cot[47]))

    # Their Binding Updates, every kind mixed, in batches of odd sizes while time moves.
    bus, seq = [], {}
    for home, care_of, ht, ct, hi, ci in peers:
        for _ in range(rng.randrange(2, 7)):
            kind = rng.randrange(10)
            seq[home] = s = (seq.get(home, 0) + 1) & 0xFFFF if kind != 9 else seq.get(home, 0)  # 9: a replay
            dereg = kind in (1, 2)
            kbm = hashlib.sha1(ht + (b"" if dereg else ct)).digest()
            if kind == 3:  # forged
                kbm = bytes([kbm[0] ^ 1]) + kbm[1:]
            indices = (hi, ci) if kind != 4 else (hi, (ci + 1) & 0xFFFF)  # 4: a wrong care-of index
            bus.append(bytes(kbmfast.build_binding_update(
                kbm, home=home, care_of=care_of if kind != 2 else home, correspondent=CN, sequence=s,
                lifetime=0 if dereg else rng.randrange(1, 1000), nonce_indices=indices,
                alternate_care_of=care_of if kind == 5 else None)))  # 5: a two-block MAC
        if rng.randrange(5) == 0:
            home, kbm = rng.choice(configured)
            bus.append(bytes(kbmfast.build_binding_update(
                kbm, home=home, care_of=care_of, correspondent=CN, sequence=rng.randrange(1, 60000), lifetime=40,
                nonce_indices=(hi, ci) if rng.randrange(2) else None)))
    rng.shuffle(bus)
    at = 0
    while at < len(bus):
        n = rng.choice([1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100])
        part = bus[at:at + n]
        at += n
        clock.now += 4.0  # from 1300 s on, the early nonces expire one after the other
        for cv, rv in pairs:
            out["c"] += list(cv.verify_buffer(b"".join(part), offsets(part)))
            out["ref"] += [int(x) for x in rv.verify_buffer(b"".join(part), offsets(part))]
    print(json.dumps(out))
    """
)


def _run(kernel: str, seed: int) -> dict[str, object]:
    env = dict(os.environ)
    env["KBMFAST_KERNEL"] = kernel
    proc = subprocess.run([sys.executable, "-P", "-c", SCRIPT, str(seed)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("kernel", KERNELS)
def test_rr_batches_agree_with_reference_on_each_kernel(kernel: str, seed: int) -> None:
    """Each runnable kernel, forced: every reply batch byte for byte and every RR verdict as
    the reference's, over a mix that reaches every RR outcome."""
    if kernel not in RUNNABLE:
        pytest.skip(f"this CPU does not run the {kernel} kernel")
    out = _run(kernel, seed)
    assert out["kernel"] == kernel
    replies = out["replies"]
    assert isinstance(replies, list) and replies
    assert all(same for same, _ in replies)
    assert {answered % 16 for _, answered in replies} - {0}, "no batch left a 16-lane group part-filled"
    c, r = out["c"], out["ref"]
    assert isinstance(c, list) and isinstance(r, list)
    assert c == r
    seen = {Verdict(v) for v in c}
    want = {
        Verdict.ACCEPTED,
        Verdict.BAD_AUTHENTICATOR,
        Verdict.HOME_NONCE_EXPIRED,
        Verdict.CARE_OF_NONCE_EXPIRED,
        Verdict.NONCES_EXPIRED,
        Verdict.SEQUENCE_OUT_OF_WINDOW,
    }
    assert want <= seen, want - seen
