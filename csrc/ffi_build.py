"""cffi build script: the declarations of csrc/kbm.h, compiled into kbmfast._native by CMake.

Usage (from CMake): python csrc/ffi_build.py OUTPUT.c
The cdef is kbm.h itself with its preprocessor lines removed (cffi cannot read them), so the
header stays the one place the C API is written down.
"""

import pathlib
import re
import sys

import cffi

HERE = pathlib.Path(__file__).resolve().parent


def cdef_from_header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            m = re.match(r"#define\s+(KBM_\w+)\s+(\d+)\b", stripped)
            if m:
                lines.append(f"#define {m.group(1)} {m.group(2)}")
            continue
        lines.append(line)
    return "\n".join(lines)


def build() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(cdef_from_header((HERE / "kbm.h").read_text()))
    ffi.set_source("kbmfast._native", '#include "kbm.h"')
    return ffi


if __name__ == "__main__":
    build().emit_c_code(sys.argv[1])
