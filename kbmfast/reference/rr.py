"""Return routability on the wire, in plain Python: Home Test Init -> Home Test, Care-of Test
Init -> Care-of Test (RFC 6275 §9.4), and the unauthenticated BA of statuses 136-138. The C
core (csrc/rr.c) follows these rules; kbmfast._rr holds the secrets."""

from __future__ import annotations

import struct

from .._rr import INIT_MAX, MH_COT, MH_COTI, MH_HOT, MH_HOTI, Snapshot, keygen_token  # noqa: F401
from .._types import IPPROTO_MH, MalformedPacket
from .._util import is_routable_unicast, is_unicast
from . import wire


def reply(snap: Snapshot, p: bytes) -> bytes | None:
    """The Home Test or Care-of Test answering the packet ``p``, or None (§9.4.1-9.4.4).

    Answered: a well-formed IPv6 packet whose Mobility Header is a HoTI or CoTI of at least 16
    bytes with a correct checksum, no Home Address option and no Routing header, from a
    routable unicast source to a unicast destination. The test goes from the init's destination
    to its source, carries the current nonce's index, the cookie and the keygen token of the
    source address.
    """
    if len(p) > INIT_MAX:
        return None
    try:
        layout = wire.scan(p)
    except MalformedPacket:
        return None
    mh = layout.mh_offset
    if layout.home_address is not None or layout.routing_address is not None:
        return None
    if p[mh + 2] not in (MH_HOTI, MH_COTI):
        return None
    src, dst = p[8:24], p[24:40]
    if not wire.checksum_ok(src, dst, p[mh:]):
        return None
    try:
        wire.parse_mh(p, mh)
    except MalformedPacket:
        return None
    if not is_routable_unicast(src) or not is_unicast(dst):
        return None
    which = p[mh + 2] - 1  # 0: home, 1: care-of
    nonce = snap.nonces[-1]
    index = snap.newest & 0xFFFF
    token = keygen_token(snap.kcn, src, nonce, which)
    return build_test(MH_HOT + which, index, p[mh + 8 : mh + 16], token, dst, src)


def build_test(mh_type: int, index: int, cookie: bytes, token: bytes, source: bytes, destination: bytes) -> bytes:
    """A Home Test (3) or Care-of Test (4) packet: 24-byte Mobility Header, no options."""
    body = bytearray(struct.pack("!BBBBHH", wire.NH_NONE, 2, mh_type, 0, 0, index) + cookie + token)
    body[4:6] = wire.mh_checksum(source, destination, bytes(body)).to_bytes(2, "big")
    return wire.ipv6_header(IPPROTO_MH, len(body), source, destination) + bytes(body)


def build_init(mh_type: int, cookie: bytes, source: bytes, destination: bytes) -> bytes:
    """A Home Test Init (1) or Care-of Test Init (2) packet: 16-byte Mobility Header."""
    body = bytearray(struct.pack("!BBBBHH", wire.NH_NONE, 1, mh_type, 0, 0, 0) + cookie)
    body[4:6] = wire.mh_checksum(source, destination, bytes(body)).to_bytes(2, "big")
    return wire.ipv6_header(IPPROTO_MH, len(body), source, destination) + bytes(body)


def build_plain_ack(home: bytes, correspondent: bytes, sequence: int, status: int, destination: bytes) -> bytes:
    """An unauthenticated Binding Acknowledgement (status 136-138: the CN has no Kbm to sign
    with, RFC 6275 §9.5.4): lifetime 0, PadN to 16 bytes, a type 2 Routing header carrying the
    home address when it goes to another address."""
    body = wire.binding_ack_mh(status, sequence, 0)[:12] + wire.padding(4)
    body[1] = len(body) // 8 - 1
    body[4:6] = wire.mh_checksum(correspondent, home, bytes(body)).to_bytes(2, "big")
    if destination == home:
        return wire.ipv6_header(IPPROTO_MH, len(body), correspondent, destination) + bytes(body)
    ext = wire.routing_header_2(home)
    return wire.ipv6_header(wire.NH_ROUTING, len(ext) + len(body), correspondent, destination) + ext + bytes(body)
