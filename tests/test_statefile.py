"""The state file's open, create and lock rules (issue 9 items 3, 4, 6, 13, 14), on both backends.

Who may have written the file (owner, mode, type, links), the file changing under a running
verifier (truncated, removed, replaced), compact against a file in use, and creation on a full
disk. Everything that could kill the process (SIGBUS) runs in a child process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import resource
import signal
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator

import pytest

import kbmfast
import kbmfast.reference
from kbmfast import _stateformat as fmt
from kbmfast._native_edge import ffi, lib
from kbmfast.cli import main

HOME, AWAY, CN = "2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3"
KEY = bytes(range(60, 80))
NOBODY = 65534


def keys(kb: types.ModuleType) -> object:
    table = kb.KeyTable()
    table.add_kbm(HOME, KEY)
    return table


def bu(kb: types.ModuleType, seq: int) -> bytes:
    return kb.build_binding_update(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=seq, lifetime=8)  # type: ignore[no-any-return]


def fresh(path: str) -> str:
    """A valid empty state file (mode 0600, ours)."""
    fmt.create(path)
    return path


def leftovers(directory: str, keep: set[str]) -> set[str]:
    return set(os.listdir(directory)) - keep


# ---- item 4: owner, mode, type, links -----------------------------------------------------------


def test_group_writable_file_refused(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    """The issue's attack: a 0666 file another user pre-created. It is refused, so nobody can roll
    sequence numbers back under a running verifier by writing zeros into it."""
    path = fresh(os.path.join(tmp_path, "cn.state"))
    os.chmod(path, 0o666)
    with pytest.raises(kb.StateFileError, match=r"writable by group or others.*chmod go-w") as err:
        kb.Verifier(keys(kb), state=path)
    assert path in str(err.value) and "0666" in str(err.value)
    os.chmod(path, 0o620)
    with pytest.raises(kb.StateFileError, match="chmod go-w"):
        kb.Verifier(keys(kb), state=path)
    os.chmod(path, 0o644)  # readable is fine: the file holds no secret
    kb.Verifier(keys(kb), state=path).close()


def test_file_of_another_user_refused(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    """Owned by another uid: refused, by root too (tests run as root here)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")  # pragma: no cover
    path = fresh(os.path.join(tmp_path, "cn.state"))
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(kb.StateFileError, match=f"owned by uid {NOBODY}.*chown 0") as err:
        kb.Verifier(keys(kb), state=path)
    assert path in str(err.value)


