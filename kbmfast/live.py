"""Live capture through libpcap, from the C core (csrc/live.c).

:class:`LiveCapture` opens an interface with ``pcap_create`` in immediate mode with a BPF
filter, and :meth:`LiveCapture.batch` captures Binding Updates straight into a batch buffer and
verifies them (``kbm_verify``) in one C call with the GIL released: Python runs once per batch,
not per packet. A batch is handed on when it holds ``batch`` packets or ``max_delay_us`` after
its first packet arrived. :meth:`LiveCapture.send` answers a packet of the batch back the way
its frame came (Ethernet: to the frame's source MAC address).
"""

from __future__ import annotations

import dataclasses
import os
from array import array
from collections.abc import Callable
from typing import Any

from ._native_edge import ffi, lib
from ._types import KbmError

#: IPv6 packets whose first header after IPv6 is a Destination Options header (a Home Address
#: option comes in one) or a Mobility Header.
DEFAULT_FILTER = "ip6 and (ip6[6] == 60 or ip6[6] == 135)"
#: Batch size and deadline by default (docs/serve.md gives the measurement behind them).
DEFAULT_BATCH = 256
DEFAULT_MAX_DELAY_US = 0
DEFAULT_SNAPLEN = 2560
DEFAULT_BUFFER = 32 << 20

_DETAIL_SIZE = ffi.sizeof("kbm_detail")  # not a literal: the struct grew (RR Nonce Indices offset)
#: kbm_live_accept: home, care-of, packet index, granted lifetime (s), sequence, ack (0 none
#: due, 1 built, 2 not: no key), padding.
ACCEPT_FORMAT = "=16s16sIIHBx"
ACCEPT_SIZE = ffi.sizeof("kbm_live_accept")
#: kbm_live_meta in 64-bit words; time_us is word 0 and frame word 1 (read as signed: frame
#: numbers stay far below 2**63).
_META_WORDS = ffi.sizeof("kbm_live_meta") // 8
assert ffi.sizeof("kbm_live_meta") % 8 == 0 and ffi.offsetof("kbm_live_meta", "time_us") == 0
assert ffi.offsetof("kbm_live_meta", "frame") == 8


class LiveError(KbmError):
    """A live capture could not be opened or read; ``kind`` says why: "no-device",
    "permission", "filter", "link-type" or "pcap"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_KINDS = {
    lib.KBM_LIVE_ENODEV: "no-device",
    lib.KBM_LIVE_EPERM: "permission",
    lib.KBM_LIVE_EFILTER: "filter",
    lib.KBM_LIVE_ELINK: "link-type",
}


@dataclasses.dataclass
class Batch:
    """One batch: ``n`` packets, packet i is ``data[offsets[i]:offsets[i+1]]`` (from the IPv6
    header), ``verdicts[i]`` its verdict code (when verified), ``details`` the raw kbm_detail
    records (16 bytes each), ``times_us[i]`` its capture time (us since the epoch) and
    ``frames[i]`` its frame number (counted from 1 among the frames the filter passed)."""

    n: int
    data: memoryview
    offsets: array[int]
    verdicts: bytearray
    details: bytearray
    times_us: list[int]
    frames: list[int]

    def packet(self, i: int) -> bytes:
        """Packet i's bytes."""
        return bytes(self.data[self.offsets[i] : self.offsets[i + 1]])


#: What a Binding Acknowledgement carries besides its key: home, the care-of address of the
#: MAC (the home address for a de-registration), correspondent, destination (16 bytes each),
#: status, sequence, lifetime in 4-second units.
AckFields = tuple[bytes, bytes, bytes, bytes, int, int, int]


def build_ack(kbm: bytes | bytearray, fields: AckFields) -> bytes:
    """The Binding Acknowledgement ``kbmfast.build_binding_ack`` builds, byte for byte, built
    by the C core (``kbm_build_ack``) from already-checked fields."""
    out = ffi.new(f"uint8_t[{lib.KBM_ACK_MAX}]")
    key = kbm if type(kbm) is bytes else ffi.from_buffer("uint8_t[]", kbm)
    n = lib.kbm_build_ack(key, *fields, out)
    if n == 0:
        raise ValueError("build_ack: invalid fields")
    return bytes(ffi.buffer(out, n))


