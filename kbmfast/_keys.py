"""The correspondent node's preconfigured peers and the key file (shared by both backends).

A key table is configuration, not verification: both backends hold their peers here, and each
verifier compiles them into its own form (the C core keeps only HMAC midstates). No method, repr
or exception shows key bytes.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import re
import stat
import struct
import threading
import tomllib
import weakref
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from ._types import KeyFileError
from ._util import address_bytes, owned_kbm, owned_kcn, wipe

KIND_KBM = 1  # draft-ietf-mip6-precfgKbm: Kbm itself is configured
KIND_KCN = 2  # RFC 4449: Kcn and two nonces, Kbm derived per care-of address


class Peer:
    """One preconfigured peer. Holds key material: never printed.

    ``key`` is a bytearray the peer owns (it takes the one it is given, no copy) and that
    :meth:`wipe` overwrites when the table forgets the peer. ``wiped`` is set before that, so a
    reader that copies ``key`` (one C-level copy, atomic under the GIL) and then finds
    ``wiped`` false holds the whole key, not a half-overwritten one.
    """

    __slots__ = ("care_of_nonce", "epoch", "home", "home_nonce", "key", "kind", "wiped")

    def __init__(self, home: bytes, kind: int, key: bytearray, home_nonce: bytes, care_of_nonce: bytes, epoch: int) -> None:
        self.home = home
        self.kind = kind
        self.key = key
        self.home_nonce = bytes(home_nonce)
        self.care_of_nonce = bytes(care_of_nonce)
        self.epoch = epoch
        self.wiped = False

    def fingerprint(self) -> bytes:
        """Identifies the key material for the one-key-per-peer rule (kept in memory only).

        The key goes to the hash straight from its bytearray (no bytes copy); OpenSSL clears
        the hash's own buffer when it is freed."""
        h = hashlib.sha256(bytes((self.kind,)))
        h.update(self.key)
        return h.digest()

    def wipe(self) -> None:
        """Overwrite the key bytes in place."""
        self.wiped = True
        wipe(self.key)

    def __repr__(self) -> str:
        kind = "kbm" if self.kind == KIND_KBM else "kcn"
        return f"<Peer {ipaddress.IPv6Address(self.home)} {kind} epoch={self.epoch}>"


Listener = Callable[[bytes, "Peer | None"], None]


