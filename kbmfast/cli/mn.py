"""``kbmfast mn``: a mobile node on an interface, registering with one correspondent node.

Binding Updates come from a :class:`kbmfast.BindingUpdateList` (sequence numbers kept in
``--state``), go out through :class:`kbmfast.link.Link` (a raw IPv6 socket: the packet carries
a Home Address option, which a kernel without MIPv6 would not send itself) and the Binding
Acknowledgements are read from a packet socket on the same interface and verified by the list.
An authenticated status 135 makes the list adopt the correspondent's last sequence and the
Binding Update is sent again at once; the registration is refreshed before the granted
lifetime runs out; SIGTERM/SIGINT (or the end of ``--count``) de-register (lifetime 0).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from typing import TYPE_CHECKING, Any

from .._outputs import CliError, os_error_text

if TYPE_CHECKING:
    from .._outputs import Subparsers

#: Resynchronisations (authenticated 135, or 136-138 then RR again) in a row before giving up.
MAX_RESYNC = 3
#: The verdicts of an RR Binding Acknowledgement saying the nonces expired (BA 136, 137, 138).
_NONCES_EXPIRED = (11, 12, 13)


def _address(text: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv6 address: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be more than 0 (and less than 1e6), not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def _lifetime(text: str) -> int:
    value = _count(text)
    if not 4 <= value <= 262140 or value % 4:
        raise argparse.ArgumentTypeError(f"must be a multiple of 4 s in 4..262140, not {value}")
    return value


def add_mn(sub: Subparsers[argparse.ArgumentParser]) -> None:
    """``kbmfast mn``: register a home address with a correspondent node over an interface."""
    p = sub.add_parser(
        "mn",
        help="run a mobile node: send Binding Updates, verify the acknowledgements, de-register on exit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Register HOME at CARE-OF with the correspondent node CN over interface IF, authorized with the\n"
            "Kbm that KEYS (a kbmfast key file, e.g. the correspondent's own) holds for HOME, or with --rr\n"
            "by return routability (RFC 6275 §5.2: the Home Test Init goes from HOME, so it must reach CN\n"
            "and the Home Test come back on IF, as through a home agent's tunnel); verify every\n"
            "Binding Acknowledgement; on an authenticated status 135 adopt the correspondent's sequence and\n"
            "send again; refresh before the granted lifetime runs out; de-register (lifetime 0) after\n"
            "--count registrations or on SIGTERM/SIGINT. One line per event on stdout.\n"
            "Needs CAP_NET_RAW. The kernel has no Mobile IPv6: keep its ICMPv6 Parameter Problem errors\n"
            "about the Binding Acknowledgements off the wire (nftables rule in docs/tools.md).\n"
            "Exit status: 0 after de-registering (also on SIGTERM/SIGINT); 1 when the correspondent does\n"
            "not answer, refuses, or the interface cannot be used; 2 on bad arguments or key file."
        ),
        epilog="example: kbmfast mn -i eth0 --home 2001:db8:1::100 --care-of 2001:db8:2::200 "
        "--correspondent 2001:db8:3::300 --keys cn.keys --state mn.state",
    )
    p.add_argument("-i", "--interface", required=True, metavar="IF", help="the interface to send and receive on")
    p.add_argument("--home", required=True, type=_address, metavar="HOA", help="the mobile node's home address")
    p.add_argument("--care-of", required=True, type=_address, metavar="COA", help="its care-of address on IF")
    p.add_argument("--correspondent", required=True, type=_address, metavar="CN", help="the correspondent node")
    p.add_argument("--keys", metavar="KEYS", help="key file holding the Kbm of HOME (or --rr)")
    p.add_argument(
        "--rr",
        action="store_true",
        help="no preconfigured key: run return routability with CN (Home and Care-of Test Init) whenever the "
        "keygen tokens are missing or stale, and authorize with the Kbm they give (instead of --keys)",
    )
    p.add_argument("--state", metavar="FILE", help="sequence state file (a restart never reuses a sequence)")
    p.add_argument("--lifetime", type=_lifetime, default=420, metavar="S", help="requested lifetime in s (default 420)")
    p.add_argument(
        "--count",
        type=_count,
        default=0,
        metavar="N",
        help="de-register and exit after N registrations (default 0: run until signalled)",
    )
    p.add_argument(
        "--interval",
        type=_seconds,
        metavar="S",
        help="seconds between refreshes (default and at most: 3/4 of the granted lifetime)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="first wait for an acknowledgement (default 1 s; doubled each retry)",
    )
    p.add_argument("--retries", type=_count, default=4, metavar="N", help="retransmissions before giving up (default 4)")
    p.set_defaults(handler=run_mn)


def _kbm(path: str, home: ipaddress.IPv6Address) -> bytearray:
    """HOME's Kbm from the key file (a private copy the caller wipes)."""
    from .._keys import KIND_KBM
    from .._types import KeyFileError
    from ..fast import KeyTable

    try:
        keys = KeyTable.load(path)
    except KeyFileError as e:
        raise CliError(str(e), 2) from None
    except OSError as e:
        raise CliError(f"--keys {os_error_text(e, path)}", 2) from None
    try:
        peer = keys.peer(home.packed)
        if peer is None:
            raise CliError(f"--keys {path}: no peer with home address {home}", 2)
        if peer.kind != KIND_KBM:
            raise CliError(f"--keys {path}: home {home} has an RFC 4449 Kcn; kbmfast mn registers Kbm peers only", 2)
        return bytearray(peer.key)
    finally:
        for p in keys.peers():
            p.wipe()


