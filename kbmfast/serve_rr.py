"""Return routability and ``--compat rfc3775`` in ``kbmfast serve`` (docs/serve.md).

:class:`kbmfast.serve.Server` hands each verified batch to :func:`handle` first when its
verifier has ``return_routability`` or ``compat="rfc3775"``. This module answers what the
preconfigured fast path does not:

- Home Test Init / Care-of Test Init (verdict NOT_BINDING_UPDATE): answered with
  ``Verifier.reply_buffer`` (one C call for the batch's inits) and sent back the way each init's
  frame came (``LiveCapture.send``). Replies are not rate-limited: an init costs the CN one
  keygen token and no state (RFC 6275 §5.2.7), and the reply is barely larger than the init.
- RR Binding Updates (those with a Nonce Indices option from a peer with no preconfigured
  key): accepted ones enter the binding cache with the granted lifetime (at most
  MAX_RR_BINDING_LIFETIME), and every acknowledgement is what ``Verifier.acknowledge`` builds:
  signed with the RR Kbm derived from the nonces the BU names, or for 136/137/138 sent without
  a Binding Authorization Data option (there is no key). Error acknowledgements are rate-limited
  per home address like the others.
- With ``compat="rfc3775"``, a configured peer's Binding Update whose care-of address is its
  home address is a de-registration: ``acknowledge`` derives its Kbm as one (the fast path would
  not), so it goes this way too.

:func:`handle` returns the indices it answered; the fast path skips them. Which packets those
are is found in C (:func:`select`, ``kbm_rr_select``): Python touches the RR packets (and
compat's) only, never the configured peers' accepted Binding Updates the fast path answers.
"""

from __future__ import annotations

from array import array
from collections import Counter
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from ._native_edge import ffi, lib
from ._rr import MH_COT, MH_HOT, granted_lifetime
from ._types import BA_STATUS, Verdict
from .fast import _DETAIL, _result

if TYPE_CHECKING:
    from .live import Batch, LiveCapture

#: The verdicts only return routability gives (BA 136, 137, 138, 130).
_RR_ONLY = frozenset(
    int(v) for v in (Verdict.HOME_NONCE_EXPIRED, Verdict.CARE_OF_NONCE_EXPIRED, Verdict.NONCES_EXPIRED, Verdict.RR_TABLE_FULL)
)
#: The verdicts the fast path acknowledges (kbmfast.serve._ACTION: ACCEPTED, 135, 131, 174, 129).
_ANSWERED = frozenset(int(v) for v in BA_STATUS) - _RR_ONLY
_REPLY_NAMES = {MH_HOT: "HoT", MH_COT: "CoT"}
NONE: frozenset[int] = frozenset()


def wanted(verifier: Any) -> bool:
    """Whether ``verifier`` needs :func:`handle` (return routability or compat rfc3775)."""
    return verifier.return_routability is not None or verifier.compat == "rfc3775"


#: kbm_rr_select's kind of each verdict code: 1 only return routability gives it, 2 acknowledged.
_KIND = bytes(1 if c in _RR_ONLY else 2 if c in _ANSWERED else 0 for c in range(256))


def select(batch: Batch, rr: bool, compat: bool) -> tuple[list[int], list[int]]:
    """(the indices of ``batch``'s packets this module answers rather than the fast path,
    the indices of its NOT_BINDING_UPDATE packets when ``rr``, else []), found in C
    (``kbm_rr_select``) so that Python touches those packets only: a verdict only return
    routability gives; an acknowledged one of a BU with Nonce Indices (judged by return
    routability: no Kbm in the key table); with ``compat``, one whose care-of address is its
    home address (RFC 3775: a de-registration)."""
    n = batch.n
    if len(batch.verdicts) < n or len(batch.details) < _DETAIL.size * n or len(batch.offsets) < n + 1:
        raise ValueError("batch: fewer verdicts, details or offsets than packets")
    picked = array("I", bytes(4 * max(n, 1)))
    inits = array("I", bytes(4 * max(n, 1)))
    n_inits = ffi.new("size_t *")
    m = lib.kbm_rr_select(
        ffi.from_buffer("uint8_t[]", batch.data), len(batch.data), ffi.from_buffer("uint64_t[]", batch.offsets), n,
        ffi.from_buffer("uint8_t[]", batch.verdicts), ffi.from_buffer("kbm_detail[]", batch.details), _KIND, compat,
        ffi.from_buffer("uint32_t[]", picked), ffi.from_buffer("uint32_t[]", inits) if rr else ffi.NULL, n_inits,
    )  # fmt: skip
    return picked[:m].tolist(), inits[: n_inits[0]].tolist() if rr else []


def handle(server: Any, capture: LiveCapture, batch: Batch) -> frozenset[int]:
    """Answer the batch's Home/Care-of Test Inits and the Binding Updates the fast path cannot
    sign (see the module's docstring) for ``server`` (a kbmfast.serve.Server: its verifier,
    cache, limiter and stats, which count what was sent). Returns the
    indices of the Binding Updates handled here."""
    import time

    verifier = server.verifier
    verdicts, details, data, offsets = batch.verdicts, batch.details, batch.data, batch.offsets
    replies: Counter[str] = Counter()
    reply_failed = 0
    compat = verifier.compat == "rfc3775"
    picked, inits = select(batch, verifier.return_routability is not None, compat)
    if inits:
        buf = b"".join(data[offsets[i] : offsets[i + 1]] for i in inits)
        offs = array("Q", accumulate((offsets[i + 1] - offsets[i] for i in inits), initial=0))
        out, ends = verifier.reply_buffer(buf, offs)
        for k, i in enumerate(inits):
            reply = out[ends[k] : ends[k + 1]]
            if not reply:
                continue
            if capture.send(i, reply):
                replies[_REPLY_NAMES.get(reply[42], "?")] += 1
            else:
                reply_failed += 1
    done: set[int] = set()
    sent: Counter[int] = Counter()
    limited = failed = 0
    now = time.monotonic()
    cap = verifier.max_lifetime
    for i in picked:
        code = verdicts[i]
        detail = _DETAIL.unpack_from(details, _DETAIL.size * i)
        done.add(i)
        result = _result(bytes(data[offsets[i] : offsets[i + 1]]), code, detail)
        assert result.home is not None and result.care_of is not None and result.lifetime is not None
        home = result.home.packed
        if code == 0:
            granted = granted_lifetime(result.lifetime, cap, result.nonce_indices is not None)
            server.cache.update(home, result.care_of.packed, detail[2], granted)
        status = result.ba_status
        if status is None:
            continue
        if status >= 128 and not server.limiter.allow(home, now):
            limited += 1
            continue
        try:
            ack = verifier.acknowledge(result)
        except KeyError:  # its nonces expired, or the peer was configured (SIGHUP) meanwhile
            failed += 1
            continue
        if ack is not None and capture.send(i, ack):
            sent[status] += 1
        else:
            failed += 1
    with server.stats.lock:
        server.stats.ba_sent.update(sent)
        server.stats.ba_limited += limited
        server.stats.ba_failed += failed
        server.stats.rr_replies.update(replies)
        if reply_failed:
            server.stats.rr_replies["not_sent"] += reply_failed
    return frozenset(done) if done else NONE
