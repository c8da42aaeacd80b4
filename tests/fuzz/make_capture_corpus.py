"""Seed captures for tests/fuzz/fuzz_capture.c: small pcap and pcapng files of every link type,
byte order and block kind (the builders of tests/test_capture_c.py). Usage: make_capture_corpus.py DIR"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from test_capture_c import LINKTYPES, pcap, pcapng, wrap

from kbmfast import gen


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    packets = [f[14:] for f, _ in gen.generate(3, 6, seed=1).frames]
    for lt in LINKTYPES:
        for order in "<>":
            for nano in (False, True):
                frames = [wrap(lt, p, i) for i, p in enumerate(packets)]
                (out / f"pcap-{lt}-{'le' if order == '<' else 'be'}-{int(nano)}").write_bytes(pcap(frames, lt, order, nano))
    for seed, order in ((1, "<"), (2, ">")):
        (out / f"pcapng-{seed}").write_bytes(pcapng(packets, order, seed))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
