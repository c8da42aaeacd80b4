"""The C backend: the API of kbmfast.reference, answered by the C core through cffi.

Arguments are checked in Python (with the same helpers and words as the reference), the C core
does the work with the GIL released, and every C status maps to an exception in ``_raise``.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import threading
from array import array
from collections.abc import Iterable
from itertools import accumulate, chain
from typing import Any

from . import _rr
from . import _stateformat as fmt
from ._keys import KIND_KBM, KIND_KCN, KeyTable, Packed, Peer
from ._lifecycle import DEFAULT_SYNC_MS, VERIFIER_ARGUMENTS, Durability, check_sync, track
from ._mn import binding_update_list_class
from ._native_edge import ffi, lib
from ._types import (
    BA_STATUS,
    DEFAULT_REKEY_LIMIT,
    FIELDS,
    FLAG_A,
    KbmError,
    MalformedPacket,
    Message,
    Packet,
    Pad1,
    Result,
    StateFileError,
    UnknownMessage,
    Verdict,
    new_result,
)
from ._util import (
    address_bytes,
    check_kcn,
    check_offsets,
    check_packet,
    check_verifier_args,
    near_limit_threshold,
    release_key,
    wipe,
)
from .reference import build as _build
from .reference import wire
from .reference.crypto import authenticator_with, sequence_newer
from .reference.statefile import SequenceState as _SequenceState
from .reference.verifier import acknowledge as _acknowledge

# Memory C fills before Python reads it (reply_buffer's replies): not zeroed first, and kept
# per thread between calls (a fresh quarter megabyte per batch cost a page fault per 4 KiB).
_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
_reply_local = threading.local()


_REPLY_KEEP = 1 << 20  # larger buffers are not kept


def _reply_scratch(size: int) -> Any:
    """A reply buffer of at least ``size`` bytes: this thread's, unless that large."""
    if size > _REPLY_KEEP:
        return _uncleared("uint8_t[]", size)
    buf = getattr(_reply_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _reply_local.buf = _uncleared("uint8_t[]", max(size, 1))
    return buf


_addr = ipaddress.IPv6Address
if (KIND_KBM, KIND_KCN) != (lib.KBM_KIND_KBM, lib.KBM_KIND_KCN):  # pragma: no cover - kbm.h and _keys change together
    raise ImportError("kbmfast: the key kinds of _keys and kbm.h differ")
_UNKNOWN_MH = 100
_ORPHANS: list[Any] = []  # C verifiers inherited through fork(): left alone
_MAX_OPTIONS = 2048


def _raise(rc: int, what: str, path: str | None = None) -> None:
    """Map a negative kbm_status to its exception (the one place this is done); ``path`` is the
    state file, for the words of the file's own problems (_stateformat's, as in the reference)."""
    if rc in (lib.KBM_ESYMLINK, lib.KBM_ENOTREG, lib.KBM_EOWNER, lib.KBM_EMODE):
        raise fmt.unsafe_error(path or "")
    if rc == lib.KBM_EBUSY:
        raise StateFileError(f"state file {path} {fmt.BEING_REWRITTEN}")
    if rc == lib.KBM_ECHANGED:
        raise fmt.changed_error(path or "")
    if rc == lib.KBM_ENOMEM:
        raise MemoryError(what)
    if rc == lib.KBM_EIO:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    if rc == lib.KBM_ESTATE:
        raise StateFileError(f"{what}: damaged, or not a valid kbmfast state file (see 'kbmfast state check')")
    if rc == lib.KBM_EFULL:
        raise KbmError(f"{what}: the sequence table is full")
    if rc == lib.KBM_ENOENT:
        raise KeyError(what)
    raise ValueError(f"{what}: invalid argument (status {rc})")


# ---------------------------------------------------------------------------------------------
# Pure functions


def _key_arg(key: bytes | bytearray) -> Any:
    """A key for the C core: bytes as they are, a (private) bytearray in place."""
    return key if type(key) is bytes else ffi.from_buffer("uint8_t[]", key)


def mac96(kbm: bytes | bytearray, care_of: bytes, correspondent: bytes, mh: bytes) -> bytes:
    """The authenticator over already-checked arguments (the builders' MAC)."""
    out = ffi.new("uint8_t[12]")
    rc = lib.kbm_authenticator(_key_arg(kbm), care_of, correspondent, mh, len(mh), out)
    if rc:
        _raise(rc, "authenticator")
    return bytes(ffi.buffer(out))


def authenticator(kbm: Any, care_of: Any, correspondent: Any, mh: Any) -> bytes:
    """The 12-byte Binding Authorization Data value for the complete Mobility Header ``mh``."""
    return authenticator_with(mac96, kbm, care_of, correspondent, mh)


def derive_kbm(
    kcn: Any,
    home_nonce: Any,
    care_of_nonce: Any,
    *,
    home: Any,
    care_of: Any,
    deregistration: bool = False,
) -> bytes:
    """RFC 4449: derive Kbm from a preconfigured Kcn and nonces the return-routability way."""
    key, hn, cn = check_kcn(kcn, home_nonce, care_of_nonce)
    try:
        hoa = address_bytes(home, "home")
        coa = address_bytes(care_of, "care_of")
        out = ffi.new("uint8_t[20]")
        rc = lib.kbm_derive(_key_arg(key), len(key), hn, len(hn), cn, len(cn), hoa, coa, 1 if deregistration else 0, out)
    finally:
        release_key(key)
    if rc:
        _raise(rc, "derive_kbm")
    return bytes(ffi.buffer(out))


build_binding_update, build_binding_ack = _build.make_builders(mac96)


def parse_packet(packet: Any) -> Packet:
    """Parse an IPv6 packet carrying a Mobility Header; raise MalformedPacket if it is not one."""
    p = check_packet(packet, "packet")
    layout = ffi.new("kbm_layout *")
    where = ffi.new("uint32_t *")
    rc = lib.kbm_scan(p, len(p), layout, where)
    if rc:
        raise MalformedPacket(rc, where[0])
    opts = ffi.new("kbm_option[]", _MAX_OPTIONS)
    nopts = ffi.new("size_t *")
    rc = lib.kbm_parse_mh(p, len(p), layout, opts, _MAX_OPTIONS, nopts, where)
    if rc not in (0, _UNKNOWN_MH):
        raise MalformedPacket(rc, where[0])
    mh = layout.mh
    message = _message(p, mh, rc == _UNKNOWN_MH, [(o.type, mh + o.offset, o.len) for o in opts[0 : nopts[0]]])
    return Packet(
        source=_addr(p[8:24]),
        destination=_addr(p[24:40]),
        home_address=None if layout.hao < 0 else _addr(p[layout.hao : layout.hao + 16]),
        routing_address=None if layout.rh2 < 0 else _addr(p[layout.rh2 : layout.rh2 + 16]),
        mh_offset=mh,
        checksum=p[mh + 4] << 8 | p[mh + 5],
        checksum_valid=bool(lib.kbm_checksum_ok(p, len(p), layout)),
        message=message,
    )


def _message(p: bytes, mh: int, unknown: bool, found: list[tuple[int, int, int]]) -> Message:
    # C decided what is well formed and where the options are; the fields decode alike
    b = p[mh:]
    if unknown:
        return UnknownMessage(b[2], b[6:])
    opts = tuple(Pad1() if t == 0 else wire.decode_option(t, p[at + 2 : at + 2 + n]) for t, at, n in found)
    return wire.decode_message(b, opts)


# ---------------------------------------------------------------------------------------------
# The verifier


class Verifier:
    """Authorizes Binding Updates from preconfigured peers and tracks their sequence numbers.

    The same contract as ``kbmfast.reference.Verifier``; the work runs in the C core with the
    GIL released, so any number of threads may verify at once, and several processes may
    share one ``state`` file.
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
        use_kernel()
        policy = check_sync(sync)
        self.keys = keys
        self.rekey_limit = rekey_limit
        self.max_lifetime = max_lifetime
        self.return_routability = _rr.check_rr(return_routability)
        self.compat = _rr.check_compat(compat)
        self._pushed: _rr.Snapshot | None = None
        self._push_lock = threading.Lock()
        self._durability: Durability | None = None
        self._forked = False
        self._path = None if state is None else fmt.prepare(state)
        status = ffi.new("int *")
        ptr = lib.kbm_verifier_new(ffi.NULL if self._path is None else os.fsencode(self._path), rekey_limit, status)
        if ptr == ffi.NULL:
            _raise(status[0], f"state file {self._path}", self._path)
        self._v: Any = ffi.gc(ptr, lib.kbm_verifier_free)
        lib.kbm_verifier_set_compat(ptr, 1 if self.compat == "rfc3775" else 0)
        if return_routability is not None:
            rc = lib.kbm_rr_enable(ptr, return_routability.max_peers)
            if rc:
                _raise(rc, "return routability")
            return_routability.subscribe(self._on_regenerate)
        # the packed peers stay as they are while the core reads them, and no change made between
        # reading the peers and subscribing is missed (a peer removed then would keep its key here)
        with keys._lock:
            packed = keys.packed()
            if packed is not None:
                self._set_packed(packed)
            else:
                self._set_peers(keys.peers())
            keys.subscribe(self._on_key_change)
        if self._path is not None:
            self._durability = Durability(policy, self.flush)
        track(self)

    def _unusable(self) -> ValueError:
        if self._forked:
            return ValueError("this Verifier was created before a fork: create Verifiers in the process that uses them")
        return ValueError("this Verifier is closed")

    def _disown(self) -> None:
        """In a forked child: never touch the parent's C state (its locks and counters)."""
        self._forked = True
        v, self._v = self._v, None
        if v is not None:
            _ORPHANS.append(v)  # never freed here: the parent owns it

    def _handle(self) -> Any:
        v = self._v
        if v is None:
            raise self._unusable()
        return v

    def _set_peers(self, peers: list[Peer]) -> None:
        if not peers:
            return
        # every key and nonce in one buffer (wiped below): join copies each key from its
        # bytearray straight into it (no bytes object holds one); the C core fills the specs
        material = bytearray().join(chain.from_iterable((p.key, p.home_nonce, p.care_of_nonce) for p in peers))
        try:
            self._set_specs(
                b"".join(p.home for p in peers), bytes(p.kind for p in peers), array("H", [len(p.key) for p in peers]),
                bytes(len(p.home_nonce) for p in peers), bytes(len(p.care_of_nonce) for p in peers), material,
            )  # fmt: skip
        finally:
            wipe(material)

    def _set_packed(self, packed: Packed) -> None:
        """The peers of a key file the C reader read, as it left them (no Peer objects)."""
        if packed.n:
            self._set_specs(packed.homes, packed.kinds, packed.key_lens, packed.hn_lens, packed.cn_lens, packed.material)

    def _set_specs(
        self, homes: bytes, kinds: bytes, key_lens: array[int], hn_lens: bytes, cn_lens: bytes, material: bytearray
    ) -> None:
        """Give the C core peers laid out as kbm_peer_specs reads them (kinds: KIND_*)."""
        n = len(kinds)
        specs = ffi.new("kbm_peer_spec[]", n)
        lib.kbm_peer_specs(
            n, homes, kinds, ffi.from_buffer("uint16_t[]", key_lens), hn_lens, cn_lens,
            ffi.from_buffer("uint8_t[]", material, require_writable=True), specs,
        )  # fmt: skip
        failed = ffi.new("size_t *")
        rc = lib.kbm_verifier_set_peers(self._handle(), specs, n, failed)
        if rc in (lib.KBM_EEXHAUSTED, lib.KBM_EEARLIER):
            status = fmt.KEY_EXHAUSTED if rc == lib.KBM_EEXHAUSTED else fmt.KEY_EARLIER
            i = failed[0]
            raise ValueError(fmt.key_refusal(homes[16 * i : 16 * i + 16], status, self.rekey_limit))
        if rc:
            _raise(rc, f"state file {self._path}" if self._path else "adding peers", self._path)

    def _on_regenerate(self) -> None:
        """Kcn was regenerated: the C core wipes the old one's midstates and nonces now."""
        v = self._v
        if v is not None:
            lib.kbm_rr_forget(v)

    def _on_key_change(self, home: bytes, peer: Peer | None) -> None:
        if self._v is None:
            return
        if peer is not None:
            self._set_peers([peer])
        else:
            rc = lib.kbm_verifier_remove_peer(self._v, home)
            if rc:
                _raise(rc, f"removing peer {_addr(home)}", self._path)

    # -- verification --------------------------------------------------------------------------

    def _push(self, v: Any, current: bool = False) -> None:
        """Give the C core the RR secrets as of now when they changed (the clock is read once
        per call, as in the reference)."""
        rr = self.return_routability
        if rr is None:
            return
        snap = rr.snapshot(current=current)
        if snap is self._pushed:
            return
        with self._push_lock:  # never an older snapshot over a newer one (threads race here)
            pushed = self._pushed
            if pushed is not None and snap.version <= pushed.version:
                return
            material = bytearray(snap.kcn) + b"".join(snap.nonces)
            kcn = ffi.from_buffer("uint8_t[]", material)
            try:
                rc = lib.kbm_rr_set(v, kcn, len(snap.kcn), snap.oldest, kcn + len(snap.kcn), len(snap.nonces))
            finally:
                wipe(material)
            if rc:
                _raise(rc, "return routability")
            self._pushed = snap

    def _run(self, buf: Any, length: int, offsets: Any, n: int, details: Any) -> array[int]:
        v = self._v
        if v is None:
            raise self._unusable()
        if self.return_routability is not None:
            self._push(v)
        verdicts = _ZERO_VERDICT * n
        try:
            scratch = _SCRATCH.pop()
        except IndexError:
            scratch = _scratch()
        rc = _kbm_verify(v, buf, length, offsets, n, _from_buffer("uint8_t[]", verdicts, True), details, scratch[6])
        _SCRATCH.append(scratch)
        if rc:
            _raise(rc, "verify", self._path)
        if self._durability is not None:
            self._durability.changed()
        return verdicts

    def verify(self, packet: Any) -> Result:
        """Verify one packet (bytes-like, from the IPv6 version nibble) and update state."""
        p = packet if type(packet) is bytes else check_packet(packet, "packet")
        v = self._v
        if v is None:
            raise self._unusable()
        if self.return_routability is not None:
            self._push(v)
        try:  # C buffers reused from call to call (one set per thread verifying at once)
            scratch = _SCRATCH.pop()
        except IndexError:
            scratch = _scratch()
        offsets, c_offsets, verdict, c_verdict, detail, c_detail, c_where = scratch
        n = offsets[1] = len(p)
        rc = _kbm_verify(v, p, n, c_offsets, 1, c_verdict, c_detail, c_where)
        if rc:
            _raise(rc, "verify", self._path)
        if self._durability is not None:
            self._durability.changed()
        r = new_result(Result)  # the verdict now, the other fields when first read (_fill)
        fields = r.__dict__
        fields["verdict"] = _VERDICTS[verdict[0]]
        fields["_pending"] = (_fill, p, bytes(detail), 0)
        _SCRATCH.append(scratch)
        return r

    def verify_batch(self, packets: Iterable[Any], results: bool = False) -> Any:
        """Verify packets in order, as if one by one: verdict codes (uint8 array) or Results."""
        items = packets if type(packets) is list else list(packets)
        if not set(map(type, items)) <= _BYTES:  # convert (or refuse) the others, by index
            items = [p if type(p) is bytes else check_packet(p, f"packets[{i}]") for i, p in enumerate(items)]
        buf = b"".join(items)
        offsets = array("Q", accumulate(map(len, items), initial=0))
        n = len(items)
        c_offsets = ffi.from_buffer("uint64_t[]", offsets)
        if not results:
            return self._run(buf, len(buf), c_offsets, n, ffi.NULL)
        details = bytearray(_DETAIL.size * max(n, 1))
        verdicts = self._run(buf, len(buf), c_offsets, n, ffi.from_buffer("kbm_detail[]", details))
        return _results(items, verdicts, details)

    def verify_buffer(self, buffer: Any, offsets: Any) -> array[int]:
        """Zero-copy form: packet i is ``buffer[offsets[i]:offsets[i+1]]``; uint8 verdicts."""
        buf: Any
        offs: Any
        if type(offsets) is array and offsets.typecode == "Q" and offsets and _plain_bytes(buffer):
            buf, offs = buffer, offsets  # the usual arguments, which check_offsets passes as they are
        else:
            buf, offs = check_offsets(buffer, offsets, walk=False)
        c_buf = ffi.from_buffer("uint8_t[]", buf)
        c_offs = ffi.from_buffer("uint64_t[]", offs)
        if int(ffi.cast("uintptr_t", c_offs)) % 8:  # a misaligned view: C loads whole words
            c_offs = ffi.new("uint64_t[]", offs.tolist())
        n = len(offs) - 1
        try:
            return self._run(c_buf, len(buf), c_offs, n, ffi.NULL)
        except ValueError:
            check_offsets(buffer, offsets)  # the reference's words for what is wrong
            raise

    # -- answers and state ---------------------------------------------------------------------

    def acknowledge(self, result: Result) -> bytes | None:
        """The authenticated Binding Acknowledgement to send for ``result``, or None."""
        return _acknowledge(self.keys, self.max_lifetime, result, build_binding_ack, self.return_routability, self.compat)

    def reply(self, packet: Any) -> bytes | None:
        """The Home Test or Care-of Test answering a Home Test Init or Care-of Test Init, or
        None (not one, malformed, or no ``return_routability``). Creates no state."""
        p = check_packet(packet, "packet")
        out, ends = self._reply(p, len(p), ffi.new("uint64_t[]", [0, len(p)]), 1)
        return out if ends[1] else None

    def reply_buffer(self, buffer: Any, offsets: Any) -> tuple[bytes, array[int]]:
        """``reply`` for packet i = ``buffer[offsets[i]:offsets[i+1]]``, in C with the GIL
        released: the replies back to back and their n + 1 offsets (an empty slice: no reply)."""
        buf, offs = check_offsets(buffer, offsets, walk=False)
        c_offs = ffi.from_buffer("uint64_t[]", offs)
        if int(ffi.cast("uintptr_t", c_offs)) % 8:  # a misaligned view: C loads whole words
            c_offs = ffi.new("uint64_t[]", offs.tolist())
        try:
            return self._reply(ffi.from_buffer("uint8_t[]", buf), len(buf), c_offs, len(offs) - 1)
        except ValueError:
            check_offsets(buffer, offsets)
            raise

    def _reply(self, buf: Any, length: int, c_offs: Any, n: int) -> tuple[bytes, array[int]]:
        v = self._handle()
        rr = self.return_routability
        if rr is None:
            return b"", array("Q", bytes(8 * (n + 1)))
        snap = rr.snapshot(current=True)  # this call's secrets, whatever other threads push
        kcn = bytearray(snap.kcn)
        out = _reply_scratch(lib.KBM_RR_REPLY_SIZE * n)  # C writes every byte returned
        ends = array("Q", bytes(8 * (n + 1)))
        where = ffi.new("size_t *")
        try:
            rc = lib.kbm_rr_reply(
                v, ffi.from_buffer("uint8_t[]", kcn), len(kcn), snap.kcn_id, snap.newest, snap.nonces[-1], buf, length, c_offs, n,
                out, ffi.from_buffer("uint64_t[]", ends), where,
            )  # fmt: skip
        finally:
            wipe(kcn)
        if rc:
            _raise(rc, "reply")
        return ffi.buffer(out, ends[-1])[:], ends

    def last_sequence(self, home: Any) -> int | None:
        """The last sequence number accepted from ``home``, or None."""
        hoa = address_bytes(home, "home")
        seq = ffi.new("uint16_t *")
        rc = lib.kbm_verifier_last_sequence(self._handle(), hoa, seq)
        if rc < 0:
            _raise(rc, f"state file {self._path}", self._path)
        return int(seq[0]) if rc else None

    def keys_near_limit(self, fraction: float = 0.9) -> list[ipaddress.IPv6Address]:
        """Configured peers whose sequence advance under the current key is past ``fraction``
        of ``rekey_limit``: rekey them before they reach KEY_EXHAUSTED."""
        limit = near_limit_threshold(fraction, self.rekey_limit)
        advance = ffi.new("uint32_t *")
        near = []
        for peer in self.keys.peers():
            rc = lib.kbm_verifier_key_advance(self._handle(), peer.home, advance)
            if rc < 0:
                _raise(rc, f"state file {self._path}", self._path)
            if rc and advance[0] >= limit:
                near.append(_addr(peer.home))
        return near

    def flush(self) -> None:
        """Push the state file to stable storage now (msync + fsync)."""
        rc = lib.kbm_verifier_flush(self._handle())
        if rc:
            _raise(rc, f"state file {self._path}", self._path)

    def close(self) -> None:
        """Flush and close the state file, wipe the keys from C memory; idempotent."""
        v, self._v = self._v, None
        if v is not None:
            rc = lib.kbm_verifier_flush(v)
            # The C side (keys wiped, state unmapped) is freed when the last reference goes:
            # now, or when a call another thread is still making returns.
            del v
            if rc:
                _raise(rc, f"state file {self._path}", self._path)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kbmfast Verifier: {len(self.keys)} peers, state={self._path!r}>"


Verifier.__doc__ = f"{Verifier.__doc__}{VERIFIER_ARGUMENTS}"


# ---------------------------------------------------------------------------------------------
# The verification hot path's helpers. A Result's address objects cost more to build in Python
# than the C core takes to verify the packet, so verify() gives its Result the verdict only and
# leaves the other fields to _fill, which computes them from the packet and the kbm_detail the
# core wrote when one is first read (see _types.Result). Everything per call is a table
# lookup or reused.

#: kbm_detail (home, care_of, sequence, lifetime, flags, last_sequence, nonce), read straight
#: from the bytes the core wrote, in one unpack instead of seven cffi attribute reads.
_DETAIL = struct.Struct("<iiHHHHi")
if ffi.sizeof("kbm_detail") != _DETAIL.size or [
    ffi.offsetof("kbm_detail", f) for f in ("home", "care_of", "sequence", "lifetime", "flags", "last_sequence", "nonce")
] != [0, 4, 8, 10, 12, 14, 16]:  # pragma: no cover - kbm.h and this line change together
    raise ImportError("kbmfast: kbm_detail's layout does not match kbmfast.fast._DETAIL")
_unpack_detail = _DETAIL.unpack_from

#: Verdict code -> Verdict, and the Binding Acknowledgement status it calls for (ACCEPTED: see
#: _fill), without Verdict(code)'s enum machinery.
_VERDICTS = tuple(Verdict(code) for code in range(len(Verdict)))
_BA_STATUS = tuple(BA_STATUS.get(v) for v in _VERDICTS)
_ACCEPTED = Verdict.ACCEPTED
_OUT_OF_WINDOW = Verdict.SEQUENCE_OUT_OF_WINDOW

#: 16 address bytes -> IPv6Address (immutable, so shared). Peers' addresses repeat from packet
#: to packet; each cache is emptied when it reaches _ADDRESSES_MAX entries (a few MB at most).
_ADDRESSES: dict[bytes, ipaddress.IPv6Address] = {}
_ADDRESSES_MAX = 1 << 15
_from_bytes = int.from_bytes
_new_object = object.__new__


def _new_address(b: bytes) -> ipaddress.IPv6Address:
    """IPv6Address(b) for 16 bytes, without the constructor's type dispatch (a third of its
    cost): the two slots it would set. Checked against the constructor below."""
    a: ipaddress.IPv6Address = _new_object(_addr)
    a._ip = _from_bytes(b, "big")  # type: ignore[attr-defined]
    a._scope_id = None  # type: ignore[attr-defined]
    return a


def _address(b: bytes) -> ipaddress.IPv6Address:
    a = _ADDRESSES.get(b)
    if a is None:
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        a = _ADDRESSES[b] = _new_address(b)
    return a


#: packet[8:64] of the usual layout (source | destination | Destination Options header with the
#: home address at 48) -> (source, correspondent, home): one lookup instead of three.
_TRIPLES: dict[bytes, tuple[ipaddress.IPv6Address, ipaddress.IPv6Address, ipaddress.IPv6Address]] = {}


def _triple(key: bytes) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Address, ipaddress.IPv6Address]:
    if len(_TRIPLES) >= _ADDRESSES_MAX:
        _TRIPLES.clear()
    t = _TRIPLES[key] = (_address(key[0:16]), _address(key[16:32]), _address(key[40:56]))
    return t


