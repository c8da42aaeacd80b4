"""``kbmfast keys generate``: a key file with fresh random keys from the operating system's CSPRNG."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
from typing import TYPE_CHECKING

from .. import _outputs
from .._outputs import EXIT_SIGPIPE, CliError, Stdout, os_error_text, output_files, refuse_existing

if TYPE_CHECKING:
    from .._outputs import Subparsers


def add_keys(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast keys``: key-file commands (``generate``)."""
    p = sub.add_parser("keys", help="key-file commands", description="Create and manage kbmfast key files.")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    g = keys_sub.add_parser(
        "generate",
        help="write a key file with fresh random keys for N peers",
        description=(
            "Write a key file (TOML, mode 0600) with fresh random keys from the operating system's CSPRNG "
            "(Python's secrets) for N peers whose home addresses are the first N host addresses of PREFIX."
        ),
        epilog="example: kbmfast keys generate --peers 3 --out cn.keys --prefix 2001:db8:1::/64 --kind kcn",
    )
    g.add_argument("--peers", type=int, required=True, metavar="N", help="number of peers (home addresses PREFIX::1 on)")
    g.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the key file to write (mode 0600); an existing file is not overwritten; '-': standard output",
    )
    g.add_argument("--prefix", default="2001:db8:1::/64", help="the home addresses' prefix (default 2001:db8:1::/64)")
    g.add_argument(
        "--kind",
        choices=("kbm", "kcn"),
        default="kbm",
        help="kbm: a 20-byte Kbm per peer (draft-ietf-mip6-precfgKbm, default); kcn: RFC 4449, a 20-byte "
        "Kcn and two 8-byte nonces per peer",
    )
    g.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    g.set_defaults(handler=run_keys_generate)


def run_keys_generate(args: argparse.Namespace) -> int:
    """Write N fresh random keys (to standard output with ``--out -``)."""
    import kbmfast

    try:
        net = ipaddress.IPv6Network(args.prefix, strict=True)
    except ValueError as e:
        raise CliError(f"--prefix: {e}") from None
    if args.peers < 1 or args.peers > net.num_addresses - 1:
        raise CliError(f"--peers must be in 1..{min(net.num_addresses - 1, 10**9)} for {net}")
    to_stdout = args.out == "-"
    if not to_stdout:
        refuse_existing([("--out", args.out)], args.force)
    table = kbmfast.KeyTable()
    base = int(net.network_address)
    for i in range(1, args.peers + 1):
        home = ipaddress.IPv6Address(base + i)
        if args.kind == "kbm":
            table.add_kbm(home, secrets.token_bytes(kbmfast.KBM_SIZE))
        else:
            table.add_kcn(home, secrets.token_bytes(kbmfast.MIN_KCN_SIZE), secrets.token_bytes(8), secrets.token_bytes(8))
    text = table.to_toml()
    if to_stdout:
        return 0 if Stdout().write(text) else EXIT_SIGPIPE
    try:
        with output_files([(args.out, True)], _outputs.current) as files:
            files[0].stream.write(text.encode())
    except OSError as e:
        raise CliError(f"--out {os_error_text(e)}") from None
    print(f"kbmfast keys generate: {args.peers} {args.kind} keys to {args.out} (mode 0600)")
    return 0
