"""One benchmark run (:func:`run`) and its :class:`Report`: the derived figures, the issue's
targets, the text table (:func:`format_report`) and the plot (:func:`plot`)."""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
from dataclasses import dataclass
from typing import Any, BinaryIO

import kbmfast

from . import measures as _measures
from .measures import (
    Figure,
    Measure,
    Plan,
    _backends,
    _cpus,
    execute,
    kernel_choice,
    measure_setup,
    plan_bare_call,
    plan_compress,
    plan_compress_parallel,
    plan_kernels,
    plan_latency,
    plan_oneshot,
    plan_processes,
    plan_reference,
    plan_threads,
    plan_traffic,
    plan_verify_batch,
    plan_verify_buffer,
    plan_verify_buffer_kernels,
    run_big_table,
)
from .rr import rr_ratio
from .workload import MAX_ROUNDS, SWEEP_PACKETS, BenchConfig, BenchError, Workload, make_traffic, make_workload

# The targets, checked in Report.targets().
TARGET_OF_CEILING = 0.50
TARGET_VS_REFERENCE = 60.0
TARGET_VS_ONESHOT = 25.0
TARGET_BIG_VS_HEADLINE = 0.70
TARGET_THREADS = 1.8
TARGET_OVERHEAD_US = 1.0
TARGET_BYTES_PER_PEER = 128.0

# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: what it asks, what was measured, and whether it is met."""

    text: str
    measured: str
    met: bool | None  # None: not measured in this run
    note: str = ""