class LiveCapture:
    """One interface, opened for capture (needs CAP_NET_RAW); one thread uses it at a time."""

    def __init__(
        self,
        interface: str,
        *,
        filter: str | None = None,
        batch: int = DEFAULT_BATCH,
        max_delay_us: int = DEFAULT_MAX_DELAY_US,
        snaplen: int = DEFAULT_SNAPLEN,
        buffer_size: int = DEFAULT_BUFFER,
        inbound_only: bool = True,
        fanout_group: int | None = None,
    ) -> None:
        if not 1 <= batch <= 65536:
            raise ValueError(f"batch: must be 1..65536, not {batch}")
        if not 0 <= max_delay_us <= 10_000_000:
            raise ValueError(f"max_delay_us: must be 0..10000000, not {max_delay_us}")
        if not 128 <= snaplen <= 262144:
            raise ValueError(f"snaplen: must be 128..262144, not {snaplen}")
        if not 0 <= buffer_size < 1 << 31:
            raise ValueError(f"buffer_size: must be 0..2**31-1 bytes, not {buffer_size}")
        self.interface = interface
        self.filter = DEFAULT_FILTER if filter is None else filter
        self.batch_size = batch
        self.max_delay_us = max_delay_us
        self.snaplen = snaplen
        err = ffi.new(f"char[{lib.KBM_LIVE_ERRBUF}]")
        status = ffi.new("int *")
        handle = lib.kbm_live_open(
            os.fsencode(interface),
            self.filter.encode(),
            snaplen,
            buffer_size,
            1 if inbound_only else 0,
            -1 if fanout_group is None else fanout_group & 0xFFFF,
            err,
            status,
        )
        if handle == ffi.NULL:
            text = ffi.string(err).decode(errors="replace")
            kind = _KINDS.get(status[0], "pcap")
            raise LiveError(kind, f"interface {interface}: {_explain(kind, text)}")
        self._h: Any = ffi.gc(handle, lib.kbm_live_close)
        self.linktype = int(lib.kbm_live_linktype(handle))
        self.can_send = bool(lib.kbm_live_can_send(handle))
        self._buf = bytearray(batch * snaplen)
        self._offsets = array("Q", bytes(8 * (batch + 1)))
        self._meta = ffi.new("kbm_live_meta[]", batch)
        self._meta_words = memoryview(ffi.buffer(self._meta)).cast("q")
        self._verdicts = bytearray(batch)
        self._details = bytearray(_DETAIL_SIZE * batch)
        self._c_buf = ffi.from_buffer("uint8_t[]", self._buf)
        self._c_offsets = ffi.from_buffer("uint64_t[]", self._offsets)
        self._c_verdicts = ffi.from_buffer("uint8_t[]", self._verdicts)
        self._c_details = ffi.from_buffer("kbm_detail[]", self._details)
        self._stats = ffi.new("kbm_live_stats *")
        self._err = err
        self._accepts = bytearray(ACCEPT_SIZE * batch)
        self._c_accepts = ffi.from_buffer("kbm_live_accept[]", self._accepts)
        self._handled = bytearray(batch)
        self._c_handled = ffi.from_buffer("uint8_t[]", self._handled)
        self._frames = ffi.new(f"uint8_t[{batch * lib.KBM_LIVE_FRAME_MAX}]")
        self._frame_lens = ffi.new("uint32_t[]", batch)
        self._n_frames = ffi.new("size_t *")
        b = self._buffers = ffi.new("kbm_live_buffers *")  # for kbm_live_serve; points into the above
        b.buf, b.buf_len, b.offsets, b.max = self._c_buf, len(self._buf), self._c_offsets, batch
        b.meta, b.verdicts, b.details, b.accepts = self._meta, self._c_verdicts, self._c_details, self._c_accepts
        b.handled, b.frames, b.frame_lens = self._c_handled, self._frames, self._frame_lens
        self._served = ffi.new("kbm_live_served *")
        #: kbm_live_serve's packets by verdict code for the last batch it answered.
        self.served_counts = memoryview(ffi.buffer(self._served.counts)).cast("Q")

    def batch(self, verifier: Any = None, *, idle_ms: int = 100) -> Batch:
        """Capture the next batch (empty after ``idle_ms`` without a mobility packet) and, when
        ``verifier`` (a C-backend ``kbmfast.Verifier``) is given, verify it in the same C call."""
        v = ffi.NULL
        details = ffi.NULL
        if verifier is not None:
            v = verifier._handle()  # the C verifier: kbm_verify runs inside kbm_live_batch
            if verifier.return_routability is not None:
                verifier._push(v)  # the RR secrets as of now: nonces made and expired (serve --rr)
            details = self._c_details
        n = lib.kbm_live_batch(
            self._handle(),
            v,
            self._c_buf,
            len(self._buf),
            self._c_offsets,
            self.batch_size,
            self._meta,
            self._c_verdicts,
            details,
            self.max_delay_us,
            idle_ms,
            self._stats,
            self._err,
        )
        if n < 0:
            raise LiveError("pcap", f"interface {self.interface}: {ffi.string(self._err).decode(errors='replace')}")
        if n and verifier is not None and verifier._durability is not None:
            verifier._durability.changed()
        return self._batch(n)

    def _batch(self, n: int) -> Batch:
        meta = self._meta_words[: n * _META_WORDS]  # kbm_live_meta as 64-bit words: two strided copies in C
        times, frames = meta[0::_META_WORDS].tolist(), meta[1::_META_WORDS].tolist()
        return Batch(n, memoryview(self._buf), self._offsets, self._verdicts, self._details, times, frames)

    def serve_batch(self, verifier: Any, cache: Any, python_verdicts: int, *, idle_ms: int = 100) -> Batch | Any | None:
        """Serve's common case in one C call with the GIL released (``kbm_live_serve``):
        capture and verify a batch as :meth:`batch` does; then, unless one of its verdicts is
        in the bit mask ``python_verdicts``, :meth:`acknowledge_accepted`'s work, the binding
        cache ``cache`` (a ``kbmfast.serve.BindingCache``) updated from its records, and the BAs
        sent. For a verifier without return routability or compat rfc3775. Returns None for
        an empty batch, the :class:`Batch` when it is the caller's to act on (nothing was sent),
        or the ``kbm_live_served`` record (n, time_us, built, no_key, sent; the verdict counts
        in :attr:`served_counts`)."""
        if verifier.return_routability is not None or verifier.compat == "rfc3775":
            raise ValueError("serve_batch: return routability and compat rfc3775 take the Python path")
        max_lifetime = verifier.max_lifetime
        out = self._served
        n = lib.kbm_live_serve(
            self._handle(),
            verifier._handle(),
            cache._h,
            self._buffers,
            self.max_delay_us,
            idle_ms,
            0xFFFFFFFF if max_lifetime is None else min(max_lifetime, 0xFFFFFFFF),
            python_verdicts,
            out,
            self._stats,
            self._err,
        )
        if n < 0:
            raise LiveError("pcap", f"interface {self.interface}: {ffi.string(self._err).decode(errors='replace')}")
        if n == 0:
            return None
        if verifier._durability is not None:
            verifier._durability.changed()
        return out if out.done else self._batch(n)

    def acknowledge_accepted(
        self, verifier: Any, batch: Batch, before_send: Callable[[memoryview], object] | None = None
    ) -> tuple[memoryview, bytearray, int]:
        """The common case of ``batch`` (just verified with ``verifier``) in C with the GIL
        released (``kbm_live_ack``, then ``kbm_live_send_frames``): every ACCEPTED Binding
        Update of a configured peer gets the acknowledgement ``Verifier.acknowledge`` builds
        when it has the A flag, signed with the peer's current key (none for a peer removed
        meanwhile) and sent back the way its frame came (``sendmmsg``). ``before_send(records)``
        runs between building and sending (serve updates its binding cache there). Returns
        (records, handled, sent): a record of :data:`ACCEPT_FORMAT` per such BU (ack: 0 none
        due, 1 built, 2 no key, 3 withdrawn by ``before_send``: the binding cache was full),
        ``handled[i]`` 1 for each packet done here, and how many BAs
        went out. Return routability's Binding Updates (and compat rfc3775's care-of = home
        ones) are left to the caller."""
        max_lifetime = verifier.max_lifetime
        m = lib.kbm_live_ack(
            self._handle(),
            verifier._handle(),
            self._c_buf,
            len(self._buf),
            self._c_offsets,
            batch.n,
            self._meta,
            self._c_verdicts,
            self._c_details,
            0xFFFFFFFF if max_lifetime is None else min(max_lifetime, 0xFFFFFFFF),
            self._c_accepts,
            self._c_handled,
            self._frames,
            self._frame_lens,
            self._n_frames,
            self._stats,
        )
        records = memoryview(self._accepts)[: m * ACCEPT_SIZE]
        n_frames = self._n_frames[0]
        if before_send is not None:
            before_send(records)  # may withdraw BAs: the binding cache refused their entries
            n_frames = lib.kbm_live_withdraw(self._c_accepts, m, self._frames, self._frame_lens, n_frames)
        sent = lib.kbm_live_send_frames(self._handle(), self._frames, self._frame_lens, n_frames, self._stats)
        return records, self._handled, int(sent)

    def send(self, index: int, packet: bytes) -> bool:
        """Send ``packet`` (from its IPv6 header) back the way packet ``index`` of the last
        batch came; False when it could not be sent."""
        if not 0 <= index < self.batch_size:
            raise IndexError(index)
        return bool(lib.kbm_live_send(self._handle(), self._meta + index, packet, len(packet), self._stats) == 0)

    def answer(self, index: int, kbm: bytes | bytearray, fields: AckFields) -> bool:
        """Build the Binding Acknowledgement described by ``fields``, signed with ``kbm``, in C
        (:func:`build_ack`) and send it back the way packet ``index`` of the last batch came;
        False when it could not be sent."""
        if not 0 <= index < self.batch_size:
            raise IndexError(index)
        key = kbm if type(kbm) is bytes else ffi.from_buffer("uint8_t[]", kbm)
        rc = lib.kbm_live_answer(self._handle(), self._meta + index, key, *fields, self._stats)
        return bool(rc == 0)

    def stats(self) -> dict[str, int]:
        """Counters: frames, other (not mobility packets), packets, batches, sent,
        send_errors, and libpcap's received, dropped and interface-dropped."""
        if self._h is not None:  # closed: the counters as they were at close
            lib.kbm_live_pcap_stats(self._h, self._stats)
        s = self._stats
        return {
            "frames": int(s.frames),
            "other": int(s.other),
            "packets": int(s.packets),
            "batches": int(s.batches),
            "sent": int(s.sent),
            "send_errors": int(s.send_errors),
            "pcap_received": int(s.ps_recv),
            "pcap_dropped": int(s.ps_drop),
            "pcap_interface_dropped": int(s.ps_ifdrop),
        }

    def _handle(self) -> Any:
        h = self._h
        if h is None:
            raise ValueError("this LiveCapture is closed")
        return h

    def close(self) -> None:
        """Close the capture; idempotent."""
        h = self._h
        if h is not None:
            lib.kbm_live_pcap_stats(h, self._stats)
            self._h = None
            ffi.release(h)

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kbmfast LiveCapture {self.interface!r} linktype={self.linktype}>"


def _explain(kind: str, text: str) -> str:
    if kind == "permission":
        return f"{text} (capturing needs CAP_NET_RAW: run as root or grant the capability, see docs/serve.md)"
    if kind == "filter":
        return f"bad BPF {text}"
    return text
