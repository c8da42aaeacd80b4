"""A correspondent node on the wire: the library behind ``kbmfast serve`` (docs/serve.md).

:class:`Server` takes batches from :class:`kbmfast.live.LiveCapture` (captured and verified in
one C call), sends the Binding Acknowledgement that ``Verifier.acknowledge`` builds for each
verdict that calls for one, keeps the :class:`BindingCache` and the counters, and rate-limits
error acknowledgements per peer with a :class:`RateLimiter`. Nothing is ever sent for a packet
that did not authenticate: only ACCEPTED and the verdicts found after the authenticator was
checked (SEQUENCE_OUT_OF_WINDOW, HOME_REGISTRATION, INVALID_CARE_OF, KEY_EXHAUSTED) have a BA.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import threading
import time
from collections import Counter
from struct import Struct
from typing import Any

from . import serve_rr
from ._keys import KeyTable, Peer
from ._native_edge import ffi, lib
from ._types import BA_STATUS, FLAG_A, Verdict
from ._util import wipe
from .fast import _DETAIL, Verifier
from .live import ACCEPT_SIZE, AckFields, Batch, LiveCapture
from .reference.verifier import current_kbm

#: Error acknowledgements (status >= 128) per peer: a bucket of ERROR_BURST tokens refilled at
#: ERROR_RATE per second. A flood of replayed Binding Updates is answered at most this fast.
ERROR_RATE = 5.0
ERROR_BURST = 10
#: Batch latency histogram buckets (seconds from the first packet's capture to its answer).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)

_ACTION = frozenset(
    int(v)
    for v in (
        Verdict.ACCEPTED,
        Verdict.SEQUENCE_OUT_OF_WINDOW,
        Verdict.HOME_REGISTRATION,
        Verdict.INVALID_CARE_OF,
        Verdict.KEY_EXHAUSTED,
    )
)
_ERROR_SET = _ACTION - {int(Verdict.ACCEPTED)}
_ERRORS = tuple(sorted(_ERROR_SET))
#: The verdicts whose batches :meth:`Server.handle` answers (error acknowledgements, rate-limited
#: in Python), as kbm_live_serve's bit mask.
_PYTHON_VERDICTS = sum(1 << code for code in _ERROR_SET)
_addr = ipaddress.IPv6Address


_STATUS = tuple(BA_STATUS.get(Verdict(code)) for code in range(len(Verdict)))


def ack_fields(
    packet: bytes, code: int, detail: tuple[int, ...], max_lifetime: int | None
) -> tuple[bytes, bytes, int, AckFields | None]:
    """For a packet whose verdict ``code`` is ACCEPTED or one reached after its authenticator
    was checked, and its kbm_detail: (home, care-of, granted lifetime in seconds, and the
    fields of the Binding Acknowledgement that ``Verifier.acknowledge`` builds, or None when
    none is due: an accepted BU without the A flag). The same rules as acknowledge (tests
    compare the two byte for byte)."""
    home_at, care_at, sequence, units, flags, last = detail[:6]  # [6]: the RR Nonce Indices (none here)
    home = packet[home_at : home_at + 16]
    source = packet[8:24]
    care_of = source if care_at == 8 else packet[care_at : care_at + 16]
    lifetime = units * 4
    granted = lifetime if max_lifetime is None else min(lifetime, max_lifetime)
    status = _STATUS[code]
    if status is None or (code == 0 and not flags & FLAG_A):
        return home, care_of, granted, None
    mac_care_of = home if units == 0 else care_of
    if status >= 128:
        fields = (home, mac_care_of, packet[24:40], source, status, last if status == 135 else sequence, 0)
    else:
        fields = (home, mac_care_of, packet[24:40], source, status, sequence, granted // 4)
    return home, care_of, granted, fields


@dataclasses.dataclass
class Binding:
    """One binding cache entry."""

    care_of: ipaddress.IPv6Address
    sequence: int
    lifetime: int  # seconds granted
    expires: float  # time.monotonic()
    updated: float  # time.time()


#: The most entries a :class:`BindingCache` holds by default. With preconfigured keys an entry
#: needs a Binding Update that authenticated with a configured peer's key, whose home address
#: is the entry's key, so the entries are bounded by the peers in the key file, however many
#: valid BUs a flood brings; the cap bounds what return routability's open set of home
#: addresses could add (new entries past it are refused and counted, existing ones still change).
MAX_BINDINGS = 1 << 20


class BindingCache:
    """Home address -> :class:`Binding`, from accepted Binding Updates (RFC 6275 §9.5.1-2):
    an update creates or replaces the entry; a lifetime of 0 or a care-of address equal to the
    home address deletes it; entries expire after their granted lifetime (:meth:`expire`).
    Kept in the C core (``kbm_bcache``: open addressing keyed by home address, its own lock), so
    that serve's per-batch update is one C call over ``kbm_live_ack``'s records; thread-safe.
    At most ``max_entries`` entries (:data:`MAX_BINDINGS`; :attr:`refused` counts the new ones
    turned away)."""

    def __init__(self, max_entries: int = MAX_BINDINGS) -> None:
        if not 1 <= max_entries <= 1 << 40:
            raise ValueError(f"max_entries: must be 1..2**40, not {max_entries}")
        handle = lib.kbm_bcache_new(max_entries)
        if handle == ffi.NULL:
            raise MemoryError("binding cache: out of memory")
        self._h: Any = ffi.gc(handle, lib.kbm_bcache_free)

    def update(self, home: Any, care_of: Any, sequence: int, lifetime: int) -> None:
        """Apply one accepted Binding Update with its granted lifetime (seconds); addresses as
        16 bytes or IPv6Address."""
        if not 0 <= sequence <= 0xFFFF or not 0 <= lifetime <= 0xFFFFFFFF:
            raise ValueError(f"sequence {sequence} or lifetime {lifetime} out of range")
        rc = lib.kbm_bcache_update(self._h, _packed(home), _packed(care_of), sequence, lifetime, time.monotonic(), time.time())
        if rc == lib.KBM_ENOMEM:
            raise MemoryError("binding cache: out of memory")

    def update_accepted(self, records: memoryview) -> tuple[int, int]:
        """Apply the records of ``LiveCapture.acknowledge_accepted`` in order (one C call);
        returns (BAs built, BAs not built for want of a key) as the records say."""
        n = len(records) // ACCEPT_SIZE
        if n == 0:
            return 0, 0
        acks = ffi.new("uint64_t[2]")
        lib.kbm_bcache_apply(self._h, ffi.from_buffer("kbm_live_accept[]", records), n, time.monotonic(), time.time(), acks)
        return int(acks[0]), int(acks[1])

    def expire(self, now: float | None = None) -> int:
        """Remove expired entries; returns how many."""
        return int(lib.kbm_bcache_expire(self._h, time.monotonic() if now is None else now))

    def get(self, home: Any) -> Binding | None:
        """The entry of ``home``, or None."""
        out = ffi.new("kbm_binding *")
        if not lib.kbm_bcache_get(self._h, _packed(home), out):
            return None
        return Binding(_addr(bytes(out.care_of)), out.sequence, out.lifetime, out.expires, out.updated)

    def __len__(self) -> int:
        return int(lib.kbm_bcache_count(self._h))

    @property
    def refused(self) -> int:
        """New entries turned away because the cache was full."""
        return int(lib.kbm_bcache_refused(self._h))

    def _entries(self) -> list[tuple[bytes, bytes, int, int, float]]:
        """(home, care-of, sequence, lifetime, expires) of every entry, sorted by home."""
        while True:
            room = len(self) + 64  # entries added meanwhile: one more round
            out = ffi.new("kbm_binding[]", room)
            n = lib.kbm_bcache_dump(self._h, out, room)
            if n < room:
                break
        raw = ffi.buffer(out, n * _BINDING_SIZE)
        return sorted((h, c, seq, life, exp) for h, c, exp, _upd, life, seq, _used in _BINDING.iter_unpack(raw))

    def snapshot(self) -> list[dict[str, Any]]:
        """The entries as JSON-ready dicts (remaining lifetime in seconds)."""
        now = time.monotonic()
        return [
            {
                "home": str(_addr(h)),
                "care_of": str(_addr(c)),
                "sequence": seq,
                "lifetime": life,
                "remaining": max(0, round(exp - now, 1)),
            }
            for h, c, seq, life, exp in self._entries()
        ]


#: kbm_binding: home, care-of, expires, updated, lifetime, sequence, used (and padding).
_BINDING = Struct("=16s16sddIHBx")
_BINDING_SIZE = ffi.sizeof("kbm_binding")
assert _BINDING.size == _BINDING_SIZE


def _packed(address: Any) -> bytes:
    """16 bytes for an address given as bytes, IPv6Address or text."""
    if type(address) is bytes and len(address) == 16:
        return address
    return _addr(address).packed


class RateLimiter:
    """A token bucket per key: ``allow(key)`` is True at most ``burst`` times at once and
    ``rate`` times per second on average. Holds at most ``max_keys`` buckets (full ones are
    forgotten first: a forgotten bucket is a full one)."""

    def __init__(self, rate: float = ERROR_RATE, burst: int = ERROR_BURST, max_keys: int = 1 << 16) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[bytes, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: bytes, now: float | None = None) -> bool:
        """Take a token for ``key`` if there is one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._prune(now)
            self._buckets[key] = (tokens, now)
            return ok

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # none full: drop the oldest half
            for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.max_keys // 2]:
                del self._buckets[k]


