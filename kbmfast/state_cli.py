"""``kbmfast state``: inspect, check and repair a sequence state file (docs/state-format.md)."""

from __future__ import annotations

import argparse
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
    verbs = p.add_subparsers(dest="verb", required=True, metavar="{show,check,compact,migrate}")
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
            "verifier using the file first: a running one keeps the old file mapped. --salvage keeps the sound "
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
            "verifier using the file first. With --keys, each configured peer's advance is charged to its key in "
            "that key file; without, to whichever key the peer uses next. Sequence numbers and advances are kept."
        ),
    )
    migrate.add_argument("file", help="the version 1 state file")
    migrate.add_argument("--keys", metavar="KEYS", help="the key file the verifiers use")
    migrate.add_argument("--output", metavar="FILE", help="write here instead of replacing FILE")
    migrate.set_defaults(handler=run_migrate)


def run_show(args: argparse.Namespace) -> int:
    """Print the slots of a valid state file."""
    from . import _stateformat as fmt
    from ._types import StateFileError

    try:
        _, slots = fmt.read_slots(args.file)
    except StateFileError as e:
        print(f"kbmfast state show: {e}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{'address':<40} {'last sequence':>13} {'advance':>8} {'key':>8} {'earlier':>7}")
    for address, word, earlier in slots:
        has, seq, advance, fp = fmt.unpack_word(word)
        addr = str(ipaddress.IPv6Address(address))
        key = f"{fp:08x}" if fp else "-"
        if args.json:
            row = {"address": addr, "last_sequence": seq if has else None, "advance": advance, "key": key}
            print(json.dumps({**row, "earlier_keys": len(earlier)}))
        else:
            print(f"{addr:<40} {seq if has else '-':>13} {advance:>8} {key:>8} {len(earlier):>7}")
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
        if args.salvage:
            salt, slots, problems = fmt.salvage(args.file)
            for problem in problems:
                print(f"salvage: {problem}", file=sys.stderr)
        else:
            salt, slots = fmt.read_slots(args.file)
        before = len(slots)
        if args.drop_unconfigured:
            configured = {h.packed for h in KeyTable.load(args.keys)}
            slots = [slot for slot in slots if slot[0] in configured]
            print(f"dropped {before - len(slots)} slots of unconfigured addresses", file=sys.stderr)
        fmt.write(args.output or args.file, salt, slots)
    except (KbmError, OSError) as e:
        print(f"kbmfast state compact: {e}", file=sys.stderr)
        return 1
    print(f"{args.output or args.file}: {len(slots)} slots written ({os.path.getsize(args.output or args.file)} bytes)")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """Rewrite a version 1 state file as version 2."""
    from . import _stateformat as fmt
    from ._keys import KeyTable
    from ._types import KbmError
    from .reference.verifier import peer_fingerprint

    try:
        v1 = fmt.read_v1(args.file)
        salt = os.urandom(fmt.SALT_SIZE)
        fingerprints = {}
        if args.keys:
            fingerprints = {peer.home: peer_fingerprint(salt, peer) for peer in KeyTable.load(args.keys).peers()}
        slots = fmt.migrate(v1, salt, fingerprints)
        fmt.write(args.output or args.file, salt, slots)
    except (KbmError, OSError) as e:
        print(f"kbmfast state migrate: {e}", file=sys.stderr)
        return 1
    charged = sum(1 for a, *_ in v1 if a in fingerprints)
    where = args.output or args.file
    print(f"{where}: {len(slots)} slots migrated to format version {fmt.VERSION} ({charged} charged to a configured key)")
    return 0
