"""One test suite, every backend: the ``kb`` fixture is the kbmfast module under test."""

from __future__ import annotations

import types

import pytest

import kbmfast
import kbmfast.reference

BACKENDS = [kbmfast, kbmfast.reference]


@pytest.fixture(params=BACKENDS, ids=[m.backend for m in BACKENDS])
def kb(request: pytest.FixtureRequest) -> types.ModuleType:
    """The backend module under test: kbmfast (C) or kbmfast.reference."""
    return request.param  # type: ignore[no-any-return]