class _Node:
    """The exchange with one correspondent: registrations, refreshes, the de-registration."""

    def __init__(self, args: argparse.Namespace, bul: Any, link: Any) -> None:
        self.args = args
        self.bul = bul
        self.link = link
        self.cn = args.correspondent
        self.coa = args.care_of

    def say(self, text: str) -> None:
        print(text, flush=True)

    def exchange(self, lifetime: int, *, stop_on_signal: bool) -> Any:
        """Send Binding Updates until one is acknowledged; the verified Result, or None when a
        signal came (``stop_on_signal``). Raises CliError when the correspondent does not
        answer or refuses."""
        from .. import _outputs
        from .._types import BAStatus, Verdict

        resyncs = 0
        attempt = 0
        wait = self.args.timeout
        what = "de-registration" if lifetime == 0 else "registration"
        while True:
            packet = self.binding_update(lifetime, stop_on_signal)
            if packet is None:
                return None
            sent = time.monotonic()
            self.link.send(packet)
            end = sent + wait
            result = None
            while result is None:
                if stop_on_signal and _outputs.current.signum is not None:
                    return None
                left = end - time.monotonic()
                if left <= 0:
                    break
                reply = self.link.receive(min(left, 0.1))
                if reply is None or reply[8:24] != self.cn.packed or reply[24:40] != self.coa.packed:
                    continue
                r = self.bul.process_ack(reply)
                if r.verdict in (Verdict.BAD_AUTHENTICATOR, Verdict.MISSING_AUTHORIZATION, Verdict.BAD_CHECKSUM):
                    self.say(f"ignored an acknowledgement from {self.cn}: {r.verdict.name.lower()}")
                elif r.verdict == Verdict.ACCEPTED or (r.verdict == Verdict.SEQUENCE_OUT_OF_WINDOW and r.ba_status == 135):
                    result = r
                elif r.verdict in _NONCES_EXPIRED:  # the BUL forgot the tokens: rerun RR
                    result = r
            if result is None:
                attempt += 1
                if attempt > self.args.retries:
                    raise CliError(f"{what}: no acknowledgement from {self.cn} after {attempt} Binding Updates", 1)
                wait *= 2
                continue
            ms = (time.monotonic() - sent) * 1e3
            status = result.ba_status
            if result.verdict == Verdict.ACCEPTED and status < 128:
                return result, ms
            if result.verdict in _NONCES_EXPIRED:
                resyncs += 1
                self.say(f"{self.cn} answered {status} (nonce indices expired): rerunning return routability")
                if resyncs > MAX_RESYNC:
                    raise CliError(f"{what}: {self.cn} keeps answering {status} after {MAX_RESYNC} return routability runs", 1)
                continue
            if status == BAStatus.SEQUENCE_OUT_OF_WINDOW:
                resyncs += 1
                self.say(f"sequence out of window: {self.cn} last accepted {result.last_sequence}; resynchronised, sending again")
                if resyncs > MAX_RESYNC:
                    raise CliError(f"{what}: {self.cn} keeps answering 135 after {MAX_RESYNC} resynchronisations", 1)
                continue
            try:
                name = BAStatus(status).name.lower().replace("_", " ")
            except ValueError:
                name = "unknown status"
            raise CliError(f"{what} refused by {self.cn}: status {status} ({name})", 1)

    def binding_update(self, lifetime: int, stop_on_signal: bool) -> bytes | None:
        """The next Binding Update; with --rr, return routability first when the keygen tokens
        are missing or stale (None when a signal came meanwhile, ``stop_on_signal``)."""
        if self.args.rr:
            try:
                return bytes(self.bul.binding_update(self.cn, care_of=self.coa, lifetime=lifetime))
            except (KeyError, ValueError):  # RR never run, or no fresh keygen tokens
                if not self.return_routability(stop_on_signal):
                    return None
            try:
                return bytes(self.bul.binding_update(self.cn, care_of=self.coa, lifetime=lifetime))
            except ValueError as e:  # pragma: no cover - the tests just arrived
                raise CliError(str(e), 1) from None
        return bytes(self.bul.binding_update(self.cn, care_of=self.coa, lifetime=lifetime))

    def return_routability(self, stop_on_signal: bool) -> bool:
        """Send a Home Test Init and a Care-of Test Init until both tests come back (False when
        a signal came, ``stop_on_signal``); CliError when CN does not answer."""
        from .. import _outputs

        wait = self.args.timeout
        for _ in range(self.args.retries + 1):
            start = time.monotonic()
            for init in self.bul.return_routability(self.cn, care_of=self.coa):
                self.link.send(init)
            got: set[bytes] = set()
            end = start + wait
            while len(got) < 2:
                if stop_on_signal and _outputs.current.signum is not None:
                    return False
                left = end - time.monotonic()
                if left <= 0:
                    break
                reply = self.link.receive(min(left, 0.1))
                if reply is not None and reply[8:24] == self.cn.packed and self.bul.process_test(reply):
                    got.add(reply[24:40])
            if len(got) == 2:
                ms = (time.monotonic() - start) * 1e3
                self.say(f"return routability with {self.cn}: home and care-of keygen tokens received ({ms:.1f} ms)")
                return True
            wait *= 2
        raise CliError(f"return routability: no Home Test and Care-of Test from {self.cn} after {self.args.retries + 1} tries", 1)

    def run(self) -> int:
        from .. import _outputs

        args = self.args
        registrations = 0
        interrupts = _outputs.current
        with interrupts.deferred():
            while args.count == 0 or registrations < args.count:
                got = self.exchange(args.lifetime, stop_on_signal=True)
                if got is None:
                    break
                result, ms = got
                registrations += 1
                granted = int(result.lifetime or 0)
                self.say(
                    f"registered {args.home} at {self.coa} with {self.cn}: sequence {result.sequence}, "
                    f"status {result.ba_status}, lifetime {granted} s ({ms:.1f} ms)"
                )
                if args.count and registrations >= args.count:
                    break
                refresh = 0.75 * granted if granted else args.lifetime * 0.75
                if args.interval is not None:
                    refresh = min(refresh, args.interval)
                end = time.monotonic() + refresh
                while interrupts.signum is None and time.monotonic() < end:
                    self.link.receive(min(0.1, max(end - time.monotonic(), 0.0)))  # drains, wakes often
                if interrupts.signum is not None:
                    break
            interrupts.handled = True
            if interrupts.signum is not None:
                self.say(f"{interrupts.name}: de-registering")
            got = self.exchange(0, stop_on_signal=False)
            result, ms = got
            self.say(
                f"de-registered {args.home} with {self.cn}: sequence {result.sequence}, status {result.ba_status} ({ms:.1f} ms)"
            )
        return 0


def run_mn(args: argparse.Namespace) -> int:
    """Register, refresh, de-register; see the command's description."""
    from ..fast import BindingUpdateList
    from ..link import Link, LinkError

    if args.care_of == args.home:
        raise CliError("--care-of: must differ from --home (a mobile node at home does not register)", 2)
    if bool(args.rr) == bool(args.keys):
        raise CliError("give --keys KEYS or --rr (return routability), one of them", 2)
    kbm = bytearray() if args.rr else _kbm(args.keys, args.home)
    try:
        try:
            link = Link(args.interface)
        except LinkError as e:
            raise CliError(str(e), 1) from None
        try:
            bul = BindingUpdateList(args.home, state=args.state)
        except (OSError, ValueError) as e:
            link.close()
            text = os_error_text(e, args.state) if isinstance(e, OSError) else str(e)
            raise CliError(f"--state {text}", 2) from None
        try:
            if not args.rr:
                bul.add(args.correspondent, kbm)
            try:
                return _Node(args, bul, link).run()
            except LinkError as e:
                raise CliError(str(e), 1) from None
        finally:
            bul.close()
            link.close()
    finally:
        for i in range(len(kbm)):
            kbm[i] = 0
        sys.stdout.flush()
