"""``kbmfast verify``'s verdict codes beyond the verifier's, why a packet is MALFORMED, and its
lines: the text and JSON formatters in Python (the oracle of csrc/format.c, and the way for
packets the C formatter is not given).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import _types
from .._types import BA_STATUS, FLAG_A, Verdict

if TYPE_CHECKING:
    from ..capture import Batch, Fields

MH_TYPE_NAMES = ("BRR", "HoTI", "CoTI", "HoT", "CoT", "BU", "BA", "BE")

#: kbmfast verify's own verdicts, numbered on from the verifier's (csrc/kbm.h, kbm_cli_verdict):
#: a frame cut by the capture's snap length, and Binding Acknowledgements checked as the mobile
#: node would check them.
CLI_VERDICTS = (
    "TRUNCATED",
    "BA_VALID",
    "BA_UNMATCHED",
    "BA_BAD_AUTHENTICATOR",
    "BA_NO_AUTHORIZATION",
    "BA_NOT_CONFIGURED",
    "BA_BAD_CHECKSUM",
    "RR_REPLIED",  # --rr: a Home/Care-of Test Init answered (kbmfast.cli._verify_rr)
)
# after the Verifier's codes (csrc/kbm.h KBM_V_TRUNCATED...): 15-22
(V_TRUNCATED, V_BA_VALID, V_BA_UNMATCHED, V_BA_BAD_AUTHENTICATOR, V_BA_NO_AUTHORIZATION, V_BA_NOT_CONFIGURED,
 V_BA_BAD_CHECKSUM, V_RR_REPLIED) = range(len(Verdict), len(Verdict) + len(CLI_VERDICTS))  # fmt: skip
_VERDICT_NAMES = [v.name for v in Verdict] + list(CLI_VERDICTS)
_BA_VERDICTS = range(V_BA_VALID, V_BA_BAD_CHECKSUM + 1)
_BA_FOR_VERDICT = {int(v): s for v, s in BA_STATUS.items()}
#: Verdicts whose Result carries the Binding Update's fields (see kbmfast.reference.verifier),
#: and the acknowledgement verdicts whose line shows the BA's.
_WITH_FIELDS = (
    {int(v) for v in Verdict} - {int(Verdict.MALFORMED), int(Verdict.BAD_CHECKSUM), int(Verdict.NOT_BINDING_UPDATE)}
) | set(range(V_BA_VALID, V_BA_NOT_CONFIGURED + 1))

#: Why a packet is MALFORMED: the parse errors (kbmfast._types.E_*) and the verifier's own
#: reasons (csrc/kbm.h, kbm_why), by code.
WHY_HAO_NOT_ROUTABLE, WHY_ROUTING_HEADER, WHY_SOURCE_NOT_UNICAST, WHY_HOME_NOT_ROUTABLE = 21, 22, 23, 24
WHY_CARE_OF_NOT_ROUTABLE, WHY_NONCE_IN_HOME_REGISTRATION, WHY_SNAP_LENGTH = 25, 26, 27
REASON_NAMES: dict[int, str] = {
    **{code: name[2:] for name, code in vars(_types).items() if name.startswith("E_") and isinstance(code, int)},
    WHY_HAO_NOT_ROUTABLE: "HAO_NOT_ROUTABLE",
    WHY_ROUTING_HEADER: "ROUTING_HEADER",
    WHY_SOURCE_NOT_UNICAST: "SOURCE_NOT_UNICAST",
    WHY_HOME_NOT_ROUTABLE: "HOME_NOT_ROUTABLE",
    WHY_CARE_OF_NOT_ROUTABLE: "CARE_OF_NOT_ROUTABLE",
    WHY_NONCE_IN_HOME_REGISTRATION: "NONCE_IN_HOME_REGISTRATION",
    WHY_SNAP_LENGTH: "SNAP_LENGTH",
}


def _extension_offsets(p: bytes, mh: int) -> tuple[int, int]:
    """The Home Address option's address and the type 2 Routing header's offsets in a packet
    that wire.scan accepted (-1 where absent)."""
    from ..capture import _find_option_plain

    nh, pos, hao, rh2 = p[6], 40, -1, -1
    while pos < mh:
        end = pos + (p[pos + 1] + 1) * 8
        if nh == 60 and hao < 0:
            found = _find_option_plain(p, pos + 2, end, 0xC9, 16)
            hao = found + 2 if found >= 0 else -1
        elif nh == 43:
            rh2 = pos
        nh, pos = p[pos], end
    return hao, rh2


def malformed_reason(p: bytes) -> tuple[int, int]:
    """(code, byte offset) of why the verifier calls ``p`` MALFORMED, in the order it decides
    (kbmfast.reference.verifier); (0, 0) when it would not. The oracle of kbm_malformed_reason."""
    from .._types import FLAG_H, AlternateCareOfAddress, BindingAuthorizationData, BindingUpdate, NonceIndices
    from .._util import is_routable_unicast, is_unicast
    from ..capture import _find_option_plain
    from ..reference import wire

    try:
        layout = wire.scan(p)
    except _types.MalformedPacket as e:
        return e.code, e.offset
    mh = layout.mh_offset
    hao_at, rh2_at = _extension_offsets(p, mh)
    if layout.home_address is not None and not is_routable_unicast(layout.home_address):
        return WHY_HAO_NOT_ROUTABLE, hao_at - 2
    if layout.routing_address is not None:
        return WHY_ROUTING_HEADER, rh2_at
    src, dst = wire.pseudo_addresses(p, layout)
    if not wire.checksum_ok(src, dst, p[mh:]):
        return 0, 0
    try:
        msg = wire.parse_mh(p, mh)
    except _types.MalformedPacket as e:
        return e.code, e.offset
    if not isinstance(msg, BindingUpdate):
        return 0, 0
    if layout.home_address is None:
        hao_at = 8
    alt_at = _find_option_plain(p, mh + 12, len(p), 3, 16)
    care_at = alt_at + 2 if any(isinstance(o, AlternateCareOfAddress) for o in msg.options) else 8
    if not is_unicast(p[8:24]):
        return WHY_SOURCE_NOT_UNICAST, 8
    if not is_routable_unicast(p[hao_at : hao_at + 16]):
        return WHY_HOME_NOT_ROUTABLE, hao_at
    if not is_routable_unicast(p[care_at : care_at + 16]):
        return WHY_CARE_OF_NOT_ROUTABLE, care_at
    if not any(isinstance(o, BindingAuthorizationData) for o in msg.options):
        return 0, 0
    if msg.flags & FLAG_H and any(isinstance(o, NonceIndices) for o in msg.options):
        pos = mh + 12
        while p[pos] != 4:
            pos += 1 if p[pos] == 0 else 2 + p[pos + 1]
        return WHY_NONCE_IN_HOME_REGISTRATION, pos
    return 0, 0


# ---------------------------------------------------------------------------------------------
# Text lines: one format, written by a plain formatter and a column-wise (numpy) one.

_W_FRAME, _W_TIME, _W_TYPE, _W_ADDR, _W_SEQ, _W_VERDICT, _W_BA = 8, 17, 5, 39, 5, 22, 3
HEADER = (
    f"{'frame':>{_W_FRAME}}  {'time':>{_W_TIME}}  {'type':<{_W_TYPE}}  {'home':<{_W_ADDR}}  {'care-of':<{_W_ADDR}}  "
    f"{'seq':>{_W_SEQ}}  {'verdict':<{_W_VERDICT}}  {'BA':>{_W_BA}}  source > destination  [reason@offset]"
)


def _type_name(t: int) -> str:
    return "?" if t < 0 else MH_TYPE_NAMES[t] if t < len(MH_TYPE_NAMES) else f"MH{t}"


def _time_text(us: int) -> str:
    sec, frac = divmod(us, 1_000_000)
    return f"{sec}.{frac:06d}"


def ipv6_text(raw: bytes) -> str:
    """RFC 5952 text of 16 address bytes: what ``str(IPv6Address(raw))`` gives, faster.

    The C library's inet_ntop writes the same text except for addresses whose first 80 bits are
    zero (IPv4-compatible and -mapped forms), which go through ipaddress.
    """
    if raw[:10] == _ZERO10:
        return str(ipaddress.IPv6Address(raw))
    return socket.inet_ntop(socket.AF_INET6, raw)


_ZERO10 = bytes(10)


class _Addresses:
    """IPv6 address text for 16-byte values, cached (peers repeat)."""

    def __init__(self) -> None:
        self.cache: dict[bytes, str] = {}

    def __call__(self, raw: bytes) -> str:
        text = self.cache.get(raw)
        if text is None:
            if len(self.cache) > 1 << 20:
                self.cache.clear()
            text = self.cache[raw] = ipv6_text(raw)
        return text


def _rows(batch: Batch, fields: Fields, verdicts: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    """(frame, µs, type, home, care-of, seq, verdict, BA, source, destination, reason, offset)
    per packet; None where not applicable."""
    home_l = fields.home if isinstance(fields.home, list) else [bytes(r) for r in fields.home]
    care_l = fields.care_of if isinstance(fields.care_of, list) else [bytes(r) for r in fields.care_of]
    types = list(fields.mh_type)
    seqs, flags = list(fields.seq), list(fields.flags)
    for i, v in enumerate(verdicts):
        v = int(v)
        with_fields = v in _WITH_FIELDS
        ba = _BA_FOR_VERDICT.get(v)
        if v == 0 and not int(flags[i]) & FLAG_A:
            ba = None
        elif v in _BA_VERDICTS and v != V_BA_BAD_CHECKSUM:
            ba = int(flags[i]) if int(types[i]) == 6 else None
        p = batch.packet(i)
        why, where = malformed_reason(p) if v == Verdict.MALFORMED else (WHY_SNAP_LENGTH, len(p)) if v == V_TRUNCATED else (0, 0)
        yield (
            int(batch.frames[i]),
            int(batch.times[i]),
            _type_name(int(types[i])),
            home_l[i] if with_fields else None,
            care_l[i] if with_fields else None,
            int(seqs[i]) if with_fields else None,
            v,
            ba,
            p[8:24] if len(p) >= 40 else None,
            p[24:40] if len(p) >= 40 else None,
            why or None,
            where if why else None,
        )


def format_plain(batch: Batch, fields: Fields, verdicts: Sequence[int], addr: _Addresses) -> str:
    """The text lines of a batch, one per packet, each ending in a newline."""
    out = []
    for frame, us, mtype, home, care_of, seq, v, ba, src, dst, why, where in _rows(batch, fields, verdicts):
        out.append(
            f"{frame:>{_W_FRAME}}  {_time_text(us):>{_W_TIME}}  {mtype:<{_W_TYPE}}  "
            f"{'-' if home is None else addr(home):<{_W_ADDR}}  {'-' if care_of is None else addr(care_of):<{_W_ADDR}}  "
            f"{'-' if seq is None else seq:>{_W_SEQ}}  {_VERDICT_NAMES[v]:<{_W_VERDICT}}  {'-' if ba is None else ba:>{_W_BA}}  "
            f"{'-' if src is None else addr(src) + ' > ' + addr(dst)}"
            f"{'' if why is None else '  ' + REASON_NAMES[why] + '@' + str(where)}\n"
        )
    return "".join(out)


def _quoted(text: str | None) -> str:
    return "null" if text is None else f'"{text}"'


def format_json(batch: Batch, fields: Fields, verdicts: Sequence[int], addr: _Addresses, capture: str) -> str:
    """JSON lines of a batch: capture, frame, time, type, home, care_of, sequence, verdict, code,
    ba_status, source, destination, reason, offset."""
    name = json.dumps(capture)
    out = []
    for frame, us, mtype, home, care_of, seq, v, ba, src, dst, why, where in _rows(batch, fields, verdicts):
        out.append(
            f'{{"capture": {name}, "frame": {frame}, "time": {_time_text(us)}, "type": "{mtype}", '
            f'"home": {_quoted(None if home is None else addr(home))}, '
            f'"care_of": {_quoted(None if care_of is None else addr(care_of))}, '
            f'"sequence": {"null" if seq is None else seq}, "verdict": "{_VERDICT_NAMES[v]}", "code": {v}, '
            f'"ba_status": {"null" if ba is None else ba}, '
            f'"source": {_quoted(None if src is None else addr(src))}, '
            f'"destination": {_quoted(None if dst is None else addr(dst))}, '
            f'"reason": {_quoted(None if why is None else REASON_NAMES[why])}, '
            f'"offset": {"null" if where is None else where}}}\n'
        )
    return "".join(out)
