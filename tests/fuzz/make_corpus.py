"""Write a seed corpus for both fuzzers: valid packets of every kind, and someone else's
malformed captures (tests/corpus/tcpdump). Usage: python tests/fuzz/make_corpus.py DIR"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import pathlib
import random
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from strategies import RandomDraw, any_packet  # noqa: E402
from test_corpus import PCAPS, ipv6_packets  # noqa: E402

import kbmfast  # noqa: E402

KCN = bytes(range(1, 21))


def seeds() -> list[bytes]:
    out = []
    for path in PCAPS:
        out += ipv6_packets(path)
    kbm = kbmfast.derive_kbm(
        KCN, bytes(range(0xA0, 0xA8)), bytes(range(0xB0, 0xB8)), home="2001:db8:1::100", care_of="2001:db8:2::200"
    )
    for seq, extra in enumerate([{}, {"alternate_care_of": "2001:db8:4::4"}, {"nonce_indices": (1, 2)}, {"lifetime": 0}]):
        args = {
            "home": "2001:db8:1::100",
            "care_of": "2001:db8:2::200",
            "correspondent": "2001:db8:3::300",
            "sequence": seq,
            "lifetime": 420,
        }
        args.update(extra)
        out.append(kbmfast.build_binding_update(kbm, **args))
    # return routability: Home and Care-of Test Inits (the RR verifiers answer them)
    from kbmfast.reference.rr import build_init

    cn = ipaddress.IPv6Address("2001:db8:3::300").packed
    for mh_type, source in ((1, "2001:db8:1::100"), (2, "2001:db8:2::200")):
        out.append(build_init(mh_type, bytes(range(8)), ipaddress.IPv6Address(source).packed, cn))
    rng = random.Random(7)
    draw = RandomDraw(rng)
    out += [any_packet(draw) for _ in range(200)]
    return out


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1])
    os.makedirs(target, exist_ok=True)
    for packet in seeds():
        (target / hashlib.sha1(packet).hexdigest()).write_bytes(packet)
    print(f"{len(list(target.iterdir()))} seeds in {target}")