@dataclass(frozen=True)
class Report:
    """All measures of one run, with the figures derived from them."""

    config: BenchConfig
    environment: dict[str, Any]
    measures: tuple[Measure, ...]
    figures: tuple[Figure, ...] = ()

    def find(self, name: str, batch: int | None = None, peers: int | None = None) -> Measure:
        """The measure called ``name`` (of that batch size and peer count, when given; the
        configured peer count otherwise)."""
        want = self.config.peers if peers is None else peers
        for m in self.measures:
            if m.name == name and (batch is None or m.batch == batch) and m.peers in (want, 0):
                return m
        raise KeyError(name)

    def get(self, name: str, batch: int | None = None, peers: int | None = None) -> Measure | None:
        """``find``, or None."""
        try:
            return self.find(name, batch, peers)
        except KeyError:
            return None

    def figure(self, name: str) -> Figure | None:
        """The figure called ``name``, or None."""
        return next((f for f in self.figures if f.name == name), None)

    def _best_compress(self) -> Measure:
        return max((m for m in self.measures if m.unit == "compressions" and ".x" not in m.name), key=lambda m: m.best)

    @property
    def ceiling(self) -> float:
        """Verifications/s the SHA-1 kernels allow: the best compressions/s of any kernel (SHA-NI on
        1 or 2 streams, the multi-buffer ones), / 2 compressions per minimal Binding Update."""
        return self._best_compress().best / 2

    def mix_ceiling(self, kind: str) -> float | None:
        """Verifications/s the SHA-1 kernels allow on ``kind`` generated traffic: the best
        compressions/s of any kernel / the compressions per packet that mix needs
        (workload.mix_compressions), or None when that traffic was not made."""
        f = self.figure(f"mix.{kind}.compressions")
        return None if f is None or not f.value else self._best_compress().best / f.value

    @property
    def ceiling_source(self) -> str:
        """Which measure set the ceiling, in words."""
        return self._best_compress().label.removeprefix("SHA-1 compression, ")

    def ratios(self, m: Measure) -> dict[str, float]:
        """A throughput measure against the reference and the one-shot HMAC (at the same number
        of peers when measured there) and the ceiling."""
        ref = self.get("reference.verify_batch", peers=m.peers) or self.find("reference.verify_batch")
        if m.name.startswith("c.traffic."):
            ref = self.get("reference.traffic." + m.name.split(".")[-1]) or ref
        one = self.get("oneshot_hmac", peers=m.peers) or self.find("oneshot_hmac")
        out = {"vs_reference": m.best / ref.best, "vs_oneshot_hmac": m.best / one.best, "of_ceiling": m.best / self.ceiling}
        mix = self.mix_ceiling(m.name.split(".")[-1]) if m.name.startswith("c.traffic.") else None
        if mix is not None:
            out["of_mix_ceiling"] = m.best / mix
        return out

    @property
    def headline(self) -> dict[str, float]:
        """C ``verify_buffer`` at the largest batch size: verifications/s and its ratios."""
        m = self.find("c.verify_buffer", max(self.config.batches))
        return {"batch": m.batch or 0, "verifications_per_s": m.best, **self.ratios(m)}

    @property
    def overhead_us(self) -> float | None:
        """What verify() costs per call beyond the bare C call it wraps, µs (warm caches)."""
        v, bare = self.get("c.verify"), self.get("c.bare_call")
        return None if v is None or bare is None else 1e6 / v.best - 1e6 / bare.best

    def targets(self) -> list[Target]:
        """The issue's targets against this run's figures."""
        c, h = self.config, self.headline
        ceiling, rate = self.ceiling, h["verifications_per_s"]
        one = self.find("oneshot_hmac")
        at = f"{c.peers} peers, batch {h['batch']:.0f}"
        out = [
            Target(f"verify_buffer >= {TARGET_OF_CEILING:.0%} of the SHA-1 ceiling ({at})",
                   f"{h['of_ceiling']:.0%} ({si(rate)}/s of {si(ceiling)}/s)", h["of_ceiling"] >= TARGET_OF_CEILING),
            Target(f"verify_buffer >= {TARGET_VS_REFERENCE:.0f}x the reference",
                   f"{h['vs_reference']:.0f}x", h["vs_reference"] >= TARGET_VS_REFERENCE),
            Target(f"verify_buffer >= {TARGET_VS_ONESHOT:.0f}x one-shot HMAC", f"{h['vs_oneshot_hmac']:.1f}x",
                   h["vs_oneshot_hmac"] >= TARGET_VS_ONESHOT,
                   f"{TARGET_VS_ONESHOT:.0f}x one-shot ({si(one.best)}/s) is {si(TARGET_VS_ONESHOT * one.best)}/s: "
                   f"{TARGET_VS_ONESHOT * one.best / ceiling:.1f}x the SHA-1 ceiling of this CPU"),
        ]  # fmt: skip
        for kind in ("shapes", "rejects"):
            m, mix = self.get(f"c.traffic.{kind}"), self.mix_ceiling(kind)
            if m is not None and mix is not None:
                out.append(
                    Target(f"{kind} traffic >= {TARGET_OF_CEILING:.0%} of the ceiling for that mix",
                           f"{m.best / mix:.0%} ({si(m.best)}/s of {si(mix)}/s)", m.best / mix >= TARGET_OF_CEILING)
                )  # fmt: skip
        big = self.get("c.verify_buffer", max(c.batches), c.big_peers) if c.big_peers else None
        out.append(
            Target(f"{c.big_peers or 1_000_000} peers >= {TARGET_BIG_VS_HEADLINE:.0%} of the {c.peers}-peer figure",
                   "not measured" if big is None else f"{big.best / rate:.0%} ({si(big.best)}/s)",
                   None if big is None else big.best / rate >= TARGET_BIG_VS_HEADLINE)
        )  # fmt: skip
        one_t, two_t = self.get("c.threads.1"), self.get(f"c.threads.{c.threads}")
        scaled = None if one_t is None or two_t is None or c.threads < 2 else two_t.best / one_t.best
        sha_one, sha_n = self.get("compress.1"), self.get(f"compress.1.x{c.threads}")
        sha_scaling = "" if sha_one is None or sha_n is None else f"; raw SHA-1 itself scales {sha_n.best / sha_one.best:.2f}x"
        out.append(
            Target(f"{c.threads} threads >= {TARGET_THREADS}x one thread (one Verifier, a CPU each)",
                   "not measured" if scaled is None else f"{scaled:.2f}x", None if scaled is None else scaled >= TARGET_THREADS,
                   f"{os.cpu_count()} CPUs, shared with whatever else runs{sha_scaling}")
        )  # fmt: skip
        o = self.overhead_us
        out.append(
            Target(f"verify() <= {TARGET_OVERHEAD_US:.0f} us per call above the C work",
                   "not measured" if o is None else f"{o:.2f} us above the bare C call",
                   None if o is None else o <= TARGET_OVERHEAD_US,
                   "the C work counted as the bare kbm_verify call from Python (cffi + GIL release included)")
        )  # fmt: skip
        mem = self.figure("memory.verifier")
        live = self.figure("memory.verifier_live")
        out.append(
            Target(f"<= {TARGET_BYTES_PER_PEER:.0f} bytes of memory per configured peer (beyond the key table)",
                   "not measured" if mem is None else f"{mem.value:.0f} B/peer RSS"
                   + ("" if live is None else f" ({live.value:.0f} B/peer after malloc_trim)"),
                   None if mem is None else mem.value <= TARGET_BYTES_PER_PEER)
        )  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values (rates per second, latencies in µs)."""
        rows = []
        for m in self.measures:
            row: dict[str, Any] = {
                "name": m.name,
                "label": m.label,
                "peers": m.peers or None,
                "batch": m.batch,
                "unit": m.unit,
                "items": m.items,
                "seconds": list(m.seconds),
                "best_per_s": m.best,
                "median_per_s": m.median,
            }
            if m.unit == "verifications":
                row.update(self.ratios(m))
            row.update(rr_ratio(m, self.ceiling))  # return routability's rows
            if m.unit == "calls":
                row["best_us_per_call"] = 1e6 / m.best
                row["median_us_per_call"] = 1e6 / m.median
            rows.append(row)
        return {
            "config": dataclasses.asdict(self.config),
            "environment": self.environment,
            "ceiling_verifications_per_s": self.ceiling,
            "ceiling_from": self.ceiling_source,
            "headline": self.headline,
            "verify_overhead_us": self.overhead_us,
            "measures": rows,
            "figures": [dataclasses.asdict(f) for f in self.figures],
            "targets": [dataclasses.asdict(t) for t in self.targets()],
        }


def environment(w: Workload | None = None) -> dict[str, Any]:
    """Where the figures come from: versions, the SHA-1 kernel, the CPU."""
    env: dict[str, Any] = {
        "kbmfast": kbmfast.__version__,
        "kernel": kbmfast.kernel,
        "kernel_choice": kernel_choice(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
    }
    if w is not None:
        env["packets"] = len(w)
        env["packet_bytes"] = len(w.packets[0])
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(config: BenchConfig | None = None, workload: Workload | None = None, *, plot: bool = False) -> Report:
    """Build the workload (unless given) and measure every path on it, the runs of all measures
    interleaved (see Plan); ``plot`` adds the sweeps."""
    c = config or BenchConfig()
    if plot and not (c.peer_sweep or c.batch_sweep):
        c = c.with_plot_sweeps()
    w = workload or make_workload(c.peers, c.rounds, c.seed)
    top = max(c.batches)
    plans: list[Plan] = []
    figures: list[Figure] = []
    for batch in c.batches:
        plans += [plan_verify_buffer(w, batch), plan_verify_batch(w, batch)]
    plans += [plan_reference(w, c.reference_packets), plan_oneshot(w)]
    plans += [plan_compress(c.ceiling_blocks, streams) for streams in (1, 2)]
    plans += plan_kernels(c.ceiling_blocks)
    plans += plan_verify_buffer_kernels(w, top)
    from .rr import rr_plans  # return routability (issue 12): its own module

    plans += rr_plans(min(c.peers, 4096), 4, top, c.seed, _measures)
    plans += [
        plan_latency("c", w, c.latency_calls),
        plan_latency("c", w, c.latency_calls, cold=True),
        plan_bare_call(w, c.latency_calls),
        plan_latency("reference", w, c.reference_latency_calls),
    ]
    if c.threads >= 2:
        plans += [plan_threads(w, n, top) for n in (1, c.threads)]
        if _cpus(c.threads):  # pinned above; unpinned too, for comparison
            plans.append(plan_threads(w, c.threads, top, pin=False))
    if c.mixed_packets:
        for kind in ("shapes", "rejects"):
            t = make_traffic(kind, c.peers, c.mixed_packets, c.seed)
            plans += plan_traffic(t, top, min(c.reference_packets, len(t.packets)))
            figures += [Figure(f"traffic.{kind}.{k}", f"{kind}: {k}", v, "share") for k, v in t.shares.items()]
            per_packet = t.compressions / len(t.packets)
            figures.append(Figure(f"mix.{kind}.compressions", f"{kind} traffic: SHA-1 compressions", per_packet, "/packet"))
    for n in c.peer_sweep:
        if n != c.peers:
            rounds = max(1, min(MAX_ROUNDS, SWEEP_PACKETS // n))
            plans += _backends(make_workload(n, rounds, c.seed), top, min(c.reference_packets, 2_000))
    for batch in c.batch_sweep:
        if batch not in c.batches:
            plans += [plan_verify_buffer(w, batch), plan_verify_batch(w, batch)]
        if batch in (1, 16, 256, 4096):
            plans.append(plan_reference(w, min(c.reference_packets, 2_000), batch))
    with tempfile.TemporaryDirectory(prefix="kbmfast-bench-") as tmp:
        if c.processes >= 2:
            plans += [p for p in (plan_processes(w, n, top, tmp) for n in (1, c.processes)) if p]
        if max(c.threads, c.processes) >= 2:
            parallel = plan_compress_parallel(c.ceiling_blocks, max(c.threads, c.processes))
            plans += [parallel] if parallel else []
        measures = execute(plans, c.repeat)
    figures += measure_setup(w, min(c.repeat, 3))
    if c.big_peers:
        big = run_big_table(c, plot=bool(c.peer_sweep))
        peers, seconds = big["verify_buffer"]
        label = f"C verify_buffer, batch {top}, {peers} peers"
        measures.append(Measure("c.verify_buffer", label, peers, seconds, top, peers=peers))
        measures += [Measure(*row) for row in big.get("plot", [])]
        s, mem = big["setup"], big["memory"]
        figures += [
            Figure("big.setup.keytable", f"KeyTable.add_kbm, {peers} peers", s["keytable_s"] / peers * 1e6, "µs/peer"),
            Figure("big.setup.verifier", f"Verifier(keys), {peers} peers", s["verifier_s"] / peers * 1e6, "µs/peer"),
            Figure("big.setup.keyfile", f"key file -> Verifier (load + Verifier), {peers} peers", s["keyfile_s"], "s"),
            Figure("big.setup.keyfile_state", "  the same with a new state file", s["keyfile_state_s"], "s"),
            Figure("big.setup.keyfile_state_again", "  again, that state file (a restart)", s["keyfile_state_again_s"], "s"),
            Figure("memory.keytable", f"KeyTable (the key file in memory), {peers} peers", mem["keytable"], "B/peer"),
            Figure("memory.verifier", f"Verifier beyond the key table, {peers} peers (RSS)", mem["verifier"], "B/peer"),
        ]
        if mem["verifier_live"] is not None:
            figures.append(
                Figure("memory.verifier_live", "  of which still in use (after malloc_trim)", mem["verifier_live"], "B/peer")
            )
    return Report(c, environment(w), tuple(measures), tuple(figures))


def run_dict(config: BenchConfig | None = None) -> dict[str, Any]:
    """``run(config).to_dict()``: the results as JSON-ready values (``kbmfast bench --json``)."""
    return run(config).to_dict()


# ---------------------------------------------------------------------------------------------
# Text and plot


def si(x: float) -> str:
    """A rate in a short form: 6.51 M, 54.5 k, 812."""
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def _row(label: str, *cells: str) -> str:
    return f"{label:<54}" + "".join(f"{c:>11}" for c in cells)


def format_report(r: Report) -> str:
    """A readable table of ``r``."""
    c, env = r.config, r.environment
    top = max(c.batches)
    lines = [
        f"kbmfast {env['kbmfast']} bench: {c.peers} peers x {c.rounds} rounds = {env['packets']} minimal Binding Updates "
        f"({env['packet_bytes']} bytes), one core unless said",
        f"MAC kernel {env.get('kernel_choice', env['kernel'])}",
        f"{env['cpu']} ({env['cpus']} CPUs); Python {env['python']}; best of {c.repeat} (median beside it)",
        "",
        _row("verifications/s", "best", "median", "x ref", "x one-shot", "of ceiling"),
    ]

    def rate(m: Measure | None, label: str | None = None) -> None:
        if m is not None:
            q = r.ratios(m)
            lines.append(
                _row(label or m.label, si(m.best), si(m.median), f"{q['vs_reference']:.1f}", f"{q['vs_oneshot_hmac']:.2f}",
                     f"{q['of_ceiling']:.2f}")
            )  # fmt: skip

    for batch in c.batches:
        rate(r.get("c.verify_buffer", batch))
        rate(r.get("c.verify_batch", batch))
    for m in r.measures:
        if m.name.startswith("c.verify_buffer.kernel."):
            rate(m)
    rate(r.get("reference.verify_batch"))
    rate(r.get("oneshot_hmac"))
    if c.big_peers:
        rate(r.get("c.verify_buffer", top, c.big_peers))
    for name in ("c.threads.1", f"c.threads.{c.threads}", f"c.threads.{c.threads}.unpinned"):
        rate(r.get(name))
    for name in ("c.processes.1", f"c.processes.{c.processes}"):
        rate(r.get(name))
    for kind in ("shapes", "rejects"):
        rate(r.get(f"c.traffic.{kind}"), f"C verify_buffer, {kind} traffic (kbmfast.gen)")
        rate(r.get(f"reference.traffic.{kind}"), f"reference, {kind} traffic")
    for kind in ("shapes", "rejects"):
        got, mix, f = r.get(f"c.traffic.{kind}"), r.mix_ceiling(kind), r.figure(f"mix.{kind}.compressions")
        if got is not None and mix is not None and f is not None:
            label = f"  of the ceiling for {kind} traffic ({f.value:.2f} compressions/packet)"
            lines.append(_row(label, si(mix), "", "", "", f"{got.best / mix:.2f}"))
    lines.append(_row(f"ceiling ({r.ceiling_source}: best compressions/s / 2)", si(r.ceiling)))
    from .rr import rr_rows

    lines += rr_rows(r.measures, r.ceiling, _row, si)  # of ceiling: of compressions/s ÷ their count

    lines += ["", _row("latency and SHA-1", "best", "median")]
    for m in r.measures:
        if m.unit == "calls":
            lines.append(_row(m.label + " (µs/call)", f"{1e6 / m.best:.2f}", f"{1e6 / m.median:.2f}"))
    if r.overhead_us is not None:
        lines.append(_row("verify() above the bare C call (µs/call)", f"{r.overhead_us:.2f}"))
    for m in r.measures:
        if m.unit == "compressions":
            lines.append(_row(m.label + " (/s)", si(m.best), si(m.median)))

    setup = [f for f in r.figures if not f.name.startswith(("traffic.", "mix."))]
    if setup:
        lines += ["", "setup and memory"]
        lines += [_row(f"{f.label} ({f.unit})", f"{f.value:.1f}") for f in setup]
    shares = [f for f in r.figures if f.name.startswith("traffic.")]
    if shares:
        lines += ["", "generated traffic (kbmfast.gen), shares of packets:"]
        for kind in ("shapes", "rejects"):
            parts = [
                f"{f.name.split('.')[-1]} {f.value:.1%}" for f in shares if f.name.startswith(f"traffic.{kind}.") and f.value
            ]
            lines.append(f"  {kind}: " + ", ".join(parts))
    if c.peer_sweep or c.batch_sweep:
        lines += ["", _row("sweeps (verifications/s, best)", "C buffer", "C list", "reference", "one-shot")]
        for n in sorted({*c.peer_sweep, *([c.big_peers] if c.big_peers else [])}):
            cells = [r.get(name, top if name.startswith("c.") else None, n) for name in _SWEPT]
            lines.append(_row(f"  {n} peers, batch {top}", *(si(m.best) if m and m.peers == n else "-" for m in cells)))
        for b in c.batch_sweep:
            cells = [r.get(name, b) for name in ("c.verify_buffer", "c.verify_batch", "reference.verify_batch.sweep")]
            lines.append(_row(f"  batch {b}, {c.peers} peers", *(si(m.best) if m else "-" for m in cells)))
    h = r.headline
    lines += [
        "",
        f"headline (batch {h['batch']}): {si(h['verifications_per_s'])} verifications/s = "
        f"{h['vs_reference']:.0f}x the reference, {h['vs_oneshot_hmac']:.1f}x one-shot HMAC, "
        f"{h['of_ceiling']:.0%} of the SHA-1 ceiling",
        "",
        "targets:",
    ]
    for t in r.targets():
        mark = "n/a" if t.met is None else "met" if t.met else "NOT met"
        lines.append(f"  [{mark}] {t.text}: {t.measured}" + (f" ({t.note})" if t.note and t.met is not True else ""))
    return "\n".join(lines)


_SWEPT = ("c.verify_buffer", "c.verify_batch", "reference.verify_batch", "oneshot_hmac")
_STYLES = {
    "c.verify_buffer": ("C verify_buffer", "tab:blue", "o"),
    "c.verify_batch": ("C verify_batch (list)", "tab:orange", "s"),
    "reference.verify_batch": ("reference verify_batch", "tab:red", "v"),
    "oneshot_hmac": ("one-shot OpenSSL HMAC", "tab:green", "^"),
}


def plot(r: Report, path: str | BinaryIO, fmt: str | None = None) -> None:
    """Draw throughput against the number of peers and against the batch size, per backend,
    with the SHA-1 ceiling as a line, into ``path`` (a file name or a binary stream; ``fmt``,
    e.g. "png", by default from the name) (needs matplotlib: ``kbmfast[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'kbmfast[plot]'") from None
    c, env = r.config, r.environment
    top = max(c.batches)
    fig, (by_peers, by_batch) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=80, sharey=True)
    peers = sorted({m.peers for m in r.measures if m.unit == "verifications" and m.peers})
    for name, (label, color, marker) in _STYLES.items():
        found = (r.get(name, top if name.startswith("c.") else None, n) for n in peers)
        pts = [(m.peers, m.best) for m in found if m is not None and m.peers]
        if pts:
            by_peers.plot(*zip(*pts, strict=True), label=label, color=color, marker=marker)
    by_peers.set_xscale("log")
    by_peers.set_xlabel("configured peers")
    by_peers.set_ylabel("verifications/s, one core")
    by_peers.set_title(f"throughput vs peers (batch {top})", fontsize=10)

    batches = sorted({b for b in (*c.batches, *c.batch_sweep)})
    for name, (label, color, marker) in _STYLES.items():
        if name == "oneshot_hmac":
            by_batch.axhline(r.find(name).best, color=color, linestyle=":", label=f"{label} (no batching)")
            continue
        found = (r.get(name + (".sweep" if name.startswith("reference") else ""), b) for b in batches)
        pts = [(m.batch, m.best) for m in found if m is not None and m.batch]
        if pts:
            by_batch.plot(*zip(*pts, strict=True), label=label, color=color, marker=marker)
    for name, color in (("c.verify", "tab:purple"), ("reference.verify", "tab:brown")):
        m = r.get(name)
        if m is not None:
            label = f"{'C' if name.startswith('c') else 'reference'} verify(), one packet"
            by_batch.plot([1], [m.best], color=color, marker="*", markersize=11, linestyle="", label=label)
    by_batch.set_xscale("log", base=2)
    by_batch.set_xlabel("batch size (packets per call)")
    by_batch.set_title(f"throughput vs batch size ({c.peers} peers)", fontsize=10)
    for ax in (by_peers, by_batch):
        ax.axhline(r.ceiling, color="black", linestyle="--", label="SHA-1 ceiling (2 compressions each)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    by_peers.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 0.1))  # between the reference and one-shot
    by_batch.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"kbmfast {env['kbmfast']}, minimal Binding Updates; {env['cpu']}, SHA-1 kernel {env['kernel']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format=fmt)
    plt.close(fig)
