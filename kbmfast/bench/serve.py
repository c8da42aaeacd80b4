"""``kbmfast bench --serve``: ``kbmfast serve`` on a veth pair against a plain libpcap loop.

Two network namespaces joined by a veth pair (created here, removed at the end; needs root). A
``kbmfast gen`` capture of legitimate Binding Updates (no hostile mix, so every packet must be
accepted) is replayed by tcpreplay from the sender's namespace at increasing rates. At each
rate, in turn:

- **plain**: a loop over :class:`kbmfast.live.LiveCapture` that only captures and counts
  (same libpcap set-up, filter and batch buffer as serve; no verification, no replies);
- **serve**: ``kbmfast serve`` with a fresh state file: it verifies, answers every BU with a BA
  and keeps the binding cache.

A side keeps up at a rate when it saw every frame with zero libpcap drops (and, for serve, gave
each packet the verdict ``kbmfast gen`` predicts). The report gives the highest such rate of
each; serve's CPU time per BU (``getrusage`` of the serve process over the step, asked for by
SIGUSR2 through a small wrapper, :func:`_serve_main`), split into user space (utime) and the
kernel (stime: the capture ring, the BAs' transmit over the veth); and
``Verifier.verify_buffer``'s CPU time per BU on the same packets in memory, on the same CPU.
The sender shares the machine: on a small one it limits the top rate.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Sequence
from typing import Any

#: Both namespaces: the kernel's ICMP errors off the wire (docs/serve.md), and the mobility
#: packets dropped before the IPv6 stack (a packet socket has them already: docs/serve.md), so
#: the kernel does not process each BU (and each BA on the sender's side) a second time.
NFT_RULES = """
table inet kbmfast {
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    ip6 nexthdr 135 drop
    dst nexthdr 135 drop
    rt type 2 drop
  }
  chain output {
    type filter hook output priority 0; policy accept;
    icmpv6 type parameter-problem drop
  }
}
"""
DEFAULT_RATES = (2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 0)  # 0: tcpreplay --topspeed
#: Seconds of traffic a step sends at most (fewer packets at low rates, at least MIN_STEP)
STEP_SECONDS = 2.0
MIN_STEP = 4000


class ServeBenchError(Exception):
    """The serve benchmark could not run (not root, a tool missing, a side failed)."""


def _run(*cmd: str, ns: str | None = None, input: str | None = None, check: bool = True) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    done = subprocess.run(full, capture_output=True, text=True, input=input, timeout=120)
    if check and done.returncode:
        raise ServeBenchError(f"{' '.join(full)}: {done.stderr.strip()}")
    return done.stdout


class Veth:
    """Namespaces kbm-bs-*/kbm-br-* (sender, receiver) joined by a veth pair."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tx, self.rx = f"kbm-bs-{tag}", f"kbm-br-{tag}"
        self.tx_if, self.rx_if = f"kbs{tag}", f"kbr{tag}"
        _run("ip", "netns", "add", self.tx)
        try:
            _run("ip", "netns", "add", self.rx)
            _run("ip", "link", "add", self.tx_if, "type", "veth", "peer", "name", self.rx_if)
            for ns, ifname in ((self.tx, self.tx_if), (self.rx, self.rx_if)):
                _run("ip", "link", "set", ifname, "netns", ns)
                _run("ip", "link", "set", ifname, "up", ns=ns)
                _run("nft", "-f", "-", ns=ns, input=NFT_RULES)
            self.rx_mac = self._mac(self.rx, self.rx_if)
            self.tx_mac = self._mac(self.tx, self.tx_if)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _mac(ns: str, ifname: str) -> bytes:
        info = json.loads(_run("ip", "-j", "link", "show", ifname, ns=ns))
        return bytes.fromhex(info[0]["address"].replace(":", ""))

    def close(self) -> None:
        """Delete both namespaces (and the veth pair with them)."""
        for ns in (self.tx, self.rx):
            _run("ip", "netns", "del", ns, check=False)


@dataclasses.dataclass
class Step:
    """One side at one rate."""

    side: str
    target_pps: int  # 0: as fast as the sender goes
    sent_pps: float
    seen: int
    dropped: int
    ok: bool
    cpu_us_per_packet: float | None = None  # user + system
    user_us_per_packet: float | None = None  # user space only (getrusage utime)
    system_us_per_packet: float | None = None  # the kernel, in serve's context (stime)
    bus_per_batch: float | None = None  # how many BUs a batch held on average


