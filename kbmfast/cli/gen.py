"""``kbmfast gen``: write a capture of generated traffic, its key file and its truth.

The generator itself is the library's kbmfast.gen (tests and benchmarks use it too); this is
its command line: the outputs checked, written through temporary files and renamed together.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import _outputs
from .._outputs import CliError, Interrupted, OutputFile, check_distinct, os_error_text, output_files, refuse_existing

if TYPE_CHECKING:
    from .._outputs import Subparsers


def add_gen(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast gen``: realistic Binding Update traffic with a hostile mix, its keys and its truth."""
    p = sub.add_parser(
        "gen",
        help="generate a capture of realistic Binding Update traffic, its key file and expected verdicts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a capture of Ethernet frames as a correspondent node would see them: Binding Updates\n"
            "from N preconfigured peers (Kbm and RFC 4449 Kcn peers), interleaved, each peer's sequence\n"
            "numbers increasing from a random start; some peers move, some use an Alternate Care-of\n"
            "Address, some de-register, a few send Nonce Indices; plus the hostile mix. Also writes the\n"
            "matching key file (mode 0600). Deterministic for a seed; the keys are for test traffic only."
        ),
        epilog="example: kbmfast gen --peers 1000 --updates 100000 --out t.pcap --truth t.truth.jsonl",
    )
    p.add_argument("--peers", type=int, required=True, metavar="N", help="number of preconfigured peers")
    p.add_argument(
        "--updates", type=int, required=True, metavar="M", help="number of Binding Update packets in all, hostile ones included"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the capture to write")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0): same seed, same bytes")
    p.add_argument("--format", choices=("pcap", "pcapng"), default="pcap", help="capture format (default pcap)")
    p.add_argument(
        "--mix",
        default="",
        metavar="SHARES",
        help="hostile shares of all packets, e.g. replay=0.05,forged=0.02,unknown=0.02,malformed=0.01 (the "
        "defaults): replays of earlier Binding Updates, forgeries (wrong key), unconfigured home addresses, "
        "malformed packets; names left out keep their default",
    )
    p.add_argument(
        "--truth",
        metavar="FILE",
        help="write the expected outcome of every frame as JSON lines: frame, kind, verdict, ba_status "
        "(checked against kbmfast.reference while generating)",
    )
    p.add_argument(
        "--keys", metavar="KEYFILE", help="the key file to write (default: FILE with .keys.toml instead of its suffix)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files (refused otherwise)")
    p.add_argument("--shard", metavar="I/N", help="write only the frames of shard I of N (docs/tools.md: sharding)")
    p.set_defaults(handler=run_gen)


def _default_keys(out: str) -> str:
    root, _ = os.path.splitext(out)
    return root + ".keys.toml"


def run_gen(args: argparse.Namespace) -> int:
    """Generate the traffic and write the capture, the key file and the truth.

    The outputs must be distinct files and, without --force, must not exist. They are checked
    and opened (as temporary files beside them) first, written, then renamed into place
    together: an error or an interrupt leaves none of them changed.
    """
    from .. import gen
    from .._shard import parse_shard
    from ..capture import PcapWriter, write_pcapng

    keys_path = args.keys or _default_keys(args.out)
    outputs = [("--out", args.out), ("--keys", keys_path), ("--truth", args.truth)]
    check_distinct([], outputs)
    refuse_existing(outputs, args.force)
    try:
        mix = gen.parse_mix(args.mix)
        keys, chunks = gen.stream(args.peers, args.updates, seed=args.seed, mix=mix)
        if args.shard is not None:
            chunks = gen.shard_chunks(chunks, parse_shard(args.shard))
    except ValueError as e:
        raise CliError(str(e)) from None
    wanted = [(args.out, False), (keys_path, True)] + ([(args.truth, False)] if args.truth else [])
    names = ["--out", "--keys", "--truth"]
    files: list[OutputFile] = []
    try:
        with output_files(wanted, _outputs.current) as files:
            files[1].stream.write(keys.to_toml().encode())
            truth = files[2].stream if args.truth else None

            def frames() -> Iterator[tuple[bytes, int]]:
                """The frames as generated, a checked chunk at a time (bounded memory); the
                truth written alongside."""
                for chunk in chunks:
                    if truth is not None:
                        truth.write(
                            "".join(
                                json.dumps(
                                    {"frame": e.frame, "kind": e.kind, "verdict": e.verdict.name, "ba_status": e.ba_status}
                                )
                                + "\n"
                                for _, _, e in chunk
                            ).encode()
                        )
                    for frame, us, _ in chunk:
                        yield frame, us

            if args.format == "pcap":
                writer = PcapWriter(files[0].stream, linktype=1)
                for frame, us in frames():
                    writer.write(frame, us)
            else:
                write_pcapng(files[0].stream, frames())
    except OSError as e:
        what = next((n for n, (path, _) in zip(names, wanted, strict=False) if path == e.filename), "output")
        raise CliError(f"{what} {os_error_text(e)}; no file was written", 2 if what != "output" else 1) from None
    except Interrupted as e:
        written = files and all(f.committed for f in files)
        raise CliError(f"interrupted by {e}; {'every' if written else 'no'} file was written", e.status) from None
    print(f"kbmfast gen: {args.updates} frames to {args.out}, keys of {len(keys)} peers to {keys_path}")
    return 0
