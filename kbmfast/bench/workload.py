"""The benchmark's configuration and workloads: minimal Binding Updates of N draft-Kbm peers
over several rounds, packed and split into batches, and generated traffic (kbmfast.gen)."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import kbmfast

from .._keys import KIND_KCN
from .._native_edge import ffi, lib
from .._types import AlternateCareOfAddress, Verdict

HOME_PREFIX = ipaddress.IPv6Address("2001:db8:1::")
CARE_OF_PREFIX = ipaddress.IPv6Address("2001:db8:2::")
CORRESPONDENT = ipaddress.IPv6Address("2001:db8:3::1")
LIFETIME = 420
MAX_ROUNDS = 32768  # a key's sequence space (the default rekey_limit): all rounds stay acceptable
SWEEP_PACKETS = 100_000  # packets per point of the peers sweep (at least one round)


class BenchError(RuntimeError):
    """A measured path gave a wrong answer (a verdict not the expected one): its figure would be a lie."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how often. ``BenchConfig.quick()`` finishes in a few seconds.

    ``big_peers`` (0: skip) is the peer count of the large-table measure, run in a fresh
    interpreter together with the setup time and memory per peer. ``threads`` and
    ``processes`` (below 2: skip) compare that many against one. ``mixed_packets`` (0: skip)
    is the size of each generated traffic sample. ``peer_sweep`` and ``batch_sweep`` (empty:
    skip) are the points of the throughput plots.
    """

    peers: int = 10_000
    rounds: int = 10
    batches: tuple[int, ...] = (4096,)
    repeat: int = 5
    reference_packets: int = 20_000
    latency_calls: int = 20_000
    reference_latency_calls: int = 2_000
    ceiling_blocks: int = 5_000_000
    seed: int = 0
    big_peers: int = 1_000_000
    big_rounds: int = 3
    threads: int = 2
    processes: int = 2
    mixed_packets: int = 100_000
    peer_sweep: tuple[int, ...] = ()
    batch_sweep: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("peers", "repeat", "reference_packets", "latency_calls", "reference_latency_calls", "ceiling_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        for name in ("big_peers", "threads", "processes", "mixed_packets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be at least 0")
        if not 1 <= self.rounds <= MAX_ROUNDS or not 1 <= self.big_rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds: must be in 1..{MAX_ROUNDS} (one key's sequence space)")
        for name in ("batches", "batch_sweep", "peer_sweep"):
            sizes = getattr(self, name)
            if (name == "batches" and not sizes) or (sizes and min(sizes) < 1):
                raise ValueError(f"{name}: one or more sizes of at least 1")
        if max(self.peers, self.big_peers, *self.peer_sweep) >= 1 << 48:
            raise ValueError("peers: fewer than 2**48, please")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A smaller run (thousands of peers, fewer repetitions, no 1 M peers) for a first look or CI."""
        base = cls(
            peers=5_000,
            rounds=4,
            repeat=3,
            reference_packets=2_000,
            latency_calls=5_000,
            reference_latency_calls=500,
            ceiling_blocks=1_000_000,
            big_peers=0,
            mixed_packets=20_000,
        )
        return dataclasses.replace(base, **overrides)

    def with_plot_sweeps(self) -> BenchConfig:
        """This configuration plus the sweeps the plot draws (peers up to ``big_peers``)."""
        top = self.big_peers or self.peers
        peers = tuple(sorted({n for n in (100, 1_000, 10_000, 100_000) if n < top} | {self.peers}))
        return dataclasses.replace(self, peer_sweep=peers, batch_sweep=(1, 4, 16, 64, 256, 1024, 4096, 16384))


# ---------------------------------------------------------------------------------------------
# The workload


@dataclass(frozen=True)
class Workload:
    """Minimal Binding Updates from ``peers`` peers, ``rounds`` rounds in order, each round
    every peer once in a random order (packet ``j`` comes from peer ``peer_of[j]``).

    ``buffer``/``offsets`` is the zero-copy form of ``packets``; ``packet_kbms`` is the 20-byte
    key of each packet, back to back (the one-shot HMAC yardstick's input); ``kbms[i]`` is peer
    ``i``'s key.
    """

    keys: kbmfast.KeyTable
    packets: list[bytes]
    buffer: bytes
    offsets: array[int]
    packet_kbms: bytes
    peers: int = 0
    peer_of: array[int] = field(default_factory=lambda: array("L"))
    kbms: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.packets)


