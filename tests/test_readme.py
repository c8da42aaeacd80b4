"""The README's tour runs as written, and its key-file example loads."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

import kbmfast

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_tour_runs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tour,) = [b for b in blocks("python") if "import kbmfast" in b]
    exec(compile(tour, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["ACCEPTED", "SEQUENCE_OUT_OF_WINDOW"] and "BindingUpdate(" in out
    assert os.path.exists(tmp_path / "cn.state")


def test_tour_state_persists(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """What the README says after the tour: a second run finds the first one's sequence in cn.state."""
    monkeypatch.chdir(tmp_path)
    (tour,) = [b for b in blocks("python") if "import kbmfast" in b]
    for _ in range(2):
        exec(compile(tour, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and out[:2] == ["ACCEPTED", "SEQUENCE_OUT_OF_WINDOW"]
    assert out[3:5] == ["SEQUENCE_OUT_OF_WINDOW", "SEQUENCE_OUT_OF_WINDOW"]
    assert "cn.state` persists between runs" in README


def test_key_file_example_loads(tmp_path: pathlib.Path) -> None:
    (example,) = blocks("toml")
    path = tmp_path / "keys.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(example)
    keys = kbmfast.KeyTable.load(path)
    assert {str(h) for h in keys} == {"2001:db8:1::100", "2001:db8:1::101"}
