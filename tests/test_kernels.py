"""The MAC kernels (portable, SHA-NI, AVX2 and AVX-512 multi-buffer): each one this CPU runs,
forced with KBMFAST_KERNEL in its own process, must give the reference backend's verdicts on
random keys and messages; bad KBMFAST_KERNEL values are clear errors, never crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import kbmfast
from kbmfast import fast

KERNELS = [name for name, _, _ in fast.kernel_table()]
RUNNABLE = [name for name, ok, _ in fast.kernel_table() if ok]

# Random peers and Binding Updates: minimal ones (one inner block: the wide kernels' registers
# path), near-minimal ones (Alternate Care-of Address or Nonce Indices: two blocks), a few
# de-registrations, and one in three forged (signed with a key one bit off). Both backends judge
# every packet; the script prints the kernel in use and the verdicts of both.
SCRIPT = textwrap.dedent(
    """
    import json, random, sys
    import kbmfast, kbmfast.reference as ref

    rng = random.Random(int(sys.argv[1]))
    keys = kbmfast.KeyTable()
    peers = []
    for i in range(200):
        home = f"2001:db8:{i + 1:x}::{rng.randrange(1, 1 << 16):x}"
        kbm = rng.randbytes(20)
        keys.add_kbm(home, kbm)
        peers.append((home, kbm))
    packets = []
    for n in range(1500):
        home, kbm = rng.choice(peers)
        shape = rng.randrange(8)
        forged = rng.randrange(3) == 0
        if forged:
            kbm = bytes([kbm[0] ^ (1 << rng.randrange(8))]) + kbm[1:]
        pkt = bytes(kbmfast.build_binding_update(
            kbm, home=home, care_of=f"2001:db8:ffff::{rng.randrange(1, 1 << 16):x}",
            correspondent="2001:db8:cccc::1", sequence=n + 1,
            lifetime=0 if shape == 7 else rng.randrange(1, 1000),
            alternate_care_of=f"2001:db8:eeee::{n + 1:x}" if shape == 5 else None,
            nonce_indices=(rng.randrange(65536), rng.randrange(65536)) if shape == 6 else None))
        packets.append(pkt)
    c = kbmfast.Verifier(keys).verify_batch(packets)
    r = ref.Verifier(keys).verify_batch(packets)
    print(json.dumps({"kernel": kbmfast.kernel, "c": [int(v) for v in c], "ref": [int(v) for v in r]}))
    """
)


def _run(kernel: str | None, *args: str, code: str = SCRIPT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("KBMFAST_KERNEL", None)
    if kernel is not None:
        env["KBMFAST_KERNEL"] = kernel
    return subprocess.run([sys.executable, "-P", "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)


def test_kernel_names() -> None:
    """The table lists every kernel once; the one in use is one this CPU runs."""
    assert KERNELS == ["portable", "sha-ni", "avx2", "avx512"]
    assert "portable" in RUNNABLE
    assert kbmfast.kernel in RUNNABLE
    assert "kernel" in dir(kbmfast) and "kernel" in dir(fast)  # computed on first use, still listed
    for name, ok, ns in fast.kernel_table():
        assert (ns > 0) == ok, name  # every runnable kernel was timed by the calibration


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_agrees_with_reference(kernel: str) -> None:
    """Forced in a fresh process, each runnable kernel gives the reference's verdicts."""
    if kernel not in RUNNABLE:
        pytest.skip(f"this CPU cannot run {kernel}")
    proc = _run(kernel, "14")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])  # an editable install may log a rebuild first
    assert out["kernel"] == kernel
    assert out["c"] == out["ref"]
    verdicts = set(out["c"])
    assert {int(kbmfast.Verdict.ACCEPTED), int(kbmfast.Verdict.BAD_AUTHENTICATOR)} <= verdicts


def test_calibrated_choice_agrees_with_reference() -> None:
    """Unforced ("auto"), the calibration's choice answers like the reference too."""
    proc = _run("auto", "15")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])  # an editable install may log a rebuild first
    assert out["kernel"] in RUNNABLE
    assert out["c"] == out["ref"]


