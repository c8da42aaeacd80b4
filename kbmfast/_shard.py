"""``--shard i/n``: split a capture's work by peer, so n runs together equal one serial run.

A mobility packet belongs to shard ``H(home) mod n``, where ``home`` is the address the verifier
keys the peer by (the Home Address option's address, else the IPv6 source) and ``H`` is the
first 8 bytes, big-endian, of SHA-256 over the 16-byte address: stable across runs, machines and
versions. A packet too short or too broken to name a home (its verdict, MALFORMED, never touches
a peer) uses its source address when it has one, else shard 0; frames that are not mobility
packets are counted by shard 0 only. Every frame thus belongs to exactly one shard, and a peer's
packets all to the same one, in capture order: each shard's verdicts are the serial run's.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from typing import Any

from ._types import MalformedPacket
from .reference import wire


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` as a :class:`Shard`; ValueError with the reason otherwise."""
    i, sep, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index = count = -1
    if not sep or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: expected i/n with 0 <= i < n (e.g. 0/4)")
    return Shard(index, count)


def address_shard(address: bytes, count: int) -> int:
    """The shard of a 16-byte home address."""
    return int.from_bytes(hashlib.sha256(address).digest()[:8], "big") % count


def packet_home(packet: bytes) -> bytes | None:
    """The address a mobility packet's peer is keyed by (see the module's docstring)."""
    try:
        layout = wire.scan(packet)
    except MalformedPacket:
        layout = None
    if layout is not None and layout.home_address is not None:
        return bytes(layout.home_address)
    return bytes(packet[8:24]) if len(packet) >= 24 else None


def packet_shard(packet: bytes, count: int) -> int:
    """The shard of one mobility packet."""
    home = packet_home(packet)
    return 0 if home is None else address_shard(home, count)


class ShardFilter:
    """Keeps one shard's packets of each Batch or Chunk, and counts what it let through."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.kept = 0
        self.dropped = 0

    def __call__(self, item: Any) -> Any:
        """``item`` (a Chunk, compacted in place, or a new Batch) with only this shard's
        packets; None when none is left."""
        from .capture import Batch

        n = item.n if not isinstance(item, Batch) else len(item)
        offs, data = item.offsets, item.data
        keep = [k for k in range(n) if packet_shard(bytes(data[offs[k] : offs[k + 1]]), self.shard.count) == self.shard.index]
        self.kept += len(keep)
        self.dropped += n - len(keep)
        if len(keep) == n:
            return item if n else None
        if not keep:
            return None
        parts = [bytes(data[offs[k] : offs[k + 1]]) for k in keep]
        new_offs = array("Q", [0])
        for p in parts:
            new_offs.append(new_offs[-1] + len(p))
        frames = [item.frames[k] for k in keep]
        times = [item.times[k] for k in keep]
        if isinstance(item, Batch):
            return Batch(b"".join(parts), new_offs, array("Q", frames), array("q", times))
        joined = b"".join(parts)
        item.data[: len(joined)] = joined
        m = len(keep)
        item.offsets[: m + 1] = new_offs
        item.frames[:m] = array("Q", frames)
        item.times[:m] = array("q", times)
        item.n = m
        return item

    def frames(self, frames: int) -> int:
        """Of ``frames`` read, how many this shard counts: shard 0 all but the other shards'
        packets, any other shard its own packets only."""
        return frames - self.dropped if self.shard.index == 0 else self.kept


def frame_shard(frame: bytes, ip: int, count: int) -> int:
    """The shard of a link-layer frame whose IPv6 header starts at ``ip``: its mobility packet's
    (as the capture reader cuts it), or 0 for a frame that carries none."""
    from .capture import mobility_length

    length = mobility_length(frame, ip, len(frame) - ip)
    return 0 if length < 0 else packet_shard(bytes(frame[ip : ip + length]), count)


__all__ = ["Shard", "ShardFilter", "address_shard", "frame_shard", "packet_home", "packet_shard", "parse_shard"]


Slot = tuple[bytes, int, tuple[int, ...]]


def merge_states(files: list[tuple[str, bytes, list[Slot]]]) -> tuple[bytes, list[Slot]]:
    """The state a serial run would have written, from the n shards' state files given in shard
    order (file ``i`` is shard ``i/n``): each address's slot comes from the shard that owns it.

    All the files must carry one salt (each shard started from a copy of the same state file,
    or each created empty from one copied seed): the key fingerprints in the slots are keyed
    with it, so slots under different salts cannot be put in one file. An address missing from
    its owner's file (its owner never saw it) is taken from the other files, which must then
    agree on it. Slot order: the first file's, then addresses that only later files hold.
    """
    from ._types import StateFileError

    n = len(files)
    salt = files[0][1]
    for name, other, _ in files[1:]:
        if other != salt:
            raise StateFileError(
                f"state file {name}: its salt differs from {files[0][0]}'s: shards must start from copies of one "
                "state file (docs/tools.md, sharding)"
            )
    by_file = [{address: (word, earlier) for address, word, earlier in slots} for _, _, slots in files]
    order: list[bytes] = []
    seen: set[bytes] = set()
    for _, _, slots in files:
        for address, _, _ in slots:
            if address not in seen:
                seen.add(address)
                order.append(address)
    merged: list[Slot] = []
    for address in order:
        owner = by_file[address_shard(address, n)]
        if address in owner:
            word, earlier = owner[address]
        else:
            found = {table[address] for table in by_file if address in table}
            if len(found) != 1:
                import ipaddress

                raise StateFileError(
                    f"state files disagree on {ipaddress.IPv6Address(address)}, which its shard "
                    f"({address_shard(address, n)}/{n}) never saw: were the files given in shard order?"
                )
            word, earlier = found.pop()
        merged.append((address, word, earlier))
    return salt, merged