class KeyTable:
    """A correspondent node's preconfigured peers, keyed by home address.

    Return routability stays the default: only peers entered here use a preconfigured key.
    Every verifier built on the table follows its changes, all of them or none: a key one
    verifier refuses is taken back from the others and leaves the table unchanged.

    >>> keys = KeyTable()
    >>> keys.add_kbm("2001:db8:1::100", bytes(range(20)))
    >>> "2001:db8:1::100" in keys, len(keys)
    (True, 1)
    """

    def __init__(self) -> None:
        self._peers: dict[bytes, Peer] = {}
        self._owner: dict[bytes, bytes] = {}
        self._lock = threading.RLock()
        self._listeners: list[weakref.WeakMethod[Listener]] = []
        #: peers as the C key-file reader left them, until something needs Peer objects
        self._packed: Packed | None = None

    def add_kbm(self, home: Any, kbm: Any, *, epoch: int | None = None) -> None:
        """Configure a 20-byte Kbm for ``home`` (draft-ietf-mip6-precfgKbm); replaces (rekeys)."""
        hoa = address_bytes(home, "home")
        self._add(Peer(hoa, KIND_KBM, owned_kbm(kbm), b"", b"", 0), epoch)

    def add_kcn(self, home: Any, kcn: Any, home_nonce: Any, care_of_nonce: Any, *, epoch: int | None = None) -> None:
        """Configure an RFC 4449 Kcn (at least 20 bytes) and its two nonces for ``home``."""
        hoa = address_bytes(home, "home")
        key, hn, cn = owned_kcn(kcn, home_nonce, care_of_nonce)
        self._add(Peer(hoa, KIND_KCN, key, hn, cn, 0), epoch)

    def _add(self, peer: Peer, epoch: int | None) -> None:
        try:
            self._install(peer, epoch)
        except BaseException:
            peer.wipe()  # refused: the new key never entered the table
            raise

    def _install(self, peer: Peer, epoch: int | None) -> None:
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= 0xFFFF):
            raise ValueError("epoch: must be an int in 0..65535")
        fp = peer.fingerprint()
        with self._lock:
            self._unpack()
            owner = self._owner.get(fp)
            if owner is not None and owner != peer.home:
                raise ValueError(
                    f"home {ipaddress.IPv6Address(peer.home)}: this key is already configured for another peer "
                    "(RFC 4449 §4: every mobile node must have its own key)"
                )
            old = self._peers.get(peer.home)
            if epoch is not None:
                peer.epoch = epoch
            elif old is not None:
                same = old.fingerprint() == fp and old.home_nonce == peer.home_nonce and old.care_of_nonce == peer.care_of_nonce
                peer.epoch = old.epoch if same else (old.epoch + 1) & 0xFFFF
            # verifiers first: if one cannot take the key, none has it and the table does not change
            self._notify(peer.home, peer, old)
            if old is not None:
                del self._owner[old.fingerprint()]
            self._peers[peer.home] = peer
            self._owner[fp] = peer.home
            if old is not None:
                old.wipe()

    def remove(self, home: Any) -> None:
        """Forget ``home``'s key (KeyError if absent) and overwrite it. Its sequence state is kept."""
        hoa = address_bytes(home, "home")
        with self._lock:
            self._unpack()
            peer = self._peers.get(hoa)
            if peer is None:
                raise KeyError(f"home {ipaddress.IPv6Address(hoa)} is not configured")
            self._notify(hoa, None, peer)
            del self._peers[hoa]
            del self._owner[peer.fingerprint()]
            peer.wipe()

    def __contains__(self, home: object) -> bool:
        if self._packed is not None:
            self._unpack()
        try:
            return address_bytes(home, "home") in self._peers
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        packed = self._packed
        return len(self._peers) if packed is None else packed.n

    def __iter__(self) -> Iterator[ipaddress.IPv6Address]:
        with self._lock:
            self._unpack()
            homes = list(self._peers)
        return (ipaddress.IPv6Address(h) for h in homes)

    def __repr__(self) -> str:
        return f"<KeyTable: {len(self)} peers>"

    def epoch(self, home: Any) -> int:
        """The key epoch of ``home``: bumped by each rekey and kept in the key file, for the
        operator's records only. It decides nothing about replay: the state file counts each
        key's sequence advance by a fingerprint of the key itself (docs/state-format.md)."""
        if self._packed is not None:
            self._unpack()
        return self._peers[address_bytes(home, "home")].epoch

    # -- for verifiers -------------------------------------------------------------------------

    def peer(self, home: bytes) -> Peer | None:
        """The peer configured for a 16-byte home address, or None (internal)."""
        if self._packed is not None:
            self._unpack()
        return self._peers.get(home)

    def peers(self) -> list[Peer]:
        """A snapshot of all peers (internal)."""
        with self._lock:
            self._unpack()
            return list(self._peers.values())

    def packed(self) -> Packed | None:
        """The peers as the C key-file reader left them, or None once they are Peer objects
        (internal: the C Verifier takes them as they are; hold ``_lock`` while using them)."""
        return self._packed

    def _unpack(self) -> None:
        """Turn the packed peers into Peer objects, once, when something asks for one: the
        C reader leaves a million peers in a few flat buffers, and making their objects costs
        more than reading the file."""
        with self._lock:
            packed = self._packed
            if packed is None:
                return
            peers: dict[bytes, Peer] = {}
            owner: dict[bytes, bytes] = {}
            view = memoryview(packed.material)
            at = 0
            homes, kinds, epochs = packed.homes, packed.kinds, packed.epochs
            for i, (key_len, hn_len, cn_len) in enumerate(zip(packed.key_lens, packed.hn_lens, packed.cn_lens, strict=True)):
                home = homes[16 * i : 16 * i + 16]
                key = bytearray(view[at : at + key_len])
                at += key_len
                home_nonce = view[at : at + hn_len].tobytes()
                at += hn_len
                care_of_nonce = view[at : at + cn_len].tobytes()
                at += cn_len
                peer = peers[home] = Peer(home, kinds[i], key, home_nonce, care_of_nonce, epochs[i])
                owner[peer.fingerprint()] = home
            view.release()
            self._peers, self._owner = peers, owner
            self._packed = None
            wipe(packed.material)

    def subscribe(self, method: Listener) -> None:
        """Call the bound ``method(home, peer_or_None)`` on every change (held weakly; internal)."""
        with self._lock:
            self._listeners.append(weakref.WeakMethod(method))

    def _notify(self, home: bytes, peer: Peer | None, old: Peer | None) -> None:
        """Tell every live verifier that ``home`` now has ``peer`` (None: removed), all or none:
        if one refuses, those already told are given ``old`` back before the error propagates."""
        listeners = []
        for ref in self._listeners:
            fn = ref()
            if fn is not None:
                listeners.append(fn)
        if len(listeners) != len(self._listeners):
            self._listeners = [ref for ref in self._listeners if ref() is not None]
        told: list[Listener] = []
        try:
            for fn in listeners:
                fn(home, peer)
                told.append(fn)
        except BaseException as e:
            for fn in reversed(told):
                try:
                    fn(home, old)
                except Exception as undo:  # pragma: no cover - restoring a key it held just before
                    e.add_note(f"kbmfast: a verifier could not be given the previous key back ({undo}); close it")
            raise

    # -- the key file --------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyTable:
        """Read a TOML key file, which must be private: a regular file (not a symbolic link),
        owned by the user running kbmfast, that group and others may neither read nor write,
        of at most 256 MiB. Each peer is listed once.

        The file holds ``[[peer]]`` tables with ``home`` and either ``kbm`` (hex, 20 bytes) or
        ``kcn``, ``home_nonce`` and ``care_of_nonce`` (hex), and an optional ``epoch``. A file
        with no peers gives an empty table (every Binding Update is then ``NOT_CONFIGURED``).

        The file is read into a buffer that is overwritten once parsed. A file as :meth:`save`
        writes it is read by the C core (csrc/keyfile.c), its keys decoded straight into one
        buffer the C Verifier takes as it is (Peer objects are made on first need, and that
        buffer then wiped); any other file, and any file with an error, is read here in Python,
        which gives the same table or the same message. Other layouts go through ``tomllib``,
        whose strings (the keys in hex) cannot be overwritten and stay in memory until Python
        reuses it.
        """
        return cls._load(path, native=True)

    @classmethod
    def _load(cls, path: str | os.PathLike[str], *, native: bool) -> KeyTable:
        """:meth:`load`; ``native=False`` reads every file in Python (the C reader's reference)."""
        name = os.fspath(path)
        raw = _read_private(name)
        try:
            packed = _packed_native(raw) if native else None
            if packed is None:
                return cls._parse(name, raw)
            table = cls()
            table._packed = packed
            return table
        finally:
            wipe(raw)

    @classmethod
    def _parse(cls, name: str, raw: bytearray) -> KeyTable:
        doc = _simple_toml(raw)
        if doc is None:
            try:
                doc = tomllib.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                # tomllib's messages give line and column, never the text itself.
                raise KeyFileError(f"key file {name}: not valid TOML: {e}") from None
        table = cls()
        unknown = set(doc) - {"version", "peer"}
        if unknown:
            raise KeyFileError(f"key file {name}: unknown top-level keys {sorted(unknown)}")
        if doc.get("version", 1) != 1:
            raise KeyFileError(f"key file {name}: version {doc.get('version')!r} is not supported (expected 1)")
        peers = doc.get("peer", [])
        if not isinstance(peers, list):
            raise KeyFileError(f"key file {name}: 'peer' must be an array of tables ([[peer]])")
        first: dict[bytes, int] = {}
        try:
            for i, entry in enumerate(peers, 1):
                where = f"key file {name}, peer #{i}"
                if not isinstance(entry, dict):
                    raise KeyFileError(f"{where}: not a table")
                try:
                    home = table._load_entry(entry, first)
                except (TypeError, ValueError) as e:
                    raise KeyFileError(f"{where}: {e}") from None
                if home in first:
                    raise KeyFileError(
                        f"key file {name}: peer {ipaddress.IPv6Address(home)} is listed twice (entries {first[home]} "
                        f"and {i}): list each peer once, with its current key"
                    )
                first[home] = i
        except BaseException:
            for peer in table.peers():
                peer.wipe()
            raise
        return table

    def _load_entry(self, entry: dict[str, Any], listed: dict[bytes, int]) -> bytes:
        """Add one ``[[peer]]`` table unless its home is already ``listed``; return its home."""
        fields = set(entry)
        home = entry.get("home")
        if not isinstance(home, str):
            raise ValueError("'home' must be an IPv6 address string")
        hoa = address_bytes(home, "home")
        if hoa in listed:
            return hoa
        epoch = entry.get("epoch")
        if "kbm" in entry:
            allowed = {"home", "kbm", "epoch"}
            if fields - allowed:
                raise ValueError(f"unexpected fields {sorted(fields - allowed)} beside 'kbm'")
            key = _hex(entry, "kbm")
            try:
                self.add_kbm(hoa, key, epoch=epoch)
            finally:
                wipe(key)
        elif "kcn" in entry:
            allowed = {"home", "kcn", "home_nonce", "care_of_nonce", "epoch"}
            if fields - allowed:
                raise ValueError(f"unexpected fields {sorted(fields - allowed)} beside 'kcn'")
            home_nonce, care_of_nonce = _hex(entry, "home_nonce"), _hex(entry, "care_of_nonce")
            key = _hex(entry, "kcn")
            try:
                self.add_kcn(hoa, key, home_nonce, care_of_nonce, epoch=epoch)
            finally:
                wipe(key)
        else:
            raise ValueError("needs either 'kbm' or 'kcn' with 'home_nonce' and 'care_of_nonce'")
        return hoa

    def to_toml(self) -> str:
        """The key file's text, as :meth:`save` writes it (it holds the keys: keep it private)."""
        lines = ["# kbmfast key file: keep it private (mode 0600)", "version = 1", ""]
        for peer in self.peers():
            lines.append("[[peer]]")
            lines.append(f'home = "{ipaddress.IPv6Address(peer.home)}"')
            if peer.kind == KIND_KBM:
                lines.append(f'kbm = "{peer.key.hex()}"')
            else:
                lines.append(f'kcn = "{peer.key.hex()}"')
                lines.append(f'home_nonce = "{peer.home_nonce.hex()}"')
                lines.append(f'care_of_nonce = "{peer.care_of_nonce.hex()}"')
            lines.append(f"epoch = {peer.epoch}")
            lines.append("")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file atomically, mode 0600."""
        name = os.fspath(path)
        text = self.to_toml()
        tmp = f"{name}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


#: The largest key file read: 256 MiB (about 2.7 million Kbm peers as save() writes them).
MAX_KEY_FILE = 256 << 20


class Packed:
    """Peers as the C key-file reader leaves them, in file order (internal): ``homes`` 16 bytes
    each, ``kinds`` (KIND_*), ``epochs``, and the lengths of each key and its nonces, which lie
    back to back, peer after peer, in ``material`` (wiped once the peers become Peer objects)."""

    __slots__ = ("cn_lens", "epochs", "hn_lens", "homes", "key_lens", "kinds", "material", "n")

    def __init__(
        self, homes: bytes, kinds: bytes, epochs: array[int], key_lens: array[int], hn_lens: bytes, cn_lens: bytes,
        material: bytearray,
    ) -> None:  # fmt: skip
        self.n = len(kinds)
        self.homes, self.kinds, self.epochs = homes, kinds, epochs
        self.key_lens, self.hn_lens, self.cn_lens = key_lens, hn_lens, cn_lens
        self.material = material


def _packed_native(raw: bytearray) -> Packed | None:
    """The peers of a key file in the simple form save() writes, read by the C core
    (csrc/keyfile.c); None for any other file, or without the C core (the caller reads it in
    Python, and refuses it there when it is wrong: the messages are written once, here)."""
    try:
        from ._native_edge import ffi, lib
    except ImportError:  # pragma: no cover - the pure-Python install
        return None
    cap = raw.count(b"[[peer]]")
    homes, kinds, hn_lens, cn_lens = bytearray(16 * cap), bytearray(cap), bytearray(cap), bytearray(cap)
    epochs, key_lens, key_at = array("H", bytes(2 * cap)), array("H", bytes(2 * cap)), array("Q", bytes(8 * cap))
    material = bytearray(len(raw) // 2 + 1)
    n, used = ffi.new("size_t *"), ffi.new("size_t *")
    buf = ffi.from_buffer
    rc = lib.kbm_keyfile_parse(
        buf(raw), len(raw), cap, buf(homes), buf(kinds), buf("uint16_t[]", key_lens), buf(hn_lens), buf(cn_lens),
        buf("uint16_t[]", epochs), buf("uint64_t[]", key_at), buf(material), len(material), n, used,
    )  # fmt: skip
    if rc == lib.KBM_ENOMEM:
        wipe(material)
        raise MemoryError("reading the key file")
    if rc:
        wipe(material)
        return None
    count = n[0]
    exact = material[: used[0]]  # a bytearray slice: a bytearray copy, no bytes object between
    wipe(material)  # the text's upper bound of the keys (half its size) is given back
    return Packed(
        bytes(homes[: 16 * count]), bytes(kinds[:count]), epochs[:count], key_lens[:count], bytes(hn_lens[:count]),
        bytes(cn_lens[:count]), exact,
    )  # fmt: skip


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))  # fmt: skip


def _read_private(name: str) -> bytearray:
    """The bytes of key file ``name`` in a bytearray (the caller wipes it), after checking what
    ssh checks of a private key: a regular file, owned by this (effective) user, private.

    The checks are made on the open descriptor (fstat), so the file checked is the file read;
    O_NOFOLLOW refuses a symbolic link and O_NONBLOCK keeps a FIFO from blocking the open."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise KeyFileError(
                f"key file {name} is a symbolic link: key files are not read through links; give the path of the file itself"
            ) from None
        raise KeyFileError(f"key file {name}: cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((what for test, what in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise KeyFileError(f"key file {name} is {kind}: a key file must be a regular file")
        uid = os.geteuid()
        if st.st_uid != uid:
            raise KeyFileError(
                f"key file {name} is owned by uid {st.st_uid}, not by uid {uid} that reads it: another user could "
                f"change the keys; make it yours ('chown {uid} {name}') or run as its owner"
            )
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"key file {name} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"keys must be private: run 'chmod 600 {name}'"
            )
        if st.st_size > MAX_KEY_FILE:
            raise KeyFileError(
                f"key file {name} is {st.st_size} bytes, more than a key file may be ({MAX_KEY_FILE >> 20} MiB): "
                "is it the right file?"
            )
        buf = bytearray(st.st_size + 1)
        view = memoryview(buf)
        got = 0
        try:
            while got < len(buf):
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
        except OSError as e:
            wipe(buf)
            raise KeyFileError(f"key file {name}: cannot read: {e.strerror}") from None
        finally:
            view.release()
        if got != st.st_size:
            wipe(buf)
            raise KeyFileError(f"key file {name} changed while it was read: try again once it is written")
        del buf[got:]  # the one spare byte: a minor shrink, done in place
        return buf
    finally:
        os.close(fd)