class MinimalBuilder:
    """Minimal Binding Updates (96 bytes: Home Address option, 32-byte Mobility Header with the
    Binding Authorization Data option), byte for byte what ``kbmfast.build_binding_update``
    makes, several times faster: a template, the C core's MAC and checksum, no argument checks.
    ``make_workload`` compares its output with the builder's.
    """

    def __init__(self, correspondent: bytes) -> None:
        self.cn = correspondent
        self.head = b"\x60\x00\x00\x00\x00\x38\x3c\x40"  # Payload Length 56, Destination Options, hop limit 64
        self.ext = b"\x87\x02\x01\x02\x00\x00\xc9\x10"  # Mobility Header next, PadN(2), Home Address option
        self.out = ffi.new("uint8_t[12]")

    def __call__(self, kbm: bytes, home: bytes, care_of: bytes, sequence: int, lifetime_units: int) -> bytes:
        """The packet from ``care_of`` for ``home`` (packed addresses), signed with ``kbm``."""
        mh = bytearray(b"\x3b\x03\x05\x00\x00\x00\x00\x00\x80\x00\x00\x00\x01\x04\x00\x00\x00\x00\x05\x0c" + bytes(12))
        mh[6:8] = sequence.to_bytes(2, "big")
        mh[10:12] = lifetime_units.to_bytes(2, "big")
        mac_care_of = home if lifetime_units == 0 else care_of
        if lib.kbm_authenticator(kbm, mac_care_of, self.cn, bytes(mh), 32, self.out):
            raise BenchError("kbm_authenticator refused a minimal Binding Update")
        mh[20:32] = ffi.buffer(self.out)
        mh[4:6] = lib.kbm_mh_checksum(home, self.cn, bytes(mh), 32).to_bytes(2, "big")
        return self.head + care_of + self.cn + self.ext + home + mh


def peer_addresses(i: int) -> tuple[bytes, bytes]:
    """Peer ``i``'s home (2001:db8:1::i+1) and care-of (2001:db8:2::i+1) addresses, packed."""
    return (HOME_PREFIX + i + 1).packed, (CARE_OF_PREFIX + i + 1).packed


def make_peers(peers: int, seed: int = 0) -> tuple[list[bytes], list[bytes], list[int]]:
    """Each peer's packed home address, a distinct random Kbm and a random first sequence number."""
    rng = random.Random(seed)
    kbms, firsts = [], []
    for _ in range(peers):
        kbms.append(rng.randbytes(kbmfast.KBM_SIZE))
        firsts.append(rng.randrange(65536))
    homes = [peer_addresses(i)[0] for i in range(peers)]
    return homes, kbms, firsts


def key_table(homes: Sequence[bytes], kbms: Sequence[bytes]) -> kbmfast.KeyTable:
    """A KeyTable configuring each home address with its Kbm (refuses a repeated key)."""
    keys = kbmfast.KeyTable()
    add = keys.add_kbm
    for home, kbm in zip(homes, kbms, strict=True):
        add(home, kbm)
    return keys


def round_order(peers: int, r: int, seed: int = 0) -> list[int]:
    """The order in which the peers send in round ``r``: a random permutation, as if each peer
    refreshed its binding at its own moment (the same for the same arguments)."""
    order = list(range(peers))
    random.Random(f"{seed}:{r}").shuffle(order)
    return order


