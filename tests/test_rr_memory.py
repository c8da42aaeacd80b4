"""Return routability's Kcn is not left in memory: a subprocess gives a ReturnRoutability a
Kcn (assembled in a bytearray from two halves, then wiped), answers a HoTI and a CoTI, verifies
and acknowledges an RR Binding Update, regenerates Kcn, closes the verifier and scans its own
memory for the first Kcn (the scanner of tests/test_key_memory.py)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import types

from helpers import not_under_asan
from test_key_memory import _CHILD, MASK

pytestmark = not_under_asan  # see test_key_memory.py

_SETUP = r"""
import gc, hashlib, json, os, sys
import {module} as kb
from kbmfast.reference.rr import build_init

job = json.loads(sys.stdin.read())
MASK = {mask}
masked = bytes.fromhex(job["kcn"])
low, high = bytes(x ^ MASK for x in masked[:10]), bytes(x ^ MASK for x in masked[10:20])
needles = [(0, "raw", low, high)]
kcn = bytearray(20)
kcn[:10], kcn[10:] = low, high
del masked


class Clock:
    now = 50.0

    def __call__(self):
        return self.now


rr = kb.ReturnRoutability(kcn=kcn, clock=Clock())
kcn[:] = bytes(20)
a = lambda s: __import__("ipaddress").IPv6Address(s).packed
home, care_of, cn = a("2001:db8:1::1"), a("2001:db8:2::2"), a("2001:db8:3::3")
v = kb.Verifier(kb.KeyTable(), return_routability=rr)
hot = v.reply(build_init(1, b"12345678", home, cn))
cot = v.reply(build_init(2, b"abcdefgh", care_of, cn))
kbm = hashlib.sha1(hot[56:64] + cot[56:64]).digest()
bu = kb.build_binding_update(kbm, home=home, care_of=care_of, correspondent=cn, sequence=1, lifetime=40,
                             nonce_indices=(hot[46] << 8 | hot[47], cot[46] << 8 | cot[47]))
r = v.verify(bu)
assert r.verdict == kb.Verdict.ACCEPTED, r
assert v.acknowledge(r)
rr.regenerate()
v.close()
del v, r, hot, cot, bu, kbm
gc.collect()

"""


def test_no_kcn_left_in_memory(kb: types.ModuleType) -> None:
    kcn = secrets.token_bytes(20)
    code = _SETUP.format(module=kb.__name__, mask=MASK) + _CHILD[_CHILD.index("def regions():") :]
    job = {"kcn": bytes(x ^ MASK for x in kcn).hex()}
    done = subprocess.run([sys.executable, "-P", "-c", code], input=json.dumps(job), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found == [], f"Kcn still in memory after regenerate() + close(): {found}"


# The same steps up to regenerate(), the verifier left open: the C core must have wiped what it
# derived from the first Kcn (its HMAC midstates, kept for verifying and for replies) at the
# regeneration, not at close. The midstates are computed here (SHA-1 on the padded key) and
# searched as the C core stores them (five host-order words), in halves, like the raw key.
_MIDSTATES = r"""
import struct

M32 = 0xFFFFFFFF


def rol(x, n):
    return (x << n | x >> (32 - n)) & M32


def compress(block):
    w = list(struct.unpack(">16I", block))
    for t in range(16, 80):
        w.append(rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1))
    s = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    a, b, c, d, e = s
    for t in range(80):
        f, k = ((b & c) | (~b & d), 0x5A827999) if t < 20 else (b ^ c ^ d, 0x6ED9EBA1) if t < 40 else (
            (b & c) | (b & d) | (c & d), 0x8F1BBCDC) if t < 60 else (b ^ c ^ d, 0xCA62C1D6)
        a, b, c, d, e = (rol(a, 5) + f + e + k + w[t]) & M32, a, rol(b, 30), c, d
    return [(x + y) & M32 for x, y in zip(s, (a, b, c, d, e))]


for kind, pad in (("inner", 0x36), ("outer", 0x5C)):
    block = bytes(x ^ pad for x in low) + bytes(x ^ pad for x in high) + bytes([pad]) * 44
    words = [struct.pack("<I", x) for x in compress(block)]
    needles.append((0, kind, words[0] + words[1] + words[2][:2], words[2][2:] + words[3] + words[4]))
    del words, block
"""


def test_kcn_midstates_wiped_at_regeneration(kb: types.ModuleType) -> None:
    kcn = secrets.token_bytes(20)
    setup = _SETUP.format(module=kb.__name__, mask=MASK)
    setup = setup.replace("v = kb.Verifier(", _MIDSTATES + "\nv = kb.Verifier(").replace("v.close()\n", "")
    code = setup.replace("del v, r,", "del r,") + _CHILD[_CHILD.index("def regions():") :]
    job = {"kcn": bytes(x ^ MASK for x in kcn).hex()}
    done = subprocess.run([sys.executable, "-P", "-c", code], input=json.dumps(job), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found == [], f"Kcn or its midstates still in memory after regenerate(): {found}"
