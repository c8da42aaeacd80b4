"""``kbmfast state``: inspect, check and repair a sequence state file (docs/state-format.md)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cli import Subparsers


def add_state(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """Register ``kbmfast state show|check|compact``."""
    p = sub.add_parser(
        "state",
        help="inspect, check or repair a sequence state file",
        description="Inspect, check or repair the persistent sequence table that Verifier(state=...) keeps.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="{show,check,compact}")
    show = verbs.add_parser("show", help="list every slot: address, last sequence, advance, key epoch")
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


def run_show(args: argparse.Namespace) -> int:
    """Print the slots of a valid state file."""
    from . import _stateformat as fmt
    from ._types import StateFileError

    try:
        slots = fmt.read_slots(args.file)
    except StateFileError as e:
        print(f"kbmfast state show: {e}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{'address':<40} {'last sequence':>13} {'advance':>8} {'epoch':>6}")
    for address, word in slots:
        has, seq, advance, epoch = fmt.unpack_word(word)
        addr = str(ipaddress.IPv6Address(address))
        if args.json:
            print(json.dumps({"address": addr, "last_sequence": seq if has else None, "advance": advance, "epoch": epoch}))
        else:
            print(f"{addr:<40} {seq if has else '-':>13} {advance:>8} {epoch:>6}")
    if not args.json:
        print(f"{len(slots)} slots")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Validate a state file."""
    from . import _stateformat as fmt
    from ._types import StateFileError

    try:
        count = fmt.validate(args.file)
    except StateFileError as e:
        print(f"kbmfast state check: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: sound, {count} slots")
    return 0


def run_compact(args: argparse.Namespace) -> int:
    """Rewrite (and optionally salvage or prune) a state file."""
    from . import _stateformat as fmt
    from ._keys import KeyTable
    from ._types import KbmError

    if args.drop_unconfigured and not args.keys:
        print("kbmfast state compact: --drop-unconfigured needs --keys", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as held:  # no verifier may have either file open meanwhile
            held.enter_context(fmt.exclusive(args.file))
            if args.output and os.path.lexists(args.output) and not os.path.samefile(args.file, args.output):
                held.enter_context(fmt.exclusive(args.output))
            if args.salvage:
                slots, problems = fmt.salvage(args.file)
                for problem in problems:
                    print(f"salvage: {problem}", file=sys.stderr)
            else:
                slots = fmt.read_slots(args.file)
            before = len(slots)
            if args.drop_unconfigured:
                configured = {h.packed for h in KeyTable.load(args.keys)}
                slots = [(a, w) for a, w in slots if a in configured]
                print(f"dropped {before - len(slots)} slots of unconfigured addresses", file=sys.stderr)
            fmt.write(args.output or args.file, slots)
    except fmt.InUse as e:
        print(f"kbmfast state compact: {e}", file=sys.stderr)
        return 3
    except (KbmError, OSError) as e:
        print(f"kbmfast state compact: {e}", file=sys.stderr)
        return 1
    print(f"{args.output or args.file}: {len(slots)} slots written ({os.path.getsize(args.output or args.file)} bytes)")
    return 0
