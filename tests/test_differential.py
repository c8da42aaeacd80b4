"""Differential tests: ``kbmfast`` (the C core) must answer exactly as ``kbmfast.reference``.

Same parsed packets, same Results, same verdict arrays, same Binding Acknowledgements, same
exceptions with the same messages, on valid packets from tests/strategies.py, on mutations of
them, on bad arguments, and across a state file written by one backend and read by the other.
The million-packet mutation loop prints its seeds; replay one with KBMFAST_FUZZ_SEED=<seed>
(and KBMFAST_FUZZ_COUNT=<n>).
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import os
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    CARE_OFS,
    CORRESPONDENTS,
    PEERS,
    STRANGERS,
    FakeClock,
    Mutator,
    PeerSpec,
    RRSession,
    SessionDraw,
    any_packet,
    key_table,
    mutations,
    packets,
)

import kbmfast
import kbmfast.reference as ref
from kbmfast import Result, Verdict

BACKENDS = (kbmfast, ref)
FIXED_SEED = 0x4B424D46  # "KBMF"
RR_VERDICTS = {Verdict.HOME_NONCE_EXPIRED, Verdict.CARE_OF_NONCE_EXPIRED, Verdict.NONCES_EXPIRED, Verdict.RR_TABLE_FULL}
FUZZ_COUNT = int(os.environ.get("KBMFAST_FUZZ_COUNT", "1000000"))

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a call did: ("returned", value) or ("raised", exception type, message)."""
    try:
        return ("returned", fn(*args, **kwargs))
    except Exception as e:
        return ("raised", type(e), str(e))


