"""Valid Mobility Header packets of every kind, and deterministic mutations of them.

Every generator takes a ``Draw``: the same code runs under hypothesis (``HypothesisDraw``, for
shrinking) and under ``random.Random`` (``RandomDraw``, for the million-packet fuzz loop).
Packets are complete IPv6 packets with correct lengths and Mobility Header checksums (pseudo-source
= the Home Address option's address, pseudo-destination = the type 2 Routing header's address).

Unrecognised IPv6 options in valid packets have action bits 00 (skip) and either "may change"
bit; the mutations add the discarding kinds (01, 10, 11).

``Mutator`` (and ``mutations``) turn a packet into nearby ones: bit flips, byte changes,
truncation, insertion and deletion, option reordering, re-padding, duplicated options, field
changes re-signed with the right key, re-signing with wrong keys, extension-header surgery,
address swaps, exact replays. The IPv6 Payload Length, the Header Len and the checksum are
repaired only sometimes, so mutations reach every stage of the verifier.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

import kbmfast
import kbmfast.reference as ref
from kbmfast.reference import wire
from kbmfast.reference.crypto import mac96

T = TypeVar("T")

BACKENDS = (kbmfast, ref)
NH_HOP_BY_HOP, NH_ROUTING, NH_NONE, NH_DEST_OPTS, NH_MH = 0, 43, 59, 60, 135
OPTIONS_START = {0: 8, 1: 16, 2: 16, 3: 24, 4: 24, 5: 12, 6: 12, 7: 24}


def a16(address: str) -> bytes:
    """The 16 bytes of an IPv6 address."""
    return ipaddress.IPv6Address(address).packed


# ---------------------------------------------------------------------------------------------
# One generator, two sources of randomness


class Draw(Protocol):
    """What the generators need from a source of randomness."""

    def integer(self, lo: int, hi: int) -> int: ...
    def boolean(self, p: float = 0.5) -> bool: ...
    def choice(self, items: Sequence[T]) -> T: ...
    def raw(self, n: int) -> bytes: ...


class RandomDraw:
    """Draws from a ``random.Random`` (reproducible from its seed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def boolean(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def choice(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def raw(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class SessionDraw(RandomDraw):
    """A RandomDraw that also keeps a per-home sequence counter, so streams hold many acceptances."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.counters: dict[bytes, int] = {}

    def resync(self, home: bytes, last: int | None) -> None:
        """Adopt the correspondent's last accepted sequence, as a mobile node does from a status-135 BA."""
        if last is not None:
            self.counters[home] = last

    def next_sequence(self, home: bytes) -> int:
        """The home's next sequence number: usually a small step up, now and then a jump."""
        last = self.counters.get(home)
        if last is None:
            last = self.rng.randrange(0x10000)
        step = self.rng.choice((1, 1, 1, 2, 3, 7)) if self.rng.random() < 0.99 else self.rng.randrange(0x10000)
        self.counters[home] = (last + step) & 0xFFFF
        return self.counters[home]


class HypothesisDraw:
    """Draws through hypothesis's ``draw`` so that failures shrink."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return int(self.draw(st.integers(lo, hi)))

    def boolean(self, p: float = 0.5) -> bool:
        # weighted like RandomDraw, shrinking towards False (the plainer packet)
        return bool(self.draw(st.integers(0, 99)) >= 100 - round(p * 100))

    def choice(self, items: Sequence[T]) -> T:
        return items[int(self.draw(st.integers(0, len(items) - 1)))]

    def raw(self, n: int) -> bytes:
        return bytes(self.draw(st.binary(min_size=n, max_size=n)))


# ---------------------------------------------------------------------------------------------
# Peers and addresses


@dataclass(frozen=True)
class PeerSpec:
    """A preconfigured peer: draft Kbm (``kcn`` False) or RFC 4449 Kcn and nonces."""

    home: bytes
    key: bytes
    kcn: bool = False
    home_nonce: bytes = b""
    care_of_nonce: bytes = b""

    def kbm(self, care_of: bytes, deregistration: bool) -> bytes:
        """The Kbm authenticating a Binding Update from ``care_of``."""
        if not self.kcn:
            return self.key
        return _derived(self, care_of, deregistration)

    def add_to(self, table: kbmfast.KeyTable, epoch: int | None = None) -> None:
        """Configure this peer in a KeyTable (``epoch``: force a key epoch, as a rekey would)."""
        if self.kcn:
            table.add_kcn(self.home, self.key, self.home_nonce, self.care_of_nonce, epoch=epoch)
        else:
            table.add_kbm(self.home, self.key, epoch=epoch)


@functools.lru_cache(maxsize=4096)
def _derived(peer: PeerSpec, care_of: bytes, deregistration: bool) -> bytes:
    return ref.derive_kbm(
        peer.key, peer.home_nonce, peer.care_of_nonce, home=peer.home, care_of=care_of, deregistration=deregistration
    )


def _key(label: str, size: int) -> bytes:
    out = b""
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{len(out)}".encode()).digest()
    return out[:size]


def make_peers(label: str = "peers") -> tuple[PeerSpec, ...]:
    """Four draft Kbm peers and four RFC 4449 Kcn peers (Kcn of 20..100 bytes, nonces 1..64)."""
    peers = [PeerSpec(a16(f"2001:db8:100::{i + 1:x}"), _key(f"{label}/kbm{i}", 20)) for i in range(4)]
    for i, (size, hn, cn) in enumerate(((20, 8, 8), (33, 1, 64), (64, 64, 1), (100, 13, 8))):
        peers.append(
            PeerSpec(
                a16(f"2001:db8:200::{i + 1:x}"),
                _key(f"{label}/kcn{i}", size),
                kcn=True,
                home_nonce=_key(f"{label}/hn{i}", hn),
                care_of_nonce=_key(f"{label}/cn{i}", cn),
            )
        )
    return tuple(peers)


PEERS = make_peers()
#: Home addresses nobody configured (they get NOT_CONFIGURED), with keys the mobile node believes in.
STRANGERS = (
    PeerSpec(a16("2001:db8:300::1"), _key("stranger0", 20)),
    PeerSpec(a16("fd00:1::7"), _key("stranger1", 20)),
)
CORRESPONDENTS = tuple(a16(a) for a in ("2001:db8:3::300", "2001:db8:3::301", "fd00:3::1"))
CARE_OFS = tuple(a16(a) for a in ("2001:db8:2::200", "2001:db8:2::201", "fd00:2::9", "2001:db8:4::1", "::ffff:192.0.2.1"))
#: Edges of "routable unicast": ::, ::1, link-local and multicast are not; ::2 and site-local fec0::1 are.
ODD_ADDRESSES = tuple(a16(a) for a in ("::", "::1", "fe80::1", "febf::2", "ff02::1", "ff0e::5", "::2", "fec0::1"))


def key_table(peers: Sequence[PeerSpec] = PEERS) -> kbmfast.KeyTable:
    """A fresh KeyTable holding ``peers`` (KeyTable is shared by both backends)."""
    table = kbmfast.KeyTable()
    for peer in peers:
        peer.add_to(table)
    return table


def address(d: Draw, pool: Sequence[bytes], odd: float = 0.02) -> bytes:
    """Mostly one of ``pool``, sometimes any documentation address, rarely a non-routable one."""
    if d.boolean(odd):
        return d.choice(ODD_ADDRESSES)
    if d.boolean(0.1):
        return a16("2001:db8::")[:4] + d.raw(12)
    return d.choice(pool)


def lifetime_seconds(d: Draw) -> int:
    """0 (de-registration), a value below 4 s (also 0 on the wire), or anything up to 262140 s."""
    kind = d.integer(0, 9)
    if kind <= 1:
        return 0
    if kind == 2:
        return d.integer(1, 7)
    if kind <= 5:
        return d.integer(1, 105) * 4
    return d.integer(0, 262140)


def sequence(d: Draw, home: bytes | None = None) -> int:
    """Small sequence numbers (so peers collide, advance and replay) or any 16-bit value.

    A ``SessionDraw`` mostly numbers each home's Binding Updates upwards, as a mobile node does.
    """
    if home is not None and isinstance(d, SessionDraw) and d.boolean(0.98):
        return d.next_sequence(home)
    return d.integer(0, 40) if d.boolean(0.5) else d.integer(0, 0xFFFF)


# ---------------------------------------------------------------------------------------------
# Padding, options, extension headers


def padding(d: Draw, n: int) -> bytes:
    """``n`` bytes of option padding (IPv6 and mobility options share the encoding), any mix."""
    out = b""
    while n > 0:
        if n == 1 or d.boolean(0.25):
            out += b"\0"
            n -= 1
        else:
            take = n if d.boolean(0.7) else d.integer(2, n)
            out += bytes((1, take - 2)) + bytes(take - 2)
            n -= take
    return out


def pad_to(d: Draw, offset: int, modulus: int, remainder: int) -> bytes:
    """Padding taking ``offset`` to the next modulus·k + remainder."""
    return padding(d, (remainder - offset) % modulus)


def unknown_ip_option(d: Draw, action: int = 0) -> bytes:
    """An unrecognised IPv6 option; ``action`` 0 (skip) is the only one a receiver accepts."""
    t = action << 6 | d.integer(0, 1) << 5 | d.integer(2, 31)
    return bytes((t, n := d.integer(0, 8))) + d.raw(n)


def ip_options_header(d: Draw, hao: bytes | None, extra: bool = True) -> bytearray:
    """A Hop-by-Hop or Destination Options header (next-header byte left 0), HAO at 8n+6."""
    options = [unknown_ip_option(d) for _ in range(d.integer(0, 2) if extra else 0)]
    hao_at = -1 if hao is None else d.integer(0, len(options))
    h = bytearray(2)
    for i in range(len(options) + 1):
        if i == hao_at and hao is not None:
            # the HAO's alignment binds the sender only: now and then leave it misaligned
            h += pad_to(d, len(h), 8, 6) if d.boolean(0.9) else padding(d, d.integer(0, 3))
            h += bytes((0xC9, 16)) + hao
        if i < len(options):
            h += padding(d, d.integer(0, 3) if d.boolean(0.3) else 0) + options[i]
    h += pad_to(d, len(h), 8, 0)
    if d.boolean(0.1):
        h += padding(d, 8)
    h[1] = len(h) // 8 - 1
    return h


def routing_header_2(home: bytes) -> bytearray:
    """A type 2 Routing header (next-header byte left 0)."""
    return bytearray((0, 2, 2, 1)) + bytes(4) + home


def assemble(
    d: Draw,
    *,
    source: bytes,
    destination: bytes,
    mh: bytearray,
    headers: Sequence[tuple[int, bytearray]] = (),
    pseudo_source: bytes | None = None,
    pseudo_destination: bytes | None = None,
) -> bytes:
    """IPv6 header + extension headers ((next-header value, header) in order) + MH, checksummed."""
    mh[4:6] = wire.mh_checksum(pseudo_source or source, pseudo_destination or destination, bytes(mh)).to_bytes(2, "big")
    chain = [h for _, h in headers]
    types = [t for t, _ in headers] + [NH_MH]
    for i, h in enumerate(chain):
        h[0] = types[i + 1]
    payload = b"".join(chain) + mh
    first = 0x60000000 | (d.integer(0, 0xFFFFFFF) if d.boolean(0.1) else 0)
    hop_limit = d.integer(0, 255) if d.boolean(0.1) else 64
    return struct.pack("!IHBB", first, len(payload), types[0], hop_limit) + source + destination + payload


def unknown_mobility_option(d: Draw, big: bool = False) -> bytes:
    """A mobility option type nobody defined here (6..255): skipped by receivers."""
    return bytes((d.integer(6, 255), n := d.integer(0, 255 if big else 10))) + d.raw(n)


def bulky_options(d: Draw) -> list[bytes]:
    """Now and then, long unknown options: Mobility Headers up to ~2 KB, many SHA-1 blocks to MAC."""
    if not d.boolean(0.06):
        return []
    return [unknown_mobility_option(d, big=True) for _ in range(d.integer(1, 7))]


def mobility_header(
    d: Draw,
    mh_type: int,
    fixed: bytes,
    options: Sequence[bytes],
    bad: bool,
    *,
    aligned: dict[int, tuple[int, int]] | None = None,
) -> bytearray:
    """An MH: common part, fixed part, options with random padding between, BAD last at 8n+2.

    ``aligned`` maps an option type to the (modulus, remainder) its sender should respect.
    """
    reserved = d.integer(0, 255) if d.boolean(0.1) else 0
    mh = bytearray((NH_NONE, 0, mh_type, reserved, 0, 0)) + fixed
    for opt in options:
        rule = (aligned or {}).get(opt[0])
        if rule is not None and d.boolean(0.9):
            mh += pad_to(d, len(mh), *rule)
        elif d.boolean(0.3):
            mh += padding(d, d.integer(1, 4))
        mh += opt
    if bad:
        mh += pad_to(d, len(mh), 8, 2) + bytes((5, 12)) + bytes(12)
    else:
        mh += pad_to(d, len(mh), 8, 0)
        if d.boolean(0.1):
            mh += padding(d, 8)
    mh[1] = len(mh) // 8 - 1
    return mh


# ---------------------------------------------------------------------------------------------
# Packets


def built_binding_update(d: Draw) -> bytes:
    """A BU from one of the two public builders: away or at home, de-registration, AltCoA, NI."""
    backend = d.choice(BACKENDS)
    peer = d.choice(PEERS + STRANGERS) if d.boolean(0.9) else d.choice(STRANGERS)
    care_of = peer.home if d.boolean(0.2) else address(d, CARE_OFS)
    alt = address(d, (*CARE_OFS, peer.home)) if d.boolean(0.25) else None
    lifetime = lifetime_seconds(d)
    nonce_indices = (d.integer(0, 0xFFFF), d.integer(0, 0xFFFF)) if d.boolean(0.25) else None
    kbm = peer.kbm(alt or care_of, lifetime < 4)
    return bytes(
        backend.build_binding_update(
            kbm,
            home=peer.home,
            care_of=care_of,
            correspondent=address(d, CORRESPONDENTS),
            sequence=sequence(d, peer.home),
            lifetime=lifetime,
            ack=d.boolean(0.7),
            alternate_care_of=alt,
            nonce_indices=nonce_indices,
        )
    )


def custom_binding_update(d: Draw) -> bytes:
    """A hand-built, correctly signed BU: any flags, unknown options, odd padding, extra headers."""
    peer = d.choice(PEERS + STRANGERS)
    home = peer.home
    away = d.boolean(0.8)
    source = address(d, CARE_OFS) if away else home
    correspondent = address(d, CORRESPONDENTS)
    alt = address(d, (*CARE_OFS, home)) if d.boolean(0.25) else None
    care_of = alt or source
    flags = (0x8000 if d.boolean(0.7) else 0) | (0x4000 if d.boolean(0.05) else 0)
    flags |= (0x2000 if d.boolean(0.1) else 0) | (0x1000 if d.boolean(0.1) else 0)
    if d.boolean(0.15):
        flags |= d.integer(0, 0x0FFF)
    units = 0 if d.boolean(0.15) else d.integer(1, 0xFFFF) if d.boolean(0.3) else d.integer(1, 105)
    options = [unknown_mobility_option(d) for _ in range(d.integer(0, 2) if d.boolean(0.3) else 0)] + bulky_options(d)
    if alt is not None:
        options.append(bytes((3, 16)) + alt)
    if not flags & 0x4000 and d.boolean(0.2):
        options.append(struct.pack("!BBHH", 4, 4, d.integer(0, 0xFFFF), d.integer(0, 0xFFFF)))
    options = [options[i] for i in _permutation(d, len(options))]
    fixed = struct.pack("!HHH", sequence(d, home), flags, units)
    with_bad = d.boolean(0.95)
    mh = mobility_header(d, 5, fixed, options, with_bad, aligned={3: (8, 6), 4: (2, 0)})
    if with_bad:
        dereg = units == 0
        mh[-12:] = mac96(peer.kbm(care_of, dereg), home if dereg else care_of, correspondent, bytes(mh))
    headers: list[tuple[int, bytearray]] = []
    if d.boolean(0.15):
        headers.append((NH_HOP_BY_HOP, ip_options_header(d, None)))
    if away:
        headers.append((NH_DEST_OPTS, ip_options_header(d, home, extra=d.boolean(0.3))))
    elif d.boolean(0.1):
        headers.append((NH_DEST_OPTS, ip_options_header(d, None)))
    return assemble(d, source=source, destination=correspondent, mh=mh, headers=headers, pseudo_source=home)


def built_binding_ack(d: Draw) -> bytes:
    """A BA from one of the public builders, to the care-of address or to ``destination``."""
    backend = d.choice(BACKENDS)
    peer = d.choice(PEERS + STRANGERS)
    care_of = address(d, (*CARE_OFS, peer.home))
    status = d.choice((0, 1, 128, 129, 131, 135, 139, 174)) if d.boolean(0.8) else d.integer(0, 255)
    kwargs: dict[str, Any] = {}
    if d.boolean(0.5):
        kwargs["destination"] = address(d, (*CARE_OFS, peer.home))
    lifetime = lifetime_seconds(d)
    return bytes(
        backend.build_binding_ack(
            peer.kbm(care_of, lifetime < 4),
            home=peer.home,
            care_of=care_of,
            correspondent=address(d, CORRESPONDENTS),
            sequence=sequence(d),
            status=status,
            lifetime=lifetime,
            **kwargs,
        )
    )


def other_message(d: Draw) -> bytes:
    """A hand-built MH of any type but an authenticated BU: BRR, HoTI, CoTI, HoT, CoT, BA, BE, 8+."""
    mh_type = d.choice((0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 16, 255)) if d.boolean(0.9) else d.integer(8, 255)
    source = address(d, CARE_OFS + CORRESPONDENTS)
    destination = address(d, CARE_OFS + CORRESPONDENTS)
    headers: list[tuple[int, bytearray]] = []
    home = routed = None
    if d.boolean(0.15):
        headers.append((NH_HOP_BY_HOP, ip_options_header(d, None)))
    if d.boolean(0.5 if mh_type == 6 else 0.1):
        routed = d.choice(PEERS).home
        headers.append((NH_ROUTING, routing_header_2(routed)))
    if d.boolean(0.2):
        home = d.choice(PEERS + STRANGERS).home if d.boolean(0.8) else None
        headers.append((NH_DEST_OPTS, ip_options_header(d, home)))
    if mh_type >= 8:
        proto = NH_NONE if d.boolean(0.7) else d.integer(0, 255)
        mh = bytearray((proto, 0, mh_type, 0, 0, 0)) + d.raw(2 + 8 * d.integer(0, 4))
        mh[1] = len(mh) // 8 - 1
        return assemble(
            d, source=source, destination=destination, mh=mh, headers=headers, pseudo_source=home, pseudo_destination=routed
        )
    fixed = {
        0: lambda: bytes(2),
        1: lambda: bytes(2) + d.raw(8),
        2: lambda: bytes(2) + d.raw(8),
        3: lambda: d.raw(18),
        4: lambda: d.raw(18),
        5: lambda: struct.pack("!HHH", sequence(d), d.integer(0, 0xFFFF), d.integer(0, 0xFFFF)),
        6: lambda: struct.pack("!BBHH", d.integer(0, 255), 0 if d.boolean(0.8) else 0x80, sequence(d), d.integer(0, 0xFFFF)),
        7: lambda: bytes((d.integer(1, 2), 0)) + (d.choice(PEERS).home if d.boolean(0.7) else bytes(16)),
    }[mh_type]()
    options = [unknown_mobility_option(d) for _ in range(d.integer(0, 2) if d.boolean(0.3) else 0)] + bulky_options(d)
    if d.boolean(0.2):
        options.append(bytes((2, 2)) + d.raw(2))  # Binding Refresh Advice
    if d.boolean(0.1):
        options.append(bytes((3, 16)) + address(d, CARE_OFS))
    if d.boolean(0.1):
        options.append(bytes((4, 4)) + d.raw(4))
    options = [options[i] for i in _permutation(d, len(options))]
    with_bad = d.boolean(0.3)
    mh = mobility_header(d, mh_type, fixed, options, with_bad, aligned={2: (2, 0), 3: (8, 6), 4: (2, 0)})
    if with_bad and d.boolean(0.5):
        mh[-12:] = d.raw(12)  # a forged authenticator (else all zero)
    return assemble(
        d, source=source, destination=destination, mh=mh, headers=headers, pseudo_source=home, pseudo_destination=routed
    )


def _permutation(d: Draw, n: int) -> list[int]:
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = d.integer(0, i)
        order[i], order[j] = order[j], order[i]
    return order


GENERATORS: tuple[tuple[Callable[[Draw], bytes], int], ...] = (
    (built_binding_update, 4),
    (custom_binding_update, 4),
    (built_binding_ack, 1),
    (other_message, 2),
)


_WEIGHTED = tuple(g for g, weight in GENERATORS for _ in range(weight))


def any_packet(d: Draw) -> bytes:
    """A valid packet of any kind, Binding Updates most often."""
    return d.choice(_WEIGHTED)(d)


def _strategy(generator: Callable[[Draw], bytes]) -> st.SearchStrategy[bytes]:
    return st.composite(lambda draw: generator(HypothesisDraw(draw)))()


binding_updates = _strategy(built_binding_update)
custom_binding_updates = _strategy(custom_binding_update)
binding_acks = _strategy(built_binding_ack)
other_messages = _strategy(other_message)
packets = st.one_of(binding_updates, custom_binding_updates, binding_acks, other_messages)


# ---------------------------------------------------------------------------------------------
# Looking into packets without trusting them


@dataclass
class Layout:
    """Where the Mobility Header is, and the checksum's pseudo addresses, found leniently."""

    mh: int
    pseudo_source: bytes
    pseudo_destination: bytes
    home: bytes | None


def lenient_layout(p: bytes | bytearray) -> Layout | None:
    """Walk the extension headers without judging them; None when there is no MH to find."""
    n = len(p)
    if n < 48:
        return None
    nh, off = p[6], 40
    home = routed = None
    for _ in range(8):
        if nh == NH_MH:
            break
        if nh not in (NH_HOP_BY_HOP, NH_ROUTING, NH_DEST_OPTS) or off + 2 > n:
            return None
        end = off + (p[off + 1] + 1) * 8
        if end > n:
            return None
        if nh == NH_ROUTING and end >= off + 24:
            routed = bytes(p[off + 8 : off + 24])
        elif nh == NH_DEST_OPTS:
            i = off + 2
            while i + 1 < end:
                if p[i] == 0:
                    i += 1
                    continue
                if p[i] == 0xC9 and p[i + 1] == 16 and i + 18 <= end:
                    home = bytes(p[i + 2 : i + 18])
                i += 2 + p[i + 1]
        nh, off = p[off], end
    if nh != NH_MH or off + 8 > n:
        return None
    return Layout(off, home or bytes(p[8:24]), routed or bytes(p[24:40]), home)


def option_spans(p: bytes | bytearray, mh: int) -> list[tuple[int, int]] | None:
    """(start, end) of each mobility option, or None when they do not tile the MH exactly."""
    t = p[mh + 2]
    if t not in OPTIONS_START:
        return None
    i, end, spans = mh + OPTIONS_START[t], len(p), []
    while i < end:
        j = i + 1 if p[i] == 0 else i + 2 + p[i + 1] if i + 1 < end else end + 1
        if j > end:
            return None
        spans.append((i, j))
        i = j
    return spans


def fix_checksum(p: bytearray, layout: Layout | None = None) -> None:
    """Recompute the MH checksum in place, when there is an MH of even length to checksum."""
    layout = layout or lenient_layout(p)
    if layout is not None and (len(p) - layout.mh) % 2 == 0:
        c = wire.mh_checksum(layout.pseudo_source, layout.pseudo_destination, bytes(p[layout.mh :]))
        p[layout.mh + 4 : layout.mh + 6] = c.to_bytes(2, "big")


def fix_payload_length(p: bytearray) -> None:
    """Make the IPv6 Payload Length match the packet again."""
    if len(p) >= 6:
        p[4:6] = min(max(len(p) - 40, 0), 0xFFFF).to_bytes(2, "big")


def fix_header_len(p: bytearray) -> None:
    """Make the MH Header Len match the packet again, when the MH is a multiple of 8 long."""
    layout = lenient_layout(p)
    if layout is not None and (len(p) - layout.mh) % 8 == 0 and len(p) - layout.mh <= 2048:
        p[layout.mh + 1] = (len(p) - layout.mh) // 8 - 1


def resign(p: bytearray, kbm_for: Callable[[bytes, bytes, bool], bytes | None]) -> bool:
    """Recompute a BU's authenticator with ``kbm_for(home, care_of, deregistration)``, then the checksum.

    False when ``p`` is not recognisably a BU ending with BAD (or ``kbm_for`` has no key).
    """
    layout = lenient_layout(p)
    if layout is None or p[layout.mh + 2] != 5 or len(p) - layout.mh < 26 or p[-14] != 5 or p[-13] != 12:
        return False
    mh = layout.mh
    home = layout.home or bytes(p[8:24])
    care_of = bytes(p[8:24])
    for s, e in option_spans(p, mh) or ():
        if p[s] == 3 and e - s == 18:
            care_of = bytes(p[s + 2 : e])
    dereg = p[mh + 10] == p[mh + 11] == 0
    kbm = kbm_for(home, care_of, dereg)
    if kbm is None:
        return False
    p[-12:] = mac96(kbm, home if dereg else care_of, bytes(p[24:40]), bytes(p[mh:]))
    fix_checksum(p, layout)
    return True


def right_key(peers: Sequence[PeerSpec]) -> Callable[[bytes, bytes, bool], bytes | None]:
    """``kbm_for`` signing as the configured peer would (None for an unknown home)."""
    by_home = {peer.home: peer for peer in peers}

    def kbm_for(home: bytes, care_of: bytes, dereg: bool) -> bytes | None:
        peer = by_home.get(home)
        return None if peer is None else peer.kbm(care_of, dereg)

    return kbm_for


# ---------------------------------------------------------------------------------------------
# Mutations

INTERESTING_BYTES = (
    0x00,
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x07,
    0x08,
    0x0C,
    0x10,
    0x3B,
    0x3C,
    0x2B,
    0x87,
    0xC9,
    0x7F,
    0x80,
    0xFF,
)


class Mutator:
    """Deterministic mutations of packets, driven by one ``random.Random``.

    ``peers`` are the configured peers: field mutations re-sign with their keys, so a changed
    sequence number, flag or lifetime reaches the sequence window and the later checks.
    """

    def __init__(self, rng: random.Random, peers: Sequence[PeerSpec] = PEERS) -> None:
        self.rng = rng
        self.d = RandomDraw(rng)
        self.kbm_for = right_key(peers)
        self.peers = tuple(peers)
        weighted = {
            self.bit_flip: 6,
            self.byte_change: 5,
            self.truncate: 2,
            self.insert: 3,
            self.delete: 2,
            self.reorder_options: 2,
            self.repad: 2,
            self.duplicate_option: 1,
            self.field: 6,
            self.wrong_key: 2,
            self.resign_sequence: 5,
            self.headers: 3,
            self.addresses: 2,
            self.replay: 3,
        }
        self.kinds = [k for k, w in weighted.items() for _ in range(w)]

    def __call__(self, packet: bytes) -> tuple[str, bytes]:
        """One mutation of ``packet``: (its kind, the new packet)."""
        kind = self.rng.choice(self.kinds)
        p = bytearray(packet)
        final = kind(p)
        if not final:
            r = self.rng.random()
            if r < 0.5:
                fix_payload_length(p)
            if self.rng.random() < 0.3:
                fix_header_len(p)
            if self.rng.random() < 0.6:
                fix_checksum(p)
        return kind.__name__, bytes(p)

    # Each mutation edits p in place; True means "leave the lengths and checksum as they are".

    def _position(self, p: bytearray) -> int:
        n = len(p)
        if n == 0:
            return 0
        if self.rng.random() < 0.6:
            return self.rng.randrange(max(n - 64, 0), n)
        return self.rng.randrange(n)

    def bit_flip(self, p: bytearray) -> bool:
        if p:
            p[self._position(p)] ^= 1 << self.rng.randrange(8)
        return self.rng.random() < 0.5

    def byte_change(self, p: bytearray) -> bool:
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            if p:
                value = self.rng.choice(INTERESTING_BYTES) if self.rng.random() < 0.6 else self.rng.randrange(256)
                p[self._position(p)] = value
        return False

    def truncate(self, p: bytearray) -> bool:
        cut = (
            self.rng.randrange(len(p)) if self.rng.random() < 0.3 else max(len(p) - self.rng.choice((1, 2, 4, 8, 12, 14, 16)), 0)
        )
        del p[cut:]
        return False

    def insert(self, p: bytearray) -> bool:
        at = self._position(p)
        choice = self.rng.random()
        if choice < 0.3:
            blob = self.rng.randbytes(self.rng.randint(1, 24))
        elif choice < 0.6:
            blob = padding(self.d, self.rng.choice((1, 2, 4, 8, 6)))
        else:
            blob = unknown_mobility_option(self.d)
        p[at:at] = blob
        return False

    def delete(self, p: bytearray) -> bool:
        if p:
            at = self._position(p)
            del p[at : at + self.rng.choice((1, 2, 4, 8, 16))]
        return False

    def _options(self, p: bytearray) -> tuple[int, list[tuple[int, int]]] | None:
        layout = lenient_layout(p)
        if layout is None:
            return None
        spans = option_spans(p, layout.mh)
        return None if spans is None else (layout.mh, spans)

    def reorder_options(self, p: bytearray) -> bool:
        found = self._options(p)
        if found is None or len(found[1]) < 2:
            return self.bit_flip(p)
        _, spans = found
        chunks = [bytes(p[s:e]) for s, e in spans]
        self.rng.shuffle(chunks)
        p[spans[0][0] :] = b"".join(chunks)
        if self.rng.random() < 0.5:
            resign(p, self.kbm_for)
        return False

    def repad(self, p: bytearray) -> bool:
        found = self._options(p)
        if found is None:
            return self.bit_flip(p)
        _, spans = found
        chunks = [bytes(p[s:e]) for s, e in spans]
        pads = [i for i, c in enumerate(chunks) if c[0] in (0, 1)]
        if pads and self.rng.random() < 0.7:
            i = self.rng.choice(pads)
            size = len(chunks[i]) if self.rng.random() < 0.6 else max(len(chunks[i]) + self.rng.choice((-1, 1, 2, 8)), 0)
            chunks[i] = padding(self.d, size)
            if self.rng.random() < 0.2 and len(chunks[i]) > 2:
                chunks[i] = chunks[i][:2] + self.rng.randbytes(len(chunks[i]) - 2)  # PadN with non-zero data
        else:
            at = self.rng.randrange(len(chunks) + 1)
            chunks.insert(at, padding(self.d, self.rng.choice((1, 2, 3, 8))))
        p[spans[0][0] if spans else len(p) :] = b"".join(chunks)
        if self.rng.random() < 0.7:
            fix_header_len(p)
            fix_payload_length(p)
            resign(p, self.kbm_for)
        return False

    def duplicate_option(self, p: bytearray) -> bool:
        found = self._options(p)
        if found is None or not found[1]:
            return self.bit_flip(p)
        s, e = self.rng.choice(found[1])
        at = self.rng.choice(found[1])[0]
        p[at:at] = p[s:e]
        return False

    def field(self, p: bytearray) -> bool:
        """Change one MH field (type, proto, Header Len, reserved, seq, flags, lifetime), maybe re-sign."""
        layout = lenient_layout(p)
        if layout is None:
            return self.byte_change(p)
        mh = layout.mh
        what = self.rng.randrange(7)
        if what == 0:
            p[mh + 2] = self.rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 200))
        elif what == 1:
            p[mh] = self.rng.choice((58, 60, 0, 135, 255))
        elif what == 2:
            p[mh + 1] = max(p[mh + 1] + self.rng.choice((-2, -1, 1)), 0) & 0xFF
        elif what == 3:
            p[mh + 3] = self.rng.randrange(256)
        elif what == 4 and len(p) >= mh + 8:
            p[mh + 6 : mh + 8] = self.rng.randrange(0x10000).to_bytes(2, "big")
        elif what == 5 and len(p) >= mh + 10:
            p[mh + 8] ^= self.rng.choice((0x80, 0x40, 0x20, 0x10, 0x08, 0x01))
        elif len(p) >= mh + 12:
            p[mh + 10 : mh + 12] = self.rng.choice((0, 1, 105, 0xFFFF, self.rng.randrange(0x10000))).to_bytes(2, "big")
        if self.rng.random() < 0.7:
            resign(p, self.kbm_for)
            return True
        return False

    def wrong_key(self, p: bytearray) -> bool:
        """Re-sign with a key that is not the peer's: another peer's, a random one, the wrong derivation."""

        def kbm_for(home: bytes, care_of: bytes, dereg: bool) -> bytes:
            r = self.rng.random()
            if r < 0.4:
                other = self.rng.choice(self.peers)
                return other.kbm(care_of, dereg)
            right = self.kbm_for(home, care_of, dereg)
            if r < 0.7 and right is not None:
                return self.kbm_for(home, care_of, not dereg) or right  # registration key for a de-registration
            return self.rng.randbytes(20)

        if not resign(p, kbm_for):
            return self.bit_flip(p)
        return True

    def resign_sequence(self, p: bytearray) -> bool:
        """A new sequence number (near or far), correctly signed: drives the window and rekeying."""
        layout = lenient_layout(p)
        if layout is None or len(p) < layout.mh + 12:
            return self.bit_flip(p)
        mh = layout.mh
        seq = int.from_bytes(p[mh + 6 : mh + 8], "big")
        step = self.rng.choice((1, 1, 1, 1, 2, 2, 3, 5, 100, 32767, 32768, 32769, 65535, self.rng.randrange(0x10000)))
        p[mh + 6 : mh + 8] = ((seq + step) & 0xFFFF).to_bytes(2, "big")
        if self.rng.random() < 0.2:
            p[mh + 10 : mh + 12] = bytes(2)  # and de-register
        return resign(p, self.kbm_for) or self.rng.random() < 0.5

    def headers(self, p: bytearray) -> bool:
        """Extension-header surgery: add HBH / RH2 / Destination Options, bad options, a second HAO."""
        if len(p) < 40:
            return self.byte_change(p)
        what = self.rng.randrange(6)
        nh = p[6]
        if what == 0:
            h = ip_options_header(self.d, None)
            h[0] = nh
            p[6] = NH_HOP_BY_HOP if self.rng.random() < 0.8 else NH_DEST_OPTS
        elif what == 1:
            h = routing_header_2(self.rng.choice(self.peers).home)
            if self.rng.random() < 0.3:
                h[self.rng.choice((1, 2, 3))] = self.rng.choice((0, 1, 3, 4))
            h[0] = nh
            p[6] = NH_ROUTING
        elif what == 2:
            h = ip_options_header(
                self.d, self.rng.choice(self.peers + STRANGERS).home if self.rng.random() < 0.7 else self.d.choice(ODD_ADDRESSES)
            )
            h[0] = nh
            p[6] = NH_DEST_OPTS
        elif what == 3:
            h = bytearray(2) + unknown_ip_option(self.d, action=self.rng.randrange(1, 4))
            h += padding(self.d, (-len(h)) % 8)
            h[1] = len(h) // 8 - 1
            h[0] = nh
            p[6] = self.rng.choice((NH_HOP_BY_HOP, NH_DEST_OPTS))
        elif what == 4:
            h = bytearray()
            p[6] = self.rng.choice((6, 17, 44, 50, 51, 59, 58, 135, 43, 60, 0))
        else:
            # swap the source and the Home Address: the packet now claims the other way round
            layout = lenient_layout(p)
            if layout is None or layout.home is None:
                return self.byte_change(p)
            i = bytes(p).find(b"\xc9\x10" + layout.home, 40)
            source = bytes(p[8:24])
            p[8:24] = layout.home
            p[i + 2 : i + 18] = source
            h = bytearray()
        p[40:40] = h
        fix_payload_length(p)
        if self.rng.random() < 0.8:
            fix_checksum(p)
        return True

    def addresses(self, p: bytearray) -> bool:
        """Replace the source, destination or Home Address with another (often non-routable) one."""
        if len(p) < 40:
            return self.byte_change(p)
        new = self.d.choice(ODD_ADDRESSES) if self.rng.random() < 0.6 else self.rng.choice(CARE_OFS + CORRESPONDENTS)
        layout = lenient_layout(p)
        where = self.rng.randrange(3)
        if where == 2 and layout is not None and layout.home is not None:
            i = bytes(p).find(b"\xc9\x10" + layout.home, 40)
            p[i + 2 : i + 18] = new
        else:
            p[8 + 16 * (where & 1) : 24 + 16 * (where & 1)] = new
        if self.rng.random() < 0.6 and resign(p, self.kbm_for):
            return True
        return False

    def replay(self, p: bytearray) -> bool:
        return True


def mutations(packet: bytes, seed: int, count: int = 16, peers: Sequence[PeerSpec] = PEERS) -> list[tuple[str, bytes]]:
    """``count`` mutations of ``packet``, the same ones for the same seed."""
    mutate = Mutator(random.Random(seed), peers)
    return [mutate(packet) for _ in range(count)]


# ---------------------------------------------------------------------------------------------
# Return routability: HoTI/CoTI, HoT/CoT and RR Binding Updates, with time moving


class FakeClock:
    """A clock the tests move (both backends share one ReturnRoutability that reads it)."""

    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


#: Home addresses with no configured key (RR peers) and one configured peer's home.
RR_HOMES = (*(a16(f"2001:db8:500::{i + 1:x}") for i in range(6)), PEERS[0].home)


def rr_init(mh_type: int, cookie: bytes, source: bytes, destination: bytes) -> bytes:
    """A HoTI (1) or CoTI (2) with a correct checksum."""
    from kbmfast.reference.rr import build_init

    return build_init(mh_type, cookie, source, destination)


class RRSession:
    """A stream of RR traffic: init messages (whose replies the caller feeds back through
    ``learn``) and Binding Updates signed with tokens learnt earlier, fresh or stale, right or
    wrong, registrations and de-registrations, mutated by ``Mutator`` now and then."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mutate = Mutator(random.Random(rng.getrandbits(32)))
        self.home_tokens: list[tuple[bytes, int, bytes]] = []  # (home, index, token)
        self.care_of_tokens: list[tuple[bytes, int, bytes]] = []  # (care-of, index, token)
        self.seq: dict[bytes, int] = {}

    def step(self) -> float:
        """Seconds to move the clock by before the next packet."""
        return self.rng.choice((0.0, 0.0, 0.0, 0.5, 3.0, 29.0, 30.0, 61.0, 120.0, 239.0))

    def packet(self) -> tuple[str, bytes]:
        """(kind, packet): "init", "bu" or "mutated"."""
        rng = self.rng
        cn = CORRESPONDENTS[0]
        r = rng.random()
        if r < 0.3 or not self.home_tokens or not self.care_of_tokens:
            if rng.random() < 0.5:
                packet = rr_init(1, rng.randbytes(8), rng.choice(RR_HOMES), cn)
            else:
                packet = rr_init(2, rng.randbytes(8), rng.choice(CARE_OFS[:3] + RR_HOMES[:1]), cn)
            if rng.random() < 0.2:  # malformed, odd or merely padded init messages
                return "mutated", self.mutate(packet)[1]
            return "init", packet
        home, hidx, htok = rng.choice(self.home_tokens[-12:])
        care_of, cidx, ctok = rng.choice(self.care_of_tokens[-12:])
        dereg = rng.random() < 0.15
        if rng.random() < 0.1:
            ctok = rng.randbytes(8)
        kbm = hashlib.sha1(htok + (b"" if dereg else ctok)).digest()
        last = self.seq.get(home, rng.randrange(65536))
        seq = (last + rng.choice((1, 1, 1, 2, 0, -1, 40000))) & 0xFFFF
        self.seq[home] = seq
        bu = ref.build_binding_update(
            kbm,
            home=home,
            care_of=home if (dereg and rng.random() < 0.5) or rng.random() < 0.05 else care_of,
            correspondent=cn,
            sequence=seq,
            lifetime=0 if dereg else rng.choice((4, 420, 1000)),
            nonce_indices=None if rng.random() < 0.03 else (hidx, cidx if rng.random() < 0.9 else rng.randrange(65536)),
        )
        if rng.random() < 0.25:
            return "mutated", self.mutate(bu)[1]
        return "bu", bu

    def learn(self, reply: bytes | None) -> None:
        """Keep the token of a Home or Care-of Test."""
        if reply is None:
            return
        mh = reply[40:]
        pool = self.home_tokens if mh[2] == 3 else self.care_of_tokens
        pool.append((reply[24:40], mh[6] << 8 | mh[7], mh[16:24]))