#: The lines of a key file as save() writes it: each a table header, a key = value whose value
#: needs no escape, a comment or nothing. Anything else goes to tomllib.
_SIMPLE_LINES = re.compile(
    rb"^(?:\[\[(peer)\]\]"
    rb'|(home|kbm|kcn|home_nonce|care_of_nonce) = "([0-9A-Fa-f:.]*)"'
    rb"|(version|epoch) = (0|[1-9][0-9]{0,5})|#[ -~]*|)$",
    re.MULTILINE,
)


def _simple_toml(raw: bytearray) -> dict[str, Any] | None:
    """What ``tomllib.loads(raw.decode())`` gives, for a file made only of lines that
    :data:`_SIMPLE_LINES` matches (every key file save() writes); None for anything else
    (tomllib reads it then).

    Each accepted line means in TOML exactly what it means here: ``[[peer]]`` appends a table
    that the key = value lines below it fill; a key given twice in one table is left to
    tomllib, which refuses it. Values are read in place: a quoted value is a memoryview of
    ``raw`` (hex is decoded from it by :func:`_hex`, no copy of the text is made)."""
    doc: dict[str, Any] = {}
    table = doc
    view = memoryview(raw)
    line = 0  # where the next line starts: every line must match, one after the other
    for m in _SIMPLE_LINES.finditer(raw):
        if m.start() != line:
            return None
        line = m.end() + 1
        kind = m.lastindex
        if kind == 3:  # key = "value"
            key = m.group(2).decode()
            if key in table:
                return None
            start, stop = m.span(3)
            table[key] = m.group(3).decode() if key == "home" else view[start:stop]
        elif kind == 1:  # [[peer]]
            peers = doc.setdefault("peer", [])
            if not isinstance(peers, list):  # pragma: no cover - no line sets a plain 'peer'
                return None
            table = {}
            peers.append(table)
        elif kind == 5:  # version or epoch = n
            key = m.group(4).decode()
            if key in table:
                return None
            table[key] = int(m.group(5))
    return doc if line == len(raw) + 1 else None