def _new_address_checked() -> bool:
    samples = [bytes(16), bytes(range(16)), b"\xff" * 16, _addr("::ffff:192.0.2.1").packed, _addr("2001:db8::1").packed]
    try:
        pairs = [(_new_address(b), _addr(b)) for b in samples]
    except (AttributeError, TypeError):  # pragma: no cover - IPv6Address changed its slots
        return False
    return all(
        a == b and hash(a) == hash(b) and str(a) == str(b) and a.packed == b.packed and a.scope_id == b.scope_id for a, b in pairs
    )


if not _new_address_checked():  # pragma: no cover - this Python's IPv6Address is built differently
    _new_address = _addr  # type: ignore[assignment]


def _fill(d: dict[str, Any], pending: tuple[Any, ...]) -> None:
    """Set the fields of a Result verify() made, in its dict (reading a field calls this the
    first time): ``pending`` is (_fill, the packet, the bytes holding its kbm_detail, the
    detail's offset in them)."""
    _, p, details, at = pending
    home, care_of, sequence, lifetime, flags, last, nonce = _unpack_detail(details, at)
    if home < 0:  # not a well-formed Binding Update: nothing but the verdict
        d.update(_NO_FIELDS)
    else:
        v = d["verdict"]
        ack = (flags & FLAG_A) != 0
        if home == 48 and care_of == 8:  # the usual layout: a Home Address option, no Alternate CoA
            source, correspondent, home_address = _TRIPLES.get(key := p[8:64]) or _triple(key)
            d["home"] = home_address
            d["care_of"] = source
        else:
            source, correspondent = _address(p[8:24]), _address(p[24:40])
            d["home"] = _address(p[home : home + 16])
            d["care_of"] = source if care_of == 8 else _address(p[care_of : care_of + 16])
        d["correspondent"] = correspondent
        d["sequence"] = sequence
        d["lifetime"] = lifetime * 4
        d["ack"] = ack
        d["ba_status"] = _BA_STATUS[v] if v is not _ACCEPTED else (0 if ack else None)
        d["last_sequence"] = last if v is _OUT_OF_WINDOW else None
        d["source"] = source
        d["nonce_indices"] = None if nonce < 0 else (p[nonce] << 8 | p[nonce + 1], p[nonce + 2] << 8 | p[nonce + 3])
    d.pop("_pending", None)