def build_rounds(
    kbms: Sequence[bytes], firsts: Sequence[int], rounds: range, *, seed: int = 0, lifetime: int = LIFETIME
) -> tuple[list[bytes], bytes, array[int]]:
    """The packets of ``rounds`` (round ``r`` carries first + r, its peers in ``round_order``),
    their keys back to back, and the peer of each."""
    build = MinimalBuilder(CORRESPONDENT.packed)
    units = lifetime // 4
    addresses = [peer_addresses(i) for i in range(len(kbms))]
    peer_of = array("L")
    for r in rounds:
        peer_of.extend(round_order(len(kbms), r, seed))
    packets = []
    for j, i in enumerate(peer_of):
        home, care_of = addresses[i]
        packets.append(build(kbms[i], home, care_of, (firsts[i] + rounds[j // len(kbms)]) % 65536, units))
    return packets, b"".join(kbms[i] for i in peer_of), peer_of


def check_builder(kbm: bytes, i: int, sequence: int, lifetime: int = LIFETIME) -> None:
    """Raise BenchError unless MinimalBuilder makes exactly kbmfast.build_binding_update's packet."""
    home, care_of = peer_addresses(i)
    ours = MinimalBuilder(CORRESPONDENT.packed)(kbm, home, care_of, sequence, lifetime // 4)
    theirs = kbmfast.build_binding_update(
        kbm, home=home, care_of=care_of, correspondent=CORRESPONDENT, sequence=sequence, lifetime=lifetime
    )
    if ours != theirs:
        raise BenchError("the benchmark's packet template no longer matches kbmfast.build_binding_update")


def pack(packets: Sequence[bytes]) -> tuple[bytes, array[int]]:
    """The zero-copy form: the packets back to back, and n + 1 offsets."""
    return b"".join(packets), array("Q", accumulate(map(len, packets), initial=0))


def make_workload(peers: int, rounds: int, seed: int = 0) -> Workload:
    """Build the keys and packets: peer ``i`` has home 2001:db8:1::i+1 and care-of 2001:db8:2::i+1.

    Each peer gets a distinct random Kbm and a random first sequence number; round ``r`` carries
    first + r (mod 65536), so a fresh verifier accepts every packet when they come in order.
    """
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds: must be in 1..{MAX_ROUNDS}")
    homes, kbms, firsts = make_peers(peers, seed)
    keys = key_table(homes, kbms)
    packets, packet_kbms, peer_of = build_rounds(kbms, firsts, range(rounds), seed=seed)
    check_builder(kbms[0], 0, firsts[0])
    check_builder(kbms[-1], peers - 1, (firsts[-1] + rounds - 1) % 65536, lifetime=0)
    buffer, offsets = pack(packets)
    return Workload(keys, packets, buffer, offsets, packet_kbms, peers, peer_of, kbms)


def split_buffer(buffer: bytes, offsets: array[int], batch: int) -> list[tuple[memoryview, array[int]]]:
    """Cut the zero-copy form into batches: a memoryview slice of ``buffer`` and rebased offsets."""
    view = memoryview(buffer)
    n = len(offsets) - 1
    out = []
    for i in range(0, n, batch):
        j = min(i + batch, n)
        start = offsets[i]
        out.append((view[start : offsets[j]], array("Q", [o - start for o in offsets[i : j + 1]])))
    return out


def split_list(packets: Sequence[bytes], batch: int) -> list[list[bytes]]:
    """Cut a packet list into lists of at most ``batch`` packets."""
    return [list(packets[i : i + batch]) for i in range(0, len(packets), batch)]


def split_peers(w: Workload, parts: int) -> list[list[bytes]]:
    """The packets of peers ``k, k + parts, ...`` for each part ``k``, in order: disjoint peers,
    so that parts verified concurrently accept every packet."""
    return [[p for p, i in zip(w.packets, w.peer_of, strict=True) if i % parts == k] for k in range(parts)]


@dataclass(frozen=True)
class Traffic:
    """Generated traffic (kbmfast.gen) in zero-copy form, with the verdict each packet must get."""

    kind: str
    keys: kbmfast.KeyTable
    packets: list[bytes]
    buffer: bytes
    offsets: array[int]
    verdicts: bytes
    shares: dict[str, float] = field(default_factory=dict)
    compressions: int = 0  # SHA-1 compressions the traffic needs in all (mix_compressions)


def make_traffic(kind: str, peers: int, packets: int, seed: int = 0) -> Traffic:
    """``kind`` "shapes": legitimate Binding Updates of every shape kbmfast.gen makes (Alternate
    Care-of Address, de-registrations, Nonce Indices, RFC 4449 peers); "rejects": the same
    with kbmfast.gen's default hostile mix (replays, forgeries, unknown peers, malformed)."""
    from .. import gen

    mix = {name: 0.0 for name in gen.DEFAULT_MIX} if kind == "shapes" else dict(gen.DEFAULT_MIX)
    t = gen.generate(peers, packets, seed=seed, mix=mix)
    ps = t.packets()
    buffer, offsets = pack(ps)
    tags = {
        "plain": lambda k: k == "update",
        "alternate-care-of": lambda k: "alternate-care-of" in k,
        "deregistration": lambda k: k.startswith("deregistration"),
        "nonce-indices": lambda k: "nonce-indices" in k,
        "replay": lambda k: k == "replay",
        "forged": lambda k: k == "forged",
        "unknown-peer": lambda k: k == "unknown",
        "malformed": lambda k: k.startswith("malformed"),
    }
    kinds = {tag: sum(map(test, (e.kind for e in t.truth))) / len(t.truth) for tag, test in tags.items()}
    verdicts = bytes(e.verdict for e in t.truth)
    return Traffic(kind, t.keys, ps, buffer, offsets, verdicts, kinds, mix_compressions(t.keys, ps, verdicts))


#: Verdicts given before any MAC is computed (the packet is dropped first: no SHA-1 work).
_NO_MAC = frozenset(
    (Verdict.MALFORMED, Verdict.BAD_CHECKSUM, Verdict.NOT_BINDING_UPDATE, Verdict.NOT_CONFIGURED, Verdict.MISSING_AUTHORIZATION)
)


def _hmac_blocks(message: int) -> int:
    """Compressions of an HMAC-SHA1 of a ``message``-byte message with the key's midstates
    precomputed: its padded blocks after the 64-byte ipad block, then the outer block."""
    return (message + 8) // 64 + 1 + 1


@dataclass(frozen=True)
class MacWork:
    """The SHA-1 work one authenticated packet asks for: its Mobility Header's length (the MAC
    input is care-of | correspondent | that header without its 12 authenticator bytes) and,
    when an RFC 4449 key must be derived first, the peer's care-of nonce length (else None)."""

    mh_len: int
    derive_nonce: int | None


def mac_work(keys: kbmfast.KeyTable, packets: Sequence[bytes], verdicts: bytes, chunk: int = 1) -> list[MacWork | None]:
    """Per packet, what it asks of the SHA-1 kernels when verified in order (None: dropped before
    authentication, no SHA-1). A registration from an RFC 4449 peer whose Kbm for that care-of
    address is not cached needs a derivation; the verifier caches one Kbm per peer once a
    Binding Update under it authenticated, published after each ``chunk`` packets (1: at once,
    the least work; verify.c's CHUNK: what the pipeline does)."""
    cached: dict[bytes, bytes] = {}
    published: dict[bytes, bytes] = {}
    out: list[MacWork | None] = []
    for i, (packet, verdict) in enumerate(zip(packets, verdicts, strict=True)):
        if i % chunk == 0:
            cached.update(published)
            published.clear()
        if verdict in _NO_MAC or verdict > Verdict.KEY_EXHAUSTED:
            out.append(None)
            continue
        p = kbmfast.parse_packet(packet)
        bu = p.message
        home = (p.home_address or p.source).packed
        peer = keys.peer(home)
        nonce = None
        if peer is not None and peer.kind == KIND_KCN and getattr(bu, "lifetime", 0) != 0:
            alt = next((o.address for o in getattr(bu, "options", ()) if isinstance(o, AlternateCareOfAddress)), None)
            care_of = (alt or p.source).packed
            if cached.get(home) != care_of:  # a packet sees what the chunks before it published
                nonce = len(peer.care_of_nonce)
                if verdict != Verdict.BAD_AUTHENTICATOR:
                    published[home] = care_of
        out.append(MacWork(len(packet) - p.mh_offset, nonce))
    return out


def mix_compressions(keys: kbmfast.KeyTable, packets: Sequence[bytes], verdicts: bytes) -> int:
    """SHA-1 compressions ``packets`` need when verified in order, counted the way the least
    work does it (mac_work, chunk 1), so that (best kernel's compressions/s) / (this / packets)
    is the ceiling for that mix: an authenticated packet needs its MAC (the inner blocks after
    the ipad block, and the outer block); a derivation needs the care-of keygen token (an HMAC
    of care-of | nonce | 1), SHA1(home token | care-of token) and the new key's two midstates."""
    total = 0
    for w in mac_work(keys, packets, verdicts):
        if w is not None:
            total += _hmac_blocks(32 + w.mh_len - 12)
            if w.derive_nonce is not None:
                total += _hmac_blocks(17 + w.derive_nonce) + 1 + 2
    return total
