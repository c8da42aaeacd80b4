"""``kbmfast serve``: a correspondent node on the wire (docs/serve.md).

Captures Binding Updates on one or more interfaces through libpcap (kbmfast.live), verifies them
in the C core, answers with authenticated Binding Acknowledgements and keeps a binding cache
(kbmfast.serve). Signals: SIGTERM/SIGINT finish the batch in hand, flush the state and exit 0;
SIGHUP reloads the key file; SIGUSR1 writes a JSON snapshot.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from .. import _outputs
from .._outputs import CliError, Subparsers, os_error_text


def _int_range(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, not {value}")
        return value

    return parse


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _address(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv6 address: {text!r}") from None


def add_serve(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast serve``: capture, verify and acknowledge Binding Updates on interfaces."""
    from ..live import DEFAULT_BATCH, DEFAULT_BUFFER, DEFAULT_FILTER, DEFAULT_MAX_DELAY_US
    from ..serve import ERROR_BURST, ERROR_RATE

    p = sub.add_parser(
        "serve",
        help="run a correspondent node: answer Binding Updates on interfaces",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Capture Binding Updates on the interfaces through libpcap, verify them in batches in the C\n"
            "core and send the authenticated Binding Acknowledgement each verdict calls for (nothing for a\n"
            "packet that does not authenticate; error acknowledgements rate-limited per peer), keeping a\n"
            "binding cache. Needs CAP_NET_RAW. The kernel must not answer the Binding Updates itself:\n"
            "see docs/serve.md for the nftables rule, the systemd unit, the metrics and the signals.\n\n"
            "Signals: SIGTERM/SIGINT finish the batch in hand, flush the state and exit 0; SIGHUP reloads\n"
            "the key file (state kept); SIGUSR1 writes a JSON snapshot (counters, binding cache).\n"
            "Exit status: 0 after SIGTERM/SIGINT; 1 when an interface cannot be opened or read;\n"
            "2 for usage, filter, key-file and state-file errors."
        ),
        epilog="example: kbmfast serve -i eth0 --keys cn.keys --state /var/lib/kbmfast/cn.state --metrics 127.0.0.1:9449",
    )
    p.add_argument("-i", "--interface", action="append", required=True, metavar="IF", help="capture on IF (repeatable)")
    p.add_argument("--keys", required=True, metavar="KEYS", help="the key file (TOML, mode 0600); SIGHUP reloads it")
    p.add_argument("--state", required=True, metavar="STATE", help="the persistent sequence table (created if missing)")
    p.add_argument(
        "--address",
        action="append",
        type=_address,
        metavar="ADDR",
        help="serve only Binding Updates sent to this correspondent address (repeatable; default: any)",
    )
    p.add_argument("--filter", metavar="BPF", help=f"the capture filter (default: {DEFAULT_FILTER!r})")
    p.add_argument(
        "--batch",
        type=_int_range(1, 65536),
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"most packets per batch (default {DEFAULT_BATCH})",
    )
    p.add_argument(
        "--max-delay-us",
        type=_int_range(0, 10_000_000),
        default=DEFAULT_MAX_DELAY_US,
        metavar="US",
        help=f"hand a batch on this long after its first packet (default {DEFAULT_MAX_DELAY_US})",
    )
    p.add_argument(
        "--buffer-size",
        type=_int_range(0, (1 << 31) - 1),
        default=DEFAULT_BUFFER,
        metavar="BYTES",
        help=f"libpcap's ring buffer per interface (default {DEFAULT_BUFFER})",
    )
    p.add_argument("--max-lifetime", type=_int_range(0, 262140), metavar="S", help="cap the granted lifetime (seconds)")
    p.add_argument(
        "--error-rate",
        type=float,
        default=ERROR_RATE,
        metavar="R",
        help=f"error acknowledgements per second per peer (default {ERROR_RATE:g}, bursts of --error-burst)",
    )
    p.add_argument(
        "--error-burst", type=_int_range(1, 1 << 20), default=ERROR_BURST, metavar="N", help=f"(default {ERROR_BURST})"
    )
    p.add_argument("--metrics", type=_host_port, metavar="HOST:PORT", help="serve Prometheus metrics (needs kbmfast[metrics])")
    p.add_argument(
        "--snapshot", metavar="FILE", help="where SIGUSR1 writes its JSON snapshot (replaced each time; default: stderr)"
    )
    p.add_argument(
        "--stats-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between one-line stats on stderr when it is a terminal (default 10; 0: never)",
    )
    p.add_argument(
        "--workers",
        type=_int_range(1, 64),
        default=1,
        metavar="N",
        help="N processes on each interface (PACKET_FANOUT hash), sharing the state file (default 1)",
    )
    add_rr_flags(p, "serve")
    p.set_defaults(handler=run_serve)


