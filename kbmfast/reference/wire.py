"""IPv6 + Mobility Header wire format: parsing, checksum and building, in plain Python.

Offsets in errors are counted from the first byte of the IPv6 header. The rules and their order
are the contract the C parser (csrc/parse.c) follows byte for byte.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .._types import (
    E_BAD_NOT_LAST,
    E_EXT_ORDER,
    E_EXT_TRUNCATED,
    E_HAO_LENGTH,
    E_HAO_REPEATED,
    E_HEADER_LEN,
    E_MH_LENGTH,
    E_MOPT_DUPLICATE,
    E_MOPT_LENGTH,
    E_MOPT_TRUNCATED,
    E_NO_MH,
    E_OPT_DISCARD,
    E_OPT_TRUNCATED,
    E_PAYLOAD_LENGTH,
    E_PAYLOAD_PROTO,
    E_RH2_FORMAT,
    E_ROUTING_TYPE,
    E_SHORT,
    E_VERSION,
    IPPROTO_MH,
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
    MalformedPacket,
    Message,
    MobilityOption,
    NonceIndices,
    Packet,
    Pad1,
    PadN,
    UnknownMessage,
    UnknownOption,
)
from .._util import check_packet

NH_HOP_BY_HOP = 0
NH_ROUTING = 43
NH_DEST_OPTS = 60
NH_NONE = 59
OPT_HOME_ADDRESS = 0xC9

MH_BU = 5
MH_BA = 6
# Minimum Header Len per MH Type (RFC 6275 §9.2) and where options start.
MIN_HEADER_LEN = (0, 1, 1, 2, 2, 1, 1, 2)
OPTIONS_START = (8, 16, 16, 24, 24, 12, 12, 24)
# Exact data length of each known non-padding mobility option.
MOPT_LENGTH = {2: 2, 3: 16, 4: 4, 5: 12}
MOPT_BAD = 5


@dataclass(frozen=True)
class Layout:
    """Where things are in a packet whose IPv6 structure is sound."""

    mh_offset: int
    home_address: bytes | None  # from the Home Address option
    routing_address: bytes | None  # from the type 2 Routing header


def scan(p: bytes) -> Layout:
    """Walk the IPv6 header and extension headers up to the Mobility Header."""
    n = len(p)
    if n < 48:
        raise MalformedPacket(E_SHORT, 0)
    if p[0] >> 4 != 6:
        raise MalformedPacket(E_VERSION, 0)
    if 40 + (p[4] << 8 | p[5]) != n:
        raise MalformedPacket(E_PAYLOAD_LENGTH, 4)
    nh, nh_at, off = p[6], 6, 40
    seen_routing = dst_before = dst_after = False
    hao: bytes | None = None
    rh2: bytes | None = None
    while nh != IPPROTO_MH:
        if nh == NH_HOP_BY_HOP:
            if off != 40:
                raise MalformedPacket(E_EXT_ORDER, nh_at)
        elif nh == NH_DEST_OPTS:
            if dst_after or (dst_before and not seen_routing):
                raise MalformedPacket(E_EXT_ORDER, nh_at)
            if seen_routing:
                dst_after = True
            else:
                dst_before = True
        elif nh == NH_ROUTING:
            if seen_routing or dst_after:
                raise MalformedPacket(E_EXT_ORDER, nh_at)
            seen_routing = True
        else:
            raise MalformedPacket(E_NO_MH, nh_at)
        if off + 2 > n:
            raise MalformedPacket(E_EXT_TRUNCATED, off)
        end = off + (p[off + 1] + 1) * 8
        if end > n:
            raise MalformedPacket(E_EXT_TRUNCATED, off)
        if nh == NH_ROUTING:
            if p[off + 2] != 2:
                raise MalformedPacket(E_ROUTING_TYPE, off + 2)
            if p[off + 1] != 2:
                raise MalformedPacket(E_RH2_FORMAT, off + 1)
            if p[off + 3] != 1:
                raise MalformedPacket(E_RH2_FORMAT, off + 3)
            rh2 = p[off + 8 : off + 24]
        else:
            found = _ip_options(p, off + 2, end, nh == NH_DEST_OPTS, hao is not None)
            if found is not None:
                hao = found
        nh, nh_at, off = p[off], off, end
    if off + 8 > n:
        raise MalformedPacket(E_MH_LENGTH, off)
    if (p[off + 1] + 1) * 8 != n - off:
        raise MalformedPacket(E_MH_LENGTH, off + 1)
    return Layout(off, hao, rh2)


def _ip_options(p: bytes, i: int, end: int, destination: bool, have_hao: bool) -> bytes | None:
    """Check the TLV options of a Hop-by-Hop or Destination Options header; return the HAO."""
    hao: bytes | None = None
    while i < end:
        t = p[i]
        if t == 0:
            i += 1
            continue
        if i + 2 > end or i + 2 + p[i + 1] > end:
            raise MalformedPacket(E_OPT_TRUNCATED, i)
        length = p[i + 1]
        if t == 1:
            pass
        elif t == OPT_HOME_ADDRESS and destination:
            if length != 16:
                raise MalformedPacket(E_HAO_LENGTH, i)
            if have_hao or hao is not None:
                raise MalformedPacket(E_HAO_REPEATED, i)
            hao = p[i + 2 : i + 18]
        elif t >> 6:
            raise MalformedPacket(E_OPT_DISCARD, i)
        i += 2 + length
    return hao


def ones_sum(data: bytes) -> int:
    """One's complement sum of 16-bit big-endian words (data of even length)."""
    # 2**16 == 1 (mod 0xffff), so the sum of the words is the number itself modulo 0xffff;
    # a one's complement sum of anything non-zero is never +0, so 0 becomes 0xffff.
    s = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF if s == 0 and any(data) else s


