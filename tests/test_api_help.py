"""What a user reads from Python itself: help() and the names in error messages (issue 10 item 6)."""

from __future__ import annotations

import pydoc
import types

import pytest


def test_help_verifier_explains_its_arguments(kb: types.ModuleType) -> None:
    text = pydoc.render_doc(kb.Verifier, renderer=pydoc.plaintext)
    for words in (
        "``sync`` (default 1000)",
        '``"always"`` (fsync after every call)',
        "``rekey_limit`` (default and maximum 32768)",
        "``KEY_EXHAUSTED``",
        "``max_lifetime`` (seconds, default ``None``)",
        "``state``",
    ):
        assert words in text


@pytest.mark.parametrize("name", ["build_binding_update", "build_binding_ack"])
def test_builder_errors_name_the_public_function(kb: types.ModuleType, name: str) -> None:
    builder = getattr(kb, name)
    with pytest.raises(TypeError) as err:
        builder(bytes(20), bogus=1)
    assert str(err.value).startswith(f"{name}() got an unexpected keyword argument 'bogus'")
    assert "<locals>" not in builder.__qualname__