def reload_keys(keys: KeyTable, path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Bring ``keys`` (and so every verifier that follows it) to the key file at ``path``:
    new peers are added, changed keys replaced (a rekey), removed peers forgotten; peers that
    did not change are not touched, and sequence state is kept. The file is read whole first, so
    a file that does not load changes nothing (KeyFileError/OSError). Returns (added, rekeyed,
    removed)."""
    new = KeyTable.load(path)
    added = rekeyed = removed = 0
    try:
        wanted = {p.home: p for p in new.peers()}
        for home in [p.home for p in keys.peers() if p.home not in wanted]:
            keys.remove(home)
            removed += 1
        for home, p in wanted.items():
            old = keys.peer(home)
            if old is not None and _same_key(old, p):
                continue
            copy = Peer(home, p.kind, bytearray(p.key), p.home_nonce, p.care_of_nonce, 0)
            keys._add(copy, p.epoch if p.epoch else None)
            if old is None:
                added += 1
            else:
                rekeyed += 1
    finally:
        for p in new.peers():
            p.wipe()
    return added, rekeyed, removed


def _same_key(a: Peer, b: Peer) -> bool:
    return (
        a.kind == b.kind
        and a.fingerprint() == b.fingerprint()
        and a.home_nonce == b.home_nonce
        and a.care_of_nonce == b.care_of_nonce
    )


class Stats:
    """The counters of one serving process (read by the stats line, the snapshot, /metrics)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.verdicts: Counter[int] = Counter()
        self.ba_sent: Counter[int] = Counter()
        self.ba_limited = 0
        self.ba_failed = 0
        self.batches = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.rr_replies: Counter[str] = Counter()  # HoT/CoT sent (kbmfast.serve_rr)
        self.started = time.time()

    def observe_latency(self, seconds: float) -> None:
        """Count one batch latency (caller holds ``lock``)."""
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                return
        self.latency_buckets[-1] += 1


class Server:
    """Answers the Binding Updates of one or more :class:`LiveCapture` with one verifier."""

    def __init__(
        self,
        verifier: Verifier,
        *,
        limiter: RateLimiter | None = None,
        cache: BindingCache | None = None,
    ) -> None:
        self.verifier = verifier
        self.limiter = limiter or RateLimiter()
        self.cache = cache or BindingCache()
        self.stats = Stats()
        self.captures: list[LiveCapture] = []
        self.rr_path = serve_rr.wanted(verifier)  # return routability / compat rfc3775

    def handle(self, capture: LiveCapture, batch: Batch) -> None:
        """Act on one verified batch: return routability first (kbmfast.serve_rr), then the
        error acknowledgements (:func:`ack_fields` says what ``Verifier.acknowledge`` would
        build; built and sent by the C core), then the accepted Binding Updates in one C call
        (:meth:`LiveCapture.acknowledge_accepted`) and the binding cache from its records;
        counters."""
        n = batch.n
        verdicts = batch.verdicts
        accepted = verdicts.count(0, 0, n)  # in C; the common case: every packet accepted
        counts = Counter({0: n}) if accepted == n else Counter(verdicts[:n])
        sent: Counter[int] = Counter()
        limited = failed = 0
        now = time.monotonic()
        rr_done = serve_rr.handle(self, capture, batch) if self.rr_path else serve_rr.NONE
        if any(counts[c] for c in _ERRORS):  # rare and rate-limited: answered first, in Python
            limited, failed = self._answer_errors(capture, batch, rr_done, now, sent)
        if counts[0]:  # the common case in C: accepted BUs acknowledged, records for the cache
            tally: list[tuple[int, int]] = []  # the cache is updated before the BAs go out
            _records, _handled, done = capture.acknowledge_accepted(
                self.verifier, batch, lambda records: tally.append(self.cache.update_accepted(records))
            )
            built, no_key = tally[0]
            if done:
                sent[0] += done
            failed += no_key + built - done
        latency = max(0.0, time.time() - batch.times_us[0] / 1e6) if n else 0.0
        with self.stats.lock:
            self.stats.verdicts.update(counts)
            self.stats.ba_sent.update(sent)
            self.stats.ba_limited += limited
            self.stats.ba_failed += failed
            self.stats.batches += 1
            self.stats.observe_latency(latency)

    def _answer_errors(
        self, capture: LiveCapture, batch: Batch, rr_done: frozenset[int], now: float, sent: Counter[int]
    ) -> tuple[int, int]:
        """The error acknowledgements of a batch (135, 131, 174, 129), rate-limited per peer;
        accepted Binding Updates are :meth:`LiveCapture.acknowledge_accepted`'s. Returns
        (rate-limited, not sent) with ``sent`` counted up."""
        limited = failed = 0
        keys, max_lifetime = self.verifier.keys, self.verifier.max_lifetime
        verdicts, data, offsets, details = batch.verdicts, batch.data, batch.offsets, batch.details
        for i in range(batch.n):
            code = verdicts[i]
            if code not in _ERROR_SET or i in rr_done:
                continue
            detail = _DETAIL.unpack_from(details, _DETAIL.size * i)
            if detail[0] < 0:  # pragma: no cover - every such verdict has its details
                continue
            home, care_of, _granted, fields = ack_fields(bytes(data[offsets[i] : offsets[i + 1]]), code, detail, max_lifetime)
            if fields is None:  # pragma: no cover - every error verdict has a BA
                continue
            status = fields[4]
            if not self.limiter.allow(home, now):
                limited += 1
                continue
            found = current_kbm(keys, home, care_of, detail[3] == 0)
            if found is None:  # the peer was removed (SIGHUP) since the batch was verified
                failed += 1
                continue
            kbm = found[1]
            try:
                ok = capture.answer(i, kbm, fields)
            finally:
                wipe(kbm)
            if ok:
                sent[status] += 1
            else:
                failed += 1
        return limited, failed

    def run(self, capture: LiveCapture, stop: threading.Event, idle_ms: int = 100) -> None:
        """Serve ``capture`` until ``stop`` is set; the batch in hand is always finished. Without
        return routability (and compat rfc3775), a batch whose verdicts call for no error
        acknowledgement is captured, verified, acknowledged and put in the binding cache in one
        C call (:meth:`LiveCapture.serve_batch`); any other batch goes through :meth:`handle`."""
        if self.rr_path:
            while not stop.is_set():
                batch = capture.batch(self.verifier, idle_ms=idle_ms)
                if batch.n:
                    self.handle(capture, batch)
            return
        while not stop.is_set():
            got = capture.serve_batch(self.verifier, self.cache, _PYTHON_VERDICTS, idle_ms=idle_ms)
            if type(got) is Batch:
                self.handle(capture, got)
            elif got is not None:
                self._count_served(capture, got)

    def _count_served(self, capture: LiveCapture, served: Any) -> None:
        """The counters of a batch :meth:`LiveCapture.serve_batch` answered (as :meth:`handle`
        counts them)."""
        counts = capture.served_counts.tolist()
        sent, built, no_key = served.sent, served.built, served.no_key
        latency = max(0.0, time.time() - served.time_us / 1e6)
        stats = self.stats
        with stats.lock:
            verdicts = stats.verdicts
            for code, c in enumerate(counts):
                if c:
                    verdicts[code] += c
            if sent:
                stats.ba_sent[0] += sent
            stats.ba_failed += no_key + built - sent
            stats.batches += 1
            stats.observe_latency(latency)

    def pcap_totals(self) -> dict[str, int]:
        """Capture counters summed over the captures."""
        total: Counter[str] = Counter()
        for c in self.captures:
            total.update(c.stats())
        return dict(total)

    def snapshot(self) -> dict[str, Any]:
        """Everything the counters and the binding cache hold, JSON-ready."""
        with self.stats.lock:
            verdicts = {Verdict(k).name: v for k, v in sorted(self.stats.verdicts.items())}
            sent = {str(k): v for k, v in sorted(self.stats.ba_sent.items())}
            limited, failed, batches = self.stats.ba_limited, self.stats.ba_failed, self.stats.batches
            rr_replies = dict(sorted(self.stats.rr_replies.items()))
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "uptime": round(time.time() - self.stats.started, 3),
            "interfaces": [c.interface for c in self.captures],
            "packets": verdicts,
            "ba_sent": sent,
            "ba_rate_limited": limited,
            "ba_not_sent": failed,
            "rr_replies": rr_replies,
            "batches": batches,
            "capture": self.pcap_totals(),
            "bindings": self.cache.snapshot(),
        }

    def stats_line(self) -> str:
        """The one-line summary printed periodically on a terminal."""
        with self.stats.lock:
            packets = sum(self.stats.verdicts.values())
            accepted = self.stats.verdicts.get(0, 0)
            sent = sum(self.stats.ba_sent.values())
            limited = self.stats.ba_limited
            batches = self.stats.batches
        cap = self.pcap_totals()
        return (
            f"{packets} packets ({accepted} accepted) in {batches} batches, {sent} BAs sent ({limited} rate-limited), "
            f"{len(self.cache)} bindings, {cap.get('pcap_dropped', 0)} dropped by libpcap"
        )


