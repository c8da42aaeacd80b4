"""libpcap is opened when live capture is first used (csrc/pcap_dl.c), not linked: without it,
everything but live capture works, and live capture says what is missing in one line."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import kbmfast

#: ldconfig lives in sbin, which the wheel test's PATH (.ci/wheel) leaves out.
LDCONFIG = shutil.which("ldconfig") or shutil.which("ldconfig", path="/usr/sbin:/sbin")

pytestmark = [
    pytest.mark.skipif(kbmfast.backend != "c", reason="the C core's loading of libpcap"),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or LDCONFIG is None,
        reason="hiding the system's libpcap needs root and unshare (.ci/run runs as root)",
    ),
]


def _without_libpcap(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) in a private mount namespace where every libpcap the dynamic linker
    knows is /dev/null."""
    cache = subprocess.run([str(LDCONFIG), "-p"], capture_output=True, text=True, check=True).stdout
    paths = sorted({str(pathlib.Path(w).resolve()) for w in cache.split() if "/libpcap." in w})
    assert paths, "no libpcap to hide: the test would prove nothing"
    hide = "".join(f"mount --bind /dev/null '{p}' && " for p in paths)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide + script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_the_extension_does_not_link_libpcap() -> None:
    from kbmfast import _native_edge

    ldd = subprocess.run(["ldd", _native_edge._native.__file__], capture_output=True, text=True, check=True)
    assert "libcrypto" in ldd.stdout
    assert "libpcap" not in ldd.stdout


def test_without_libpcap_captures_still_verify() -> None:
    kbm = [sys.executable, "-P", "-m", "kbmfast.cli"]
    r = _without_libpcap(" ".join(kbm) + " verify --demo --quiet")
    assert r.returncode == 0, r.stderr
    assert "ACCEPTED" in r.stdout


@pytest.mark.parametrize("command", ["verify", "serve"])
def test_without_libpcap_live_capture_says_so(tmp_path: pathlib.Path, command: str) -> None:
    keys = tmp_path / "keys.toml"
    gen = [sys.executable, "-P", "-m", "kbmfast.cli", "keys", "generate", "--peers", "1", "--out", str(keys)]
    subprocess.run(gen, check=True, capture_output=True)
    argv = [sys.executable, "-P", "-m", "kbmfast.cli", command, "-i", "lo", "--keys", str(keys)]
    if command == "serve":
        argv += ["--state", str(tmp_path / "state")]
    r = _without_libpcap(" ".join(argv))
    assert r.returncode != 0
    # (an editable install's rebuild chatter aside: CI installs the package for real)
    lines = [line for line in r.stderr.splitlines() if line.startswith("kbmfast ")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"kbmfast {command}: interface lo: ")
    assert "libpcap is not installed" in lines[0]
    assert "Traceback" not in r.stderr
