"""Realistic Binding Update traffic for tests, demos and benchmarks (``kbmfast gen``).

What a correspondent node would capture on its link: Ethernet frames from the router, Binding
Updates from many preconfigured peers interleaved, each peer's sequence numbers increasing from a
random start, some peers moving (a new care-of address), some using an Alternate Care-of Address,
some de-registering (from abroad or at home), some sending Nonce Indices; both key kinds (a
configured Kbm, draft-ietf-mip6-precfgKbm; a Kcn and nonces, RFC 4449). Among them, the hostile
mix: replays of earlier Binding Updates, forgeries (wrong key), Binding Updates from unconfigured
home addresses, and malformed packets.

Everything comes from one ``random.Random(seed)``: the same arguments give the same bytes. The
keys are therefore predictable: they are for test traffic only.

Each packet's expected verdict is known by construction, and :func:`generate` checks it against a
real verifier (``kbmfast.reference``, the oracle, up to ``ORACLE_LIMIT`` packets; the C core above)
before handing it out, so a truth file is never a guess.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kbmfast
import kbmfast.reference

from . import _shard
from ._types import Verdict
from .reference.wire import mh_checksum

#: Hostile shares of all packets, by default.
DEFAULT_MIX: dict[str, float] = {"replay": 0.05, "forged": 0.02, "unknown": 0.02, "malformed": 0.01}
#: Packets up to which the truth is cross-checked with kbmfast.reference (the C core above it).
ORACLE_LIMIT = 50_000
#: Most legitimate Binding Updates per peer (each key's sequence space, see spec-notes.md).
MAX_UPDATES_PER_PEER = 16_000

CORRESPONDENT = ipaddress.IPv6Address("2001:db8:3::1")
UNKNOWN_PREFIX = ipaddress.IPv6Address("2001:db8:99::")
CARE_OF_PREFIX = ipaddress.IPv6Address("2001:db8:2000::")
CN_MAC = bytes.fromhex("020000000001")
ROUTER_MAC = bytes.fromhex("0200000000fe")
START_TIME_US = 1_717_200_000 * 1_000_000  # 2024-06-01 00:00:00 UTC
LIFETIMES = (60, 120, 300, 420, 420, 600, 1800, 3600)

# Shares among legitimate Binding Updates.
SHARE_ALT_COA = 0.10
SHARE_DEREG = 0.05
SHARE_DEREG_AT_HOME = 0.5  # of de-registrations
SHARE_NONCE_INDICES = 0.03
SHARE_NO_ACK = 0.10
SHARE_MOVE = 0.05
SHARE_KCN_PEERS = 0.25


_UNSPECIFIED = ipaddress.IPv6Address("::")


@dataclass
class _Peer:
    home: ipaddress.IPv6Address
    kind: str  # "kbm" or "kcn"
    key: bytes
    home_nonce: bytes = b""
    care_of_nonce: bytes = b""
    care_of: ipaddress.IPv6Address = _UNSPECIFIED
    alternate: ipaddress.IPv6Address = _UNSPECIFIED  # the care-of address of another interface
    sequence: int = 0
    sent: list[bytes] = field(default_factory=list)  # accepted Binding Updates, for replays

    def kbm(self, care_of: ipaddress.IPv6Address, deregistration: bool) -> bytes:
        if self.kind == "kbm":
            return self.key
        return kbmfast.derive_kbm(
            self.key, self.home_nonce, self.care_of_nonce, home=self.home, care_of=care_of, deregistration=deregistration
        )


@dataclass(frozen=True)
class TruthEntry:
    """The expected outcome of one frame: its kind, verdict and Binding Acknowledgement status."""

    frame: int
    kind: str
    verdict: Verdict
    ba_status: int | None


@dataclass
class Traffic:
    """Generated traffic: the key table, Ethernet frames with µs timestamps, and the truth."""

    keys: kbmfast.KeyTable
    frames: list[tuple[bytes, int]]
    truth: list[TruthEntry]

    def packets(self) -> list[bytes]:
        """The IPv6 packets (the frames without their Ethernet header)."""
        return [f[14:] for f, _ in self.frames]


def shard_chunks(
    chunks: Iterator[list[tuple[bytes, int, TruthEntry]]], shard: _shard.Shard
) -> Iterator[list[tuple[bytes, int, TruthEntry]]]:
    """Only the frames of ``shard`` (``kbmfast gen --shard``) of :func:`stream`'s chunks, in order;
    the truth entries keep their frame numbers in the whole capture (and the key table stays
    whole), so the n shards' truth files together are the unsharded one."""
    for chunk in chunks:
        kept = [entry for entry in chunk if _shard.frame_shard(entry[0], 14, shard.count) == shard.index]
        if kept:
            yield kept