_NO_FIELDS = dict.fromkeys(FIELDS[1:])


def _result(p: bytes, verdict: int, d: tuple[int, ...]) -> Result:
    """The Result of packet ``p`` from its verdict code and its unpacked kbm_detail."""
    r = new_result(Result)
    fields = r.__dict__
    fields["verdict"] = _VERDICTS[verdict]
    fields["_pending"] = (_fill, p, _DETAIL.pack(*d), 0)
    return r


def _results(packets: list[bytes], verdicts: array[int], details: bytearray) -> list[Result]:
    """verify_batch's Results: packet i's kbm_detail is at ``i * _DETAIL.size`` in ``details``
    (each Result keeps its own 20 bytes, not the whole batch's, until a field is read)."""
    out: list[Result] = []
    append = out.append
    size = _DETAIL.size
    raw = bytes(details)
    for p, code, at in zip(packets, verdicts, range(0, len(raw), size), strict=False):
        r = new_result(Result)
        fields = r.__dict__
        fields["verdict"] = _VERDICTS[code]
        fields["_pending"] = (_fill, p, raw[at : at + size], 0)
        append(r)
    return out


_kbm_verify = lib.kbm_verify
_from_buffer = ffi.from_buffer
_ZERO_VERDICT = array("B", b"\0")