def add_rr_flags(p: argparse.ArgumentParser, command: str) -> None:
    """``--rr`` and ``--compat`` (serve and verify; kbmfast.serve_rr, docs/return-routability.md)."""
    p.add_argument(
        "--rr",
        action="store_true",
        help="return routability for the mobile nodes without a configured key: answer Home/Care-of Test Inits "
        "and verify their RR Binding Updates"
        + (" (a new Kcn at every start, in memory only: mobile nodes rerun RR after a restart)" if command == "serve" else ""),
    )
    p.add_argument(
        "--compat",
        choices=("rfc6275", "rfc3775"),
        default="rfc6275",
        help="rfc3775: care-of = home is a de-registration whatever the lifetime, as UMIP's mobile nodes expect "
        "(default rfc6275; docs/spec-notes.md)",
    )


def _filter(args: argparse.Namespace) -> str | None:
    from ..live import DEFAULT_FILTER

    if not args.address:
        return str(args.filter) if args.filter else None
    hosts = " or ".join(f"ip6 dst host {a}" for a in args.address)
    return f"({args.filter or DEFAULT_FILTER}) and ({hosts})"


def _load_keys(path: str) -> Any:
    from .._types import KeyFileError
    from ..fast import KeyTable

    try:
        return KeyTable.load(path)
    except KeyFileError as e:
        raise CliError(str(e), 2) from None
    except OSError as e:
        raise CliError(f"--keys {os_error_text(e, path)}", 2) from None


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; see the command's description."""
    import importlib.util

    if args.metrics and importlib.util.find_spec("prometheus_client") is None:
        raise CliError("--metrics needs prometheus_client: pip install 'kbmfast[metrics]'", 2)
    if args.error_rate <= 0:
        raise CliError("--error-rate: must be positive", 2)
    if args.rr and args.workers > 1:
        raise CliError("--rr: needs --workers 1 (the nonces live in one process's memory)", 2)
    keys = _load_keys(args.keys)  # checked once here, so a bad file fails before anything opens
    for peer in keys.peers():
        peer.wipe()
    if args.workers == 1:
        return _serve(args, None, 0)
    return _supervise(args)


def _open_captures(args: argparse.Namespace, fanout: int | None) -> list[Any]:
    from ..live import LiveCapture, LiveError

    captures = []
    try:
        for name in args.interface:
            cap = LiveCapture(
                name,
                filter=_filter(args),
                batch=args.batch,
                max_delay_us=args.max_delay_us,
                buffer_size=args.buffer_size,
                fanout_group=fanout,
            )
            captures.append(cap)
            if not cap.can_send:
                raise LiveError("link-type", f"interface {name}: link type {cap.linktype}: serve answers on Ethernet and raw IP")
    except LiveError as e:
        for c in captures:
            c.close()
        raise CliError(str(e), 2 if e.kind == "filter" else 1) from None
    return captures


