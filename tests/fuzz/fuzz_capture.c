/* libFuzzer harness for the capture walker and the line formatter (csrc/capture.c), built and
   run by tests/fuzz/run.sh under ASan + UBSan. Every input is a capture file: it is walked in
   small chunks (a small byte budget, an interface table that must grow), each chunk's packets
   are gathered and formatted as kbmfast verify's lines with made-up verdicts, and the
   walker's promises are checked (packets inside the file, frames increasing). The file is then
   walked again through small windows (kbm_capture.partial, as kbmfast/capture.py reads it):
   every packet, count and damage must be the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbm.h"

enum { MAX = 7, LOG = 1024 };

/* What a walk found: its packets (offsets in the file), counts, end position and damage. */
typedef struct {
    size_t n;
    uint64_t off[LOG], frame[LOG];
    uint32_t len[LOG];
    int64_t t[LOG];
    uint64_t frames, other, pos, error_frame, error_offset, a, b;
    int error, opened;
} summary;

/* The walk over the file a window at a time (window 0: the whole file), moving the window on
   as kbmfast/capture.py's _CWalk does. Each window is a malloc of its exact size, so ASan sees
   any read past it. */
static void walk_windows(const uint8_t *file, size_t size, size_t window, summary *s)
{
    memset(s, 0, sizeof *s);
    size_t base = 0, have = window && window < size ? window : size;
    if (have < 24)
        have = size < 24 ? size : 24;
    uint8_t *win = malloc(have ? have : 1);
    if (!win)
        abort();
    memcpy(win, file, have);
    kbm_capture c;
    if (kbm_capture_open(&c, win, have) != 0) {
        free(win);
        return;
    }
    s->opened = 1;
    c.partial = have < size;
    size_t cap_ifaces = 1;
    kbm_cap_iface *ifaces = malloc(sizeof *ifaces);
    if (!ifaces)
        abort();
    c.ifaces = ifaces;
    c.cap_ifaces = cap_ifaces;
    uint64_t ip_off[MAX], frame[MAX];
    uint32_t ip_len[MAX];
    int64_t time_us[MAX];
    kbm_cap_out out = {ip_off, ip_len, frame, time_us};
    for (int rounds = 0; rounds < 100000; rounds++) {
        c.walked_bytes = 0;
        size_t n = kbm_capture_walk(&c, &out, MAX, 300);
        for (size_t i = 0; i < n; i++) {
            if (ip_off[i] > have || ip_len[i] > have - ip_off[i])
                abort(); /* a packet outside the window */
            if (s->n < LOG) {
                s->off[s->n] = base + ip_off[i];
                s->frame[s->n] = frame[i];
                s->len[s->n] = ip_len[i];
                s->t[s->n] = time_us[i];
            }
            s->n++;
        }
        if (c.need_ifaces) {
            kbm_cap_iface *bigger = realloc(ifaces, sizeof *ifaces * cap_ifaces * 2);
            if (!bigger)
                abort();
            ifaces = bigger;
            cap_ifaces *= 2;
            c.ifaces = ifaces;
            c.cap_ifaces = cap_ifaces;
        } else if (c.need_more) {
            if (!c.partial || c.need <= have - c.pos)
                abort(); /* asks for more only when more exists and is needed */
            size_t pos = c.pos, keep = have - pos, rest = size - base - pos;
            size_t want = c.need < rest ? (size_t)c.need : rest;
            size_t fill = window > want ? window : want;
            if (fill > rest)
                fill = rest;
            uint8_t *next = malloc(fill);
            if (!next)
                abort();
            memcpy(next, win + pos, keep);
            memcpy(next + keep, file + base + pos + keep, fill - keep);
            free(win);
            win = next;
            base += pos;
            have = fill;
            c.buf = win;
            c.size = have;
            c.pos = 0;
            c.partial = base + have < size;
        } else if (c.done || !n) {
            break;
        }
    }
    s->frames = c.frames;
    s->other = c.other;
    s->pos = base + c.pos;
    s->error = c.error;
    if (c.error) {
        s->error_frame = c.error_frame;
        s->error_offset = base + c.error_offset;
        s->a = c.error_a;
        s->b = c.error_b;
    }
    free(ifaces);
    free(win);
}

static int same_walk(const summary *x, const summary *y)
{
    size_t n = x->n < LOG ? x->n : LOG;
    return x->opened == y->opened && x->n == y->n && x->frames == y->frames &&
           x->other == y->other && x->pos == y->pos && x->error == y->error &&
           x->error_frame == y->error_frame && x->error_offset == y->error_offset &&
           x->a == y->a && x->b == y->b && !memcmp(x->off, y->off, n * sizeof x->off[0]) &&
           !memcmp(x->frame, y->frame, n * sizeof x->frame[0]) &&
           !memcmp(x->len, y->len, n * sizeof x->len[0]) &&
           !memcmp(x->t, y->t, n * sizeof x->t[0]);
}

/* The file walked whole and through windows of two sizes: the same packets and end. */
static void check_windows(const uint8_t *file, size_t size)
{
    static summary whole, part;
    walk_windows(file, size, 0, &whole);
    size_t windows[2] = {24, 24 + size % 211};
    for (int k = 0; k < 2; k++) {
        walk_windows(file, size, windows[k], &part);
        if (!same_walk(&whole, &part))
            abort();
    }
}

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
            /* kbmfast verify's bookkeeping (format.c): every listed packet is a real one */
            uint32_t look[MAX];
            uint64_t counts[KBM_V_END] = {0}, sum = 0;
            size_t k = kbm_verdict_marks(packets, total, offsets, verdicts,
                                         (last & 2) ? verdicts : NULL, n, look);
            for (size_t j = 0; j < k; j++)
                if (look[j] >= n || (j && look[j] <= look[j - 1]))
                    abort();
            kbm_verdict_counts(verdicts, n, counts);
            for (size_t v = 0; v < KBM_V_END; v++)
                sum += counts[v];
            if (sum != n)
                abort();
            free(packets);
        }
        if (c.done || (!n && !c.need_ifaces))
            break;
    }
    free(ifaces);
    check_windows(file, size);
    free(file);
    return 0;
}