def both(name: str, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The outcome of the module-level function ``name`` in each backend (C first)."""
    c, r = (outcome(getattr(m, name), *args, **kwargs) for m in BACKENDS)
    return c, r


def offsets_of(stream: Sequence[bytes]) -> array[int]:
    """The n + 1 offsets of ``verify_buffer`` for the concatenated ``stream``."""
    return array("Q", accumulate((len(p) for p in stream), initial=0))


def homes(peers: Sequence[PeerSpec] = PEERS + STRANGERS) -> list[ipaddress.IPv6Address]:
    return [ipaddress.IPv6Address(p.home) for p in peers]


# ---------------------------------------------------------------------------------------------
# Parsing


@HYPOTHESIS
@given(packets)
def test_generated_packets_parse_identically(packet: bytes) -> None:
    """Every generated packet is well formed, correctly checksummed, and parsed alike."""
    c, r = both("parse_packet", packet)
    assert c == r
    assert c[0] == "returned", c
    assert c[1].checksum_valid
    assert c[1].message == r[1].message


@HYPOTHESIS
@given(packets, st.integers(0, 2**32 - 1))
def test_mutations_parse_identically(packet: bytes, seed: int) -> None:
    for kind, mutated in mutations(packet, seed, count=24):
        c, r = both("parse_packet", mutated)
        assert c == r, f"{kind}: {mutated.hex()}"


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_parse_packet_accepts_bytes_like(kind: type) -> None:
    assert kbmfast.parse_packet(kind(_SAMPLE_BU)) == kbmfast.parse_packet(_SAMPLE_BU)


_SAMPLE_BU = ref.build_binding_update(
    PEERS[0].key, home=PEERS[0].home, care_of=CARE_OFS[0], correspondent=CORRESPONDENTS[0], sequence=1, lifetime=8
)


@pytest.mark.parametrize(
    "value",
    [bytearray(_SAMPLE_BU), memoryview(_SAMPLE_BU), _SAMPLE_BU.hex(), None, 7],
    ids=["bytearray", "memoryview", "str", "None", "int"],
)
def test_parse_packet_argument_types_agree(value: Any) -> None:
    c, r = both("parse_packet", value)
    assert c == r


# ---------------------------------------------------------------------------------------------
# Verifying streams


def check_stream(stream: list[bytes]) -> list[Result]:
    """Feed ``stream`` to fresh verifier pairs in every form; all answers must agree. Returns the Results."""
    with contextlib.ExitStack() as stack:
        pairs = [tuple(stack.enter_context(m.Verifier(key_table())) for m in BACKENDS) for _ in range(4)]
        (c1, r1), (c2, r2), (c3, r3), (c4, r4) = pairs

        one_c = [c1.verify(p) for p in stream]
        one_r = [r1.verify(p) for p in stream]
        assert one_c == one_r
        verdicts = array("B", [r.verdict for r in one_c])

        assert c2.verify_batch(stream) == verdicts
        assert r2.verify_batch(stream) == verdicts
        assert c3.verify_batch(stream, results=True) == one_c
        assert r3.verify_batch(stream, results=True) == one_c
        buffer, offsets = b"".join(stream), offsets_of(stream)
        assert c4.verify_buffer(buffer, offsets) == verdicts
        assert r4.verify_buffer(bytearray(buffer), offsets) == verdicts

        for result in one_c:
            ack_c, ack_r = outcome(c1.acknowledge, result), outcome(r1.acknowledge, result)
            assert ack_c == ack_r, result
            if result.ba_status is None:
                assert ack_c == ("returned", None)
            else:
                ba = kbmfast.parse_packet(ack_c[1])
                assert ba.message.status == result.ba_status and ba.checksum_valid
        for home in homes():
            assert len({v.last_sequence(home) for pair in pairs for v in pair}) == 1
    return one_c


@HYPOTHESIS
@given(st.lists(packets, min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_verify_streams_agree(bases: list[bytes], seed: int) -> None:
    """Valid packets and their mutations, in order, through every verifying method of both backends."""
    rng = random.Random(seed)
    stream: list[bytes] = []
    for i, base in enumerate(bases):
        stream.append(base)
        stream += [m for _, m in mutations(base, seed + i, count=rng.randint(0, 4))]
    check_stream(stream)


def test_verify_stream_covers_every_verdict() -> None:
    """A long random stream agrees everywhere, and reaches every verdict (so the other tests can fail)."""
    d = SessionDraw(random.Random(FIXED_SEED))
    mutate = Mutator(random.Random(FIXED_SEED + 1))
    stream: list[bytes] = []
    while len(stream) < 3000:
        base = any_packet(d)
        stream += [base] + [mutate(base)[1] for _ in range(2)]
    seen = Counter(r.verdict for r in check_stream(stream))
    assert set(seen) == set(Verdict) - RR_VERDICTS, seen  # RR: tests/test_rr.py


def test_acknowledge_agrees_on_handmade_results() -> None:
    peer = PEERS[5]
    c, r = (m.Verifier(key_table()) for m in BACKENDS)
    base = dict(
        home=ipaddress.IPv6Address(peer.home),
        care_of=ipaddress.IPv6Address(CARE_OFS[1]),
        correspondent=ipaddress.IPv6Address(CORRESPONDENTS[0]),
        sequence=9,
        lifetime=400,
        ack=True,
        source=ipaddress.IPv6Address(CARE_OFS[0]),
    )
    cases = [
        Result(Verdict.ACCEPTED, ba_status=0, **base),
        Result(Verdict.ACCEPTED, ba_status=0, **{**base, "lifetime": 0}),
        Result(Verdict.SEQUENCE_OUT_OF_WINDOW, ba_status=135, last_sequence=65535, **base),
        Result(Verdict.KEY_EXHAUSTED, ba_status=129, **base),
        Result(Verdict.ACCEPTED, ba_status=None, **base),
        Result(Verdict.MALFORMED),
        Result(Verdict.ACCEPTED, ba_status=135, **base),
        Result(Verdict.ACCEPTED, ba_status=0, **{**base, "home": ipaddress.IPv6Address(STRANGERS[0].home)}),
        "not a result",
    ]
    with c, r:
        for case in cases:
            assert outcome(c.acknowledge, case) == outcome(r.acknowledge, case), case
    assert outcome(c.acknowledge, cases[0])[0] == "returned"


# ---------------------------------------------------------------------------------------------
# Builders and pure functions

addresses_any_form = st.sampled_from(CARE_OFS + CORRESPONDENTS + tuple(p.home for p in PEERS)).flatmap(
    lambda a: st.sampled_from([a, ipaddress.IPv6Address(a), str(ipaddress.IPv6Address(a)), bytearray(a)])
)


@HYPOTHESIS
@given(st.data())
def test_builders_agree(data: st.DataObject) -> None:
    kbm = data.draw(st.binary(min_size=20, max_size=20))
    common = dict(
        home=data.draw(addresses_any_form),
        care_of=data.draw(addresses_any_form),
        correspondent=data.draw(addresses_any_form),
        sequence=data.draw(st.integers(0, 0xFFFF)),
        lifetime=data.draw(st.integers(0, 262140)),
    )
    bu = dict(
        ack=data.draw(st.booleans()),
        alternate_care_of=data.draw(st.none() | addresses_any_form),
        nonce_indices=data.draw(st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))),
    )
    c, r = both("build_binding_update", kbm, **common, **bu)
    assert c == r and c[0] == "returned"
    ba = dict(status=data.draw(st.integers(0, 255)), destination=data.draw(st.none() | addresses_any_form))
    c, r = both("build_binding_ack", kbm, **common, **ba)
    assert c == r and c[0] == "returned"


PUBLIC_FUNCTIONS = ["authenticator", "derive_kbm", "sequence_newer", "parse_packet", "build_binding_update", "build_binding_ack"]


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_functions_have_the_same_signature(name: str) -> None:
    c, r = (inspect.signature(getattr(m, name)) for m in BACKENDS)
    assert list(c.parameters) == list(r.parameters)
    assert [p.kind for p in c.parameters.values()] == [p.kind for p in r.parameters.values()]
    assert [p.default for p in c.parameters.values()] == [p.default for p in r.parameters.values()]


@pytest.mark.parametrize("name", ["build_binding_update", "build_binding_ack"])
def test_builders_refuse_extra_positional_arguments_alike(name: str) -> None:
    c, r = both(name, KBM, A1, **{k: v for k, v in BA_ARGS.items() if k != "home"})
    assert c == r


VERIFIER_METHODS = [
    "verify",
    "verify_batch",
    "verify_buffer",
    "acknowledge",
    "last_sequence",
    "keys_near_limit",
    "flush",
    "close",
    "__init__",
    "__exit__",
]


@pytest.mark.parametrize("name", VERIFIER_METHODS)
def test_verifier_methods_have_the_same_signature(name: str) -> None:
    c, r = (inspect.signature(getattr(m.Verifier, name)) for m in BACKENDS)
    assert c == r


@HYPOTHESIS
@given(
    st.binary(min_size=20, max_size=20),
    addresses_any_form,
    addresses_any_form,
    st.binary(max_size=80),
    st.binary(min_size=12, max_size=12),
    st.integers(0, 0xFFFF),
)
def test_authenticator_agrees(kbm: bytes, care_of: Any, correspondent: Any, body: bytes, tag: bytes, checksum: int) -> None:
    mh = bytearray(body + b"\x05\x0c" + tag)
    if len(body) >= 6:
        mh[4:6] = checksum.to_bytes(2, "big")  # ignored by the MAC
    c, r = both("authenticator", kbm, care_of, correspondent, bytes(mh))
    assert c == r and c[0] == "returned"
    if len(body) >= 6:
        mh[4:6] = b"\0\0"
        mh[-12:] = bytes(12)
        assert both("authenticator", kbm, care_of, correspondent, mh)[0] == c


def test_authenticator_agrees_at_every_length() -> None:
    """Every Mobility Header length from 14 to 2048 bytes: every SHA-1 padding case of the C MAC."""
    rng = random.Random(FIXED_SEED)
    for length in range(14, 2049):
        mh = rng.randbytes(length - 14) + b"\x05\x0c" + rng.randbytes(12)
        kbm, care_of, correspondent = rng.randbytes(20), rng.randbytes(16), rng.randbytes(16)
        c, r = both("authenticator", kbm, care_of, correspondent, mh)
        assert c == r and c[0] == "returned", length


@HYPOTHESIS
@given(
    st.binary(min_size=20, max_size=200),
    st.binary(min_size=1, max_size=64),
    st.binary(min_size=1, max_size=64),
    addresses_any_form,
    addresses_any_form,
    st.booleans(),
)
def test_derive_kbm_agrees(kcn: bytes, home_nonce: bytes, care_of_nonce: bytes, home: Any, care_of: Any, dereg: bool) -> None:
    c, r = both("derive_kbm", kcn, home_nonce, care_of_nonce, home=home, care_of=care_of, deregistration=dereg)
    assert c == r and c[0] == "returned" and len(c[1]) == 20


@HYPOTHESIS
@given(st.binary(max_size=1100), st.binary(max_size=70), st.binary(max_size=70))
def test_derive_kbm_agrees_on_any_sizes(kcn: bytes, home_nonce: bytes, care_of_nonce: bytes) -> None:
    c, r = both("derive_kbm", kcn, home_nonce, care_of_nonce, home=PEERS[4].home, care_of=CARE_OFS[0])
    assert c == r
    ok = 20 <= len(kcn) <= 1024 and 1 <= len(home_nonce) <= 64 and 1 <= len(care_of_nonce) <= 64
    assert (c[0] == "returned") == ok


@given(st.integers(-2, 0x10001), st.integers(-2, 0x10001))
def test_sequence_newer_agrees(new: int, last: int) -> None:
    c, r = both("sequence_newer", new, last)
    assert c == r
    assert (c[0] == "returned") == (0 <= new <= 0xFFFF and 0 <= last <= 0xFFFF)


KBM = bytes(range(20))
A1, A2, A3 = "2001:db8:1::100", "2001:db8:2::200", "2001:db8:3::300"
BU_ARGS = dict(home=A1, care_of=A2, correspondent=A3, sequence=1, lifetime=420)
BA_ARGS = dict(home=A1, care_of=A2, correspondent=A3, sequence=1, status=0, lifetime=420)
MH = bytes(18) + b"\x05\x0c" + bytes(12)

BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("authenticator", (KBM[:19], A2, A3, MH), {}),
    ("authenticator", (KBM + b"\0", A2, A3, MH), {}),
    ("authenticator", (KBM.hex(), A2, A3, MH), {}),
    ("authenticator", (None, A2, A3, MH), {}),
    ("authenticator", (KBM, "2001:db8::zz", A3, MH), {}),
    ("authenticator", (KBM, b"\0" * 15, A3, MH), {}),
    ("authenticator", (KBM, A2, 42, MH), {}),
    ("authenticator", (KBM, "192.0.2.1", A3, MH), {}),
    ("authenticator", (KBM, ipaddress.IPv4Address("192.0.2.1"), A3, MH), {}),
    ("authenticator", (KBM, A2, A3, MH[-13:]), {}),
    ("authenticator", (KBM, A2, A3, bytes(2036) + MH[-14:]), {}),
    ("authenticator", (KBM, A2, A3, MH[:-1]), {}),
    ("authenticator", (KBM, A2, A3, bytes(32)), {}),
    ("authenticator", (KBM, A2, A3, MH.hex()), {}),
    ("authenticator", (KBM, A2, A3, list(MH)), {}),
    ("derive_kbm", (KBM[:19], b"n", b"n"), dict(home=A1, care_of=A2)),
    ("derive_kbm", (bytes(1025), b"n", b"n"), dict(home=A1, care_of=A2)),
    ("derive_kbm", ("k" * 20, b"n", b"n"), dict(home=A1, care_of=A2)),
    ("derive_kbm", (KBM, b"", b"n"), dict(home=A1, care_of=A2)),
    ("derive_kbm", (KBM, b"n", bytes(65)), dict(home=A1, care_of=A2)),
    ("derive_kbm", (KBM, None, b"n"), dict(home=A1, care_of=A2)),
    ("derive_kbm", (KBM, b"n", b"n"), dict(home="::ffff:1.2.3.4.5", care_of=A2)),
    ("derive_kbm", (KBM, b"n", b"n"), dict(home=A1, care_of=None)),
    ("derive_kbm", (KBM, b"n", b"n"), dict(home=A1)),
    ("derive_kbm", (KBM, b"n", b"n", A1, A2), {}),
    ("build_binding_update", (KBM[:10],), BU_ARGS),
    ("build_binding_update", (KBM,), {**BU_ARGS, "sequence": -1}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "sequence": 65536}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "sequence": True}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "sequence": "1"}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "lifetime": -4}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "lifetime": 262141}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "lifetime": 4.0}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "ack": 1}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "alternate_care_of": "nowhere"}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "nonce_indices": [1, 2]}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "nonce_indices": (1,)}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "nonce_indices": (1, 70000)}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "home": b"\1" * 17}),
    ("build_binding_update", (KBM,), {**BU_ARGS, "colour": "blue"}),
    ("build_binding_update", (KBM,), {k: v for k, v in BU_ARGS.items() if k != "home"}),
    ("build_binding_update", (), BU_ARGS),
    ("build_binding_ack", (KBM,), {**BA_ARGS, "status": 256}),
    ("build_binding_ack", (KBM,), {**BA_ARGS, "status": -1}),
    ("build_binding_ack", (KBM,), {**BA_ARGS, "destination": 6}),
    ("build_binding_ack", (b"",), BA_ARGS),
    ("build_binding_ack", (KBM,), {**BA_ARGS, "lifetime": None}),
    ("sequence_newer", (65536, 0), {}),
    ("sequence_newer", (0, -1), {}),
    ("sequence_newer", ("1", 0), {}),
    ("sequence_newer", (1.0, 0), {}),
]


@pytest.mark.parametrize(("name", "args", "kwargs"), BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_identically(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    c, r = both(name, *args, **kwargs)
    assert c == r
    assert c[0] == "raised"


VERIFIER_BAD_ARGS: list[tuple[Any, dict[str, Any]]] = [
    ({}, {}),
    (None, {"rekey_limit": 10}),
    ("keys", {"rekey_limit": 0}),
    ("keys", {"rekey_limit": 32769}),
    ("keys", {"rekey_limit": True}),
    ("keys", {"rekey_limit": 10.0}),
    ("keys", {"max_lifetime": -1}),
    ("keys", {"max_lifetime": 262141}),
    ("keys", {"max_lifetime": 1.5}),
    ("keys", {"state": "/nonexistent-dir/kbm.state"}),
]


@pytest.mark.parametrize(("keys", "kwargs"), VERIFIER_BAD_ARGS)
def test_verifier_bad_arguments_raise_identically(keys: Any, kwargs: dict[str, Any]) -> None:
    if keys == "keys":
        keys = key_table()
    c, r = (outcome(m.Verifier, keys, **kwargs) for m in BACKENDS)
    assert c == r
    assert c[0] == "raised"


def test_verifier_refuses_a_foreign_state_file_identically(tmp_path: Path) -> None:
    for i, content in enumerate([b"", b"KBMSTATE", b"x" * 64, bytes(64), b"KBMSTATE" + bytes(56) + bytes(32)]):
        path = tmp_path / f"state{i}"
        path.write_bytes(content)
        c, r = (outcome(m.Verifier, key_table(), state=path) for m in BACKENDS)
        assert c == r and c[0] == "raised" and c[1] is kbmfast.StateFileError, (content, c, r)


def test_verifier_method_bad_arguments_raise_identically() -> None:
    good = next_bu(ref, PEERS[0], 5)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("verify", ("6000",)),
        ("verify", (None,)),
        ("verify", ([0x60] * 48,)),
        ("verify_batch", ([good, "x"],)),
        ("verify_batch", ([good, 5],)),
        ("verify_batch", (5,)),
        ("verify_buffer", (good, array("Q", [0, 10, 5]))),
        ("verify_buffer", (good, array("Q", [0, len(good) + 1]))),
        ("verify_buffer", (good, array("Q", []))),
        ("verify_buffer", (good, array("I", [0, len(good)]))),
        ("verify_buffer", (good, array("q", [0, len(good)]))),
        ("verify_buffer", (good, array("d", [0, len(good)]))),
        ("verify_buffer", (good, [0, len(good)])),
        ("verify_buffer", ("text", array("Q", [0, 4]))),
        ("verify_buffer", (memoryview(good)[::2], array("Q", [0, 4]))),
        ("last_sequence", ("nowhere",)),
        ("last_sequence", (b"\0" * 4,)),
        ("last_sequence", (None,)),
        ("acknowledge", (None,)),
    ]
    with kbmfast.Verifier(key_table()) as c, ref.Verifier(key_table()) as r:
        for name, args in calls:
            oc, orf = outcome(getattr(c, name), *args), outcome(getattr(r, name), *args)
            assert oc == orf, (name, args)
            assert oc[0] == "raised", (name, args)
        # nothing above touched any state: a good packet is still accepted by both
        assert c.verify(good) == r.verify(good)
        assert c.last_sequence(PEERS[0].home) == 5


def test_closed_verifiers_agree() -> None:
    """After close(), both refuse to verify or answer from state, in the same words."""
    good = next_bu(ref, PEERS[4], 77)
    pairs = [m.Verifier(key_table()) for m in BACKENDS]
    results = [v.verify(good) for v in pairs]
    assert results[0] == results[1] and results[0].verdict == Verdict.ACCEPTED
    for v in pairs:
        v.close()
        v.close()  # idempotent
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("verify", (good,)),
        ("verify", ("not bytes",)),
        ("verify_batch", ([good],)),
        ("verify_batch", ([good, b""],)),
        ("verify_buffer", (good, array("Q", [0, len(good)]))),
        ("verify_buffer", (good, array("Q", [0, len(good) + 1]))),
        ("last_sequence", (PEERS[4].home,)),
        ("last_sequence", ("bad address",)),
        ("acknowledge", (results[0],)),
    ]
    for name, args in calls:
        c, r = (outcome(getattr(v, name), *args) for v in pairs)
        assert c == r, (name, args)
    assert outcome(pairs[0].verify, good) == ("raised", ValueError, "this Verifier is closed")


@pytest.mark.parametrize("results", [False, True])
def test_closed_verifiers_agree_on_an_empty_batch(results: bool) -> None:
    pairs = [m.Verifier(key_table()) for m in BACKENDS]
    for v in pairs:
        v.close()
    c, r = (outcome(v.verify_batch, [], results=results) for v in pairs)
    assert c == r


def test_verify_buffer_accepts_other_buffer_forms() -> None:
    d = SessionDraw(random.Random(7))
    stream = [any_packet(d) for _ in range(60)]
    buffer, offsets = b"".join(stream), offsets_of(stream)
    forms = [
        (buffer, offsets),
        (bytearray(buffer), memoryview(offsets)),
        (memoryview(buffer), array("L", offsets.tolist())),
        (array("B", buffer), offsets),
    ]
    answers = set()
    for buf, offs in forms:
        for m in BACKENDS:
            with m.Verifier(key_table()) as v:
                answers.add(bytes(v.verify_buffer(buf, offs)))
    assert len(answers) == 1
    with kbmfast.Verifier(key_table()) as v:
        assert answers == {bytes(v.verify_batch(stream))}


def test_verify_buffer_accepts_numpy_offsets() -> None:
    np = pytest.importorskip("numpy")
    d = SessionDraw(random.Random(8))
    stream = [any_packet(d) for _ in range(60)]
    buffer, offsets = np.frombuffer(b"".join(stream), dtype=np.uint8), np.array(offsets_of(stream), dtype=np.uint64)
    answers = set()
    for m in BACKENDS:
        with m.Verifier(key_table()) as v:
            answers.add(bytes(v.verify_buffer(buffer, offsets)))
            for bad in (offsets.astype(np.int64), offsets.astype(np.uint32), offsets[::2], offsets.astype(">u8")):
                with pytest.raises(ValueError) as info:
                    v.verify_buffer(buffer, bad)
                answers.add(str(info.value))
    assert len(answers) == 1 + 4  # one verdict array, and each bad offsets array refused in the same words


# ---------------------------------------------------------------------------------------------
# The state file, written by one backend and read by the other


def peer_stream(rng: random.Random, backend: Any, rounds: int) -> list[bytes]:
    """Binding Updates of every peer with rising sequence numbers, some replays and strangers."""
    stream = []
    sequences = {p.home: rng.randrange(0x10000) for p in PEERS + STRANGERS}
    for _ in range(rounds):
        for peer in PEERS + STRANGERS:
            sequences[peer.home] = (sequences[peer.home] + rng.choice((1, 1, 2, 5))) & 0xFFFF
            care_of = rng.choice(CARE_OFS)
            lifetime = rng.choice((0, 420, 4 * rng.randrange(1, 65536)))
            packet = bytes(
                backend.build_binding_update(
                    peer.kbm(care_of, lifetime == 0),
                    home=peer.home,
                    care_of=care_of,
                    correspondent=CORRESPONDENTS[0],
                    sequence=sequences[peer.home],
                    lifetime=lifetime,
                )
            )
            stream.append(packet)
            if rng.random() < 0.2:
                stream.append(rng.choice(stream))
    return stream


def next_bu(backend: Any, peer: PeerSpec, sequence: int) -> bytes:
    return bytes(
        backend.build_binding_update(
            peer.kbm(CARE_OFS[2], False),
            home=peer.home,
            care_of=CARE_OFS[2],
            correspondent=CORRESPONDENTS[1],
            sequence=sequence & 0xFFFF,
            lifetime=420,
        )
    )


@pytest.mark.parametrize(("first", "second"), [(kbmfast, ref), (ref, kbmfast)], ids=["c-then-reference", "reference-then-c"])
def test_state_file_is_shared_across_backends(tmp_path: Path, first: Any, second: Any) -> None:
    path = tmp_path / "sequences.state"
    rng = random.Random(FIXED_SEED)
    stream = peer_stream(rng, first, rounds=6)
    with first.Verifier(key_table(), state=path) as a:
        results = a.verify_batch(stream, results=True)
        last = {h: a.last_sequence(h) for h in homes()}
    with second.Verifier(key_table()) as memory:  # the same stream, in memory, in the other backend
        assert memory.verify_batch(stream, results=True) == results
    assert {r.verdict for r in results} >= {Verdict.ACCEPTED, Verdict.SEQUENCE_OUT_OF_WINDOW, Verdict.NOT_CONFIGURED}
    assert all(last[ipaddress.IPv6Address(p.home)] is not None for p in PEERS)
    assert all(last[ipaddress.IPv6Address(p.home)] is None for p in STRANGERS)

    with second.Verifier(key_table(), state=path) as b:
        assert {h: b.last_sequence(h) for h in homes()} == last
        for packet, result in zip(stream, results, strict=True):
            if result.verdict == Verdict.ACCEPTED:
                replay = b.verify(packet)
                assert replay.verdict == Verdict.SEQUENCE_OUT_OF_WINDOW
                assert replay.last_sequence == last[result.home]
        for peer in PEERS:
            assert b.verify(next_bu(second, peer, last[ipaddress.IPv6Address(peer.home)] + 1)).verdict == Verdict.ACCEPTED
        after = {h: b.last_sequence(h) for h in homes()}

    with first.Verifier(key_table(), state=path) as a:  # and back again
        assert {h: a.last_sequence(h) for h in homes()} == after
        for peer in PEERS:
            seq = after[ipaddress.IPv6Address(peer.home)]
            assert a.verify(next_bu(first, peer, seq)).verdict == Verdict.SEQUENCE_OUT_OF_WINDOW
            assert a.verify(next_bu(first, peer, seq + 1)).verdict == Verdict.ACCEPTED


@pytest.mark.parametrize("opened_first", BACKENDS, ids=["c-first", "reference-first"])
def test_state_file_shared_live_between_backends(tmp_path: Path, opened_first: Any) -> None:
    """Both backends open on one state file at once: each sees the other's acceptances at once."""
    path = tmp_path / "sequences.state"
    other = ref if opened_first is kbmfast else kbmfast
    with opened_first.Verifier(key_table(), state=path) as a, other.Verifier(key_table(), state=path) as b:
        for peer in PEERS:
            sequence = 1000
            for turn in range(6):
                first, second = (a, b) if turn % 2 == 0 else (b, a)
                packet = next_bu(ref, peer, sequence)
                assert first.verify(packet).verdict == Verdict.ACCEPTED
                replay = second.verify(packet)
                assert replay.verdict == Verdict.SEQUENCE_OUT_OF_WINDOW and replay.last_sequence == sequence
                assert a.last_sequence(peer.home) == b.last_sequence(peer.home) == sequence
                sequence += 1 + turn


@pytest.mark.parametrize("which", [1, 5], ids=["kbm", "kcn"])
@pytest.mark.parametrize(("first", "second"), [(kbmfast, ref), (ref, kbmfast)], ids=["c-then-reference", "reference-then-c"])
def test_state_file_carries_key_use_across_backends(tmp_path: Path, first: Any, second: Any, which: int) -> None:
    """The cumulative sequence advance, the key fingerprint and the earlier keys survive a change
    of backend: both compute the same fingerprint for the same key under the file's salt (for an
    RFC 4449 peer, over the Kcn and both nonces)."""
    path = tmp_path / "sequences.state"
    peer = PEERS[which]
    name = ipaddress.IPv6Address(peer.home)
    with first.Verifier(key_table(), state=path, rekey_limit=10) as a:
        assert [a.verify(next_bu(first, peer, s)).verdict for s in (100, 105, 110)] == [Verdict.ACCEPTED] * 3
        assert a.verify(next_bu(first, peer, 111)).verdict == Verdict.KEY_EXHAUSTED
    with pytest.raises(ValueError, match=f"home {name}: this key is used up"):
        second.Verifier(key_table(), state=path, rekey_limit=10)
    with second.Verifier(key_table(), state=path, rekey_limit=12) as b:  # the advance went on: 10
        assert b.last_sequence(peer.home) == 110
        assert [b.verify(next_bu(second, peer, s)).verdict for s in (111, 112, 113)] == [Verdict.ACCEPTED] * 2 + [
            Verdict.KEY_EXHAUSTED
        ]
    new = PeerSpec(peer.home, bytes(reversed(peer.key)), peer.kcn, peer.home_nonce, peer.care_of_nonce)
    keys = key_table()
    new.add_to(keys)  # a new key: a fresh count
    with second.Verifier(keys, state=path, rekey_limit=12) as b:
        assert b.verify(next_bu(second, new, 112)).verdict == Verdict.SEQUENCE_OUT_OF_WINDOW
        assert b.verify(next_bu(second, new, 120)).verdict == Verdict.ACCEPTED
    with pytest.raises(ValueError, match=f"home {name}: this is an earlier key"):
        first.Verifier(key_table(), state=path, rekey_limit=12)
    with first.Verifier(keys, state=path, rekey_limit=12) as a:
        assert a.last_sequence(peer.home) == 120
        assert a.verify(next_bu(first, new, 124)).verdict == Verdict.ACCEPTED
        assert a.verify(next_bu(first, new, 125)).verdict == Verdict.KEY_EXHAUSTED


# ---------------------------------------------------------------------------------------------
# The mutation loop


class Divergence(AssertionError):
    """The backends answered differently."""


def _fuzz_seed(which: str) -> int:
    if which == "fixed":
        return FIXED_SEED
    env = os.environ.get("KBMFAST_FUZZ_SEED")
    return int(env, 0) if env else random.SystemRandom().randrange(2**63)


def run_fuzz(seed: int, count: int, chunk: int = 1024) -> Counter[str]:
    """Verify ``count`` mutated packets in both backends, chunk by chunk; raise Divergence on any difference."""
    rng = random.Random(seed)
    draw = SessionDraw(random.Random(rng.getrandbits(64)))
    mutate = Mutator(random.Random(rng.getrandbits(64)))
    rekey_limit = rng.choice((32768, 32768, 32768, 4096, 300))
    tables = (key_table(), key_table())
    changed: dict[PeerSpec, str] = {}
    verdicts: Counter[str] = Counter()
    done = number = 0
    with kbmfast.Verifier(tables[0], rekey_limit=rekey_limit) as vc, ref.Verifier(tables[1], rekey_limit=rekey_limit) as vr:
        while done < count:
            batch: list[bytes] = []
            while len(batch) < chunk and done < count:
                base = any_packet(draw)
                if rng.random() < 0.3:
                    batch.append(base)
                for _ in range(min(rng.randint(1, 6), count - done)):
                    batch.append(mutate(base)[1])
                    done += 1
            where = f"seed {seed}, chunk {number} (KBMFAST_FUZZ_SEED={seed} KBMFAST_FUZZ_COUNT={count})"
            mode = number % 8
            if mode == 0:
                rc, rr = vc.verify_batch(batch, results=True), vr.verify_batch(batch, results=True)
                got_c, got_r = array("B", [r.verdict for r in rc]), array("B", [r.verdict for r in rr])
                for result_c, result_r in zip(rc, rr, strict=True):
                    if result_c != result_r:
                        raise Divergence(f"{where}: Result {result_c} != {result_r}")
                    if result_c.ba_status is not None and rng.random() < 0.05:
                        if outcome(vc.acknowledge, result_c) != outcome(vr.acknowledge, result_r):
                            raise Divergence(f"{where}: acknowledge({result_c}) differs")
            elif mode == 1:
                buffer, offsets = b"".join(batch), offsets_of(batch)
                got_c, got_r = vc.verify_buffer(buffer, offsets), vr.verify_batch(batch)
            elif mode == 2:
                got_c, got_r = vc.verify_batch(batch), vr.verify_buffer(b"".join(batch), offsets_of(batch))
            else:
                got_c, got_r = vc.verify_batch(batch), vr.verify_batch(batch)
            if got_c != got_r:
                i = next(i for i, (x, y) in enumerate(zip(got_c, got_r, strict=True)) if x != y)
                raise Divergence(
                    f"{where}, packet {i}: C says {Verdict(got_c[i]).name}, reference says {Verdict(got_r[i]).name}: "
                    f"{batch[i].hex()}"
                )
            verdicts.update(Verdict(v).name for v in got_c)
            for packet in batch[rng.randrange(64) :: 64]:
                c, r = both("parse_packet", packet)
                if c != r:
                    raise Divergence(f"{where}: parse_packet differs on {packet.hex()}: {c} != {r}")
            for peer in PEERS:
                last = vc.last_sequence(peer.home)
                if last != vr.last_sequence(peer.home):
                    raise Divergence(f"{where}: last_sequence({ipaddress.IPv6Address(peer.home)}) differs")
                draw.resync(peer.home, last)
            _key_event(rng, tables, changed)
            number += 1
    return verdicts


def _key_event(rng: random.Random, tables: tuple[kbmfast.KeyTable, ...], changed: dict[PeerSpec, str]) -> None:
    """Now and then, the same configuration change in both key tables.

    A peer may get its key again with a new epoch (which changes nothing), a different key (its
    Binding Updates then fail to authenticate) or be removed; the next event on it undoes that.
    A key the state shows used up or replaced is refused, by both backends alike.
    """
    r = rng.random()
    if r >= 0.6:
        return
    peer = rng.choice(PEERS)
    undo = changed.pop(peer, None)
    if undo is not None:
        outcomes = [outcome(peer.add_to, table) for table in tables]
        if outcomes[0] != outcomes[1]:
            raise Divergence(f"restoring {ipaddress.IPv6Address(peer.home)}'s key: {outcomes[0]} != {outcomes[1]}")
        if outcomes[0][0] == "raised":
            changed[peer] = undo
    elif r < 0.4:
        epoch = (tables[0].epoch(peer.home) + 1) & 0xFFFF
        outcomes = [outcome(peer.add_to, table, epoch) for table in tables]
        if outcomes[0] != outcomes[1]:
            raise Divergence(f"re-adding {ipaddress.IPv6Address(peer.home)}'s key: {outcomes[0]} != {outcomes[1]}")
    elif r < 0.5:
        other = PeerSpec(peer.home, rng.randbytes(len(peer.key)), peer.kcn, peer.home_nonce, peer.care_of_nonce)
        for table in tables:
            other.add_to(table)
        changed[peer] = "other key"
    else:
        for table in tables:
            table.remove(peer.home)
        changed[peer] = "removed"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fixed", "random"])
def test_mutation_fuzz_loop(which: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _fuzz_seed(which)
    with capsys.disabled():
        print(f"\n[kbmfast fuzz] {which} seed: {seed} (replay: KBMFAST_FUZZ_SEED={seed} KBMFAST_FUZZ_COUNT={FUZZ_COUNT})")
    start = time.perf_counter()
    verdicts = run_fuzz(seed, FUZZ_COUNT)
    took = time.perf_counter() - start
    with capsys.disabled():
        print(f"[kbmfast fuzz] seed {seed}: {sum(verdicts.values())} packets in {took:.1f} s: {dict(verdicts)}")
    assert sum(verdicts.values()) >= FUZZ_COUNT
    if FUZZ_COUNT >= 100_000:
        assert set(verdicts) == {v.name for v in Verdict} - {v.name for v in RR_VERDICTS}, verdicts  # RR: below


# ---------------------------------------------------------------------------------------------
# Return routability: HoTI/CoTI replies and RR Binding Updates, time moving across nonce expiry


def run_rr(seed: int, count: int, max_peers: int = 4) -> Counter[str]:
    """``count`` packets of an RR session through a C and a reference verifier sharing one
    ReturnRoutability and clock: replies, Results and acknowledgements must be identical, one
    by one and in batches (a batch is judged at one instant). Returns the verdicts seen."""
    rng = random.Random(seed)
    session = RRSession(random.Random(seed + 1))
    clock = FakeClock()
    rr = kbmfast.ReturnRoutability(kcn=random.Random(seed).randbytes(20), clock=clock, max_peers=max_peers)
    seen: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        vc, vr, bc, br = (stack.enter_context(m.Verifier(key_table(), return_routability=rr)) for m in BACKENDS * 2)
        done = 0
        while done < count:
            clock.now += session.step()
            if rng.random() < 0.01:
                rr.regenerate()
            batch = [session.packet()[1] for _ in range(rng.randint(1, 24))]
            where = f"RR seed {seed}, packet {done}"
            replies_c = [vc.reply(p) for p in batch]
            replies_r = [vr.reply(p) for p in batch]
            if replies_c != replies_r:
                raise Divergence(f"{where}: replies differ")
            for reply in replies_c:
                session.learn(reply)
            buffer, offsets = b"".join(batch), offsets_of(batch)
            if bc.reply_buffer(buffer, offsets) != br.reply_buffer(buffer, offsets):
                raise Divergence(f"{where}: reply_buffer differs")
            one_c = [vc.verify(p) for p in batch]
            one_r = [vr.verify(p) for p in batch]
            if one_c != one_r:
                raise Divergence(f"{where}: {[(a, b) for a, b in zip(one_c, one_r, strict=True) if a != b][:1]}")
            for result in one_c:
                if result.ba_status is not None and outcome(vc.acknowledge, result) != outcome(vr.acknowledge, result):
                    raise Divergence(f"{where}: acknowledge({result}) differs")
                seen[result.verdict.name] += 1
            if rng.random() < 0.5:
                got = (bc.verify_batch(batch, results=True), br.verify_batch(batch, results=True))
            else:
                got = (bc.verify_buffer(buffer, offsets), br.verify_buffer(bytearray(buffer), offsets))
                one_c = array("B", [r.verdict for r in one_c])  # type: ignore[assignment]
            if got[0] != one_c or got[1] != one_c:
                raise Divergence(f"{where}: batch answers differ from one by one")
            done += len(batch)
    return seen


def test_rr_stream_agrees_and_covers_every_rr_verdict() -> None:
    seen = run_rr(FIXED_SEED, 4000)
    assert {v.name for v in RR_VERDICTS | {Verdict.ACCEPTED, Verdict.SEQUENCE_OUT_OF_WINDOW}} <= set(seen), seen
    assert {"BAD_AUTHENTICATOR", "INVALID_CARE_OF", "NOT_CONFIGURED", "MALFORMED"} <= set(seen), seen


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fixed", "random"])
def test_rr_fuzz_loop(which: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _fuzz_seed(which)
    with capsys.disabled():
        print(f"\n[kbmfast RR fuzz] {which} seed: {seed} (replay: KBMFAST_FUZZ_SEED={seed} KBMFAST_FUZZ_COUNT={FUZZ_COUNT})")
    start = time.perf_counter()
    verdicts = run_rr(seed, FUZZ_COUNT)
    with capsys.disabled():
        print(f"[kbmfast RR fuzz] seed {seed}: {sum(verdicts.values())} packets in {time.perf_counter() - start:.1f} s")
    assert sum(verdicts.values()) >= FUZZ_COUNT