def pseudo_header(source: bytes, destination: bytes, length: int) -> bytes:
    """RFC 8200 §8.1 pseudo-header with Next Header 135 (RFC 6275; RFC 3775's "2" is wrong)."""
    return source + destination + struct.pack("!IxxxB", length, IPPROTO_MH)


def mh_checksum(source: bytes, destination: bytes, mh: bytes) -> int:
    """The checksum to put in ``mh`` (whose checksum field is ignored)."""
    data = pseudo_header(source, destination, len(mh)) + mh[:4] + b"\0\0" + mh[6:]
    return ~ones_sum(data) & 0xFFFF


def checksum_ok(source: bytes, destination: bytes, mh: bytes) -> bool:
    """True when the transmitted checksum makes the whole sum come out as all ones."""
    return ones_sum(pseudo_header(source, destination, len(mh)) + mh) == 0xFFFF


def pseudo_addresses(p: bytes, layout: Layout) -> tuple[bytes, bytes]:
    """Pseudo-header source (HoA from the HAO, else Source) and final destination."""
    src = layout.home_address if layout.home_address is not None else p[8:24]
    dst = layout.routing_address if layout.routing_address is not None else p[24:40]
    return src, dst


def parse_mh(p: bytes, mh: int) -> Message:
    """Parse the Mobility Header at offset ``mh`` (its length already checked by scan)."""
    mh_type = p[mh + 2]
    if mh_type >= len(MIN_HEADER_LEN):
        return UnknownMessage(mh_type, bytes(p[mh + 6 :]))
    if p[mh] != NH_NONE:
        raise MalformedPacket(E_PAYLOAD_PROTO, mh)
    if p[mh + 1] < MIN_HEADER_LEN[mh_type]:
        raise MalformedPacket(E_HEADER_LEN, mh + 1)
    opts = parse_options(p, mh + OPTIONS_START[mh_type], len(p))
    return decode_message(bytes(p[mh:]), opts)


def decode_message(b: bytes, opts: tuple[MobilityOption, ...]) -> Message:
    """The message of a Mobility Header ``b`` already found well formed (by either backend)."""
    mh_type = b[2]
    if mh_type == 0:
        return BindingRefreshRequest(opts)
    if mh_type == 1:
        return HomeTestInit(b[8:16], opts)
    if mh_type == 2:
        return CareOfTestInit(b[8:16], opts)
    if mh_type in (3, 4):
        cls = HomeTest if mh_type == 3 else CareOfTest
        return cls(b[6] << 8 | b[7], b[8:16], b[16:24], opts)
    if mh_type == MH_BU:
        seq, flags, units = struct.unpack_from("!HHH", b, 6)
        return BindingUpdate(seq, flags, units * 4, opts)
    if mh_type == MH_BA:
        status, flags, seq, units = struct.unpack_from("!BBHH", b, 6)
        return BindingAck(status, flags, seq, units * 4, opts)
    return BindingError(b[6], ipaddress.IPv6Address(b[8:24]), opts)


def decode_option(t: int, data: bytes) -> MobilityOption:
    """A mobility option of type ``t`` (not Pad1) whose length is already checked."""
    if t == 1:
        return PadN(len(data) + 2)
    if t == 2:
        return BindingRefreshAdvice((data[0] << 8 | data[1]) * 4)
    if t == 3:
        return AlternateCareOfAddress(ipaddress.IPv6Address(data))
    if t == 4:
        return NonceIndices(data[0] << 8 | data[1], data[2] << 8 | data[3])
    if t == MOPT_BAD:
        return BindingAuthorizationData(data)
    return UnknownOption(t, data)


