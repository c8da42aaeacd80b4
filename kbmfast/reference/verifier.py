"""The correspondent node's Binding Update verifier, in plain Python (the oracle).

The order of the checks is RFC 6275 §9.2 and §9.5.1 with the rule that authentication comes
before any answer (RFC 6275 §9.5.1: an unauthenticated BU is silently discarded; docs/spec-notes.md).
``Verifier.verify`` documents it step by step; csrc/verify.c follows the same steps.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
from array import array
from collections.abc import Iterable
from typing import Any

from .. import _rr
from .. import _stateformat as fmt
from .._keys import KIND_KBM, KeyTable, Peer
from .._lifecycle import DEFAULT_SYNC_MS, VERIFIER_ARGUMENTS, Durability, check_sync, track
from .._types import (
    BA_STATUS,
    DEFAULT_REKEY_LIMIT,
    FLAG_A,
    FLAG_H,
    AlternateCareOfAddress,
    BindingAuthorizationData,
    BindingUpdate,
    MalformedPacket,
    NonceIndices,
    Result,
    Verdict,
    result_from_bytes,
)
from .._util import (
    address_bytes,
    check_offsets,
    check_packet,
    check_verifier_args,
    is_routable_unicast,
    is_unicast,
    near_limit_threshold,
    wipe,
)
from . import rr as rr_wire
from . import wire
from .build import build_binding_ack
from .crypto import kbm_from_tokens, keygen_token, mac96
from .statefile import SequenceState

_addr = ipaddress.IPv6Address


def peer_kbm(peer: Peer, home: bytes, care_of: bytes, deregistration: bool) -> bytearray | None:
    """A private copy of the Kbm a peer's Binding Update is authenticated with (draft:
    configured; RFC 4449: derived), for the caller to wipe; None if the table removed or
    rekeyed the peer meanwhile (its key was being overwritten)."""
    key = bytearray(peer.key)  # one copy, atomic under the GIL: before a wipe or after it
    if peer.wiped:
        wipe(key)
        return None
    if peer.kind == KIND_KBM:
        return key
    try:
        hkt = keygen_token(key, home, peer.home_nonce, 0)
        ckt = None if deregistration else keygen_token(key, care_of, peer.care_of_nonce, 1)
    finally:
        wipe(key)
    return bytearray(kbm_from_tokens(hkt, ckt))


def current_kbm(keys: KeyTable, home: bytes, care_of: bytes, deregistration: bool) -> tuple[Peer, bytearray] | None:
    """The peer configured for ``home`` and a copy of its Kbm (:func:`peer_kbm`), or None."""
    while True:
        peer = keys.peer(home)
        if peer is None:
            return None
        kbm = peer_kbm(peer, home, care_of, deregistration)
        if kbm is not None:
            return peer, kbm


def peer_fingerprint(salt: bytes, peer: Peer) -> int:
    """The fingerprint of a peer's whole key identity under a state file's salt."""
    return fmt.fingerprint(salt, peer.home, peer.kind, peer.key, peer.home_nonce, peer.care_of_nonce)


class Verifier:
    """Authorizes Binding Updates from preconfigured peers and tracks their sequence numbers.

    The pure-Python oracle: the same answers as ``kbmfast.Verifier``, one call at a time.
    """

    def __init__(
        self,
        keys: KeyTable,
        *,
        state: str | os.PathLike[str] | None = None,
        rekey_limit: int = DEFAULT_REKEY_LIMIT,
        max_lifetime: int | None = None,
        sync: str | int = DEFAULT_SYNC_MS,
        return_routability: _rr.ReturnRoutability | None = None,
        compat: str = "rfc6275",
    ) -> None:
        check_verifier_args(keys, KeyTable, rekey_limit, max_lifetime)
        policy = check_sync(sync)
        self.keys = keys
        self.rekey_limit = rekey_limit
        self.max_lifetime = max_lifetime
        self.return_routability = _rr.check_rr(return_routability)
        self.compat = _rr.check_compat(compat)
        self._rr_seq = None if return_routability is None else _rr.RRSequences(return_routability.max_peers)
        self._snap: _rr.Snapshot | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._forked = False
        self._state = SequenceState(state)
        self._fps: dict[bytes, tuple[Peer, int]] = {}
        try:
            with keys._lock:  # no change between reading the peers and subscribing is missed
                for peer in keys.peers():
                    self._install(peer)
                keys.subscribe(self._on_key_change)
        except BaseException:
            self._state.close()
            raise
        self._durability = None if state is None else Durability(policy, self.flush)
        track(self)

    def _install(self, peer: Peer) -> None:
        """Give a peer its slot and its key's fingerprint; refuse a used-up or earlier key."""
        self._state.ensure(peer.home)
        fp = peer_fingerprint(self._state.salt, peer)
        status = self._state.key_status(peer.home, fp, self.rekey_limit)
        if status != fmt.KEY_OK:
            raise ValueError(fmt.key_refusal(peer.home, status, self.rekey_limit))
        self._fps[peer.home] = (peer, fp)

    def _fingerprint(self, peer: Peer) -> int:
        known = self._fps.get(peer.home)
        if known is not None and known[0] is peer:
            return known[1]
        return peer_fingerprint(self._state.salt, peer)  # a table change another listener refused

    def _on_key_change(self, home: bytes, peer: Peer | None) -> None:
        with self._lock:
            if self._closed or self._forked:
                return
            if peer is not None:
                self._install(peer)
            else:
                self._fps.pop(home, None)

    # -- verification --------------------------------------------------------------------------

    def verify(self, packet: Any) -> Result:
        """Verify one packet (bytes-like, from the IPv6 version nibble) and update state."""
        p = check_packet(packet, "packet")
        with self._lock:
            self._take_snapshot()
            result = self._verify(p)
            self._state.check()  # no answer from a file found changed under it
        self._changed()
        return result

    def _take_snapshot(self) -> None:
        # the RR secrets as of this call: the clock is read once per call (both backends)
        if self.return_routability is not None:
            self._snap = self.return_routability.snapshot()

    def _changed(self) -> None:
        if self._durability is not None:
            self._durability.changed()

    def _open(self) -> None:
        if self._forked:
            raise ValueError("this Verifier was created before a fork: create Verifiers in the process that uses them")
        if self._closed:
            raise ValueError("this Verifier is closed")

    def _disown(self) -> None:
        """In a forked child: the parent's open state file is not ours to use."""
        self._forked = True

    def _verify(self, p: bytes) -> Result:
        self._open()
        # 0-1: IPv6 structure; a CN drops a non-routable HAO and any type 2 Routing header.
        try:
            layout = wire.scan(p)
        except MalformedPacket:
            return Result(Verdict.MALFORMED)
        if layout.home_address is not None and not is_routable_unicast(layout.home_address):
            return Result(Verdict.MALFORMED)
        if layout.routing_address is not None:
            return Result(Verdict.MALFORMED)
        # 1: checksum, then the MH's own checks (unknown MH Type is "another message").
        mh = layout.mh_offset
        src, dst = wire.pseudo_addresses(p, layout)
        if not wire.checksum_ok(src, dst, p[mh:]):
            return Result(Verdict.BAD_CHECKSUM)
        try:
            msg = wire.parse_mh(p, mh)
        except MalformedPacket:
            return Result(Verdict.MALFORMED)
        if not isinstance(msg, BindingUpdate):
            return Result(Verdict.NOT_BINDING_UPDATE)
        # 2-3: addresses.
        source, cn = p[8:24], p[24:40]
        home = layout.home_address if layout.home_address is not None else source
        alt = next((o.address.packed for o in msg.options if isinstance(o, AlternateCareOfAddress)), None)
        care_of = alt if alt is not None else source
        if not is_unicast(source) or not is_routable_unicast(home) or not is_routable_unicast(care_of):
            return Result(Verdict.MALFORMED)
        # the fields every Result of this Binding Update has (its addresses become IPv6Address
        # objects when a field is first read: see Result)
        base: dict[str, Any] = {
            "home": home,
            "care_of": care_of,
            "correspondent": cn,
            "sequence": msg.sequence,
            "lifetime": msg.lifetime,
            "ack": bool(msg.flags & FLAG_A),
            "source": source,
        }
        # 4-5: options.
        bad = next((o for o in msg.options if isinstance(o, BindingAuthorizationData)), None)
        if bad is None:
            return result_from_bytes(Verdict.MISSING_AUTHORIZATION, **base)
        home_registration = bool(msg.flags & FLAG_H)
        if home_registration and any(isinstance(o, NonceIndices) for o in msg.options):
            return Result(Verdict.MALFORMED)
        # 6-7: key selection and the authenticator (Nonce Indices ignored, RFC 4449 §3). With
        # compat="rfc3775", care-of == home is a de-registration whatever the lifetime.
        dereg = msg.lifetime == 0 or (self.compat == "rfc3775" and home == care_of)
        found = current_kbm(self.keys, home, care_of, dereg)
        if found is None:
            ni = next((o for o in msg.options if isinstance(o, NonceIndices)), None)
            if self._snap is None or ni is None:
                return result_from_bytes(Verdict.NOT_CONFIGURED, **base)
            return self._verify_rr(p, mh, msg, bad.authenticator, ni, dereg, base)
        peer, kbm = found
        try:
            ok = self._mac_ok(kbm, home, care_of, cn, p[mh:], bad.authenticator, dereg)
        finally:
            wipe(kbm)
        if not ok:
            return result_from_bytes(Verdict.BAD_AUTHENTICATOR, **base)
        # Authenticated from here on: every rejection is answered.
        if home_registration:
            return result_from_bytes(Verdict.HOME_REGISTRATION, ba_status=131, **base)
        has_seq, last, advance, current = fmt.unpack_word(self._state.get(home))
        seq = msg.sequence
        if has_seq and not 1 <= (seq - last) % 65536 <= 32767:
            return result_from_bytes(Verdict.SEQUENCE_OUT_OF_WINDOW, ba_status=135, last_sequence=last, **base)
        if not dereg and home == care_of:
            return result_from_bytes(Verdict.INVALID_CARE_OF, ba_status=174, **base)
        fp = self._fingerprint(peer)
        if current not in (0, fp):
            # The slot counts for another key (another process installed this one, or still
            # uses an older one): an earlier key is refused; otherwise the slot's key goes
            # into the history before the word names this one, and the advance starts over.
            if not self._state.retire(home, current, fp):
                return result_from_bytes(Verdict.KEY_EXHAUSTED, ba_status=129, **base)
            advance = 0
        step = (seq - last) % 65536 if has_seq else 0
        if advance + step > self.rekey_limit:
            return result_from_bytes(Verdict.KEY_EXHAUSTED, ba_status=129, **base)
        self._state.put(home, fmt.pack_word(True, seq, advance + step, fp))
        return result_from_bytes(Verdict.ACCEPTED, ba_status=0 if base["ack"] else None, **base)

    def _mac_ok(self, kbm: bytearray, home: bytes, care_of: bytes, cn: bytes, mh: bytes, got: bytes, dereg: bool) -> bool:
        """The authenticator check: over the home address for a de-registration (RFC 6275
        §6.2.7), else the care-of; compat="rfc3775" also takes a de-registration's MAC over
        the care-of address (what UMIP's mobile nodes send)."""
        if hmac.compare_digest(mac96(kbm, home if dereg else care_of, cn, mh), got):
            return True
        return dereg and self.compat == "rfc3775" and care_of != home and hmac.compare_digest(mac96(kbm, care_of, cn, mh), got)

    def _verify_rr(
        self, p: bytes, mh: int, msg: BindingUpdate, got: bytes, ni: NonceIndices, dereg: bool, base: dict[str, Any]
    ) -> Result:
        """RFC 6275 §9.5.1 for a peer without a preconfigured key: nonce indices, the RR Kbm,
        the sequence in the bounded RR table (docs/return-routability.md)."""
        snap, table = self._snap, self._rr_seq
        assert snap is not None and table is not None
        indices = (ni.home_nonce_index, ni.care_of_nonce_index)
        base["nonce_indices"] = indices
        home, care_of, cn = base["home"], base["care_of"], base["correspondent"]
        code = _rr.expired_verdict(snap, indices, dereg)
        if code:
            v = Verdict(code)
            return result_from_bytes(v, ba_status=BA_STATUS[v], **base)
        kbm = _rr.rr_kbm(snap, home, care_of, indices, dereg)
        assert kbm is not None
        try:
            ok = self._mac_ok(kbm, home, care_of, cn, p[mh:], got, dereg)
        finally:
            wipe(kbm)
        if not ok:
            return result_from_bytes(Verdict.BAD_AUTHENTICATOR, **base)
        seq = msg.sequence
        last = table.last(home, snap)
        if last is not None and not 1 <= (seq - last) % 65536 <= 32767:
            return result_from_bytes(Verdict.SEQUENCE_OUT_OF_WINDOW, ba_status=135, last_sequence=last, **base)
        if not dereg and home == care_of:
            return result_from_bytes(Verdict.INVALID_CARE_OF, ba_status=174, **base)
        if not table.put(home, seq, snap):
            return result_from_bytes(Verdict.RR_TABLE_FULL, ba_status=130, **base)
        return result_from_bytes(Verdict.ACCEPTED, ba_status=0 if base["ack"] else None, **base)

    def verify_batch(self, packets: Iterable[Any], results: bool = False) -> Any:
        """Verify packets in order, as if one by one: verdict codes (uint8 array) or Results."""
        checked = [check_packet(p, f"packets[{i}]") for i, p in enumerate(packets)]
        with self._lock:
            self._open()
            self._take_snapshot()
            out = [self._verify(p) for p in checked]
            self._state.check()
        self._changed()
        if results:
            return out
        return array("B", [r.verdict for r in out])

    def verify_buffer(self, buffer: Any, offsets: Any) -> array[int]:
        """Zero-copy form: packet i is ``buffer[offsets[i]:offsets[i+1]]``; uint8 verdicts."""
        buf, offs = check_offsets(buffer, offsets)
        with self._lock:
            self._open()
            self._take_snapshot()
            out = array("B", [self._verify(bytes(buf[offs[i] : offs[i + 1]])).verdict for i in range(len(offs) - 1)])
            self._state.check()
        self._changed()
        return out

    # -- answers and state ---------------------------------------------------------------------

    def acknowledge(self, result: Result) -> bytes | None:
        """The authenticated Binding Acknowledgement to send for ``result``, or None."""
        return acknowledge(self.keys, self.max_lifetime, result, build_binding_ack, self.return_routability, self.compat)

    def reply(self, packet: Any) -> bytes | None:
        """The Home Test or Care-of Test answering a Home Test Init or Care-of Test Init, or
        None (not one, malformed, or no ``return_routability``). Creates no state."""
        p = check_packet(packet, "packet")
        rr = self.return_routability
        with self._lock:
            self._open()
        if rr is None:
            return None
        return rr_wire.reply(rr.snapshot(current=True), p)

    def reply_buffer(self, buffer: Any, offsets: Any) -> tuple[bytes, array[int]]:
        """``reply`` for packet i = ``buffer[offsets[i]:offsets[i+1]]``: the replies back to
        back and their n + 1 offsets (an empty slice: no reply)."""
        buf, offs = check_offsets(buffer, offsets)
        rr = self.return_routability
        with self._lock:
            self._open()
        out = bytearray()
        ends = array("Q", [0])
        snap = None if rr is None else rr.snapshot(current=True)
        for i in range(len(offs) - 1):
            r = None if snap is None else rr_wire.reply(snap, bytes(buf[offs[i] : offs[i + 1]]))
            if r is not None:
                out += r
            ends.append(len(out))
        return bytes(out), ends

    def last_sequence(self, home: Any) -> int | None:
        """The last sequence number accepted from ``home``, or None."""
        hoa = address_bytes(home, "home")
        with self._lock:
            self._open()
            has_seq, last, _, _ = fmt.unpack_word(self._state.get(hoa))
        return last if has_seq else None

    def keys_near_limit(self, fraction: float = 0.9) -> list[ipaddress.IPv6Address]:
        """Configured peers whose sequence advance under the current key is past ``fraction``
        of ``rekey_limit``: rekey them before they reach KEY_EXHAUSTED."""
        limit = near_limit_threshold(fraction, self.rekey_limit)
        with self._lock:
            self._open()
            return [
                _addr(peer.home)
                for peer in self.keys.peers()
                if fmt.advance_under(
                    self._state.get(peer.home), self._state.history(peer.home), self._fingerprint(peer), self.rekey_limit
                )
                >= limit
            ]

    def flush(self) -> None:
        """Push the state file to stable storage now (fsync)."""
        with self._lock:
            self._open()
            self._state.flush()

    def close(self) -> None:
        """Flush and close the state file; idempotent."""
        if self._forked:
            return
        with self._lock:
            self._closed = True
            self._state.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<reference Verifier: {len(self.keys)} peers, state={self._state.path!r}>"


