"""Seed key files for tests/fuzz/fuzz_keyfile.c: files as KeyTable.save writes them (Kbm and
RFC 4449 peers, with and without epochs), the form csrc/keyfile.c reads. Usage:
make_keyfile_corpus.py DIR"""

import pathlib
import random
import sys
import tempfile

import kbmfast


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for i, peers in enumerate((1, 2, 5, 17)):
        keys = kbmfast.KeyTable()
        for p in range(peers):
            home = f"2001:db8:{i}::{p + 1:x}"
            if p % 3 == 2:
                keys.add_kcn(home, rng.randbytes(20 + p), rng.randbytes(8), rng.randbytes(1 + p % 64))
            else:
                keys.add_kbm(home, rng.randbytes(20), epoch=p if p % 2 else None)
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "k.toml"
            keys.save(path)
            (out / f"keys-{peers}").write_bytes(path.read_bytes())


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
