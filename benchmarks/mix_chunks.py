"""What the MAC stage of ``kbmfast bench``'s generated traffic asks of the kernels, chunk by chunk,
for benchmarks/mix_parts.c: one line per chunk of 32 packets (verify.c's CHUNK), the number of
RFC 4449 key derivations the chunk needs (workload.mac_work: the key cache as the chunks before
it left it), then the Mobility Header length of each packet that gets a MAC.

    python -P benchmarks/mix_chunks.py shapes|rejects [PEERS [PACKETS]] > chunks.txt
"""

from __future__ import annotations

import sys

from kbmfast import bench
from kbmfast.bench.workload import mac_work

CHUNK = 32


def main() -> int:
    """Print the chunk lines."""
    kind = sys.argv[1]
    peers = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    packets = int(sys.argv[3]) if len(sys.argv) > 3 else 40_000
    t = bench.make_traffic(kind, peers, packets, 0)
    work = mac_work(t.keys, t.packets, t.verdicts, CHUNK)
    for c0 in range(0, len(work), CHUNK):
        part = [w for w in work[c0 : c0 + CHUNK] if w is not None]
        print(sum(w.derive_nonce is not None for w in part), *(w.mh_len for w in part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
