/* libFuzzer harness for serve's accept path (build: tests/fuzz/run.sh; ASan + UBSan):
   kbm_live_ack over a batch whose packets, verdicts, kbm_detail records, link-layer headers and
   (optionally) offsets all come from the input, so that its promise "every read bounds-checked,
   whatever the details say" is tested, not only with what kbm_verify gives it; then
   kbm_bcache_apply with its records into a small binding cache (8 entries: refusals, deletion
   by backward shift, expiry). Checked: at most one record and one frame per packet, every
   record names a packet it marked handled, granted <= max_lifetime, frame lengths within
   KBM_LIVE_FRAME_MAX, and the cache's count, dump and lookups agree.

   live.c is included (not linked) for struct kbm_live: the harness makes a handle without a
   pcap_t (kbm_live_ack reads only its link type; nothing is sent).

   Input: byte 0 = options (bits 0-1 link type: Ethernet, raw IP, DLT_IPV6, an unsupported one;
   bit 2 compat rfc3775; bit 3 max_lifetime 60 s; bit 4 offsets from the input), then packets:
   [length][verdict][link_len][20-byte kbm_detail][2-byte offset] and length bytes, up to 32. A
   verdict byte with its top bit set writes a configured peer's home address at detail.home
   (when it fits), so that key lookups succeed. */
#include "live.c"
#include "two_peers.h"

#include <assert.h>

enum { MAX_PACKETS = 32 };

static kbm_verifier *verifier;
static kbm_bcache *cache;

static void setup(void)
{
    verifier = fuzz_two_peers();
    cache = kbm_bcache_new(8);
    if (!cache)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!verifier)
        setup();
    if (size < 1)
        return 0;
    static const int linktypes[4] = {DLT_ETH, DLT_RAW_IP, DLT_IPV6_, 113};
    uint8_t opt = data[0];
    struct kbm_live l = {NULL, -1, linktypes[opt & 3], 2560};
    kbm_verifier_set_compat(verifier, opt >> 2 & 1);
    uint32_t max_lifetime = opt & 8 ? 60 : UINT32_MAX;

    enum { HDR = 3 + sizeof(kbm_detail) + 2 };
    size_t at = 1, n = 0, total = 0;
    size_t lens[MAX_PACKETS], starts[MAX_PACKETS];
    uint8_t verdicts[MAX_PACKETS], link_lens[MAX_PACKETS];
    uint16_t raw_offsets[MAX_PACKETS];
    kbm_detail details[MAX_PACKETS];
    while (n < MAX_PACKETS && size - at >= HDR) {
        const uint8_t *h = data + at;
        size_t len = h[0];
        verdicts[n] = h[1];
        link_lens[n] = h[2];
        memcpy(&details[n], h + 3, sizeof(kbm_detail));
        memcpy(&raw_offsets[n], h + 3 + sizeof(kbm_detail), 2);
        at += HDR;
        if (len > size - at)
            len = size - at;
        starts[n] = at;
        lens[n] = len;
        at += len;
        total += len;
        n++;
    }
    if (n == 0)
        return 0;
    /* the packets back to back in an exact-size heap buffer, so ASan sees any read past it */
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf)
        return 0;
    uint64_t offsets[MAX_PACKETS + 1];
    kbm_live_meta meta[MAX_PACKETS];
    offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(buf + offsets[i], data + starts[i], lens[i]);
        offsets[i + 1] = offsets[i] + lens[i];
        memset(&meta[i], 0, sizeof meta[i]);
        meta[i].link_len = link_lens[i];
        for (size_t j = 0; j < KBM_LIVE_LINK_MAX; j++)
            meta[i].link[j] = (uint8_t)(i + j);
        if (verdicts[i] & 0x80) {
            verdicts[i] = KBM_ACCEPTED;
            int64_t home = details[i].home;
            if (home >= 0 && (uint64_t)home + 16 <= lens[i])
                memcpy(buf + offsets[i] + home, fuzz_homes[i & 1], 16);
        }
    }
    if (opt & 16) /* hostile offsets: kbm_live_ack must not trust them either */
        for (size_t i = 0; i <= n; i++)
            offsets[i] = i < n ? raw_offsets[i] : raw_offsets[n - 1];

    kbm_live_accept out[MAX_PACKETS];
    uint8_t handled[MAX_PACKETS];
    uint8_t *frames = malloc(MAX_PACKETS * KBM_LIVE_FRAME_MAX);
    uint32_t frame_lens[MAX_PACKETS];
    size_t n_frames = 0;
    kbm_live_stats st;
    memset(&st, 0, sizeof st);
    if (!frames) {
        free(buf);
        return 0;
    }
    size_t m = kbm_live_ack(&l, verifier, buf, total, offsets, n, meta, verdicts, details,
                            max_lifetime, out, handled, frames, frame_lens, &n_frames, &st);
    assert(m <= n && n_frames <= m);
    for (size_t k = 0; k < n_frames; k++)
        assert(frame_lens[k] <= KBM_LIVE_FRAME_MAX);
    for (size_t r = 0; r < m; r++) {
        assert(out[r].index < n && handled[out[r].index] == 1);
        assert(verdicts[out[r].index] == KBM_ACCEPTED);
        assert(out[r].granted <= max_lifetime && out[r].ack <= 2);
    }

    static double now = 0;
    now += 1;
    uint64_t acks[2];
    size_t refused = kbm_bcache_apply(cache, out, m, now, now, acks);
    assert(refused <= m && acks[0] + acks[1] <= m);
    kbm_binding dump[16];
    size_t count = kbm_bcache_count(cache), dumped = kbm_bcache_dump(cache, dump, 16);
    assert(count <= 8 && dumped == count);
    for (size_t i = 0; i < dumped; i++) {
        kbm_binding b;
        assert(kbm_bcache_get(cache, dump[i].home, &b) == 1 && memcmp(&b, &dump[i], sizeof b) == 0);
        assert(b.lifetime != 0 && memcmp(b.home, b.care_of, 16) != 0);
    }
    if (opt & 32)
        assert(kbm_bcache_expire(cache, now + 1e9) == count && kbm_bcache_count(cache) == 0);
    free(frames);
    free(buf);
    return 0;
}