def _serve(args: argparse.Namespace, fanout: int | None, worker: int) -> int:
    from .._types import KbmError
    from ..fast import Verifier
    from ..serve import RateLimiter, Server, reload_keys, start_metrics

    captures = _open_captures(args, fanout)
    keys = _load_keys(args.keys)
    try:
        verifier = Verifier(keys, state=args.state, max_lifetime=args.max_lifetime, **_rr_args(args))
    except (KbmError, ValueError) as e:
        raise CliError(f"--state {e}", 2) from None
    except OSError as e:
        raise CliError(f"--state {os_error_text(e, args.state)}", 2) from None
    server = Server(verifier, limiter=RateLimiter(args.error_rate, args.error_burst))
    server.captures = captures
    name = "kbmfast serve" + (f" [worker {worker}]" if fanout is not None else "")
    if args.metrics:
        host, port = args.metrics
        try:
            start_metrics(server, host, port + worker)
        except OSError as e:
            raise CliError(f"--metrics {host}:{port + worker}: {os_error_text(e)}", 1) from None
    flags = {"hup": False, "usr1": False}

    def note(signum: int, frame: Any) -> None:
        flags["hup" if signum == signal.SIGHUP else "usr1"] = True

    signal.signal(signal.SIGHUP, note)
    signal.signal(signal.SIGUSR1, note)
    stop = threading.Event()
    errors: list[str] = []

    def work(cap: Any) -> None:
        try:
            server.run(cap, stop)
        except Exception as e:  # an interface gone, a state file error: stop everything
            errors.append(str(e))
            stop.set()

    interrupts = _outputs.current
    threads = [threading.Thread(target=work, args=(c,), name=f"kbmfast-serve-{c.interface}", daemon=True) for c in captures]
    tty = sys.stderr.isatty() and args.stats_interval > 0
    rr = " with return routability" if args.rr else ""
    print(f"{name}: serving on {', '.join(args.interface)}{rr} (pid {os.getpid()})", file=sys.stderr, flush=True)
    with interrupts.deferred():
        for t in threads:
            t.start()
        next_stats = time.monotonic() + args.stats_interval
        while not stop.is_set() and interrupts.signum is None:
            stop.wait(0.1)
            if flags["hup"]:
                flags["hup"] = False
                try:
                    added, rekeyed, removed = reload_keys(verifier.keys, args.keys)
                    text = f"{added} added, {rekeyed} rekeyed, {removed} removed"
                    print(f"{name}: keys reloaded: {text}", file=sys.stderr, flush=True)
                except (KbmError, ValueError, OSError) as e:
                    print(f"{name}: key file not reloaded, the old keys stay: {e}", file=sys.stderr, flush=True)
            if flags["usr1"]:
                flags["usr1"] = False
                _write_snapshot(server.snapshot(), args.snapshot, worker if fanout is not None else None, name)
            now = time.monotonic()
            if now >= next_stats:
                server.cache.expire()
                next_stats = now + (args.stats_interval if args.stats_interval > 0 else 10.0)
                if tty:
                    print(f"{name}: {server.stats_line()}", file=sys.stderr, flush=True)
        stop.set()
        for t in threads:
            t.join()
        interrupts.handled = True
    try:
        verifier.close()
    except OSError as e:
        raise CliError(f"--state {os_error_text(e, args.state)}", 2) from None
    for c in captures:
        c.close()
    if errors:
        raise CliError(errors[0], 1)
    print(f"{name}: stopped: {server.stats_line()}", file=sys.stderr, flush=True)
    return 0


def _rr_args(args: argparse.Namespace) -> dict[str, Any]:
    """Verifier's return_routability= (a fresh Kcn from ``secrets``) and compat=."""
    from .._rr import ReturnRoutability

    return {"return_routability": ReturnRoutability() if args.rr else None, "compat": args.compat}


def _write_snapshot(snapshot: dict[str, Any], path: str | None, worker: int | None, name: str) -> None:
    text = json.dumps(snapshot, sort_keys=True)
    if path is None:
        print(text, file=sys.stderr, flush=True)
        return
    target = path if worker is None else f"{path}.{worker}"
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, target)
    except OSError as e:
        print(f"{name}: snapshot not written: {os_error_text(e)}", file=sys.stderr, flush=True)


def _supervise(args: argparse.Namespace) -> int:
    """--workers N: fork N serving processes joined by one PACKET_FANOUT group, forward
    SIGHUP/SIGUSR1/SIGTERM to them, and exit with the worst of their statuses."""
    group = os.getpid() & 0xFFFF
    children: dict[int, int] = {}
    for worker in range(args.workers):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                _outputs.current = _outputs.Interrupts()
                _outputs.current.install()
                status = _serve(args, group, worker)
            except CliError as e:
                print(f"kbmfast serve [worker {worker}]: {e}", file=sys.stderr, flush=True)
                status = e.status
            except BaseException as e:
                print(f"kbmfast serve [worker {worker}]: {e}", file=sys.stderr, flush=True)
            finally:
                sys.stderr.flush()
                os._exit(status)
        children[pid] = worker

    def forward(signum: int, frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    worst = 0
    while children:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        children.pop(pid, None)
        code = os.waitstatus_to_exitcode(wstatus)
        if code != 0:
            worst = worst or (code if code > 0 else 128 - code)
            forward(signal.SIGTERM, None)  # one worker failed: stop the others
    return worst
