"""Result: the verifiers set its verdict at once and compute the other fields when one is first
read (issue 14 item 4). Whatever is done first to a fresh Result (reading a field, ==, hash,
repr, copy, pickle, dataclasses helpers, several threads at once) gives the values the
constructor would hold, on both backends, and C and reference agree."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import operator
import pickle
import threading
import types
from collections.abc import Callable
from typing import Any

import pytest
from helpers import custom_bu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import PEERS, key_table, packets
from vectors import CN, HOME

import kbmfast
import kbmfast.reference as ref
from kbmfast import Result, Verdict

KEY = bytes(range(100, 120))
AWAY = "2001:db8:5::5"
ALTERNATE = "2001:db8:6::6"
STRANGER = "2001:db8:7::7"
FIELDS = tuple(f.name for f in dataclasses.fields(Result))
ADDRESSES = ("home", "care_of", "correspondent", "source")


def stream() -> list[bytes]:
    """One packet of each kind of Result (each verified by a fresh verifier, in this order)."""
    bu = dict(home=HOME, care_of=AWAY, correspondent=CN)
    return [
        custom_bu(KEY, **bu, sequence=10),  # ACCEPTED, A = 1
        custom_bu(KEY, **bu, sequence=10),  # SEQUENCE_OUT_OF_WINDOW, last_sequence 10
        custom_bu(KEY, **bu, sequence=11, flags=0),  # ACCEPTED, A = 0: no BA
        custom_bu(KEY, **bu, sequence=12, alternate_care_of=ALTERNATE),  # care_of is not the source
        custom_bu(KEY, **bu, sequence=13, lifetime_units=0),  # de-registration
        custom_bu(KEY, **bu, sequence=14, nonce_indices=(7, 9)),  # ignored with a preconfigured key
        custom_bu(KEY, **bu, sequence=15, flags=0xC000),  # HOME_REGISTRATION
        custom_bu(bytes(20), **bu, sequence=16),  # BAD_AUTHENTICATOR
        custom_bu(KEY, **bu, sequence=17, with_bad=False),  # MISSING_AUTHORIZATION
        custom_bu(KEY, home=STRANGER, care_of=AWAY, correspondent=CN, sequence=1),  # NOT_CONFIGURED
        custom_bu(KEY, home=HOME, care_of=HOME, correspondent=CN, sequence=18),  # INVALID_CARE_OF
        custom_bu(KEY, **bu, sequence=19)[:-1],  # MALFORMED
        b"\x60",  # MALFORMED, short
    ]


def verifier(kb: types.ModuleType) -> Any:
    keys = kb.KeyTable()
    keys.add_kbm(HOME, KEY)
    return kb.Verifier(keys)


def fresh_results(kb: types.ModuleType, batch: bool = False) -> list[Result]:
    """The Results of stream() from a new verifier: none of their fields read yet."""
    with verifier(kb) as cn:
        if batch:
            return list(cn.verify_batch(stream(), results=True))
        return [cn.verify(p) for p in stream()]


def eager(r: Result) -> Result:
    """The same Result made by the constructor (every field set in it from the start)."""
    return Result(**{name: getattr(r, name) for name in FIELDS})


@pytest.fixture(scope="module")
def expected() -> list[Result]:
    return [eager(r) for r in fresh_results(ref)]


def test_the_stream_covers_every_kind(expected: list[Result]) -> None:
    verdicts = [r.verdict for r in expected]
    assert set(verdicts) == {
        Verdict.ACCEPTED, Verdict.SEQUENCE_OUT_OF_WINDOW, Verdict.HOME_REGISTRATION, Verdict.BAD_AUTHENTICATOR,
        Verdict.MISSING_AUTHORIZATION, Verdict.NOT_CONFIGURED, Verdict.INVALID_CARE_OF, Verdict.MALFORMED,
    }  # fmt: skip
    accepted = expected[0]
    assert accepted.home == ipaddress.IPv6Address(HOME) and accepted.ba_status == 0 and accepted.lifetime == 420
    assert expected[1].last_sequence == 10 and expected[1].ba_status == 135
    assert expected[2].ba_status is None and expected[2].ack is False
    assert expected[3].care_of == ipaddress.IPv6Address(ALTERNATE) != expected[3].source
    assert expected[4].lifetime == 0
    assert expected[5].nonce_indices is None
    assert all(getattr(expected[-1], name) is None for name in FIELDS[1:])


def field_types_ok(r: Result) -> bool:
    ok = type(r.verdict) is Verdict
    for name in FIELDS[1:]:
        value = getattr(r, name)
        want = {"ack": bool, "nonce_indices": tuple}.get(name, ipaddress.IPv6Address if name in ADDRESSES else int)
        ok = ok and (value is None or type(value) is want)
    return ok


#: What may be done first to a fresh Result, each returning something to compare with what the
#: same operation gives on the constructor's Result.
FIRST: dict[str, Callable[[Result], Any]] = {
    "verdict": lambda r: r.verdict,
    **{f"field {name}": operator.attrgetter(name) for name in FIELDS[1:]},
    "==": lambda r: r,
    "hash": hash,
    "repr": repr,
    "str": str,
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda r: pickle.loads(pickle.dumps(r)),
    "pickle protocol 0": lambda r: pickle.loads(pickle.dumps(r, protocol=0)),
    "asdict": dataclasses.asdict,
    "astuple": dataclasses.astuple,
    "replace": lambda r: dataclasses.replace(r, sequence=1),
    "match": lambda r: _match(r),
}


def _match(r: Result) -> tuple[Any, ...]:
    match r:
        case Result(verdict, home, care_of, correspondent, sequence):
            return verdict, home, care_of, correspondent, sequence
    raise AssertionError("no match")


@pytest.mark.parametrize("batch", [False, True], ids=["verify", "verify_batch"])
@pytest.mark.parametrize("first", list(FIRST))
def test_first_use_gives_the_constructors_values(kb: types.ModuleType, expected: list[Result], first: str, batch: bool) -> None:
    op = FIRST[first]
    for r, want in zip(fresh_results(kb, batch), expected, strict=True):
        assert op(r) == op(want), (first, want)
        assert r == want and hash(r) == hash(want) and repr(r) == repr(want)
        assert field_types_ok(r)


def test_copies_and_pickles_hold_only_fields(kb: types.ModuleType, expected: list[Result]) -> None:
    """A copy or pickle of a fresh Result carries the fields, not the packet they came from."""
    for make in (copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))):
        for r, want in zip(fresh_results(kb), expected, strict=True):
            c = make(r)
            assert c == want and vars(c) == vars(want) and set(vars(c)) == set(FIELDS)
    for r, p in zip(fresh_results(kb), stream(), strict=True):
        if len(p) >= 60:  # its last 12 bytes: the authenticator, or the end of the packet
            assert p[-12:] not in pickle.dumps(r)


def test_read_fields_are_plain(kb: types.ModuleType) -> None:
    """Once one field was read, the instance holds its fields and nothing else (vars, as the
    constructor's), and reading again gives the very same objects."""
    for r in fresh_results(kb):
        home = r.home
        assert set(vars(r)) == set(FIELDS)
        assert r.home is home and r.care_of is r.care_of


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "read"])
def test_unknown_attribute(kb: types.ModuleType, fresh: bool) -> None:
    r = fresh_results(kb)[0]
    if not fresh:
        assert r.home is not None
    with pytest.raises(AttributeError, match="'Result' object has no attribute 'colour'"):
        r.colour  # noqa: B018
    assert not hasattr(r, "colour")
    assert r == eager(r)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.home = None  # type: ignore[misc]
    plain = Result(Verdict.MALFORMED)
    with pytest.raises(AttributeError, match="'Result' object has no attribute 'colour'"):
        plain.colour  # noqa: B018
    with pytest.raises(AttributeError, match="no field 'home' set"):
        Result.__new__(Result).home  # noqa: B018


