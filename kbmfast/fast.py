"""The C backend: the API of kbmfast.reference, answered by the C core through cffi.

Arguments are checked in Python (with the same helpers and words as the reference), the C core
does the work with the GIL released, and every C status maps to an exception in ``_raise``.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from array import array
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from . import _stateformat as fmt
from ._keys import KIND_KBM, KeyTable, Peer
from ._lifecycle import DEFAULT_SYNC_MS, Durability, check_sync, track
from ._mn import binding_update_list_class
from ._native_edge import ffi, lib
from ._types import (
    BA_STATUS,
    DEFAULT_REKEY_LIMIT,
    FLAG_A,
    AlternateCareOfAddress,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    HomeTest,
    HomeTestInit,
    KbmError,
    MalformedPacket,
    Message,
    MobilityOption,
    NonceIndices,
    Packet,
    Pad1,
    PadN,
    Result,
    StateFileError,
    UnknownMessage,
    UnknownOption,
    Verdict,
)
from ._util import (
    address_bytes,
    check_kbm,
    check_kcn,
    check_mh_for_mac,
    check_offsets,
    check_packet,
    check_verifier_args,
    near_limit_threshold,
)
from .reference import build as _build
from .reference.crypto import sequence_newer
from .reference.verifier import acknowledge as _acknowledge

_addr = ipaddress.IPv6Address
_UNKNOWN_MH = 100
_MAX_OPTIONS = 2048


def _raise(rc: int, what: str) -> None:
    """Map a negative kbm_status to its exception (the one place this is done)."""
    if rc == lib.KBM_ENOMEM:
        raise MemoryError(what)
    if rc == lib.KBM_EIO:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    if rc == lib.KBM_ESTATE:
        raise StateFileError(f"{what}: not a valid kbmfast state file")
    if rc == lib.KBM_EFULL:
        raise KbmError(f"{what}: the sequence table is full")
    if rc == lib.KBM_ENOENT:
        raise KeyError(what)
    raise ValueError(f"{what}: invalid argument (status {rc})")


# ---------------------------------------------------------------------------------------------
# Pure functions


def mac96(kbm: bytes, care_of: bytes, correspondent: bytes, mh: bytes) -> bytes:
    """The authenticator over already-checked arguments (the builders' MAC)."""
    out = ffi.new("uint8_t[12]")
    rc = lib.kbm_authenticator(kbm, care_of, correspondent, mh, len(mh), out)
    if rc:
        _raise(rc, "authenticator")
    return bytes(ffi.buffer(out))


def authenticator(kbm: Any, care_of: Any, correspondent: Any, mh: Any) -> bytes:
    """The 12-byte Binding Authorization Data value for the complete Mobility Header ``mh``."""
    key = check_kbm(kbm)
    co = address_bytes(care_of, "care_of")
    cn = address_bytes(correspondent, "correspondent")
    return mac96(key, co, cn, check_mh_for_mac(mh))


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
    hoa = address_bytes(home, "home")
    coa = address_bytes(care_of, "care_of")
    out = ffi.new("uint8_t[20]")
    rc = lib.kbm_derive(key, len(key), hn, len(hn), cn, len(cn), hoa, coa, 1 if deregistration else 0, out)
    if rc:
        _raise(rc, "derive_kbm")
    return bytes(ffi.buffer(out))


def build_binding_update(kbm: Any, **kwargs: Any) -> bytes:
    """A complete, authenticated Binding Update packet (see kbmfast.reference)."""
    kwargs.pop("mac", None)
    return _build.build_binding_update(kbm, mac=mac96, **kwargs)


def build_binding_ack(kbm: Any, **kwargs: Any) -> bytes:
    """A complete, authenticated Binding Acknowledgement packet (see kbmfast.reference)."""
    kwargs.pop("mac", None)
    return _build.build_binding_ack(kbm, mac=mac96, **kwargs)


build_binding_update.__doc__ = _build.build_binding_update.__doc__
build_binding_ack.__doc__ = _build.build_binding_ack.__doc__


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


def _option(p: bytes, t: int, at: int, length: int) -> MobilityOption:
    data = p[at + 2 : at + 2 + length]
    if t == 0:
        return Pad1()
    if t == 1:
        return PadN(length + 2)
    if t == 2:
        return BindingRefreshAdvice((data[0] << 8 | data[1]) * 4)
    if t == 3:
        return AlternateCareOfAddress(_addr(data))
    if t == 4:
        return NonceIndices(data[0] << 8 | data[1], data[2] << 8 | data[3])
    if t == 5:
        return BindingAuthorizationData(data)
    return UnknownOption(t, data)


def _message(p: bytes, mh: int, unknown: bool, found: list[tuple[int, int, int]]) -> Message:
    b = p[mh:]
    if unknown:
        return UnknownMessage(b[2], b[6:])
    opts = tuple(_option(p, t, at, length) for t, at, length in found)
    t = b[2]
    if t == 0:
        return BindingRefreshRequest(opts)
    if t in (1, 2):
        return (HomeTestInit if t == 1 else CareOfTestInit)(b[8:16], opts)
    if t in (3, 4):
        return (HomeTest if t == 3 else CareOfTest)(b[6] << 8 | b[7], b[8:16], b[16:24], opts)
    if t == 5:
        seq, flags, units = struct.unpack_from("!HHH", b, 6)
        return BindingUpdate(seq, flags, units * 4, opts)
    if t == 6:
        status, flags, seq, units = struct.unpack_from("!BBHH", b, 6)
        return BindingAck(status, flags, seq, units * 4, opts)
    return BindingError(b[6], _addr(b[8:24]), opts)


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
    ) -> None:
        check_verifier_args(keys, rekey_limit, max_lifetime)
        policy = check_sync(sync)
        self.keys = keys
        self.rekey_limit = rekey_limit
        self.max_lifetime = max_lifetime
        self._durability: Durability | None = None
        self._path = None if state is None else fmt.prepare(state)
        status = ffi.new("int *")
        ptr = lib.kbm_verifier_new(ffi.NULL if self._path is None else os.fsencode(self._path), rekey_limit, status)
        if ptr == ffi.NULL:
            _raise(status[0], f"state file {self._path}")
        self._v: Any = ffi.gc(ptr, lib.kbm_verifier_free)
        self._set_peers(keys.peers())
        keys.subscribe(self._on_key_change)
        if self._path is not None:
            self._durability = Durability(policy, self.flush)
        track(self)

    def _handle(self) -> Any:
        v = self._v
        if v is None:
            raise ValueError("this Verifier is closed")
        return v

    def _set_peers(self, peers: list[Peer]) -> None:
        if not peers:
            return
        specs = ffi.new("kbm_peer_spec[]", len(peers))
        keep = []
        for spec, peer in zip(specs, peers, strict=True):
            key = ffi.new("uint8_t[]", bytes(peer.key))
            hn = ffi.new("uint8_t[]", peer.home_nonce or b"\0")
            cn = ffi.new("uint8_t[]", peer.care_of_nonce or b"\0")
            keep.append(key)
            keep += [hn, cn]
            ffi.memmove(spec.home, peer.home, 16)
            spec.kind = lib.KBM_KIND_KBM if peer.kind == KIND_KBM else lib.KBM_KIND_KCN
            spec.key, spec.key_len = key, len(peer.key)
            spec.home_nonce, spec.home_nonce_len = hn, len(peer.home_nonce)
            spec.care_of_nonce, spec.care_of_nonce_len = cn, len(peer.care_of_nonce)
            spec.epoch = peer.epoch
        try:
            rc = lib.kbm_verifier_set_peers(self._handle(), specs, len(peers))
        finally:
            for buf in keep:
                ffi.memmove(buf, bytes(len(ffi.buffer(buf))), len(ffi.buffer(buf)))
        if rc:
            _raise(rc, f"state file {self._path}" if self._path else "adding peers")

    def _on_key_change(self, home: bytes, peer: Peer | None) -> None:
        if self._v is None:
            return
        if peer is not None:
            self._set_peers([peer])
        else:
            lib.kbm_verifier_remove_peer(self._v, home)

    # -- verification --------------------------------------------------------------------------

    def _run(self, buf: Any, length: int, offsets: Any, n: int, details: Any) -> array[int]:
        verdicts = array("B", bytes(n))
        where = ffi.new("size_t *")
        out = ffi.from_buffer("uint8_t[]", verdicts, require_writable=True)
        rc = lib.kbm_verify(self._handle(), buf, length, offsets, n, out, details, where)
        if rc:
            _raise(rc, "verify")
        if self._durability is not None:
            self._durability.changed()
        return verdicts

    def verify(self, packet: Any) -> Result:
        """Verify one packet (bytes-like, from the IPv6 version nibble) and update state."""
        p = check_packet(packet, "packet")
        details = ffi.new("kbm_detail[1]")
        offsets = ffi.new("uint64_t[2]", (0, len(p)))
        verdicts = self._run(p, len(p), offsets, 1, details)
        return _result(p, verdicts[0], details[0])

    def verify_batch(self, packets: Iterable[Any], results: bool = False) -> Any:
        """Verify packets in order, as if one by one: verdict codes (uint8 array) or Results."""
        items = [check_packet(p, f"packets[{i}]") for i, p in enumerate(packets)]
        buf = b"".join(items)
        offsets = array("Q", accumulate((len(p) for p in items), initial=0))
        n = len(items)
        c_offsets = ffi.from_buffer("uint64_t[]", offsets)
        if not results:
            return self._run(buf, len(buf), c_offsets, n, ffi.NULL)
        details = ffi.new("kbm_detail[]", max(n, 1))
        verdicts = self._run(buf, len(buf), c_offsets, n, details)
        return [_result(items[i], verdicts[i], details[i]) for i in range(n)]

    def verify_buffer(self, buffer: Any, offsets: Any) -> array[int]:
        """Zero-copy form: packet i is ``buffer[offsets[i]:offsets[i+1]]``; uint8 verdicts."""
        buf, offs = check_offsets(buffer, offsets, walk=False)
        c_buf = ffi.from_buffer("uint8_t[]", buf)
        c_offs = ffi.from_buffer("uint64_t[]", offs)
        n = len(offs) - 1
        try:
            return self._run(c_buf, len(buf), c_offs, n, ffi.NULL)
        except ValueError:
            check_offsets(buffer, offsets)  # the reference's words for what is wrong
            raise

    # -- answers and state ---------------------------------------------------------------------

    def acknowledge(self, result: Result) -> bytes | None:
        """The authenticated Binding Acknowledgement to send for ``result``, or None."""
        return _acknowledge(self.keys, self.max_lifetime, result, build_binding_ack)

    def last_sequence(self, home: Any) -> int | None:
        """The last sequence number accepted from ``home``, or None."""
        hoa = address_bytes(home, "home")
        seq = ffi.new("uint16_t *")
        rc = lib.kbm_verifier_last_sequence(self._handle(), hoa, seq)
        if rc < 0:
            _raise(rc, f"state file {self._path}")
        return int(seq[0]) if rc else None

    def keys_near_limit(self, fraction: float = 0.9) -> list[ipaddress.IPv6Address]:
        """Configured peers whose sequence advance under the current key is past ``fraction``
        of ``rekey_limit``: rekey them before they reach KEY_EXHAUSTED."""
        limit = near_limit_threshold(fraction, self.rekey_limit)
        word = ffi.new("uint64_t *")
        near = []
        for peer in self.keys.peers():
            rc = lib.kbm_verifier_slot_word(self._handle(), peer.home, word)
            if rc < 0:
                _raise(rc, f"state file {self._path}")
            if rc and fmt.advance_under(int(word[0]), peer.epoch) >= limit:
                near.append(_addr(peer.home))
        return near

    def flush(self) -> None:
        """Push the state file to stable storage now (msync + fsync)."""
        rc = lib.kbm_verifier_flush(self._handle())
        if rc:
            _raise(rc, f"state file {self._path}")

    def close(self) -> None:
        """Flush and close the state file, wipe the keys from C memory; idempotent."""
        v, self._v = self._v, None
        if v is not None:
            lib.kbm_verifier_flush(v)
            ffi.release(v)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kbmfast Verifier: {len(self.keys)} peers, state={self._path!r}>"