def start_metrics(server: Server, host: str, port: int) -> Any:
    """Serve Prometheus metrics for ``server`` on http://HOST:PORT/metrics (needs the
    ``prometheus_client`` package: ``pip install 'kbmfast[metrics]'``). Returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    class Collector:
        def collect(self) -> Any:
            with server.stats.lock:
                verdicts = dict(server.stats.verdicts)
                sent = dict(server.stats.ba_sent)
                rr = dict(server.stats.rr_replies)
                limited, batches = server.stats.ba_limited, server.stats.batches
                buckets, total = list(server.stats.latency_buckets), server.stats.latency_sum
            packets = CounterMetricFamily("kbmfast_packets", "Mobility packets verified, by verdict", labels=["verdict"])
            for v in Verdict:
                packets.add_metric([v.name], verdicts.get(int(v), 0))
            yield packets
            acks = CounterMetricFamily("kbmfast_acks_sent", "Binding Acknowledgements sent, by status", labels=["status"])
            for status in (0, 129, 130, 131, 135, 136, 137, 138, 174):
                acks.add_metric([str(status)], sent.get(status, 0))
            yield acks
            replies = CounterMetricFamily("kbmfast_rr_replies", "Home and Care-of Tests sent (--rr)", labels=["type"])
            for name in ("HoT", "CoT"):
                replies.add_metric([name], rr.get(name, 0))
            yield replies
            yield CounterMetricFamily("kbmfast_acks_rate_limited", "Error acknowledgements not sent (rate limit)", value=limited)
            yield CounterMetricFamily("kbmfast_batches", "Batches verified", value=batches)
            cumulative, acc = [], 0
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), buckets, strict=True):
                acc += count
                cumulative.append((bound, acc))
            yield HistogramMetricFamily(
                "kbmfast_batch_latency_seconds",
                "From a batch's first packet's capture to its last answer",
                buckets=cumulative,
                sum_value=total,
            )
            cap = server.pcap_totals()
            yield CounterMetricFamily(
                "kbmfast_pcap_dropped", "Frames libpcap dropped (pcap_stats)", value=cap.get("pcap_dropped", 0)
            )
            yield CounterMetricFamily(
                "kbmfast_pcap_interface_dropped",
                "Frames the interface dropped (pcap_stats)",
                value=cap.get("pcap_interface_dropped", 0),
            )
            yield GaugeMetricFamily("kbmfast_bindings", "Entries in the binding cache", value=len(server.cache))

    registry = CollectorRegistry(auto_describe=True)
    registry.register(Collector())
    return start_http_server(port, addr=host, registry=registry)
