"""``kbmfast state``: inspect, check and repair a sequence state file (docs/state-format.md)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import _outputs
from .._outputs import EXIT_SIGPIPE, CliError, Interrupted, Stdout, check_distinct, os_error_text

if TYPE_CHECKING:
    from .._outputs import Subparsers


def add_state(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """Register ``kbmfast state show|check|compact``."""
    p = sub.add_parser(
        "state",
        help="inspect, check or repair a sequence state file",
        description="Inspect, check or repair the persistent sequence table that Verifier(state=...) keeps.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="{show,check,compact,migrate,new,merge}")
    show = verbs.add_parser("show", help="list every slot: address, last sequence, advance, key fingerprint")
    show.add_argument("file", help="the state file")
    show.add_argument("--json", action="store_true", help="one JSON object per slot")
    show.set_defaults(handler=run_show)
    check = verbs.add_parser("check", help="validate the file; exit 0 if sound, 1 with the reason if not")
    check.add_argument("file", help="the state file")
    check.set_defaults(handler=run_check)
    compact = verbs.add_parser(
        "compact",
        help="rewrite the file with exactly its slots (atomically)",
        description=(
            "Rewrite a state file with exactly its slots, through a temporary file and a rename. Stop every "
            "verifier using the file first: while one has it open, compact refuses (exit status 3). --salvage keeps the sound "
            "slots of a damaged file (an address with two slots loses both: rekey those peers). "
            "--keys with --drop-unconfigured also drops the slots of addresses not in that key file: their "
            "replay protection is gone, so never re-add such a peer with its old key."
        ),
    )
    compact.add_argument("file", help="the state file")
    compact.add_argument("--salvage", action="store_true", help="keep what can be trusted from a damaged file")
    compact.add_argument("--keys", metavar="KEYS", help="a key file (with --drop-unconfigured)")
    compact.add_argument("--drop-unconfigured", action="store_true", help="drop slots of addresses not in --keys")
    compact.add_argument("--output", metavar="FILE", help="write here instead of replacing FILE")
    compact.set_defaults(handler=run_compact)
    migrate = verbs.add_parser(
        "migrate",
        help="rewrite a format version 1 file as version 2",
        description=(
            "Rewrite a format version 1 state file (kbmfast before key fingerprints) as version 2. Stop every "
            "verifier using the file first: while one has it open, migrate refuses (exit status 3). "
            "With --keys, each configured peer's advance is charged to its key in "
            "that key file; without, to whichever key the peer uses next. Sequence numbers and advances are kept."
        ),
    )
    migrate.add_argument("file", help="the version 1 state file")
    migrate.add_argument("--keys", metavar="KEYS", help="the key file the verifiers use")
    migrate.add_argument("--output", metavar="FILE", help="write here instead of replacing FILE")
    migrate.set_defaults(handler=run_migrate)
    new = verbs.add_parser("new", help="create an empty state file (e.g. the seed that sharded runs copy)")
    new.add_argument("file", help="the state file to create (refused if it exists)")
    new.set_defaults(handler=run_new)
    merge = verbs.add_parser(
        "merge",
        help="merge the state files of a sharded run (--shard i/n) into one",
        description=(
            "Merge the state files of n sharded runs, given in shard order (the file of --shard 0/n first), into "
            "the file one serial run would have written: each address's slot comes from the shard that owns it. "
            "The shards must have started from copies of one state file (one salt); docs/tools.md, sharding."
        ),
    )
    merge.add_argument("files", nargs="+", metavar="FILE", help="the shards' state files, shard 0 first")
    merge.add_argument("--output", required=True, metavar="OUT", help="the merged state file (written atomically)")
    merge.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    merge.set_defaults(handler=run_merge)


def _read_error(e: OSError, path: str) -> CliError:
    return CliError(f"state file {os_error_text(e, path)}", 1)


def run_show(args: argparse.Namespace) -> int:
    """Print the slots of a valid state file (stopping cleanly on SIGINT/SIGTERM or a closed
    standard output: the slots printed are then said on stderr)."""
    from .. import _stateformat as fmt
    from .._types import StateFileError

    try:
        _, slots = fmt.read_slots(args.file)
    except StateFileError as e:
        raise CliError(str(e), 1) from None
    except OSError as e:
        raise _read_error(e, args.file) from None
    out = Stdout()
    interrupts = _outputs.current
    printed = 0
    with interrupts.deferred():
        if not args.json:
            out.write(f"{'address':<40} {'last sequence':>13} {'advance':>8} {'key':>8} {'earlier':>7}\n")
        for address, word, earlier in slots:
            if interrupts.signum is not None or out.closed:
                break
            has, seq, advance, fp = fmt.unpack_word(word)
            addr = str(ipaddress.IPv6Address(address))
            key = f"{fp:08x}" if fp else "-"
            if args.json:
                doc = {"address": addr, "last_sequence": seq if has else None, "advance": advance, "key": key}
                line = json.dumps({**doc, "earlier_keys": len(earlier)})
            else:
                line = f"{addr:<40} {seq if has else '-':>13} {advance:>8} {key:>8} {len(earlier):>7}"
            if out.write(line + "\n"):
                printed += 1
        out.flush()
        if interrupts.signum is not None or out.closed:
            interrupts.handled = True
            why = f"interrupted by {interrupts.name}" if interrupts.signum is not None else "standard output closed"
            print(f"kbmfast state show: {why} after {printed} of {len(slots)} slots", file=sys.stderr)
            return EXIT_SIGPIPE if out.closed else interrupts.status
    if not args.json:
        out.write(f"{len(slots)} slots\n")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Validate a state file."""
    from .. import _stateformat as fmt
    from .._types import StateFileError

    try:
        count = fmt.validate(args.file)
    except StateFileError as e:
        raise CliError(str(e), 1) from None
    except OSError as e:
        raise _read_error(e, args.file) from None
    print(f"{args.file}: sound, {count} slots")
    return 0