def _hex_pairs() -> dict[int, int]:
    """Two ASCII hex digits, read as one native 16-bit unsigned -> the byte they encode."""
    digits = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
    return {struct.unpack("=H", (hi + lo).encode())[0]: digits[hi] << 4 | digits[lo] for hi in digits for lo in digits}


_HEX_PAIRS = _hex_pairs()
_ASCII_SPACE = re.compile(r"[ \t\n\r\f\v]+")
_MAX_HEX_BYTES = 1024  # the longest Kcn (nonces: 64 bytes)
_PACKERS: dict[int, struct.Struct] = {}  # n -> Struct("nB"), for the lengths met


def _hex(entry: dict[str, Any], field: str) -> bytearray:
    """The bytes a hex field encodes, decoded straight into a new bytearray (the caller wipes
    it): no bytes object ever holds them. Whitespace between digits is allowed in the TOML
    form, as bytes.fromhex allows it."""
    value = entry.get(field)
    if isinstance(value, str):
        # bytes.fromhex's rule: ASCII whitespace may separate bytes, not split one
        groups = _ASCII_SPACE.split(value.strip(" \t\n\r\f\v"))
        if any(len(g) % 2 for g in groups):
            raise ValueError(f"'{field}' is not valid hex")
        value = memoryview("".join(groups).encode("ascii", "replace"))
    elif not isinstance(value, memoryview):
        raise ValueError(f"'{field}' must be a hex string")
    if len(value) % 2:
        raise ValueError(f"'{field}' is not valid hex")
    if len(value) > 2 * _MAX_HEX_BYTES:
        raise ValueError(f"'{field}' is {len(value) // 2} bytes, more than any key or nonce may be")
    pairs = value.cast("H")
    out = bytearray(len(pairs))
    packer = _PACKERS.get(len(out))
    if packer is None:
        packer = _PACKERS.setdefault(len(out), struct.Struct(f"{len(out)}B"))
    try:
        packer.pack_into(out, 0, *map(_HEX_PAIRS.__getitem__, pairs))
    except KeyError:
        raise ValueError(f"'{field}' is not valid hex") from None
    return out