def test_symlink_refused_and_target_untouched(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    target = fresh(os.path.join(tmp_path, "real.state"))
    before = open(target, "rb").read()
    link = os.path.join(tmp_path, "cn.state")
    os.symlink(target, link)
    with pytest.raises(kb.StateFileError, match="symbolic link") as err:
        kb.Verifier(keys(kb), state=link)
    assert link in str(err.value)
    dangling = os.path.join(tmp_path, "dangling.state")
    os.symlink(os.path.join(tmp_path, "nowhere"), dangling)
    with pytest.raises(kb.StateFileError, match="symbolic link"):
        kb.Verifier(keys(kb), state=dangling)
    assert not os.path.exists(os.path.join(tmp_path, "nowhere"))
    assert open(target, "rb").read() == before


def test_not_a_regular_file_refused(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    fifo = os.path.join(tmp_path, "cn.state")
    os.mkfifo(fifo, 0o600)
    with pytest.raises(kb.StateFileError, match="not a regular file"):
        kb.Verifier(keys(kb), state=fifo)  # and no hang on the FIFO


def test_created_0600_whatever_the_umask(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "cn.state")
    old = os.umask(0)
    try:
        kb.Verifier(keys(kb), state=path).close()
    finally:
        os.umask(old)
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid()
    assert leftovers(str(tmp_path), {"cn.state"}) == set()


def test_mobile_node_holds_its_file_to_the_same_rules(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = fresh(os.path.join(tmp_path, "mn.state"))
    os.chmod(path, 0o666)
    with pytest.raises(kb.StateFileError, match="chmod go-w"):
        kb.BindingUpdateList(HOME, state=path)


def test_state_check_names_the_problem(tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = fresh(os.path.join(tmp_path, "cn.state"))
    os.chmod(path, 0o666)
    assert main(["state", "check", path]) == 1
    assert "chmod go-w" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setup", "status"),
    [
        ("mode", "KBM_EMODE"),
        ("owner", "KBM_EOWNER"),
        ("symlink", "KBM_ESYMLINK"),
        ("fifo", "KBM_ENOTREG"),
    ],
)
def test_c_core_checks_the_file_itself(tmp_path: os.PathLike[str], setup: str, status: str) -> None:
    """kbm_verifier_new applies the rules on its own descriptor: a file swapped after Python's
    check (or a C caller that skips it) is refused all the same."""
    path = os.path.join(tmp_path, "cn.state")
    if setup == "symlink":
        os.symlink(fresh(os.path.join(tmp_path, "real")), path)
    elif setup == "fifo":
        os.mkfifo(path, 0o600)
    else:
        fresh(path)
        if setup == "mode":
            os.chmod(path, 0o646)
        else:
            os.chown(path, NOBODY, -1)
    out = ffi.new("int *")
    assert lib.kbm_verifier_new(os.fsencode(path), 32768, out) == ffi.NULL
    assert out[0] == getattr(lib, status)
    with pytest.raises(kbmfast.StateFileError, match=path):
        kbmfast.fast._raise(out[0], "open", path)


# ---- item 3: compact's temporary file -----------------------------------------------------------


def test_compact_ignores_a_planted_symlink(tmp_path: os.PathLike[str]) -> None:
    """The old temporary name was predictable and opened with O_CREAT|O_TRUNC: a link planted
    there made compact overwrite the link's target."""
    path = fresh(os.path.join(tmp_path, "cn.state"))
    victim = os.path.join(tmp_path, "victim")
    with open(victim, "wb") as f:
        f.write(b"precious")
    for name in (f"{path}.compact.{os.getpid()}", f"{path}.tmp.{os.getpid()}"):
        os.symlink(victim, name)
    assert main(["state", "compact", path]) == 0
    assert open(victim, "rb").read() == b"precious"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not os.path.islink(path)
    planted = {f"cn.state.compact.{os.getpid()}", f"cn.state.tmp.{os.getpid()}"}
    assert leftovers(str(tmp_path), {"cn.state", "victim"} | planted) == set()


def test_compact_cleans_up_when_the_rename_fails(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "occupied")
    os.mkdir(target)
    with open(os.path.join(target, "x"), "w") as f:
        f.write("x")
    with pytest.raises(kbmfast.StateFileError, match="occupied: cannot replace"):
        fmt.write(target, bytes(fmt.SALT_SIZE), [])
    assert leftovers(str(tmp_path), {"occupied"}) == set()


# ---- item 6: the file changed under a running verifier ------------------------------------------

CHANGED = textwrap.dedent(
    """
    import os, sys
    from array import array
    import kbmfast, kbmfast.reference
    kb = kbmfast if sys.argv[1] == "c" else kbmfast.reference
    path, change = sys.argv[2], sys.argv[3]
    keys = kb.KeyTable()
    keys.add_kbm("2001:db8:1::1", bytes(range(60, 80)))
    def bu(seq):
        return kb.build_binding_update(bytes(range(60, 80)), home="2001:db8:1::1", care_of="2001:db8:2::2",
                                       correspondent="2001:db8:3::3", sequence=seq, lifetime=8)
    cn = kb.Verifier(keys, state=path)
    print("first", cn.verify(bu(1)).verdict.name, flush=True)
    size = os.path.getsize(path)
    if change == "unlink":
        os.unlink(path)
    elif change == "replace":
        open(path + ".new", "wb").write(open(path, "rb").read())
        os.replace(path + ".new", path)
    else:
        os.truncate(path, int(change.split("+")[0]))
        if change.endswith("+grown"):
            os.truncate(path, size)  # cut and grown back at once: the same size, zeros in it
    calls = [lambda: cn.verify(bu(1)), lambda: cn.verify_batch([bu(1), bu(2)]),
             lambda: cn.verify_buffer(bu(1), array("Q", [0, 96])), lambda: cn.last_sequence("2001:db8:1::1"),
             lambda: cn.keys_near_limit(0.01)]
    for i, call in enumerate(calls):
        if i == 1 and change in ("64", "0"):
            os.truncate(path, size)  # grown back (zeros): the verifier stays stopped
        try:
            print("answered", call(), flush=True)
        except kb.StateFileError as e:
            print("refused", e, flush=True)
    cn.close()
    """
)


@pytest.mark.parametrize("backend", ["c", "reference"])
@pytest.mark.parametrize("change", ["64", "0", "0+grown", "unlink", "replace"])
def test_file_changed_between_batches(tmp_path: os.PathLike[str], backend: str, change: str) -> None:
    """Truncated to 64 bytes, the slot read as zeros and the replay of seq 1 was ACCEPTED;
    truncated to 0, the next batch died of SIGBUS. Now every later call is refused."""
    path = os.path.join(tmp_path, "cn.state")
    argv = [sys.executable, "-P", "-c", CHANGED, backend, path, change]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr)
    lines = [line for line in run.stdout.splitlines() if line.startswith(("first", "answered", "refused"))]
    assert lines[0] == "first ACCEPTED"
    assert len(lines) == 6 and all(line.startswith("refused") for line in lines[1:]), lines
    assert all(path in line and "changed while in use" in line for line in lines[1:])


# ---- item 13: compact refuses a file in use -----------------------------------------------------


def verifier(kb: types.ModuleType, path: str) -> object:
    return kb.Verifier(keys(kb), state=path)


def mobile_node(kb: types.ModuleType, path: str) -> object:
    return kb.BindingUpdateList(HOME, state=path)


@pytest.mark.parametrize("opener", [verifier, mobile_node])
def test_compact_refuses_a_file_in_use(
    kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str], opener: object
) -> None:
    """The issue's split: a running verifier accepted seq 2, compact rewrote the file, a new
    verifier on the new file accepted seq 2 again. Now compact refuses while it is open."""
    path = os.path.join(tmp_path, "cn.state")
    holder = opener(kb, path)  # type: ignore[operator]
    try:
        assert main(["state", "compact", path]) == 3
        assert "in use" in capsys.readouterr().err
        assert main(["state", "compact", path, "--output", os.path.join(tmp_path, "copy")]) == 3
    finally:
        holder.close()
    assert main(["state", "compact", path]) == 0


def version_1_file(path: str) -> str:
    """A format version 1 file holding one slot (seq 7 for HOME), as kbmfast before format 2 wrote."""
    with open(path, "wb") as f:
        f.write(b"KBMSTATE" + bytes.fromhex("01000000 40000000 20000000 00000000") + (1).to_bytes(8, "little") + bytes(32))
        f.write(ipaddress.IPv6Address(HOME).packed + (7 | 1 << 16).to_bytes(8, "little") + bytes(8))
    os.chmod(path, 0o600)
    return path


def test_migrate_refuses_a_file_in_use(
    kb: types.ModuleType, tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """migrate rewrites a file like compact does: not while a verifier or mobile node holds the
    --output it would replace (nor the file itself), and through a mkstemp temporary."""
    old = version_1_file(os.path.join(tmp_path, "old.state"))
    out = os.path.join(tmp_path, "cn.state")
    holder = verifier(kb, out)
    try:
        assert main(["state", "migrate", old, "--output", out]) == 3
        assert "in use" in capsys.readouterr().err
        assert holder.last_sequence(HOME) is None  # type: ignore[attr-defined]
    finally:
        holder.close()  # type: ignore[attr-defined]
    with fmt.exclusive(old):  # held as compact or another migrate would hold it
        assert main(["state", "migrate", old]) == 3
    assert main(["state", "migrate", old, "--output", out]) == 0
    assert leftovers(str(tmp_path), {"old.state", "cn.state"}) == set()
    assert os.stat(out).st_mode & 0o777 == 0o600
    with verifier(kb, out) as cn:  # type: ignore[attr-defined]
        assert cn.last_sequence(HOME) == 7


def test_two_verifiers_in_one_process(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "cn.state")
    a = kbmfast.Verifier(keys(kbmfast), state=path)
    b = kbmfast.reference.Verifier(keys(kbmfast.reference), state=path)
    c = kbmfast.Verifier(keys(kbmfast), state=path)
    assert a.verify(bu(kbmfast, 2)).verdict == kbmfast.Verdict.ACCEPTED
    for v in (a, b):
        assert main(["state", "compact", path]) == 3
        v.close()
    assert main(["state", "compact", path]) == 3
    assert c.verify(bu(kbmfast, 2)).verdict == kbmfast.Verdict.SEQUENCE_OUT_OF_WINDOW
    c.close()
    assert main(["state", "compact", path]) == 0
    with kbmfast.Verifier(keys(kbmfast), state=path) as d:
        assert d.verify(bu(kbmfast, 2)).verdict == kbmfast.Verdict.SEQUENCE_OUT_OF_WINDOW


def test_compact_refuses_across_processes(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "cn.state")
    child = textwrap.dedent(
        f"""
        import sys, kbmfast
        keys = kbmfast.KeyTable()
        keys.add_kbm({HOME!r}, {KEY!r})
        with kbmfast.Verifier(keys, state={path!r}) as cn:
            print("open", flush=True)
            sys.stdin.readline()
        """
    )
    p = subprocess.Popen([sys.executable, "-P", "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    try:
        while (line := p.stdout.readline()) and line.strip() != "open":
            pass  # the editable install's rebuild notice
        assert line.strip() == "open"
        assert main(["state", "compact", path]) == 3
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=60)
    assert p.returncode == 0
    assert main(["state", "compact", path]) == 0


def test_verifier_refuses_a_file_being_compacted(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    path = fresh(os.path.join(tmp_path, "cn.state"))
    with fmt.exclusive(path):
        with pytest.raises(kb.StateFileError, match="being rewritten"):
            kb.Verifier(keys(kb), state=path)
    kb.Verifier(keys(kb), state=path).close()


def test_open_follows_a_rewrite_between_open_and_lock(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A compact that renames its new file in after the verifier opened the old one but before it
    took its lock: the verifier must not keep the old (unlinked) file, or the state splits."""
    path = fresh(os.path.join(tmp_path, "cn.state"))
    real = fmt._ofd_lock
    raced: list[int] = []

    def racing(fd: int, kind: int) -> bool:
        if not raced:
            raced.append(fd)
            salt, _ = fmt.read_slots(path)  # the file's salt, as compact keeps it
            fmt.write(path, salt, [(ipaddress.IPv6Address(HOME).packed, fmt.pack_word(True, 7, 0, 0), ())])
        return real(fd, kind)

    monkeypatch.setattr(fmt, "_ofd_lock", racing)
    with kbmfast.reference.Verifier(keys(kbmfast.reference), state=path) as cn:
        assert raced and cn.last_sequence(HOME) == 7


# ---- item 14: creating the file on a full disk --------------------------------------------------


@contextlib.contextmanager
def full_tmpfs(where: str) -> Iterator[str]:
    """A tiny tmpfs, filled up (needs root and mount rights, which the tests have here)."""
    os.mkdir(where)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", where], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (test_create_past_file_size_limit covers the same path)")  # pragma: no cover
    try:
        with open(os.path.join(where, "filler"), "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(bytes(4096))
        yield where
    finally:
        subprocess.run(["umount", where], check=True)


def test_create_on_a_full_disk(kb: types.ModuleType, tmp_path: os.PathLike[str]) -> None:
    with full_tmpfs(os.path.join(tmp_path, "disk")) as disk:
        path = os.path.join(disk, "cn.state")
        with pytest.raises(kb.StateFileError, match=r"cn\.state: cannot create: No space left on device") as err:
            kb.Verifier(keys(kb), state=path)
        assert path in str(err.value)
        with pytest.raises(kb.StateFileError, match="No space left on device"):
            fmt.write(os.path.join(disk, "compacted"), bytes(fmt.SALT_SIZE), [(bytes(16), 0, ())] * 100)
        assert leftovers(disk, {"filler"}) == set()


CREATE_LIMITED = textwrap.dedent(
    """
    import os, resource, signal, sys
    import kbmfast, kbmfast.reference
    kb = kbmfast if sys.argv[1] == "c" else kbmfast.reference
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
    try:
        kb.Verifier(kb.KeyTable(), state=sys.argv[2])
    except kb.StateFileError as e:
        print("refused", e)
    """
)


@pytest.mark.parametrize("backend", ["c", "reference"])
def test_create_past_file_size_limit(tmp_path: os.PathLike[str], backend: str) -> None:
    """The same failure without a mount: the header's write fails (EFBIG) in a child process."""
    path = os.path.join(tmp_path, "cn.state")
    run = subprocess.run([sys.executable, "-P", "-c", CREATE_LIMITED, backend, path], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"refused state file {path}: cannot create: File too large" in run.stdout, run.stdout
    assert os.listdir(tmp_path) == []


assert signal and resource  # used in the child scripts' text
