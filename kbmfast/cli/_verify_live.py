"""``kbmfast verify -i IF``: verify live on an interface, as kbmfast serve captures, answering
nothing."""

from __future__ import annotations

import argparse
import sys
from array import array
from typing import Any

from .. import _outputs
from .._outputs import CliError
from . import _verify_rr as verify_rr
from ._common import load_key_file
from ._verify_format import HEADER
from ._verify_run import _call_job, _open_verifier, _summary, _VerifyRun


def _verify_live(args: argparse.Namespace) -> int:
    """``kbmfast verify -i IF``: verify live on IF (the same capture as serve), print what
    verify prints for files, send nothing; SIGINT/SIGTERM end it (status 0) with the summary."""
    from ..capture import Batch
    from ..live import LiveCapture, LiveError

    if args.captures or args.demo or args.skip or args.acks_out:
        raise CliError("-i takes no CAPTURE, --demo, --skip or --acks-out")
    if not args.keys:
        raise CliError("-i needs --keys KEYS")
    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    keys = load_key_file(args.keys)
    try:  # batches of at most 4096 live (a batch buffer holds a snaplen per packet)
        cap = LiveCapture(args.interface, batch=min(args.batch, 4096), inbound_only=False)
    except LiveError as e:
        raise CliError(str(e), 2 if e.kind == "filter" else 1) from None
    backend: Any
    if args.backend == "c":
        import kbmfast as backend
    else:
        import kbmfast.reference as backend
    verifier, replay = verify_rr.setup(args, _open_verifier, backend, keys, args.state)  # --rr, --compat
    run = _VerifyRun(args, verifier, None, keys, backend, replay)
    interrupts = _outputs.current
    print(f"kbmfast verify: capturing on {args.interface}", file=sys.stderr, flush=True)
    try:
        if not args.json and not args.quiet:
            run.out.write(f"# {args.interface}\n{HEADER}\n")
            run.out.flush()
        with interrupts.deferred():
            while not run.stopping():
                b = cap.batch(None, idle_ms=100)
                if b.n == 0:
                    continue
                end = b.offsets[b.n]
                item = Batch(bytes(b.data[:end]), array("Q", b.offsets[: b.n + 1]), array("Q", b.frames), array("q", b.times_us))
                run.emit((item, run.pool.submit(_call_job, run.work, args.interface, item)))
                run.out.flush()
            interrupts.handled = True
    finally:
        run.close()
        stats = cap.stats()
        cap.close()
    run.totals["frames"] = stats["frames"]
    run.totals["other"] = stats["other"]
    if not run.out.closed:
        _summary(run.out, run.counts, run.totals, args, False, None)
        run.out.flush()
    return _outputs.EXIT_SIGPIPE if run.out.closed else 0
