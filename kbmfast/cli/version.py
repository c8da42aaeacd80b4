"""``kbmfast version`` and ``kbmfast --version``: the version and the SHA-1 kernel in use."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._outputs import Subparsers


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
