"""``kbmfast verify``'s lines and JSON lines, end to end, byte for byte against the Python
formatters (kbmfast.cli.verify.format_plain and format_json, the oracle the C formatter
replaced), on one capture that holds every verdict: gen's traffic (accepted, replayed, forged,
unknown peer, malformed, bad checksum), the Binding Acknowledgements (every BA_* verdict), a
Home Test Init (NOT_BINDING_UPDATE) and frames cut by the snap length (TRUNCATED). Through the
real command line in a subprocess, with batch sizes that put batch and output-piece boundaries
everywhere."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import subprocess
import sys
from array import array

import pytest

import kbmfast
from kbmfast import gen
from kbmfast.capture import HAVE_C, Batch, CaptureReader, PcapWriter, fields_plain
from kbmfast.cli import verify as tools_cli
from kbmfast.reference.rr import build_init

CN = ipaddress.IPv6Address("2001:db8:3::1")
#: The verdicts the capture below holds (the others need keys or options gen does not make).
SEEN = {"ACCEPTED", "MALFORMED", "BAD_CHECKSUM", "NOT_BINDING_UPDATE", "NOT_CONFIGURED", "BAD_AUTHENTICATOR"}
SEEN |= {"SEQUENCE_OUT_OF_WINDOW", "TRUNCATED", "BA_VALID", "BA_UNMATCHED", "BA_BAD_AUTHENTICATOR"}
SEEN |= {"BA_NOT_CONFIGURED", "BA_BAD_CHECKSUM"}


def _frame(packet: bytes) -> bytes:
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\xfe\x86\xdd" + packet


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    d = tmp_path_factory.mktemp("lines")
    traffic = gen.generate(40, 3000, seed=21)
    keys = traffic.keys
    home = ipaddress.IPv6Address("2001:db8:1::1")
    care_of = ipaddress.IPv6Address("2001:db8:2::7")
    kbm = bytes(range(20))
    keys.add_kbm(home, kbm)
    keys.save(d / "k.toml")
    bu = kbmfast.build_binding_update(kbm, home=home, care_of=care_of, correspondent=CN, sequence=100, lifetime=60)

    def ba(key: bytes, seq: int, h: ipaddress.IPv6Address = home, status: int = 0) -> bytes:
        return kbmfast.build_binding_ack(key, home=h, care_of=care_of, correspondent=CN, sequence=seq, status=status, lifetime=60)

    bad_sum = bytearray(ba(kbm, 100))
    bad_sum[-1] ^= 1
    extra = [bu, ba(kbm, 100), ba(kbm, 101), ba(bytes(20), 100), ba(kbm, 5, h=ipaddress.IPv6Address("2001:db8:99::1"))]
    extra += [bytes(bad_sum), ba(kbm, 100, status=135)]
    extra.append(build_init(1, bytes(8), care_of.packed, CN.packed))  # a Home Test Init
    with open(d / "c.pcap", "wb") as f:
        w = PcapWriter(f, linktype=1)
        for i, (frame, us) in enumerate(traffic.frames):
            w.write(frame, us)
            if i % 700 == 3:
                for p in extra:
                    w.write(_frame(p), us)
                cut = frame[:90]  # cut by the snap length: the record keeps the original length
                f.write((us // 1_000_000).to_bytes(4, "little") + (us % 1_000_000).to_bytes(4, "little"))
                f.write(len(cut).to_bytes(4, "little") + len(frame).to_bytes(4, "little") + cut)
    return d / "c.pcap", d / "k.toml"


def _run(*args: str, first: bytes) -> bytes:
    """The command's standard output from its first line on (an editable build may print before)."""
    argv = [sys.executable, "-P", "-m", "kbmfast.cli", "verify", *args]
    done = subprocess.run(argv, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    at = 0 if out.startswith(first) else out.find(b"\n" + first) + 1
    assert at >= 0 and out[at:].startswith(first)
    return out[at:]


def _oracle(path: pathlib.Path, codes: list[int], as_json: bool) -> bytes:
    """The lines the Python formatters write for the capture's packets with these verdicts."""
    with CaptureReader(path) as r:
        batches = list(r.batches())
    packets = [b.packet(i) for b in batches for i in range(len(b))]
    offsets = array("Q", [0])
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    whole = Batch(
        b"".join(packets),
        offsets,
        array("Q", [f for b in batches for f in b.frames]),
        array("q", [t for b in batches for t in b.times]),
    )
    assert len(whole) == len(codes)
    fields = fields_plain(whole)
    if as_json:
        return tools_cli.format_json(whole, fields, codes, tools_cli._Addresses(), str(path)).encode()
    return tools_cli.format_plain(whole, fields, codes, tools_cli._Addresses()).encode()


@pytest.mark.skipif(not HAVE_C, reason="the C core is not built")
@pytest.mark.parametrize("batch", ["65536", "333", "1"])
def test_lines_equal_the_python_formatters(capture: tuple[pathlib.Path, pathlib.Path], batch: str) -> None:
    path, keys = capture
    out = _run(str(path), "--keys", str(keys), "--json", "--batch", batch, first=b'{"capture": ')
    docs = [json.loads(line) for line in out.decode().splitlines()]
    rows, summary = docs[:-1], docs[-1]["summary"]
    codes = [r["code"] for r in rows]
    names = {tools_cli._VERDICT_NAMES[c] for c in codes}
    assert names >= SEEN, sorted(names)
    assert summary["mobility_packets"] == len(rows)
    assert out[: -len(json.dumps(docs[-1])) - 1] == _oracle(path, codes, as_json=True)

    text = _run(str(path), "--keys", str(keys), "--batch", batch, first=b"# ")
    head = f"# {path}\n{tools_cli.HEADER}\n".encode()
    assert text.startswith(head)
    body = text[len(head) :]
    lines = _oracle(path, codes, as_json=False)
    assert body[: len(lines)] == lines
    assert body[len(lines) :].startswith(b"\nverdict ")


@pytest.mark.skipif(not HAVE_C, reason="the C core is not built")
def test_verdict_bookkeeping_in_c_equals_python(capture: tuple[pathlib.Path, pathlib.Path]) -> None:
    """kbm_verdict_marks + _Directions.apply(look=...) + kbm_verdict_counts change and count the
    verdicts as the Python bookkeeping does (every verdict, cut packets, acknowledgements)."""
    import random

    from kbmfast._native_edge import ffi, lib

    path, keys_path = capture
    keys = kbmfast.KeyTable.load(keys_path)
    with CaptureReader(path) as r:
        batches = list(r.batches(500))
    rng = random.Random(5)
    fb = ffi.from_buffer
    python, c = tools_cli._Directions(keys, kbmfast), tools_cli._Directions(keys, kbmfast)
    for b in batches:
        n = len(b)
        base = array("B", [rng.choice((0, 1, 1, 3, 3, rng.randrange(len(tools_cli._VERDICT_NAMES)))) for _ in range(n)])
        cut = bytes(rng.random() < 0.05 for _ in range(n))
        want = array("B", base)
        python.apply(b.data, b.offsets, b.times, n, want, cut)
        got = array("B", base)
        look = array("I", bytes(4 * n))
        k = lib.kbm_verdict_marks(b.data, len(b.data), fb("uint64_t[]", b.offsets), fb("uint8_t[]", got), cut, n,
                                  fb("uint32_t[]", look))  # fmt: skip
        c.apply(b.data, b.offsets, b.times, n, got, None, look[:k])
        assert got == want
        counts = ffi.new("uint64_t[]", len(tools_cli._VERDICT_NAMES))
        lib.kbm_verdict_counts(fb("uint8_t[]", got), n, counts)
        assert list(counts) == tools_cli._count(want, n)
    assert python.on and c.on