def run_compact(args: argparse.Namespace) -> int:
    """Rewrite (and optionally salvage or prune) a state file."""
    from .. import _stateformat as fmt
    from ._common import load_key_file

    if args.drop_unconfigured and not args.keys:
        raise CliError("--drop-unconfigured needs --keys")
    if args.output is not None:
        inputs = [("FILE", args.file), ("--keys", args.keys)]
        check_distinct(inputs, [("--output", args.output)])
    target = args.output or args.file
    with _rewriting([args.file, args.output], f"{target} is as it was"):
        if args.salvage:
            salt, slots, problems = fmt.salvage(args.file)
            for problem in problems:
                print(f"salvage: {problem}", file=sys.stderr)
        else:
            salt, slots = fmt.read_slots(args.file)
        before = len(slots)
        if args.drop_unconfigured:
            configured = {h.packed for h in load_key_file(args.keys, 1)}
            slots = [slot for slot in slots if slot[0] in configured]
            print(f"dropped {before - len(slots)} slots of unconfigured addresses", file=sys.stderr)
        fmt.write(target, salt, slots)
    print(f"{target}: {len(slots)} slots written ({os.path.getsize(target)} bytes)")
    return 0


@contextlib.contextmanager
def _rewriting(files: list[str | None], after_interrupt: str) -> Iterator[None]:
    """Hold the state files (those that exist) against every verifier and mobile node while they
    are read and rewritten (``_stateformat.exclusive``), and turn failures into CliError: exit 3
    while one has any of them open, 1 for an error, the signal's status for an interrupt
    (``after_interrupt`` says what it left)."""
    from .. import _stateformat as fmt
    from .._types import KbmError

    try:
        with contextlib.ExitStack() as held:
            for name in dict.fromkeys(f for f in files if f is not None):  # check_distinct: no two alike
                if name == files[0] or os.path.lexists(name):
                    held.enter_context(fmt.exclusive(name))
            yield
    except fmt.InUse as e:
        raise CliError(str(e), 3) from None
    except KbmError as e:
        raise CliError(str(e), 1) from None
    except OSError as e:
        raise CliError(os_error_text(e), 1) from None
    except Interrupted as e:
        raise CliError(f"interrupted by {e}; {after_interrupt}", e.status) from None


def run_migrate(args: argparse.Namespace) -> int:
    """Rewrite a version 1 state file as version 2."""
    from .. import _stateformat as fmt
    from ..reference.verifier import peer_fingerprint
    from ._common import load_key_file

    if args.output is not None:
        check_distinct([("FILE", args.file), ("--keys", args.keys)], [("--output", args.output)])
    where = args.output or args.file
    with _rewriting([args.file, args.output], f"{where} is as it was"):
        v1 = fmt.read_v1(args.file)
        salt = os.urandom(fmt.SALT_SIZE)
        fingerprints = {}
        if args.keys:
            fingerprints = {peer.home: peer_fingerprint(salt, peer) for peer in load_key_file(args.keys, 1).peers()}
        slots = fmt.migrate(v1, salt, fingerprints)
        fmt.write(where, salt, slots)
    charged = sum(1 for a, *_ in v1 if a in fingerprints)
    print(f"{where}: {len(slots)} slots migrated to format version {fmt.VERSION} ({charged} charged to a configured key)")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """Merge sharded state files into the one a serial run would have written."""
    from .. import _stateformat as fmt
    from .._outputs import refuse_existing
    from .._shard import merge_states

    check_distinct([(f"FILE {i}", f) for i, f in enumerate(args.files)], [("--output", args.output)])
    refuse_existing([("--output", args.output)], args.force)
    with _rewriting([*args.files, args.output], f"{args.output} was not written"):
        inputs = [(name, *fmt.read_slots(name)) for name in args.files]
        salt, slots = merge_states(inputs)
        fmt.write(args.output, salt, slots)
    print(f"{args.output}: {len(slots)} slots merged from {len(args.files)} shards")
    return 0


def run_new(args: argparse.Namespace) -> int:
    """Create an empty state file."""
    from .. import _stateformat as fmt
    from .._types import KbmError

    if os.path.lexists(args.file):
        raise CliError(f"{args.file} exists (kbmfast state new never overwrites)")
    try:
        fmt.create(args.file)
    except KbmError as e:
        raise CliError(str(e), 1) from None
    print(f"{args.file}: empty state file created")
    return 0
