"""The benchmark engine behind ``kbmfast bench``: how fast Binding Updates are verified, and why.

The main workload (N draft-Kbm peers, several rounds of minimal Binding Updates with increasing
sequence numbers, packed into one buffer) is measured on every path in one run, so that the
ratios hold on a shared, noisy machine:

- the C core's zero-copy ``Verifier.verify_buffer`` per batch size, and ``verify_batch`` on lists;
- the pure-Python reference's ``verify_batch`` (on a sample: it is about 100 times slower);
- the yardstick peer: a one-shot OpenSSL ``HMAC()`` per packet, as existing daemons do;
- the ceiling: SHA-1 compressions per second of every kernel (SHA-NI on 1 and 2 streams, the
  AVX2 and AVX-512 multi-buffer ones), the best halved
  (a minimal Binding Update costs two compressions);
- single-packet ``verify()`` latency on both backends, and the bare C call it wraps;
- one Verifier shared by 1 and 2 threads, and 2 processes sharing one state file;
- generated traffic of every shape (Alternate Care-of Address, de-registration, Nonce Indices,
  RFC 4449 peers) and with a realistic share of replays, forgeries, unknown peers and
  malformed packets (:mod:`kbmfast.gen`), checked against its known verdicts, each against the
  ceiling for its mix (the best compressions/s / the compressions per packet that mix needs,
  :func:`kbmfast.bench.workload.mix_compressions`);
- unless ``big_peers`` is 0: throughput with 1 M peers, and the key table's setup time and
  resident memory per peer, in a fresh interpreter (so other measures' heap does not blur it);
- with sweeps (``kbmfast bench --plot``): throughput against the number of peers and against
  the batch size, per backend.

Every verdict of every timed run is checked (all ACCEPTED, or the generator's known verdicts),
else :class:`BenchError`: a fast wrong answer is not a figure.

The engine is a library (``benchmarks/`` and the command kbmfast.cli.bench import it; it never
imports the command line), in modules by concern:

- :mod:`kbmfast.bench.workload`: the configuration, the workloads and generated traffic;
- :mod:`kbmfast.bench.measures`: each path planned, timed and checked; the large table;
- :mod:`kbmfast.bench.report`: :func:`run`, the :class:`Report` and its targets, the text and the plot;
- :mod:`kbmfast.bench.rr`: the return-routability rows;
- :mod:`kbmfast.bench.serve`: ``kbmfast bench --serve`` (kbmfast serve on a veth pair).

>>> report = run(BenchConfig.quick(peers=200, rounds=2, repeat=1))  # doctest: +SKIP
>>> print(format_report(report))  # doctest: +SKIP
"""

from __future__ import annotations

from .measures import (
    Figure,
    Measure,
    Plan,
    check_accepted,
    check_verdicts,
    execute,
    kernel_choice,
    measure_compress,
    measure_latency,
    measure_oneshot,
    measure_reference,
    measure_setup,
    measure_verify_batch,
    measure_verify_buffer,
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
from .report import Report, Target, environment, format_report, plot, run, run_dict, si
from .workload import (
    MAX_ROUNDS,
    BenchConfig,
    BenchError,
    MinimalBuilder,
    Traffic,
    Workload,
    build_rounds,
    key_table,
    make_peers,
    make_traffic,
    make_workload,
    pack,
    peer_addresses,
    split_buffer,
    split_list,
    split_peers,
)

__all__ = [
    "BenchConfig",
    "BenchError",
    "Figure",
    "MAX_ROUNDS",
    "Measure",
    "MinimalBuilder",
    "Plan",
    "Report",
    "Target",
    "Traffic",
    "Workload",
    "build_rounds",
    "check_accepted",
    "check_verdicts",
    "environment",
    "execute",
    "format_report",
    "kernel_choice",
    "key_table",
    "make_peers",
    "make_traffic",
    "make_workload",
    "pack",
    "measure_compress",
    "measure_latency",
    "measure_oneshot",
    "measure_reference",
    "measure_setup",
    "measure_verify_batch",
    "measure_verify_buffer",
    "peer_addresses",
    "plan_bare_call",
    "plan_compress",
    "plan_compress_parallel",
    "plan_kernels",
    "plan_latency",
    "plan_oneshot",
    "plan_processes",
    "plan_reference",
    "plan_threads",
    "plan_traffic",
    "plan_verify_batch",
    "plan_verify_buffer",
    "plan_verify_buffer_kernels",
    "plot",
    "run",
    "run_big_table",
    "run_dict",
    "si",
    "split_buffer",
    "split_list",
    "split_peers",
]