@dataclasses.dataclass
class ServeBenchReport:
    """The steps, the best rate of each side and the per-BU costs."""

    packets: int
    cpu: str
    steps: list[Step]
    verify_buffer_us: float  # CPU time (thread_time) per BU

    def busiest(self) -> Step | None:
        """The serve step that kept up with the lowest CPU per BU (the idle loop's wake-ups and
        the start-up spread over the most BUs), or None."""
        done = [s for s in self.steps if s.side == "serve" and s.ok and s.cpu_us_per_packet]
        return min(done, key=lambda s: s.cpu_us_per_packet or 0.0, default=None)

    def best(self, side: str) -> float:
        """The highest sent rate at which ``side`` kept up (0 if none)."""
        return max((s.sent_pps for s in self.steps if s.side == side and s.ok), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "packets": self.packets,
            "cpu": self.cpu,
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "best_plain_pps": self.best("plain"),
            "best_serve_pps": self.best("serve"),
            "verify_buffer_us_per_bu": self.verify_buffer_us,
        }


def cpu_model() -> str:
    """The CPU model as lscpu gives it, and the number of CPUs."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def _pin(cpu: int) -> list[str]:
    """``taskset -c CPU`` when the machine has two CPUs or more and taskset is there: the
    sender on CPU 0 and the side measured on CPU 1, so neither takes the other's time."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


#: The environment variable naming the file :func:`_serve_main` writes its usage to on SIGUSR2.
USAGE_ENV = "KBMFAST_BENCH_USAGE"


def _usage(proc: subprocess.Popen[str], path: str) -> dict[str, float]:
    """Serve's getrusage (utime, stime in seconds) and packets handled so far, by SIGUSR2."""
    if os.path.exists(path):
        os.unlink(path)
    proc.send_signal(signal.SIGUSR2)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return json.loads(text)  # type: ignore[no-any-return]
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    raise ServeBenchError(f"serve did not report its CPU time (exit {proc.poll()})")


def step_packets(pps: int, packets: int) -> int:
    """How many of the capture's packets a step at ``pps`` sends."""
    return packets if pps == 0 else min(packets, max(MIN_STEP, int(pps * STEP_SECONDS)))


def _replay(veth: Veth, pcap: str, pps: int, n: int) -> float:
    rate = ["--topspeed"] if pps == 0 else [f"--pps={pps}"]
    out = _run(*_pin(0), "tcpreplay", "-q", "--preload-pcap", f"--limit={n}", "-i", veth.tx_if, *rate, pcap, ns=veth.tx)
    m = re.search(r"Rated:.*?([\d.]+) pps", out)
    if m is None:
        raise ServeBenchError(f"tcpreplay: no rate in its output: {out.strip()[-200:]}")
    return float(m.group(1))


def _wait_line(proc: subprocess.Popen[str], text: str, timeout: float = 30.0) -> None:
    assert proc.stderr is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise ServeBenchError(f"{text!r} never came (exit {proc.poll()})")


def _plain_step(veth: Veth, pcap: str, pps: int, n: int) -> Step:
    cmd = ["ip", "netns", "exec", veth.rx, *_pin(1), sys.executable, "-P", "-m", "kbmfast.bench.serve", "count", veth.rx_if]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_line(proc, "counting")
        sent = _replay(veth, pcap, pps, n)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = json.loads(out.strip().splitlines()[-1])
    dropped = got["pcap_dropped"] + got["pcap_interface_dropped"]
    return Step("plain", pps, sent, got["packets"], dropped, got["packets"] == n and dropped == 0)