def test_class_attributes_are_the_defaults() -> None:
    """As on any dataclass, a field with a default reads as that default on the class."""
    assert [getattr(Result, name) for name in FIELDS[1:]] == [f.default for f in dataclasses.fields(Result)[1:]]
    assert Result(Verdict.ACCEPTED, sequence=3) == Result(Verdict.ACCEPTED, None, None, None, 3)


def test_no_key_bytes_in_repr(kb: types.ModuleType) -> None:
    """Neither a fresh Result (its packet pending) nor a read one shows key bytes anywhere."""
    forms = (KEY.hex(), repr(KEY)[2:-1], KEY.hex().upper())
    for r in fresh_results(kb) + fresh_results(kb, batch=True):
        for text in (repr(vars(r)), repr(r), str(r), repr(vars(r)), repr(pickle.dumps(r))):
            assert not any(f in text for f in forms)


def test_threads_reading_one_fresh_result_agree(kb: types.ModuleType, expected: list[Result]) -> None:
    """Threads that read the fields of the same fresh Results at once, each in its own order,
    all see the constructor's values (a field read while another thread computes them is
    never missing)."""
    want = [vars(r) for r in expected]
    for _ in range(20):
        results = fresh_results(kb, batch=True)
        start = threading.Barrier(4)
        seen: list[list[dict[str, Any]]] = [[] for _ in range(4)]

        def read(k: int, results: list[Result] = results, start: threading.Barrier = start, seen: list[Any] = seen) -> None:
            start.wait()
            order = FIELDS[k * 3 :] + FIELDS[: k * 3]
            seen[k] = [{name: getattr(r, name) for name in order} for r in results]

        threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(s == want for s in seen)


def test_empty_batch(kb: types.ModuleType) -> None:
    with verifier(kb) as cn:
        assert cn.verify_batch([], results=True) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packets, min_size=1, max_size=8))
def test_differential_first_use(stream: list[bytes]) -> None:
    """C and reference Results of the same packets agree whatever is done to them first."""
    for name, op in (
        ("repr", repr),
        ("hash", hash),
        ("pickle", lambda r: pickle.loads(pickle.dumps(r))),
        ("field", lambda r: r.source),
    ):
        with kbmfast.Verifier(key_table(PEERS)) as c, ref.Verifier(key_table(PEERS)) as r:
            cs, rs = [c.verify(p) for p in stream], r.verify_batch(stream, results=True)
            assert [op(x) for x in cs] == [op(x) for x in rs], name
            assert cs == rs


@pytest.mark.parametrize("batch", [False, True])
def test_a_reused_buffer_does_not_change_an_unread_result(kb: types.ModuleType, batch: bool) -> None:
    """A Result reads its packet only when a field is first read; a caller that receives into one
    bytearray and verifies it in place must still get the fields of the packet it verified."""
    first = custom_bu(KEY, home=HOME, care_of=AWAY, correspondent=CN, sequence=30)
    second = custom_bu(KEY, home=HOME, care_of=ALTERNATE, correspondent=CN, sequence=31, lifetime_units=0)
    assert len(first) == len(second)
    buf = bytearray(first)
    v = verifier(kb)
    r = v.verify_batch([buf, memoryview(buf)], results=True)[0] if batch else v.verify(buf)
    buf[:] = second  # the next packet arrives in the same buffer
    assert r.verdict is Verdict.ACCEPTED
    assert (r.care_of, r.source, r.sequence) == (ipaddress.IPv6Address(AWAY), ipaddress.IPv6Address(AWAY), 30)
    assert r.lifetime > 0