def _plain_bytes(buffer: Any) -> bool:
    """bytes, or a contiguous 1-D memoryview of bytes: verify_buffer's usual buffer."""
    return type(buffer) is bytes or (
        type(buffer) is memoryview and buffer.format == "B" and buffer.ndim == 1 and buffer.c_contiguous
    )


_BYTES = {bytes}

#: verify()'s C buffers: (offsets, its cdata, verdict, its cdata, detail, its cdata, where);
#: batches take only ``where``.
#: A call takes a set and puts it back (list.pop and append are atomic under the GIL), so
#: there are as many sets as threads ever verified at once.
_SCRATCH: list[tuple[Any, ...]] = []


def _scratch() -> tuple[Any, ...]:
    offsets, verdict, detail = array("Q", (0, 0)), bytearray(1), bytearray(_DETAIL.size)
    return (
        offsets,
        ffi.from_buffer("uint64_t[]", offsets),
        verdict,
        ffi.from_buffer("uint8_t[]", verdict),
        detail,
        ffi.from_buffer("kbm_detail[]", detail),
        ffi.new("size_t *"),
    )


BindingUpdateList = binding_update_list_class(build_binding_update, mac96, _SequenceState, wire, "kbmfast")

_kernel_name: str | None = None


def kernel_table() -> list[tuple[str, bool, float]]:
    """Every MAC kernel the C core has: (name, this CPU runs it, ns per MAC the calibration measured)."""
    supported, ns = ffi.new("int *"), ffi.new("double *")
    table = []
    i = 0
    while (name := lib.kbm_kernel_info(i, supported, ns)) != ffi.NULL:
        table.append((ffi.string(name).decode(), bool(supported[0]), float(ns[0])))
        i += 1
    return table