def _result(p: bytes, verdict: int, d: Any) -> Result:
    v = Verdict(verdict)
    if d.home < 0:
        return Result(v)
    ack = bool(d.flags & FLAG_A)
    status = BA_STATUS.get(v) if v != Verdict.ACCEPTED else (0 if ack else None)
    return Result(
        verdict=v,
        home=_addr(p[d.home : d.home + 16]),
        care_of=_addr(p[d.care_of : d.care_of + 16]),
        correspondent=_addr(p[24:40]),
        sequence=int(d.sequence),
        lifetime=int(d.lifetime) * 4,
        ack=ack,
        ba_status=status,
        last_sequence=int(d.last_sequence) if v == Verdict.SEQUENCE_OUT_OF_WINDOW else None,
        source=_addr(p[8:24]),
    )


BindingUpdateList = binding_update_list_class(build_binding_update, mac96, "kbmfast")

#: The SHA-1 kernel the C core dispatched to on this CPU ("sha-ni" or "portable").
kernel: str = ffi.string(lib.kbm_kernel()).decode()

__all__ = [
    "BindingUpdateList",
    "KeyTable",
    "Verifier",
    "authenticator",
    "build_binding_ack",
    "build_binding_update",
    "derive_kbm",
    "kernel",
    "parse_packet",
    "sequence_newer",
]