def parse_mix(text: str) -> dict[str, float]:
    """``replay=0.05,forged=0.02`` to a mix; names not given keep their default share."""
    mix = dict(DEFAULT_MIX)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_MIX:
            raise ValueError(f"mix: expected NAME=SHARE with NAME one of {', '.join(DEFAULT_MIX)}, not {item!r}")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"mix: {name}: not a number: {value!r}") from None
        mix[name] = share
    check_mix(mix)
    return mix


def check_mix(mix: Mapping[str, float]) -> None:
    """Every share in [0, 1), and all of them together below 1."""
    for name, share in mix.items():
        if name not in DEFAULT_MIX:
            raise ValueError(f"mix: unknown kind {name!r}")
        if not 0 <= share < 1:
            raise ValueError(f"mix: {name}={share} is outside [0, 1)")
    if sum(mix.values()) >= 1:
        raise ValueError("mix: the hostile shares add up to 1 or more; nothing legitimate would be left")


def _address(prefix: ipaddress.IPv6Address, value: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(prefix) + value)


def _checksum(packet: bytearray, mh: int, home: bytes) -> None:
    """Recompute the Mobility Header checksum in place (pseudo-source: the home address)."""
    body = bytearray(packet[mh:])
    body[4:6] = b"\0\0"
    packet[mh + 4 : mh + 6] = struct.pack("!H", mh_checksum(home, bytes(packet[24:40]), bytes(body)))


def _malform(packet: bytes, rng: random.Random) -> tuple[bytes, str, Verdict]:
    """One of four ways a Binding Update goes wrong, and the verdict it earns."""
    p = bytearray(packet)
    layout = kbmfast.parse_packet(packet)
    mh = layout.mh_offset
    home = (layout.home_address or layout.source).packed
    how = rng.randrange(4)
    if how == 0:  # a flipped checksum bit
        p[mh + 4] ^= 1 << rng.randrange(8)
        return bytes(p), "malformed-checksum", Verdict.BAD_CHECKSUM
    if how == 1:  # cut short on the wire: the frame holds less than the Payload Length says
        return bytes(p[: -rng.randrange(1, 13)]), "malformed-truncated", Verdict.MALFORMED
    if how == 2:  # Payload Proto other than 59 (IPPROTO_NONE)
        p[mh] = 6
    else:  # Scapy's default: a Binding Authorization Data option of length 16
        p[-13] = 16
    _checksum(p, mh, home)
    return bytes(p), "malformed-proto" if how == 2 else "malformed-bad-length", Verdict.MALFORMED


def _ethernet(packet: bytes) -> bytes:
    return CN_MAC + ROUTER_MAC + b"\x86\xdd" + packet


