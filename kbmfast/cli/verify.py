"""``kbmfast verify``: verify the Binding Updates of captures (or live, ``-i``) and say why.

``kbmfast verify`` reads captures (kbmfast.capture), verifies their Binding Updates in batches
with ``Verifier.verify_buffer`` on a worker thread (the C core releases the GIL, so the next batch
is read and the previous one printed meanwhile), prints one line per mobility packet and a summary
by verdict, and can write the Binding Acknowledgements a correspondent node would send.

This module holds the command's options and checks; the run over captures is
kbmfast/cli/_verify_run.py, live capture (``-i``) _verify_live.py, the verdict codes and the
Python line formatters _verify_format.py (csrc/format.c writes the same lines in C).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from typing import Any

from .. import _outputs
from .._outputs import (
    CliError,
    OutputFile,
    Subparsers,
    check_distinct,
    check_stdout_distinct,
    os_error_text,
)
from . import _verify_rr as verify_rr
from ._common import load_key_file
from ._verify_format import (  # noqa: F401 (names kept importable from here)
    _VERDICT_NAMES,
    CLI_VERDICTS,
    HEADER,
    MH_TYPE_NAMES,
    REASON_NAMES,
    V_RR_REPLIED,
    WHY_ROUTING_HEADER,
    _Addresses,
    format_json,
    format_plain,
    ipv6_text,
    malformed_reason,
)
from ._verify_live import _verify_live
from ._verify_run import (  # noqa: F401 (the run; and names kept importable from here)
    _CLines,
    _count,
    _Directions,
    _open_verifier,
    _Progress,
    _shard_filter,
    _VerifyRun,
)

# The capture module (and numpy, when installed) is imported when a command runs, not for --help.
#: The sample capture and key file shipped in kbmfast/samples (made by ``kbmfast gen``).
SAMPLE_CAPTURE = "sample.pcap"
SAMPLE_KEYS = "sample-keys.toml"
SAMPLE_GEN = {"peers": 12, "updates": 300, "seed": 4449}


# ---------------------------------------------------------------------------------------------
# kbmfast verify


def add_verify(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast verify``: verify the Binding Updates in capture files."""
    p = sub.add_parser(
        "verify",
        help="verify the Binding Updates in pcap/pcapng captures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read captures (pcap or pcapng; Ethernet with 802.1Q tags, raw IP/IPv6, Linux cooked SLL/SLL2,\n"
            "BSD loopback), find every IPv6 packet whose next-header chain reaches a Mobility Header, verify\n"
            "the Binding Updates in capture order as a correspondent node would (a replay inside a capture\n"
            "is caught), and print one line per mobility packet, then a summary by verdict.\n"
            "Several captures are verified in the order given, with one sequence table.\n\n"
            "Columns: frame number (from 1, as Wireshark counts), capture time (s since the epoch), MH type,\n"
            "home address, care-of address, sequence number, verdict, and the status of the Binding\n"
            "Acknowledgement the correspondent would send ('-': none), source > destination, and for a\n"
            "MALFORMED packet why (parse error@byte offset). Address and sequence are shown for well-formed\n"
            "Binding Updates and for Binding Acknowledgements, which are checked as the mobile node would\n"
            "(BA_* verdicts, counted apart). Frames cut by the capture's snap length are TRUNCATED.\n"
            "CAPTURE '-' reads standard input as it comes (tcpdump -w - | kbmfast verify - ...).\n\n"
            "Exit status: 0 when every capture was read to its end (whatever the verdicts); 1 when a\n"
            "capture is missing or damaged (what came before the damage is still verified and printed);\n"
            "2 for usage, key-file, state-file or output-file errors (nothing verified); 130 (SIGINT),\n"
            "143 (SIGTERM), 141 (standard output closed, as by '| head'): stopped at a batch boundary,\n"
            "with lines, acknowledgements and state all ending at the same frame, and a line on stderr\n"
            "saying how to resume with --skip. --acks-out is written to a temporary file and renamed\n"
            "into place, and may not be the same file as an input."
        ),
        epilog=(
            "examples:\n"
            "  kbmfast verify --demo\n"
            "  kbmfast verify cn.pcapng --keys cn.keys --state cn.state --acks-out acks.pcap\n"
            "  kbmfast verify day1.pcap day2.pcap --keys cn.keys --json > verdicts.jsonl"
        ),
    )
    p.add_argument(
        "captures",
        nargs="*",
        metavar="CAPTURE",
        help="pcap or pcapng files, verified in this order; '-': standard input, read as it comes "
        "(e.g. tcpdump -w - | kbmfast verify - ...)",
    )
    p.add_argument(  # kbmfast serve's live capture (kbmfast.live), answering nothing: _verify_live
        "-i", "--interface", metavar="IF", help="verify live on IF instead of files (CAP_NET_RAW; no replies; Ctrl-C ends)"
    )
    p.add_argument("--keys", metavar="KEYS", help="the key file (TOML, mode 0600; see 'kbmfast keys generate')")
    p.add_argument(
        "--demo",
        action="store_true",
        help="verify the sample capture shipped with kbmfast with its sample keys (copied to a private "
        "temporary file, so the permission check on key files stays as it is); give no CAPTURE or --keys",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="persistent sequence table (created if missing): sequence numbers accepted in earlier runs "
        "count, and this run's are kept; default: in memory, forgotten at exit",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines (one object per packet, then one summary object)")
    p.add_argument("--quiet", action="store_true", help="print only the summary (no line per packet)")
    p.add_argument(
        "--acks-out",
        metavar="FILE",
        help="write the Binding Acknowledgements the correspondent would send (Verifier.acknowledge) to FILE, "
        "a pcap with raw IPv6 link type, each stamped with its Binding Update's capture time",
    )
    p.add_argument(
        "--backend",
        choices=("c", "reference"),
        default="c",
        help="verify with the C core (default) or the pure-Python reference (slow; same answers)",
    )
    p.add_argument("--batch", type=int, default=65536, metavar="N", help="packets per verify_buffer call (default 65536)")
    p.add_argument("--shard", metavar="I/N", help="only the peers of shard I of N (docs/tools.md: sharding)")
    p.add_argument(
        "--skip",
        type=int,
        default=0,
        metavar="N",
        help="skip the first N frames of the first CAPTURE (frames keep their numbers): resumes an interrupted "
        "run, whose last line on stderr gives N",
    )
    p.add_argument(
        "-c",
        "--count",
        type=int,
        metavar="COUNT",
        help="stop after COUNT frames (all captures together, after --skip), as tcpdump -c",
    )
    p.add_argument(
        "-l",
        "--line-buffered",
        action="store_true",
        help="write each batch's lines at once (the default when standard output is a terminal); with "
        "'-' a batch is what has arrived",
    )
    p.add_argument(
        "--correspondent",
        metavar="ADDR",
        help="only the mobility packets to or from this correspondent node (IPv6 address); the others count as other frames",
    )
    from .serve import add_rr_flags

    add_rr_flags(p, "verify")
    p.add_argument(
        "--rr-kcn-file",
        metavar="FILE",
        help="with --rr: the Kcn the correspondent answered with (40 hex digits, a private file like a key file), "
        "to replay its run from the capture's Home/Care-of Test Inits (docs/tools.md); default: a fresh Kcn",
    )
    p.set_defaults(handler=run_verify)


@contextlib.contextmanager
def _demo_files() -> Iterator[tuple[str, str]]:
    """The bundled sample capture and a private (0600) temporary copy of its key file."""
    samples = resources.files("kbmfast") / "samples"
    with resources.as_file(samples / SAMPLE_CAPTURE) as capture, tempfile.TemporaryDirectory(prefix="kbmfast-demo-") as tmp:
        keys = os.path.join(tmp, SAMPLE_KEYS)
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write((samples / SAMPLE_KEYS).read_bytes())
        yield str(capture), keys


def run_verify(args: argparse.Namespace) -> int:
    """Verify the captures; print lines and the summary; return the exit status."""
    _shard_filter(args)  # a bad --shard is refused before any file is opened
    if args.demo:
        if args.captures or args.keys:
            raise CliError("--demo takes no CAPTURE and no --keys")
        with _demo_files() as (capture, keys):
            return _verify(args, [capture], keys)
    if args.interface:
        return _verify_live(args)
    if not args.captures or not args.keys:
        raise CliError("give one or more CAPTURE files and --keys KEYS (or --demo)")
    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    if args.skip < 0:
        raise CliError("--skip must be at least 0")
    if args.count is not None and args.count < 1:
        raise CliError("-c/--count must be at least 1")
    if args.captures.count("-") > 1:
        raise CliError("standard input ('-') can be read only once")
    if args.correspondent is not None:
        try:
            ipaddress.IPv6Address(args.correspondent)
        except ValueError as e:
            raise CliError(f"--correspondent: {e}") from None
    return _verify(args, args.captures, args.keys)


def _verify(args: argparse.Namespace, captures: list[str], key_path: str) -> int:
    import kbmfast
    import kbmfast.reference

    backend: Any = kbmfast if args.backend == "c" else kbmfast.reference
    inputs = [*(("CAPTURE", c) for c in captures), ("--keys", key_path)]
    check_distinct(inputs, [("--state", args.state), ("--acks-out", args.acks_out)])
    check_stdout_distinct([*inputs, ("--state", args.state), ("--acks-out", args.acks_out)])
    keys = load_key_file(key_path)
    if len(keys) == 0:
        print(f"kbmfast verify: warning: key file {key_path} lists no peers: every Binding Update will be NOT_CONFIGURED",
              file=sys.stderr)  # fmt: skip
    try:
        acks_file = OutputFile(args.acks_out) if args.acks_out else None
    except OSError as e:
        raise CliError(f"--acks-out {os_error_text(e)}") from None
    try:
        verifier, replay = verify_rr.setup(args, _open_verifier, backend, keys, args.state)  # --rr, --compat
        run = _VerifyRun(args, verifier, acks_file, keys, backend, replay)
        try:
            with _outputs.current.deferred():
                run.all(captures)
                _outputs.current.handled = True  # a signal from here on is reported by run.finish
        finally:
            run.close()
    except BaseException:
        if acks_file is not None:
            acks_file.discard()
        raise
    if acks_file is not None:
        acks_file.commit()
        clamped = run.acks.writer.clamped if run.acks is not None else 0
        if clamped:  # Binding Updates stamped past 2106: a pcap record cannot say so
            print(
                f"kbmfast verify: {clamped} acknowledgements stamped with the latest time a pcap "
                "holds (2106-02-07 06:28:15.999999): their Binding Updates' times lie beyond it",
                file=sys.stderr,
            )
    return run.finish(captures)
