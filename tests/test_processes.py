"""Two processes sharing one state file accept each (peer, sequence) at most once between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import kbmfast

CHILD = textwrap.dedent(
    """
    import json, sys
    from array import array
    import kbmfast
    keys = kbmfast.KeyTable.load(sys.argv[1])
    data = open(sys.argv[2], "rb").read()
    offsets = array("Q")
    offsets.frombytes(open(sys.argv[3], "rb").read())
    with kbmfast.Verifier(keys, state=sys.argv[4]) as cn:
        accepted = []
        for start in range(0, len(offsets) - 1, 500):
            end = min(start + 500, len(offsets) - 1)
            chunk = offsets[start : end + 1]
            verdicts = cn.verify_buffer(memoryview(data)[chunk[0] :], array("Q", [o - chunk[0] for o in chunk]))
            accepted += [start + i for i, v in enumerate(verdicts) if v == 0]
    print(json.dumps(accepted))
    """
)


def test_two_processes_share_a_state_file(tmp_path: os.PathLike[str]) -> None:
    keys = kbmfast.KeyTable()
    homes = [f"2001:db8:1::{i + 1:x}" for i in range(300)]
    kbms = [i.to_bytes(2, "big") + bytes(18) for i in range(300)]
    for home, kbm in zip(homes, kbms, strict=True):
        keys.add_kbm(home, kbm)
    packets = [
        kbmfast.build_binding_update(
            kbms[i], home=homes[i], care_of="2001:db8:2::1", correspondent="2001:db8:3::1", sequence=r, lifetime=60
        )
        for r in range(1, 31)
        for i in range(300)
    ]
    files = {name: os.path.join(tmp_path, name) for name in ("keys.toml", "packets", "offsets", "state")}
    keys.save(files["keys.toml"])
    with open(files["packets"], "wb") as f:
        f.write(b"".join(packets))
    offsets = [0]
    for p in packets:
        offsets.append(offsets[-1] + len(p))
    from array import array

    with open(files["offsets"], "wb") as f:
        f.write(array("Q", offsets).tobytes())
    argv = [sys.executable, "-P", "-c", CHILD, files["keys.toml"], files["packets"], files["offsets"], files["state"]]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(c.communicate(timeout=300)[0].strip().splitlines()[-1]) for c in children]
    assert all(c.returncode == 0 for c in children)
    both = sorted(results[0] + results[1])
    assert both == list(range(len(packets)))  # each once, by one of the two
    with kbmfast.Verifier(keys, state=files["state"]) as cn:
        assert all(cn.last_sequence(h) == 30 for h in homes)


BUILDER = textwrap.dedent(
    """
    import json, sys
    import kbmfast
    keys = kbmfast.KeyTable.load(sys.argv[1])
    lo, hi = int(sys.argv[3]), int(sys.argv[4])
    print("ready", flush=True)
    sys.stdin.readline()  # all builders start together
    with kbmfast.Verifier(keys, state=sys.argv[2]) as cn:
        verdicts = cn.verify_batch([
            kbmfast.build_binding_update(
                i.to_bytes(2, "big") + bytes(18), home=f"2001:db8:1::{i + 1:x}", care_of="2001:db8:2::1",
                correspondent="2001:db8:3::1", sequence=1, lifetime=60)
            for i in range(lo, hi)
        ])
    print(json.dumps([lo + k for k, v in enumerate(verdicts) if v == 0]))
    """
)


def test_processes_building_on_one_new_state_file_at_once(tmp_path: os.PathLike[str]) -> None:
    """A Verifier's build takes the state file's lock once for all its peers (not per peer):
    builders racing on one new file still give each address exactly one slot, which both then
    count in. Four processes, overlapping halves of 20 000 homes, each appending its new ones,
    started together."""
    from kbmfast import _stateformat as fmt

    n = 20000
    homes = [f"2001:db8:1::{i + 1:x}" for i in range(n)]
    ranges = [(0, n // 2), (n // 4, 3 * n // 4), (n // 2, n), (0, n)]
    state = os.path.join(tmp_path, "state")
    argvs = []
    for k, (lo, hi) in enumerate(ranges):
        keys = kbmfast.KeyTable()
        for i in range(lo, hi):
            keys.add_kbm(homes[i], i.to_bytes(2, "big") + bytes(18))
        path = os.path.join(tmp_path, f"keys{k}.toml")
        keys.save(path)
        argvs.append([sys.executable, "-P", "-c", BUILDER, path, state, str(lo), str(hi)])
    fmt.prepare(state)
    children = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for argv in argvs]
    for c in children:
        assert c.stdout is not None
        while (line := c.stdout.readline()) != "ready\n":  # (an editable install may log a rebuild)
            assert line, "a builder ended before it was ready"
    for c in children:  # go, all of them, before waiting for any
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.close()
    results = [json.loads(c.stdout.read().strip().splitlines()[-1]) for c in children if c.stdout]
    assert all(c.wait(timeout=300) == 0 for c in children)
    assert sorted(i for r in results for i in r) == list(range(n))  # each home's sequence 1 accepted once
    fmt.validate(state)  # one slot per address, every check right
    with open(state, "rb") as f:
        assert int.from_bytes(f.read(32)[24:28], "little") == n