def generate(peers: int, updates: int, *, seed: int = 0, mix: Mapping[str, float] | None = None) -> Traffic:
    """``updates`` Binding Update packets from ``peers`` preconfigured peers plus the hostile mix.

    ``mix`` gives the share of all packets that are replays, forgeries, Binding Updates from
    unconfigured home addresses and malformed packets (default :data:`DEFAULT_MIX`).
    Everything in memory; :func:`stream` gives the same frames a chunk at a time.
    """
    keys, chunks = stream(peers, updates, seed=seed, mix=mix)
    frames: list[tuple[bytes, int]] = []
    truth: list[TruthEntry] = []
    for chunk in chunks:
        for frame, us, entry in chunk:
            frames.append((frame, us))
            truth.append(entry)
    return Traffic(keys, frames, truth)


#: Frames generated and cross-checked at a time by :func:`stream`.
CHUNK = 8192


def stream(
    peers: int, updates: int, *, seed: int = 0, mix: Mapping[str, float] | None = None, chunk: int = CHUNK
) -> tuple[kbmfast.KeyTable, Iterator[list[tuple[bytes, int, TruthEntry]]]]:
    """The key table now, and the frames of :func:`generate` (same arguments, same bytes) in
    lists of ``chunk`` (frame, µs time, truth) triples, each list checked against the verifier
    (one verifier for the whole run) before it is handed out: memory stays bounded whatever
    ``updates`` is. Argument errors raise ValueError here, before any frame."""
    if peers < 1 or updates < 1:
        raise ValueError("peers and updates: must be at least 1")
    shares = dict(DEFAULT_MIX if mix is None else mix)
    check_mix(shares)
    if updates * (1 - sum(shares.values())) / peers > MAX_UPDATES_PER_PEER:
        raise ValueError(
            f"updates: more than {MAX_UPDATES_PER_PEER} legitimate Binding Updates per peer would use up a key's "
            "sequence space; add peers"
        )
    rng = random.Random(seed)
    keys = kbmfast.KeyTable()
    crowd: list[_Peer] = []
    for i in range(peers):
        home = _address(ipaddress.IPv6Address("2001:db8:1::"), i + 1)
        if rng.random() < SHARE_KCN_PEERS:
            peer = _Peer(home, "kcn", rng.randbytes(rng.choice((20, 20, 32))), rng.randbytes(8), rng.randbytes(8))
            keys.add_kcn(home, peer.key, peer.home_nonce, peer.care_of_nonce)
        else:
            peer = _Peer(home, "kbm", rng.randbytes(20))
            keys.add_kbm(home, peer.key)
        peer.care_of = _address(CARE_OF_PREFIX, rng.getrandbits(64) << 16 | rng.getrandbits(16) | 1)
        peer.alternate = _address(CARE_OF_PREFIX, rng.getrandbits(64) << 16 | rng.getrandbits(16) | 1)
        peer.sequence = rng.getrandbits(16)
        crowd.append(peer)
    return keys, _checked(keys, _frames(rng, crowd, updates, shares), updates, chunk)


def _checked(
    keys: kbmfast.KeyTable, frames: Iterator[tuple[bytes, int, str, Verdict]], updates: int, chunk: int
) -> Iterator[list[tuple[bytes, int, TruthEntry]]]:
    """Lists of ``chunk`` frames, each verified (in order, by one fresh verifier:
    ``kbmfast.reference``, the oracle, up to ORACLE_LIMIT packets in all, else the C core); the
    verdicts must be the intended ones."""
    backend: Any = kbmfast.reference if updates <= ORACLE_LIMIT else kbmfast
    number = 0
    with backend.Verifier(keys) as verifier:
        while True:
            part = list(itertools.islice(frames, chunk))
            if not part:
                return
            results = verifier.verify_batch([f[14:] for f, *_ in part], results=True)
            out = []
            for (frame, us, kind, verdict), result in zip(part, results, strict=True):
                number += 1
                if result.verdict != verdict:
                    raise RuntimeError(
                        f"gen: frame {number} ({kind}) was meant to be {verdict.name}, the verifier says {result.verdict.name}"
                    )
                out.append((frame, us, TruthEntry(number, kind, result.verdict, result.ba_status)))
            yield out


