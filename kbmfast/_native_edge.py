"""The cffi edge: the compiled module, typed loosely here and nowhere else."""

from __future__ import annotations

import importlib
from typing import Any

try:
    _native: Any = importlib.import_module("._native", __package__)
except ImportError as e:  # pragma: no cover - a broken install, said plainly
    raise ImportError(
        "kbmfast's C core (kbmfast._native) is not built. Install the package (pip install .) rather "
        "than importing it from a source checkout, or use kbmfast.reference, the pure-Python backend."
    ) from e

ffi: Any = _native.ffi
lib: Any = _native.lib