def parse_options(p: bytes, i: int, end: int) -> tuple[MobilityOption, ...]:
    """Mobility options from ``i`` to ``end``: exact lengths, no duplicates, BAD last."""
    opts: list[MobilityOption] = []
    seen: set[int] = set()
    bad_seen = False
    while i < end:
        if bad_seen:
            raise MalformedPacket(E_BAD_NOT_LAST, i)
        t = p[i]
        if t == 0:
            opts.append(Pad1())
            i += 1
            continue
        if i + 2 > end or i + 2 + p[i + 1] > end:
            raise MalformedPacket(E_MOPT_TRUNCATED, i)
        length = p[i + 1]
        data = bytes(p[i + 2 : i + 2 + length])
        if t in MOPT_LENGTH:
            if length != MOPT_LENGTH[t]:
                raise MalformedPacket(E_MOPT_LENGTH, i)
            if t in seen:
                raise MalformedPacket(E_MOPT_DUPLICATE, i)
            seen.add(t)
        opts.append(decode_option(t, data))
        bad_seen = t == MOPT_BAD
        i += 2 + length
    return tuple(opts)


def parse_packet(packet: bytes) -> Packet:
    """Parse an IPv6 packet carrying a Mobility Header; raise MalformedPacket if it is not one."""
    packet = check_packet(packet, "packet")
    layout = scan(packet)
    mh = layout.mh_offset
    src, dst = pseudo_addresses(packet, layout)
    message = parse_mh(packet, mh)
    addr = ipaddress.IPv6Address
    return Packet(
        source=addr(packet[8:24]),
        destination=addr(packet[24:40]),
        home_address=None if layout.home_address is None else addr(layout.home_address),
        routing_address=None if layout.routing_address is None else addr(layout.routing_address),
        mh_offset=mh,
        checksum=packet[mh + 4] << 8 | packet[mh + 5],
        checksum_valid=checksum_ok(src, dst, packet[mh:]),
        message=message,
    )


# ---------------------------------------------------------------------------------------------
# Building


def padding(n: int) -> bytes:
    """``n`` bytes of mobility-option (or IPv6-option) padding: Pad1 or PadN."""
    if n == 0:
        return b""
    if n == 1:
        return b"\0"
    return bytes((1, n - 2)) + bytes(n - 2)


def pad_to(offset: int, modulus: int, remainder: int) -> bytes:
    """Padding that moves ``offset`` to the next ``modulus``·n + ``remainder``."""
    return padding((remainder - offset) % modulus)


def ipv6_header(next_header: int, payload_length: int, source: bytes, destination: bytes) -> bytes:
    """A 40-byte IPv6 header, traffic class and flow label zero, hop limit 64."""
    return struct.pack("!IHBB", 0x60000000, payload_length, next_header, 64) + source + destination


def home_address_header(home: bytes) -> bytes:
    """Destination Options header: PadN(4) then the HAO at 8n+6 (RFC 6275 §6.3: alignment 8n+6)."""
    return bytes((IPPROTO_MH, 2)) + padding(4) + bytes((OPT_HOME_ADDRESS, 16)) + home


def routing_header_2(home: bytes) -> bytes:
    """Type 2 Routing header carrying the home address (RFC 6275 §6.4)."""
    return bytes((IPPROTO_MH, 2, 2, 1)) + bytes(4) + home


def binding_update_mh(
    sequence: int,
    flags: int,
    lifetime_units: int,
    alternate_care_of: bytes | None,
    nonce_indices: tuple[int, int] | None,
) -> bytearray:
    """A Binding Update MH with a zeroed authenticator and checksum, canonical padding."""
    body = bytearray(struct.pack("!BBBBHHHH", NH_NONE, 0, MH_BU, 0, 0, sequence, flags, lifetime_units))
    if alternate_care_of is not None:
        body += pad_to(len(body), 8, 6) + bytes((3, 16)) + alternate_care_of
    if nonce_indices is not None:
        body += pad_to(len(body), 2, 0) + struct.pack("!BBHH", 4, 4, *nonce_indices)
    return _finish_with_bad(body)


def binding_ack_mh(status: int, sequence: int, lifetime_units: int) -> bytearray:
    """A Binding Acknowledgement MH (K = 0) with zeroed authenticator and checksum."""
    body = bytearray(struct.pack("!BBBBHBBHH", NH_NONE, 0, MH_BA, 0, 0, status, 0, sequence, lifetime_units))
    return _finish_with_bad(body)


def _finish_with_bad(body: bytearray) -> bytearray:
    # BAD is last with no trailing padding, so it must start at 8n+2 (RFC 6275 §6.2.7).
    body += pad_to(len(body), 8, 2) + bytes((MOPT_BAD, 12)) + bytes(12)
    body[1] = len(body) // 8 - 1
    return body