Verifier.__doc__ = f"{Verifier.__doc__}{VERIFIER_ARGUMENTS}"


def acknowledge(
    keys: KeyTable,
    max_lifetime: int | None,
    result: Result,
    build: Any,
    rr: _rr.ReturnRoutability | None = None,
    compat: str = "rfc6275",
) -> bytes | None:
    """Build the BA for a Result (shared by both backends: it is not on the hot path)."""
    if not isinstance(result, Result):
        raise TypeError(f"result: expected a Result, not {type(result).__name__}")
    status = result.ba_status
    if status is None:
        return None
    if status != BA_STATUS.get(result.verdict) or result.home is None or result.care_of is None:
        raise ValueError("result: not a Result that calls for a Binding Acknowledgement")
    assert result.correspondent is not None and result.source is not None and result.lifetime is not None
    home = result.home.packed
    dereg = result.lifetime == 0 or (compat == "rfc3775" and home == result.care_of.packed)
    sequence = result.last_sequence if status == 135 else result.sequence
    assert sequence is not None
    if result.nonce_indices is not None and status in (136, 137, 138):
        # no Kbm without the nonces: the BA goes unauthenticated (RFC 6275 §9.5.4)
        return rr_wire.build_plain_ack(home, result.correspondent.packed, sequence, status, result.source.packed)
    if result.nonce_indices is not None:
        if rr is None:
            raise ValueError("result: judged by return routability, but this verifier has none")
        if keys.peer(home) is not None:
            raise KeyError(f"home {result.home} is now configured: its RR acknowledgement is not signed with RR keys")
        found_kbm = _rr.rr_kbm(rr.snapshot(), home, result.care_of.packed, result.nonce_indices, dereg)
        if found_kbm is None:
            raise KeyError(f"home {result.home}: the nonces of its Binding Update expired: cannot sign its acknowledgement")
        kbm = found_kbm
    else:
        found = current_kbm(keys, home, result.care_of.packed, dereg)
        if found is None:
            raise KeyError(f"home {result.home} is no longer configured: cannot sign its acknowledgement")
        kbm = found[1]
    care_of = home if dereg else result.care_of.packed
    lifetime = 0
    if status < 128:
        lifetime = _rr.granted_lifetime(result.lifetime, max_lifetime, result.nonce_indices is not None)
    try:
        packet: bytes = build(
            kbm,
            home=home,
            care_of=care_of,
            correspondent=result.correspondent,
            sequence=sequence,
            status=status,
            lifetime=lifetime,
            destination=result.source,
        )
    finally:
        wipe(kbm)
    return packet
