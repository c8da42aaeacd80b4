"""Return routability in ``kbmfast verify --rr`` (docs/tools.md, docs/return-routability.md).

A correspondent's RR secrets are Kcn and nonces made over time, so ``verify --rr`` replays a
run: packet by packet in capture order, with the verifier's clock at each packet's capture
time, it answers every Home/Care-of Test Init (verdict RR_REPLIED; the HoT/CoT go to
``--acks-out`` with the Binding Acknowledgements) and judges every Binding Update. The nonces
are derived from Kcn and their serial number (``ReturnRoutability(derive_nonces=True)``), so
with ``--rr-kcn-file`` the run of a correspondent that used that Kcn the same way, from its
start, is reproduced verdict for verdict; ``--rr`` alone draws a fresh Kcn (a live ``-i`` run
then shows what a correspondent would answer).
"""

from __future__ import annotations

import argparse
from array import array
from typing import TYPE_CHECKING, Any, BinaryIO

from .._outputs import CliError
from .._rr import KCN_SIZE, ReturnRoutability
from .._types import KeyFileError, Verdict
from .._util import wipe

if TYPE_CHECKING:
    from ..capture import Batch, Fields

#: tools_cli.V_RR_REPLIED (csrc/kbm.h KBM_V_RR_REPLIED): after the Verifier's and the CLI's codes.
RR_REPLIED = len(Verdict) + 7
_NOT_BU = Verdict.NOT_BINDING_UPDATE
_HEX = [int(chr(c), 16) if chr(c) in "0123456789abcdefABCDEF" else -1 for c in range(256)]


def load_kcn(path: str) -> bytearray:
    """Kcn from ``path``: 40 hex digits (surrounding white space allowed), in a private file
    (checked as key files are). CliError (status 2) otherwise; no byte of the file in it."""
    from .._keys import _read_private

    try:
        raw = _read_private(path)
    except KeyFileError as e:
        raise CliError(f"--rr-kcn-file: {e}") from None
    try:
        start, end = 0, len(raw)
        while start < end and raw[start] in b" \t\r\n":
            start += 1
        while end > start and raw[end - 1] in b" \t\r\n":
            end -= 1
        kcn = bytearray(KCN_SIZE)
        ok = end - start == 2 * KCN_SIZE and all(_HEX[raw[j]] >= 0 for j in range(start, end))
        if ok:  # digit by digit: no copy of the text is made
            for i in range(KCN_SIZE):
                kcn[i] = _HEX[raw[start + 2 * i]] << 4 | _HEX[raw[start + 2 * i + 1]]
    finally:
        wipe(raw)
    if not ok:
        raise CliError(f"--rr-kcn-file: {path}: expected Kcn as {2 * KCN_SIZE} hexadecimal digits ({KCN_SIZE} bytes)")
    return kcn


class ReplayClock:
    """The verifier's clock during a replay: the capture time of the packet being judged (never
    going back: a merged capture's disorder does not revive expired nonces)."""

    def __init__(self) -> None:
        self.now = 0.0

    def at(self, time_us: int) -> None:
        """Move to a packet's capture time (µs since the epoch)."""
        self.now = max(self.now, time_us / 1e6)

    def __call__(self) -> float:
        """The time now, in seconds."""
        return self.now


class Replay:
    """Judges batches packet by packet at their capture times; keeps, per batch, what a
    correspondent would send (HoT/CoT and Binding Acknowledgements, with the time of the packet
    they answer) for :class:`Acks`."""

    def __init__(self, verifier: Any, clock: ReplayClock, keep: bool) -> None:
        self.verifier, self.clock, self.keep = verifier, clock, keep
        self.sent: dict[int, list[tuple[bytes, int]]] = {}  # id(batch) -> records

    def __call__(self, batch: Batch) -> array[int]:
        """The batch's verdict codes (RR_REPLIED for an answered init)."""
        v, clock = self.verifier, self.clock
        n = len(batch)
        view = memoryview(batch.data)
        offs, times = batch.offsets, batch.times
        verdicts = array("B", bytes(n))
        sent: list[tuple[bytes, int]] = []
        for i in range(n):
            packet = bytes(view[offs[i] : offs[i + 1]])
            clock.at(int(times[i]))
            result = v.verify(packet)
            code = int(result.verdict)
            out = None
            if code == _NOT_BU:
                out = v.reply(packet)
                if out is not None:
                    code = RR_REPLIED
            elif self.keep and result.ba_status is not None:
                try:
                    out = v.acknowledge(result)
                except KeyError:  # pragma: no cover - judged and acknowledged at one instant
                    out = None
            if out is not None and self.keep:
                sent.append((out, int(times[i])))
            verdicts[i] = code
        if self.keep:
            self.sent[id(batch)] = sent
        return verdicts


class Acks:
    """``--acks-out`` with ``--rr``: what :class:`Replay` kept for each batch, in order (the
    interface of tools_cli._Acks)."""

    def __init__(self, replay: Replay, stream: BinaryIO) -> None:
        from ..capture import PcapWriter

        self.replay = replay
        self.writer = PcapWriter(stream)

    def snapshot(self, fields: Fields) -> dict[bytes, int | None]:
        """Nothing to read ahead: the acknowledgements are built as each packet is judged."""
        return {}

    def write(self, batch: Batch, fields: Fields, verdicts: Any, last: dict[bytes, int | None]) -> None:
        """Write the batch's HoT/CoT and acknowledgements."""
        for packet, when in self.replay.sent.pop(id(batch), []):
            self.writer.write(packet, when)


def setup(args: argparse.Namespace, open_verifier: Any, backend: Any, keys: Any, state: str | None) -> tuple[Any, Replay | None]:
    """The Verifier of a ``verify`` run (``--rr``, ``--compat``), opened by ``open_verifier``
    (tools_cli._open_verifier, which takes Verifier's keywords), and its Replay with --rr."""
    if not args.rr:
        if args.rr_kcn_file:
            raise CliError("--rr-kcn-file needs --rr")
        return open_verifier(backend, keys, state, compat=args.compat), None
    for flag, given in (("--skip", args.skip), ("--shard", args.shard)):
        if given:
            raise CliError(f"--rr: cannot take {flag} (a replay needs every Home/Care-of Test Init from the start)")
    kcn = load_kcn(args.rr_kcn_file) if args.rr_kcn_file else None
    clock = ReplayClock()
    try:
        rr = ReturnRoutability(kcn, clock=clock, derive_nonces=True)
    finally:
        if kcn is not None:
            wipe(kcn)
    verifier = open_verifier(backend, keys, state, compat=args.compat, return_routability=rr)
    return verifier, Replay(verifier, clock, keep=bool(args.acks_out))