@pytest.mark.parametrize(
    ("value", "words"),
    [("sha3000", "no such kernel"), ("AVX512 ", "no such kernel"), ("\u00e9", "no such kernel")],
)
def test_unknown_kernel_is_a_clear_error(value: str, words: str) -> None:
    """An unknown name: ValueError naming the variable and the kernels, at first use."""
    code = "import kbmfast\ntry:\n    kbmfast.Verifier(kbmfast.KeyTable())\nexcept ValueError as e:\n    print(e)"
    proc = _run(value, code=code)
    assert proc.returncode == 0, proc.stderr
    assert "KBMFAST_KERNEL=" in proc.stdout and words in proc.stdout
    assert "portable, sha-ni, avx2, avx512" in proc.stdout


HIDE = "from kbmfast._native_edge import lib\nassert lib.kbm_test_hide_kernels({mask}) == 0\n"


def test_unsupported_kernel_is_a_clear_error() -> None:
    """A kernel this CPU cannot run (the wide ones hidden, as on a CPU without them) is refused
    with the list of those it can run: no SIGILL, nothing selected."""
    code = HIDE.format(mask=0b1100) + "import kbmfast\ntry:\n    kbmfast.kernel\nexcept ValueError as e:\n    print(e)"
    proc = _run("avx512", code=code)
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout.splitlines()[-1]
    assert "KBMFAST_KERNEL='avx512': this CPU cannot run that kernel" in message
    runs = message.split("it runs: ")[1]
    assert "portable" in runs and "avx" not in runs


