"""The kbmfast command line.

Each subcommand is one small function that registers its parser on the subparsers and sets
``handler`` (a function of the parsed arguments returning the exit status); what a command
needs beyond argparse is imported inside its handler. To add a subcommand (verify, gen, keys,
state...), write ``def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None`` and its
handler in the command's own module, and list it in ``_registrars()``.

Handlers follow kbmfast._outputs: an ordinary error is ``raise CliError(message, status)`` (one
line on stderr, no traceback); output files go through ``OutputFile``/``output_files`` (a
temporary file renamed into place) after ``check_distinct`` (no output onto an input); a long
loop runs inside ``_outputs.current.deferred()`` and polls ``_outputs.current.signum`` at its
batch boundaries, elsewhere SIGINT/SIGTERM raise ``Interrupted`` (130/143).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._outputs import Subparsers

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["Subparsers[argparse.ArgumentParser]"], None]


# ---------------------------------------------------------------------------------------------
# kbmfast version


def add_version(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast version``: the version and the SHA-1 kernel in use."""
    p = sub.add_parser(
        "version", help="print the version and the SHA-1 kernel", description="Print the version and SHA-1 kernel."
    )
    p.set_defaults(handler=run_version)


def version_text() -> str:
    """``kbmfast X.Y.Z (C core, SHA-1 kernel: ...)``; ValueError for a bad ``KBMFAST_KERNEL``."""
    import kbmfast

    return f"kbmfast {kbmfast.__version__} (C core, SHA-1 kernel: {kbmfast.kernel})"


def run_version(args: argparse.Namespace) -> int:
    """Print ``kbmfast X.Y.Z (C core, SHA-1 kernel: ...)``."""
    try:
        text = version_text()
    except ValueError as e:  # a bad KBMFAST_KERNEL
        print(f"kbmfast version: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


class _VersionAction(argparse.Action):
    """``kbmfast --version``: what ``kbmfast version`` prints (kbmfast imported only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and the SHA-1 kernel, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        try:
            print(version_text())
        except ValueError as e:  # a bad KBMFAST_KERNEL
            parser.exit(2, f"kbmfast: {e}\n")
        parser.exit()


# ---------------------------------------------------------------------------------------------
# kbmfast bench


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
    """``kbmfast bench --serve`` (kbmfast.serve_bench)."""
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


# ---------------------------------------------------------------------------------------------
# The entry point


def _registrars() -> Sequence[Registrar]:
    """Every subcommand, in --help order."""
    from .mn import add_mn
    from .serve import add_serve
    from .state import add_state
    from .verify import add_gen, add_keys, add_verify

    return (add_version, add_bench, add_verify, add_gen, add_keys, add_state, add_serve, add_mn)


def build_parser(registrars: Sequence[Registrar] | None = None) -> argparse.ArgumentParser:
    """The ``kbmfast`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="kbmfast",
        description="Authorize Mobile IPv6 Binding Updates with preconfigured Binding Management Keys (RFC 4449).",
        epilog="Run 'kbmfast COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in registrars or _registrars():
        register(sub)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``kbmfast verify``, ``kbmfast state show``...: the prefix of the command's messages."""
    words = ["kbmfast", args.command]
    words += [w for w in (getattr(args, "verb", None), getattr(args, "keys_command", None)) if w]
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kbmfast`` command; returns the exit status.

    Ordinary errors end in one line on stderr and the command's documented status, never a
    traceback: CliError (its status), an OSError that a command did not catch (status 1, the
    path and the cause), SIGINT/SIGTERM (130/143, see kbmfast._outputs), a standard output
    closed by its reader (141, quietly).
    """
    from .. import _outputs

    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    name = command_name(args)
    interrupts = _outputs.current = _outputs.Interrupts()
    installed = interrupts.install()
    try:
        status = handler(args)
        sys.stdout.flush()
        return status
    except _outputs.CliError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return e.status
    except _outputs.Interrupted as e:
        print(f"{name}: interrupted by {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:  # SIGINT outside the main thread's handler (e.g. called from a thread)
        print(f"{name}: interrupted by SIGINT", file=sys.stderr)
        return _outputs.EXIT_SIGINT
    except BrokenPipeError:
        _outputs.silence_stdout()
        return _outputs.EXIT_SIGPIPE
    except OSError as e:
        print(f"{name}: {_outputs.os_error_text(e)}", file=sys.stderr)
        return 1
    finally:
        if installed:
            interrupts.restore()


if __name__ == "__main__":
    sys.exit(main())
