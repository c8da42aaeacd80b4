"""``kbmfast bench``: the command line of the benchmark engine (kbmfast.bench).

Verification throughput against the reference, one-shot HMAC and the SHA-1 ceiling, as a table,
JSON or a plot; ``--serve``: kbmfast serve on a veth pair (kbmfast.bench.serve).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._outputs import Subparsers


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_bench(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast bench``: verification throughput against the reference, one-shot HMAC and the ceiling."""
    p = sub.add_parser(
        "bench",
        help="measure verification throughput and latency",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate minimal Binding Updates for N preconfigured-Kbm peers over several rounds (increasing\n"
            "sequence numbers, so every packet is accepted) and measure, on the same packets and in one run:\n"
            "  - the C core's zero-copy Verifier.verify_buffer at each batch size, and verify_batch on lists;\n"
            "  - the pure-Python reference's verify_batch (on a sample);\n"
            "  - a one-shot OpenSSL HMAC() per packet, as existing daemons do;\n"
            "  - the ceiling: the best SHA-1 compressions/s of every kernel / 2 per verification;\n"
            "  - verify_buffer once per SHA-1 kernel the CPU runs (and why the default one was chosen);\n"
            "  - single-packet verify() latency on both backends, and the bare C call it wraps;\n"
            "  - one Verifier on 1 and 2 threads; 2 processes sharing one state file;\n"
            "  - generated traffic of every shape, and with replays, forgeries, unknown peers (kbmfast gen);\n"
            "  - key-table setup time; unless --quick, 1 M peers: throughput and resident memory per peer.\n"
            "One core unless said. Every timed run checks every verdict; a wrong one is an error (exit 1).\n"
            "The last lines compare the figures with the performance targets (docs/performance.md)."
        ),
        epilog="example: kbmfast bench --quick; kbmfast bench --plot docs/throughput.png",
    )
    p.add_argument("--quick", action="store_true", help="a smaller run (5000 peers, 4 rounds, best of 3, no 1 M peers)")
    p.add_argument("--peers", type=_positive, metavar="N", help="number of peers (default 10000; 5000 with --quick)")
    p.add_argument("--rounds", type=_positive, metavar="N", help="Binding Updates per peer (default 10; 4 with --quick)")
    p.add_argument(
        "--batch", type=_positive, nargs="+", metavar="N", help="batch size(s) for verify_buffer/verify_batch (default 4096)"
    )
    p.add_argument(
        "--repeat", type=_positive, metavar="N", help="runs per measure; the best is reported (default 5; 3 with --quick)"
    )
    p.add_argument(
        "--big-peers", type=_non_negative, metavar="N", help="peers of the large-table measure (default 1000000; 0: skip)"
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also sweep peers and batch sizes and draw throughput per backend with the ceiling (needs kbmfast[plot])",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument(
        "--serve",
        action="store_true",
        help="instead: kbmfast serve on a veth pair at increasing tcpreplay rates against a plain libpcap loop "
        "(root, iproute2, nftables, tcpreplay; --peers, and --quick for 20000 packets a step)",
    )
    p.set_defaults(handler=run_bench)


def _non_negative(text: str) -> int:
    return 0 if text.strip() == "0" else _positive(text)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark (kbmfast.bench) and print its table or JSON; draw the plot if asked.

    The plot's file is opened (as a temporary file beside it) before anything is measured, so a
    path that cannot be written fails at once; an interrupt leaves no figures and no plot.
    """
    import importlib.util

    from kbmfast import bench

    from .._outputs import CliError, Interrupted, OutputFile, os_error_text

    if args.serve:
        return _bench_serve(args)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise CliError("--plot needs matplotlib: pip install 'kbmfast[plot]'", 1)
    try:
        plot_file = OutputFile(args.plot) if args.plot else None
    except OSError as e:
        raise CliError(f"--plot {os_error_text(e)}") from None
    try:
        status = _bench(args, bench, plot_file)
    except Interrupted as e:
        if plot_file is not None:
            plot_file.discard()
        raise CliError(f"interrupted by {e}; nothing measured is printed (run it again; --quick is shorter)", e.status) from None
    except BaseException:
        if plot_file is not None:
            plot_file.discard()
        raise
    if plot_file is not None:
        if status == 0:
            plot_file.commit()
            print(f"plot: {args.plot}", file=sys.stderr)
        else:
            plot_file.discard()
    return status


def _bench_serve(args: argparse.Namespace) -> int:
    """``kbmfast bench --serve`` (kbmfast.bench.serve)."""
    from .._outputs import CliError
    from ..bench import serve as serve_bench

    try:
        report = serve_bench.run(packets=20_000 if args.quick else 100_000, peers=args.peers or 1000)
    except serve_bench.ServeBenchError as e:
        raise CliError(str(e), 1) from None
    print(json.dumps(report.to_dict(), indent=2) if args.json else serve_bench.format_report(report))
    return 0


def _bench(args: argparse.Namespace, bench: Any, plot_file: Any) -> int:
    overrides: dict[str, Any] = {
        "peers": args.peers,
        "rounds": args.rounds,
        "repeat": args.repeat,
        "big_peers": args.big_peers,
    }
    if args.batch:
        overrides["batches"] = tuple(args.batch)
    chosen = {k: v for k, v in overrides.items() if v is not None}
    try:
        config = bench.BenchConfig.quick(**chosen) if args.quick else bench.BenchConfig(**chosen)
        report = bench.run(config, plot=bool(args.plot))
        if plot_file is not None:
            bench.plot(report, plot_file.stream, fmt=os.path.splitext(args.plot)[1][1:] or "png")
        print(json.dumps(report.to_dict(), indent=2) if args.json else bench.format_report(report))
    except (ValueError, bench.BenchError) as e:
        print(f"kbmfast bench: {e}", file=sys.stderr)
        return 1
    return 0