def test_calibration_only_picks_what_the_cpu_runs() -> None:
    """With every kernel but portable hidden, the calibration picks portable, which answers like
    the reference; hiding portable itself is refused."""
    proc = _run(None, "16", code=HIDE.format(mask=0b1110) + SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["kernel"] == "portable"
    assert out["c"] == out["ref"]
    from kbmfast._native_edge import lib

    assert lib.kbm_test_hide_kernels(1) == lib.KBM_EINVAL


def test_unknown_kernel_in_the_cli_is_an_error_message(tmp_path: os.PathLike[str]) -> None:
    """``kbmfast version`` with a bad KBMFAST_KERNEL: a one-line error and status 2, no traceback."""
    code = "import sys\nfrom kbmfast.cli import main\nsys.exit(main(['version']))"
    proc = _run("bogus", code=code)
    assert proc.returncode == 2
    assert "KBMFAST_KERNEL='bogus'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_reports_the_choice_and_every_kernels_ceiling() -> None:
    """``kbmfast bench`` says which kernel runs and why, and measures every runnable kernel."""
    from kbmfast import bench

    choice = bench.kernel_choice()
    assert choice.startswith(f"{kbmfast.kernel} (")
    for name in RUNNABLE:
        assert f"{name} " in choice
    plans = bench.plan_kernels(6400)
    assert [p.name for p in plans] == [f"compress.kernel.{k}" for k in RUNNABLE if k != "sha-ni"]
    assert all(p.unit == "compressions" and p.once() > 0 for p in plans)


def test_bench_runs_verify_buffer_on_each_kernel_and_restores_the_choice() -> None:
    """The per-kernel verify_buffer plans check every verdict and leave the kernel as it was."""
    from kbmfast import bench
    from kbmfast._native_edge import ffi, lib

    before = ffi.string(lib.kbm_kernel()).decode()
    w = bench.make_workload(100, 2)
    plans = bench.plan_verify_buffer_kernels(w, 64)
    assert [p.name for p in plans] == [f"c.verify_buffer.kernel.{k}" for k in RUNNABLE]
    for p in plans:
        assert p.once() > 0
        assert ffi.string(lib.kbm_kernel()).decode() == before


# Mixed traffic (issue 14): RFC 4449 peers (Kcn of 20..80 bytes, care-of nonces of 1..64 bytes:
# one- and two-block keygen tokens) beside draft-Kbm ones, each peer moving among three care-of
# addresses (key-cache hits and misses, several derivations in one chunk), Binding Updates of
# one to about ten inner blocks (PadN options), Alternate Care-of Address, Nonce Indices,
# de-registrations and forgeries, verified in slices of random sizes (part-filled lane groups,
# chunks with few or many derivations). Prints both backends' verdicts and the accepted count
# per shape.
MIXED_SCRIPT = textwrap.dedent(
    """
    import json, random, struct, sys
    import kbmfast, kbmfast.reference as ref
    from kbmfast.reference import wire

    rng = random.Random(int(sys.argv[1]))
    cn = bytes.fromhex("20010db8cccc00000000000000000001")
    keys = kbmfast.KeyTable()
    peers = []
    for i in range(90):
        home = bytes.fromhex("20010db8") + struct.pack("!H", i + 1) + bytes(9) + bytes([7])
        coas = [bytes.fromhex("20010db8ffff") + rng.randbytes(9) + bytes([1]) for _ in range(3)]
        if i % 3:
            kcn = rng.randbytes(rng.choice((20, 20, 33, 64, 80)))
            hn, cnn = (rng.randbytes(rng.choice((1, 8, 8, 38, 39, 64))) for _ in range(2))
            keys.add_kcn(home, kcn, hn, cnn)
            def key(mac_coa, dereg, home=home, kcn=kcn, hn=hn, cnn=cnn):
                return kbmfast.derive_kbm(kcn, hn, cnn, home=home, care_of=mac_coa, deregistration=dereg)
        else:
            kbm = rng.randbytes(20)
            keys.add_kbm(home, kbm)
            key = lambda mac_coa, dereg, kbm=kbm: kbm
        peers.append((home, coas, key))

    def long_bu(kbm, home, coa, seq, pad):
        body = bytearray(struct.pack("!BBBBHHHH", 59, 0, 5, 0, 0, seq, 0x8000, 100))
        while pad > 0:
            n = min(pad, 200)
            body += wire.padding(n)
            pad -= n
        mh = wire._finish_with_bad(body)
        mh[-12:] = ref.authenticator(kbm, coa, cn, bytes(mh))
        mh[4:6] = struct.pack("!H", wire.mh_checksum(home, cn, bytes(mh)))
        ext = wire.home_address_header(home)
        return wire.ipv6_header(wire.NH_DEST_OPTS, len(ext) + len(mh), coa, cn) + ext + bytes(mh)

    packets, shapes = [], []
    for n in range(1400):
        home, coas, key = rng.choice(peers)
        coa = rng.choice(coas)
        shape = rng.choice(("minimal", "minimal", "minimal", "long", "long", "alt", "nonce", "dereg"))
        seq = n + 1
        forged = rng.randrange(5) == 0  # signed with a wrong key
        if shape == "long":
            kbm = rng.randbytes(20) if forged else key(coa, False)
            pkt = long_bu(kbm, home, coa, seq, rng.randrange(2, 700))
        else:
            alt = rng.choice(coas) if shape == "alt" else None
            dereg = shape == "dereg"
            kbm = rng.randbytes(20) if forged else key(home if dereg else alt or coa, dereg)
            pkt = kbmfast.build_binding_update(
                kbm, home=home, care_of=coa, correspondent=cn, sequence=seq,
                lifetime=0 if dereg else 300, alternate_care_of=alt,
                nonce_indices=(1, 2) if shape == "nonce" else None)
        packets.append(bytes(pkt))
        shapes.append("forged" if forged else shape)
    c_v, r_v = kbmfast.Verifier(keys), ref.Verifier(keys)
    c, r, at = [], [], 0
    while at < len(packets):
        part = packets[at : at + rng.randrange(1, 100)]
        at += len(part)
        c += [int(v) for v in c_v.verify_batch(part)]
        r += [int(v) for v in r_v.verify_batch(part)]
    accepted = {}
    for s, v in zip(shapes, c):
        accepted[s] = accepted.get(s, 0) + (v == 0)
    print(json.dumps({"kernel": kbmfast.kernel, "c": c, "ref": r, "accepted": accepted}))
    """
)


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_agrees_on_mixed_traffic(kernel: str) -> None:
    """Forced in a fresh process, each runnable kernel gives the reference's verdicts on mixed
    traffic: RFC 4449 peers (their registration keys derived in batches), multi-block Binding
    Updates (lanes of different block counts), part-filled lane groups."""
    if kernel not in RUNNABLE:
        pytest.skip(f"this CPU cannot run {kernel}")
    proc = _run(kernel, "21", code=MIXED_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])  # an editable install may log a rebuild first
    assert out["kernel"] == kernel
    assert out["c"] == out["ref"]
    # every shape was authenticated somewhere (not all dropped before the MAC), forgeries never
    assert all(out["accepted"][s] > 0 for s in ("minimal", "long", "alt", "nonce", "dereg")), out["accepted"]
    assert out["accepted"]["forged"] == 0
    assert int(kbmfast.Verdict.BAD_AUTHENTICATOR) in out["c"]
