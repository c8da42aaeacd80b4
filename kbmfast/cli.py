"""The kbmfast command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kbmfast`` command."""
    parser = argparse.ArgumentParser(prog="kbmfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version and the SHA-1 kernel")
    args = parser.parse_args(argv)
    if args.command == "version":
        import kbmfast

        print(f"kbmfast {kbmfast.__version__} (C core, SHA-1 kernel: {kbmfast.kernel})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
