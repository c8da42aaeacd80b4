"""The cffi edge: the compiled module, typed loosely here and nowhere else."""

from __future__ import annotations

from typing import Any

try:
    from . import _native  # type: ignore[attr-defined]
except ImportError as e:  # pragma: no cover - a broken install, said plainly
    raise ImportError(
        "kbmfast's C core (kbmfast._native) is not built. Install the package (pip install .) rather "
        "than importing it from a source checkout, or use kbmfast.reference, the pure-Python backend."
    ) from e

ffi: Any = _native.ffi
lib: Any = _native.lib