def _serve_step(veth: Veth, pcap: str, keys: str, pps: int, truth: collections.Counter[str], work: str) -> Step:
    """Serve with a fresh state file while ``truth``'s packets (the first of the capture) come.
    Its CPU time is read (SIGUSR2) before the replay and once it has handled every packet or
    stopped moving, before the one snapshot (SIGUSR1) that gives the verdicts and the drops, so
    that the snapshot's JSON is not counted."""
    state, snap = os.path.join(work, f"serve-{pps}.state"), os.path.join(work, "snap.json")
    usage_path = os.path.join(work, "usage.json")
    cmd = ["ip", "netns", "exec", veth.rx, *_pin(1), sys.executable, "-P", "-m", "kbmfast.bench.serve", "serve"]
    cmd += ["-i", veth.rx_if, "--keys", keys, "--state", state, "--snapshot", snap, "--stats-interval", "0"]
    env = dict(os.environ, **{USAGE_ENV: usage_path})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    n = sum(truth.values())
    try:
        _wait_line(proc, "serving on")
        u0 = _usage(proc, usage_path)
        sent = _replay(veth, pcap, pps, n)
        u1 = _usage(proc, usage_path)
        end = time.monotonic() + 30
        while time.monotonic() < end and u1["packets"] < n:  # until every packet or no progress
            time.sleep(0.2)
            u2 = _usage(proc, usage_path)
            moved = u2["packets"] != u1["packets"]
            u1 = u2
            if not moved:
                break
        if os.path.exists(snap):
            os.unlink(snap)
        proc.send_signal(signal.SIGUSR1)
        for _ in range(1000):
            if os.path.exists(snap) and open(snap).read().endswith("\n"):
                break
            time.sleep(0.01)
        snapshot = json.load(open(snap))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cap = snapshot.get("capture", {})
    dropped = int(cap.get("pcap_dropped", 0)) + int(cap.get("pcap_interface_dropped", 0))
    seen = sum(snapshot["packets"].values())
    ok = collections.Counter(snapshot.get("packets", {})) == truth and dropped == 0
    user, system = u1["utime"] - u0["utime"], u1["stime"] - u0["stime"]
    per = 1e6 / max(seen, 1)
    batches = max(1, int(u1["batches"] - u0["batches"]))
    return Step("serve", pps, sent, seen, dropped, ok, (user + system) * per, user * per, system * per, seen / batches)


def _verify_buffer_us(packets: Sequence[bytes], keys_path: str) -> float:
    """verify_buffer's CPU time (this thread's) per BU on the packets, 256 a call (serve's
    default batch), best of 3, on the CPU serve ran on."""
    import kbmfast

    best = float("inf")
    batches = []
    for i in range(0, len(packets), 256):
        chunk = packets[i : i + 256]
        offsets = array("Q", [0])
        for p in chunk:
            offsets.append(offsets[-1] + len(p))
        batches.append((b"".join(chunk), offsets))
    affinity = os.sched_getaffinity(0)
    if _pin(1):
        os.sched_setaffinity(0, {1})
    try:
        for _ in range(3):
            v = kbmfast.Verifier(kbmfast.KeyTable.load(keys_path))
            t = time.thread_time()
            for buf, offs in batches:
                v.verify_buffer(buf, offs)
            best = min(best, time.thread_time() - t)
            v.close()
    finally:
        os.sched_setaffinity(0, affinity)
    return best * 1e6 / len(packets)


def run(packets: int = 100_000, peers: int = 1000, rates: Sequence[int] = DEFAULT_RATES) -> ServeBenchReport:
    """Generate, set up, measure every rate on both sides, tear down."""
    from .. import gen
    from ..capture import PcapWriter

    if os.geteuid() != 0:
        raise ServeBenchError("--serve needs root (it creates network namespaces and a veth pair)")
    for tool in ("ip", "nft", "tcpreplay"):
        if shutil.which(tool) is None:
            raise ServeBenchError(f"--serve needs {tool} (Debian: iproute2, nftables, tcpreplay)")
    work = tempfile.mkdtemp(prefix="kbmfast-serve-bench-")
    veth: Veth | None = None
    try:
        traffic = gen.generate(peers, packets, seed=2024, mix={k: 0.0 for k in gen.DEFAULT_MIX})
        keys = os.path.join(work, "bench.keys")
        traffic.keys.save(keys)
        verdicts = [e.verdict.name for e in traffic.truth]
        veth = Veth()
        pcap = os.path.join(work, "bench.pcap")
        ips = []
        with open(pcap, "wb") as f:
            w = PcapWriter(f, linktype=1)
            for frame, us in traffic.frames:
                w.write(veth.rx_mac + veth.tx_mac + frame[12:], us)
                ips.append(frame[14:])
        steps: list[Step] = []
        for pps in rates:
            n = step_packets(pps, len(ips))
            steps.append(_plain_step(veth, pcap, pps, n))
            steps.append(_serve_step(veth, pcap, keys, pps, collections.Counter(verdicts[:n]), work))
        return ServeBenchReport(len(ips), cpu_model(), steps, _verify_buffer_us(ips, keys))
    finally:
        if veth is not None:
            veth.close()
        shutil.rmtree(work, ignore_errors=True)


