"""The kbmfast command line: the ``kbmfast`` parser, and the entry point that runs a command.

One module per command in this package (``version``, ``bench``, ``verify``, ``gen``, ``keys``,
``state``, ``serve``, ``mn``); this one only wires them. Each command module registers its
parser on the subparsers with ``def add_NAME(sub: Subparsers[argparse.ArgumentParser]) -> None``
and sets ``handler`` (a function of the parsed arguments returning the exit status); what a
command needs beyond argparse is imported inside its handler. To add a subcommand, write its
module and list its ``add_NAME`` in ``_registrars()``. The library (kbmfast, kbmfast.bench,
kbmfast.gen...) never imports this package (tests/test_import_cycles.py).

Handlers follow kbmfast._outputs: an ordinary error is ``raise CliError(message, status)`` (one
line on stderr, no traceback); output files go through ``OutputFile``/``output_files`` (a
temporary file renamed into place) after ``check_distinct`` (no output onto an input); a long
loop runs inside ``_outputs.current.deferred()`` and polls ``_outputs.current.signum`` at its
batch boundaries, elsewhere SIGINT/SIGTERM raise ``Interrupted`` (130/143).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .._outputs import Subparsers
from .version import _VersionAction, version_text

__all__ = ["build_parser", "command_name", "main", "version_text"]

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["Subparsers[argparse.ArgumentParser]"], None]


def _registrars() -> Sequence[Registrar]:
    """Every subcommand, in --help order."""
    from .bench import add_bench
    from .gen import add_gen
    from .keys import add_keys
    from .mn import add_mn
    from .serve import add_serve
    from .state import add_state
    from .verify import add_verify
    from .version import add_version

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
