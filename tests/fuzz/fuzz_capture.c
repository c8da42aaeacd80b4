/* libFuzzer harness for the capture walker and the line formatter (csrc/capture.c), built and
   run by tests/fuzz/run.sh under ASan + UBSan. Every input is a capture file: it is walked in
   small chunks (a small byte budget, an interface table that must grow), each chunk's packets
   are gathered and formatted as kbmfast verify's lines with made-up verdicts, and the
   walker's promises are checked (packets inside the file, frames increasing). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbm.h"

enum { MAX = 7 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *file = malloc(size ? size : 1); /* exact size: ASan sees any read past the end */
    if (!file)
        return 0;
    memcpy(file, data, size);
    kbm_capture c;
    if (kbm_capture_open(&c, file, size) != 0) {
        free(file);
        return 0;
    }
    size_t cap_ifaces = 1;
    kbm_cap_iface *ifaces = malloc(sizeof *ifaces * cap_ifaces);
    if (!ifaces)
        abort();
    c.ifaces = ifaces;
    c.cap_ifaces = cap_ifaces;
    uint64_t ip_off[MAX], frame[MAX], offsets[MAX + 1];
    uint32_t ip_len[MAX];
    int64_t time_us[MAX];
    uint8_t verdicts[MAX];
    static kbm_addr_slot cache[4];
    static char text[MAX * KBM_LINE_MAX];
    kbm_cap_out out = {ip_off, ip_len, frame, time_us};
    uint64_t last = 0;
    for (int rounds = 0; rounds < 100000; rounds++) {
        c.walked_bytes = 0; /* a chunk per walk */
        size_t n = kbm_capture_walk(&c, &out, MAX, 300);
        if (c.need_ifaces) {
            kbm_cap_iface *bigger = realloc(ifaces, sizeof *ifaces * cap_ifaces * 2);
            if (!bigger)
                abort();
            ifaces = bigger;
            cap_ifaces *= 2;
            c.ifaces = ifaces;
            c.cap_ifaces = cap_ifaces;
        }
        if (n > MAX || c.walked_bytes > (n > 1 ? 300u : KBM_CAP_MAX_CAPLEN))
            abort();
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            if (ip_off[i] > size || ip_len[i] > size - ip_off[i] || ip_len[i] < 40 ||
                frame[i] <= last || time_us[i] < 0)
                abort();
            last = frame[i];
            total += ip_len[i];
            verdicts[i] = (uint8_t)(frame[i] % 11);
        }
        if (n) {
            offsets[0] = 0;
            uint8_t *packets = malloc(total);
            if (!packets || kbm_capture_gather(file, size, ip_off, ip_len, n, packets, total,
                                               offsets) != 0)
                abort();
            size_t written;
            if (kbm_format_lines(packets, total, offsets, frame, time_us, verdicts, n, cache, 4,
                                 (int)(last & 1), text, sizeof text, &written) != n)
                abort();
            free(packets);
        }
        if (c.done || (!n && !c.need_ifaces))
            break;
    }
    free(ifaces);
    free(file);
    return 0;
}
