"""Run in the venv the wheel was installed into: kbmfast is the installed one, its C core loads,
and every shared library the extension needs beyond the manylinux baseline resolves inside the
wheel's kbmfast.libs/ (the vendored copies), not on the system, and that libcrypto is the only one
(libpcap is opened at run time).

Usage: python -P check_wheel.py VENV
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

# The libraries a manylinux wheel may take from the system (glibc and the compiler runtime).
BASELINE = ("linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "libgcc_s.so")


def main() -> int:
    """Check the installed package; exit with the reason on the first failure."""
    venv = pathlib.Path(sys.argv[1]).resolve()
    import kbmfast
    from kbmfast import _native_edge

    pkg = pathlib.Path(kbmfast.__file__).resolve().parent
    if venv not in pkg.parents:
        sys.exit(f"kbmfast was imported from {pkg}, not from the venv {venv}")
    if kbmfast.backend != "c":
        sys.exit(f"the C backend did not load (backend {kbmfast.backend!r})")
    native = pathlib.Path(_native_edge._native.__file__).resolve()
    if not native.name.endswith(".abi3.so"):
        sys.exit(f"the extension is not abi3: {native.name}")
    libs = (pkg.parent / "kbmfast.libs").resolve()
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    ldd = subprocess.run(["ldd", str(native)], capture_output=True, text=True, check=True, env=env).stdout
    vendored, outside = [], []
    for line in ldd.splitlines():
        name, _, rest = line.strip().partition(" => ")
        path = rest.split(" (")[0].strip() if rest else ""
        if name.startswith(BASELINE) or pathlib.Path(name).name.startswith(BASELINE):
            continue
        if path and pathlib.Path(path).resolve().parent == libs:
            vendored.append(pathlib.Path(path))
        else:
            outside.append(line.strip())
    if outside:
        sys.exit("the extension needs libraries outside the wheel:\n  " + "\n  ".join(outside))
    if not any(p.name.startswith("libcrypto") for p in vendored):
        sys.exit(f"no vendored libcrypto in ldd's answer:\n{ldd}")
    # libpcap is opened at run time (csrc/pcap_dl.c), so neither it nor what Debian's build of it
    # links (libdbus, libsystemd, libgcrypt, ...) may ride along in the wheel.
    carried = sorted(p.name for p in libs.iterdir()) if libs.is_dir() else []
    stray = [n for n in carried if not n.startswith("libcrypto")]
    if stray:
        sys.exit(f"the wheel carries more than libcrypto: {stray}")
    print(f"kbmfast from {pkg} (C backend, {native.name})")
    for p in vendored:
        print(f"vendored: {p.name} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