def _frames(
    rng: random.Random, crowd: list[_Peer], updates: int, shares: dict[str, float]
) -> Iterator[tuple[bytes, int, str, Verdict]]:
    """(Ethernet frame, µs time, kind, intended verdict) of each packet, in capture order."""
    now = START_TIME_US
    kinds = list(shares)
    weights = [shares[k] for k in kinds] + [1 - sum(shares.values())]
    for _ in range(updates):
        now += 1 + int(rng.expovariate(1 / 200))
        kind = rng.choices([*kinds, "update"], weights)[0]
        sent = [p for p in crowd if p.sent] if kind == "replay" else crowd
        if kind == "replay" and not sent:
            kind = "update"
        if kind == "replay":
            victim = rng.choice(sent)
            packet = rng.choice(victim.sent[-8:])
            yield _ethernet(packet), now, "replay", Verdict.SEQUENCE_OUT_OF_WINDOW
            continue
        peer = rng.choice(crowd)
        if kind == "unknown":
            home = _address(UNKNOWN_PREFIX, rng.getrandbits(32) + 1)
            care_of = _address(CARE_OF_PREFIX, rng.getrandbits(80) | 1)
            packet = kbmfast.build_binding_update(
                rng.randbytes(20),
                home=home,
                care_of=care_of,
                correspondent=CORRESPONDENT,
                sequence=rng.getrandbits(16),
                lifetime=rng.choice(LIFETIMES),
            )
            yield _ethernet(packet), now, "unknown", Verdict.NOT_CONFIGURED
            continue
        packet, what = _update(peer, rng, forged=kind == "forged")
        if kind == "forged":
            yield _ethernet(packet), now, "forged", Verdict.BAD_AUTHENTICATOR
            continue
        if kind == "malformed":
            bad, what, verdict = _malform(packet, rng)
            yield _ethernet(bad), now, what, verdict
            continue
        peer.sequence = (peer.sequence + rng.choice((1, 1, 1, 2))) & 0xFFFF
        peer.sent.append(packet)
        del peer.sent[:-16]
        yield _ethernet(packet), now, what, Verdict.ACCEPTED


def _update(peer: _Peer, rng: random.Random, *, forged: bool) -> tuple[bytes, str]:
    """The peer's next Binding Update (or, forged, one under a wrong key), and its kind."""
    if not forged and rng.random() < SHARE_MOVE:
        peer.care_of = _address(CARE_OF_PREFIX, rng.getrandbits(64) << 16 | rng.getrandbits(16) | 1)
        if rng.random() < SHARE_MOVE:
            peer.alternate = _address(CARE_OF_PREFIX, rng.getrandbits(64) << 16 | rng.getrandbits(16) | 1)
    kwargs: dict[str, Any] = {"home": peer.home, "correspondent": CORRESPONDENT, "sequence": peer.sequence}
    kwargs["ack"] = rng.random() >= SHARE_NO_ACK
    what = "update"
    care_of = peer.care_of
    if rng.random() < SHARE_DEREG:
        kwargs["lifetime"] = 0
        what = "deregistration"
        if rng.random() < SHARE_DEREG_AT_HOME:
            care_of = peer.home
            what = "deregistration-at-home"
        mac_care_of = peer.home
    else:
        kwargs["lifetime"] = rng.choice(LIFETIMES)
        mac_care_of = care_of
        if rng.random() < SHARE_ALT_COA:
            alt = peer.alternate
            kwargs["alternate_care_of"] = alt
            mac_care_of = alt
            what = "update-alternate-care-of"
    if rng.random() < SHARE_NONCE_INDICES:
        kwargs["nonce_indices"] = (rng.getrandbits(16), rng.getrandbits(16))
        what += "+nonce-indices"
    kbm = rng.randbytes(20) if forged else peer.kbm(mac_care_of, kwargs["lifetime"] == 0)
    return kbmfast.build_binding_update(kbm, care_of=care_of, **kwargs), what