def use_kernel() -> str:
    """The MAC kernel verification uses, after applying ``KBMFAST_KERNEL`` (once per process).

    Unset, empty or ``auto``: the fastest kernel this CPU supports, measured on first use.
    Raises ValueError, and selects nothing, for a name the core does not know or this CPU
    cannot run.
    """
    global _kernel_name
    if _kernel_name is None:
        wanted = os.environ.get("KBMFAST_KERNEL", "").strip()
        if wanted:
            rc = lib.kbm_kernel_select(os.fsencode(wanted))
            if rc:
                table = kernel_table()
                if rc == lib.KBM_ENOENT:
                    runs = ", ".join(name for name, ok, _ in table if ok)
                    raise ValueError(f"KBMFAST_KERNEL={wanted!r}: this CPU cannot run that kernel (it runs: {runs})")
                known = ", ".join(name for name, _, _ in table)
                raise ValueError(f"KBMFAST_KERNEL={wanted!r}: no such kernel (kernels: {known}, or auto)")
        _kernel_name = ffi.string(lib.kbm_kernel()).decode()
    return _kernel_name


def __getattr__(name: str) -> str:
    """``kernel``: the MAC kernel in use ("portable", "sha-ni", "avx2", "avx512"), see use_kernel."""
    if name == "kernel":
        return use_kernel()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, ``kernel`` (computed on first use) included."""
    return sorted([*globals(), "kernel"])


__all__ = [
    "BindingUpdateList",
    "KeyTable",
    "Verifier",
    "authenticator",
    "build_binding_ack",
    "build_binding_update",
    "derive_kbm",
    "kernel_table",
    "parse_packet",
    "sequence_newer",
    "use_kernel",
]
