"""The correspondent node's preconfigured peers and the key file (shared by both backends).

A key table is configuration, not verification: both backends hold their peers here, and each
verifier compiles them into its own form (the C core keeps only HMAC midstates). No method, repr
or exception shows key bytes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
import threading
import tomllib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ._types import KeyFileError
from ._util import address_bytes, check_kbm, check_kcn

KIND_KBM = 1  # draft-ietf-mip6-precfgKbm: Kbm itself is configured
KIND_KCN = 2  # RFC 4449: Kcn and two nonces, Kbm derived per care-of address


class Peer:
    """One preconfigured peer. Holds key material: never printed."""

    __slots__ = ("care_of_nonce", "epoch", "home", "home_nonce", "key", "kind")

    def __init__(self, home: bytes, kind: int, key: bytes, home_nonce: bytes, care_of_nonce: bytes, epoch: int) -> None:
        self.home = home
        self.kind = kind
        self.key = bytearray(key)
        self.home_nonce = bytes(home_nonce)
        self.care_of_nonce = bytes(care_of_nonce)
        self.epoch = epoch

    def fingerprint(self) -> bytes:
        """Identifies the key material for the one-key-per-peer rule (kept in memory only)."""
        return hashlib.sha256(bytes((self.kind,)) + bytes(self.key)).digest()

    def wipe(self) -> None:
        """Overwrite the key bytes (best effort: Python may hold other copies)."""
        for i in range(len(self.key)):
            self.key[i] = 0

    def __repr__(self) -> str:
        kind = "kbm" if self.kind == KIND_KBM else "kcn"
        return f"<Peer {ipaddress.IPv6Address(self.home)} {kind} epoch={self.epoch}>"


Listener = Callable[[bytes, "Peer | None"], None]


class KeyTable:
    """A correspondent node's preconfigured peers, keyed by home address.

    Return routability stays the default: only peers entered here use a preconfigured key.

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

    def add_kbm(self, home: Any, kbm: Any, *, epoch: int | None = None) -> None:
        """Configure a 20-byte Kbm for ``home`` (draft-ietf-mip6-precfgKbm); replaces (rekeys)."""
        hoa = address_bytes(home, "home")
        self._add(Peer(hoa, KIND_KBM, check_kbm(kbm), b"", b"", 0), epoch)

    def add_kcn(self, home: Any, kcn: Any, home_nonce: Any, care_of_nonce: Any, *, epoch: int | None = None) -> None:
        """Configure an RFC 4449 Kcn (at least 20 bytes) and its two nonces for ``home``."""
        hoa = address_bytes(home, "home")
        key, hn, cn = check_kcn(kcn, home_nonce, care_of_nonce)
        self._add(Peer(hoa, KIND_KCN, key, hn, cn, 0), epoch)

    def _add(self, peer: Peer, epoch: int | None) -> None:
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= 0xFFFF):
            raise ValueError("epoch: must be an int in 0..65535")
        fp = peer.fingerprint()
        with self._lock:
            owner = self._owner.get(fp)
            if owner is not None and owner != peer.home:
                peer.wipe()
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
            # verifiers first: if one cannot take the key, the table does not change either
            self._notify(peer.home, peer)
            if old is not None:
                del self._owner[old.fingerprint()]
            self._peers[peer.home] = peer
            self._owner[fp] = peer.home
            if old is not None:
                old.wipe()

    def remove(self, home: Any) -> None:
        """Forget ``home``'s key (KeyError if absent). Its sequence state is kept."""
        hoa = address_bytes(home, "home")
        with self._lock:
            peer = self._peers.get(hoa)
            if peer is None:
                raise KeyError(f"home {ipaddress.IPv6Address(hoa)} is not configured")
            self._notify(hoa, None)
            del self._peers[hoa]
            del self._owner[peer.fingerprint()]
            peer.wipe()

    def __contains__(self, home: object) -> bool:
        try:
            return address_bytes(home, "home") in self._peers
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[ipaddress.IPv6Address]:
        with self._lock:
            homes = list(self._peers)
        return (ipaddress.IPv6Address(h) for h in homes)

    def __repr__(self) -> str:
        return f"<KeyTable: {len(self._peers)} peers>"

    def epoch(self, home: Any) -> int:
        """The key epoch of ``home``: bumped by each rekey and kept in the key file, for the
        operator's records only. It decides nothing about replay: the state file counts each
        key's sequence advance by a fingerprint of the key itself (docs/state-format.md)."""
        return self._peers[address_bytes(home, "home")].epoch

    # -- for verifiers -------------------------------------------------------------------------

    def peer(self, home: bytes) -> Peer | None:
        """The peer configured for a 16-byte home address, or None (internal)."""
        return self._peers.get(home)

    def peers(self) -> list[Peer]:
        """A snapshot of all peers (internal)."""
        with self._lock:
            return list(self._peers.values())

    def subscribe(self, method: Listener) -> None:
        """Call the bound ``method(home, peer_or_None)`` on every change (held weakly; internal)."""
        with self._lock:
            self._listeners.append(weakref.WeakMethod(method))

    def _notify(self, home: bytes, peer: Peer | None) -> None:
        alive = []
        for ref in self._listeners:
            fn = ref()
            if fn is not None:
                fn(home, peer)
                alive.append(ref)
        self._listeners = alive

    # -- the key file --------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyTable:
        """Read a TOML key file; refuse it if group or others may read or write it.

        The file holds ``[[peer]]`` tables with ``home`` and either ``kbm`` (hex, 20 bytes) or
        ``kcn``, ``home_nonce`` and ``care_of_nonce`` (hex), and an optional ``epoch``.
        """
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KeyFileError(f"key file {name}: cannot open: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise KeyFileError(
                    f"key file {name} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                    f"keys must be private: run 'chmod 600 {name}'"
                )
            raw = f.read()
        try:
            text = raw.decode("utf-8")
            doc = _simple_toml(text)
            if doc is None:
                doc = tomllib.loads(text)
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
        for i, entry in enumerate(peers, 1):
            where = f"key file {name}, peer #{i}"
            if not isinstance(entry, dict):
                raise KeyFileError(f"{where}: not a table")
            try:
                table._load_entry(entry)
            except (TypeError, ValueError) as e:
                raise KeyFileError(f"{where}: {e}") from None
        return table

    def _load_entry(self, entry: dict[str, Any]) -> None:
        fields = set(entry)
        home = entry.get("home")
        if not isinstance(home, str):
            raise ValueError("'home' must be an IPv6 address string")
        epoch = entry.get("epoch")
        if "kbm" in entry:
            allowed = {"home", "kbm", "epoch"}
            if fields - allowed:
                raise ValueError(f"unexpected fields {sorted(fields - allowed)} beside 'kbm'")
            self.add_kbm(home, _hex(entry, "kbm"), epoch=epoch)
        elif "kcn" in entry:
            allowed = {"home", "kcn", "home_nonce", "care_of_nonce", "epoch"}
            if fields - allowed:
                raise ValueError(f"unexpected fields {sorted(fields - allowed)} beside 'kcn'")
            self.add_kcn(home, _hex(entry, "kcn"), _hex(entry, "home_nonce"), _hex(entry, "care_of_nonce"), epoch=epoch)
        else:
            raise ValueError("needs either 'kbm' or 'kcn' with 'home_nonce' and 'care_of_nonce'")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file atomically, mode 0600."""
        name = os.fspath(path)
        lines = ["# kbmfast key file: keep it private (mode 0600)", "version = 1", ""]
        for peer in self.peers():
            lines.append("[[peer]]")
            lines.append(f'home = "{ipaddress.IPv6Address(peer.home)}"')
            if peer.kind == KIND_KBM:
                lines.append(f'kbm = "{bytes(peer.key).hex()}"')
            else:
                lines.append(f'kcn = "{bytes(peer.key).hex()}"')
                lines.append(f'home_nonce = "{peer.home_nonce.hex()}"')
                lines.append(f'care_of_nonce = "{peer.care_of_nonce.hex()}"')
            lines.append(f"epoch = {peer.epoch}")
            lines.append("")
        tmp = f"{name}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


#: One line of the key file as save() writes it: a table header, a key = value whose value
#: needs no escape, a comment or nothing. Anything else goes to tomllib.
_SIMPLE_LINE = re.compile(
    r'\[\[(peer)\]\]|(home|kbm|kcn|home_nonce|care_of_nonce) = "([0-9A-Fa-f:.]*)"|(version|epoch) = (0|[1-9][0-9]{0,5})|#[ -~]*|'
)


def _simple_toml(text: str) -> dict[str, Any] | None:
    """What ``tomllib.loads(text)`` gives, for a file made only of :data:`_SIMPLE_LINE` lines
    (every key file save() writes); None for anything else (tomllib reads it then).

    Each accepted line means in TOML exactly what it means here: ``[[peer]]`` appends a table
    that the key = value lines below it fill; a key given twice in one table is left to
    tomllib, which refuses it."""
    doc: dict[str, Any] = {}
    table = doc
    match = _SIMPLE_LINE.fullmatch
    for line in text.split("\n"):
        m = match(line)
        if m is None:
            return None
        header, key, value, int_key, number = m.groups()
        if header is not None:
            peers = doc.setdefault("peer", [])
            if not isinstance(peers, list):  # pragma: no cover - no line sets a plain 'peer'
                return None
            table = {}
            peers.append(table)
        elif key is not None:
            if key in table:
                return None
            table[key] = value
        elif int_key is not None:
            if int_key in table:
                return None
            table[int_key] = int(number)
    return doc


def _hex(entry: dict[str, Any], field: str) -> bytes:
    value = entry.get(field)
    if not isinstance(value, str):
        raise ValueError(f"'{field}' must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"'{field}' is not valid hex") from None