def format_report(r: ServeBenchReport) -> str:
    """The table of docs/performance.md."""
    lines = [
        f"kbmfast serve on a veth pair: up to {r.packets} Binding Updates a step (at most {STEP_SECONDS:g} s of traffic), "
        f"replayed by tcpreplay; CPU: {r.cpu}",
        "| target pps | side | sent pps | BUs seen | drops | kept up | CPU µs/BU | user µs/BU | kernel µs/BU | BUs/batch |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in r.steps:
        target = "top speed" if s.target_pps == 0 else str(s.target_pps)
        cpu = ["" if x is None else f"{x:.2f}" for x in (s.cpu_us_per_packet, s.user_us_per_packet, s.system_us_per_packet)]
        cpu.append("" if s.bus_per_batch is None else f"{s.bus_per_batch:.0f}")
        kept = "yes" if s.ok else "no"
        lines.append(f"| {target} | {s.side} | {s.sent_pps:,.0f} | {s.seen} | {s.dropped} | {kept} | {' | '.join(cpu)} |")
    plain, serve = r.best("plain"), r.best("serve")
    lines.append(f"highest rate kept up: plain capture {plain:,.0f} pps, serve {serve:,.0f} pps")
    if plain:
        lines.append(f"serve / plain: {serve / plain:.0%} (target: at least 80%)")
    vb = r.verify_buffer_us
    lines.append(f"verify_buffer in memory (CPU time, 256 a call): {vb:.2f} µs/BU")
    b = r.busiest()
    if b is not None and b.cpu_us_per_packet and b.user_us_per_packet is not None and b.system_us_per_packet is not None:
        target = "top speed" if b.target_pps == 0 else f"{b.target_pps} pps"
        lines.append(
            f"serve's CPU per BU (step {target}): {b.cpu_us_per_packet:.2f} µs = {b.cpu_us_per_packet / vb:.1f}x verify_buffer; "
            f"user space {b.user_us_per_packet:.2f} µs = {b.user_us_per_packet / vb:.1f}x verify_buffer (target: 1.5x); "
            f"kernel {b.system_us_per_packet:.2f} µs ({b.system_us_per_packet / b.cpu_us_per_packet:.0%} of serve's CPU)"
        )
    return "\n".join(lines)


def _count(interface: str) -> int:
    """The plain side: capture and count until SIGTERM, then print the counters as JSON."""
    from ..live import LiveCapture

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with LiveCapture(interface) as cap:
        print("counting", file=sys.stderr, flush=True)
        while not stop:
            cap.batch(None, idle_ms=50)
        print(json.dumps(cap.stats()), flush=True)
    return 0


def _serve_main(argv: list[str]) -> int:
    """``kbmfast serve ARGV`` that also answers SIGUSR2 with its getrusage (utime, stime) and
    the packets it has handled, as one JSON line in the file named by $KBMFAST_BENCH_USAGE
    (the bench's CPU probe: cheaper than a snapshot, and precise where /proc has 10 ms ticks)."""
    import resource
    import runpy

    from .. import serve as serve_mod

    servers: list[Any] = []
    init = serve_mod.Server.__init__

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        servers.append(self)

    serve_mod.Server.__init__ = record  # type: ignore[method-assign]
    path = os.environ[USAGE_ENV]

    def report(*_: Any) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        packets = batches = 0
        for s in servers:
            with s.stats.lock:
                packets += sum(s.stats.verdicts.values())
                batches += s.stats.batches
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"utime": ru.ru_utime, "stime": ru.ru_stime, "packets": packets, "batches": batches}) + "\n")
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR2, report)
    sys.argv = ["kbmfast", "serve", *argv]
    try:  # as ``python -m kbmfast.cli`` (not imported here: kbmfast.cli imports this module)
        runpy.run_module("kbmfast.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "count":
        sys.exit(_count(sys.argv[2]))
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        sys.exit(_serve_main(sys.argv[2:]))
    print("usage: python -m kbmfast.bench.serve count IF | serve SERVE-ARGS", file=sys.stderr)
    sys.exit(2)
