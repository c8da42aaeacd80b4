/* MAC kernels for batches: which this CPU supports, which is fastest (measured once per
   process), and the batch entry point that feeds the multi-buffer kernels full lanes. */
#define _POSIX_C_SOURCE 200809L

#include "kbm.h"
#include "mac.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static const char *const names[KBM_KERNELS] = {"portable", "sha-ni", "avx2", "avx512"};

const char *kbm_kernel_name(int id)
{
    return id >= 0 && id < KBM_KERNELS ? names[id] : NULL;
}

#if defined(__x86_64__)
/* The register state the OS saves (XCR0); only meaningful when CPUID says OSXSAVE. */
static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}
#endif

static int probe(int id)
{
    if (id == KBM_KERNEL_PORTABLE)
        return 1;
    if (id == KBM_KERNEL_SHANI)
        return kbm_cpu_has_shani();
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
        return 0;
    uint64_t os = xcr0();
    if ((os & 0x6) != 0x6) /* XMM and YMM state */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    if (id == KBM_KERNEL_AVX2)
        return (b & bit_AVX2) != 0;
    if (id == KBM_KERNEL_AVX512) /* and opmask, ZMM_Hi256, Hi16_ZMM state */
        return (os & 0xE6) == 0xE6 && (b & bit_AVX512F) && (b & bit_AVX512BW) &&
               (b & bit_AVX512VL);
#endif
    return 0;
}

static int kernel_ok[KBM_KERNELS];
static double calibration_ns[KBM_KERNELS];
static int calibrated = KBM_KERNEL_PORTABLE;
static _Atomic int forced = -1;
static _Atomic unsigned hidden; /* kbm_test_hide_kernels */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT, calibrate_once = PTHREAD_ONCE_INIT;

static void probe_all(void)
{
    for (int id = 0; id < KBM_KERNELS; id++)
        kernel_ok[id] = probe(id);
}

int kbm_kernel_supported(int id)
{
    pthread_once(&probe_once, probe_all);
    return id >= 0 && id < KBM_KERNELS && kernel_ok[id] &&
           !(atomic_load_explicit(&hidden, memory_order_relaxed) >> id & 1);
}

int kbm_test_hide_kernels(unsigned mask)
{
    if (mask & 1u << KBM_KERNEL_PORTABLE)
        return KBM_EINVAL;
    atomic_store_explicit(&hidden, mask, memory_order_relaxed);
    return KBM_OK;
}

/* ---- The batch ---- */

/* Two at a time on SHA-NI (the minimal ones built in registers). */
static void narrow(const kbm_mac96_req *const *q, size_t n)
{
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        const kbm_mac96_req *a = q[i], *b = q[i + 1];
        if (a->mh_len == 32 && b->mh_len == 32)
            kbm_mac96_min_x2(a->key, a->co, a->cn, a->mh, a->out, b->key, b->co, b->cn, b->mh,
                             b->out);
        else
            kbm_mac96_x2(a->key, a->co, a->cn, a->mh, a->mh_len, a->out, b->key, b->co, b->cn,
                         b->mh, b->mh_len, b->out);
    }
    if (i < n) {
        const kbm_mac96_req *a = q[i];
        if (a->mh_len == 32)
            kbm_mac96_min(a->key, a->co, a->cn, a->mh, a->out);
        else
            kbm_mac96(a->key, a->co, a->cn, a->mh, a->mh_len, a->out);
    }
}

#define MAX_LANES 16

/* The group a request goes to: 0 for a minimal Binding Update (a 32-byte Mobility Header: its
   block is built in registers), else its inner block count; above KBM_WIDE_MAX_BLOCKS, two at
   a time on SHA-NI (or portable C). */
static size_t mac_class(const kbm_mac96_req *r)
{
    return r->mh_len == 32 ? 0 : kbm_mac96_nblocks(r->mh_len);
}

/* n <= lanes messages, in class order, on a multi-buffer kernel: all minimal ones from their
   pieces; else every one laid out here (kbm_mac96_block), one block count for all, or held
   lanes when the counts differ. */
static void wide(int id, const kbm_mac96_req *const *q, size_t n)
{
#if defined(__x86_64__)
    _Alignas(64) uint8_t buf[MAX_LANES][64 * KBM_WIDE_MAX_BLOCKS];
    const kbm_mac_key *keys[MAX_LANES];
    const uint8_t *a[MAX_LANES], *b[MAX_LANES], *c[MAX_LANES];
    uint8_t *out[MAX_LANES];
    size_t nb[MAX_LANES];
    const size_t first = mac_class(q[0]), last = mac_class(q[n - 1]);
    for (size_t i = 0; i < n; i++) {
        keys[i] = q[i]->key;
        out[i] = q[i]->out;
        a[i] = q[i]->co;
        b[i] = q[i]->cn;
        c[i] = q[i]->mh;
        if (last) {
            nb[i] = kbm_mac96_block(buf[i], q[i]->co, q[i]->cn, q[i]->mh, q[i]->mh_len);
            a[i] = buf[i];
        }
    }
    const int w512 = id == KBM_KERNEL_AVX512;
    if (!last) {
        if (w512)
            kbm_mac96_min_mb_avx512(keys, a, b, c, out, n);
        else
            kbm_mac96_min_mb_avx2(keys, a, b, c, out, n);
    } else if (first == last) {
        if (w512)
            kbm_mac96_mb_avx512(keys, a, last, out, n);
        else
            kbm_mac96_mb_avx2(keys, a, last, out, n);
    } else if (w512) {
        kbm_mac96_mbv_avx512(keys, a, nb, out, n);
    } else {
        kbm_mac96_mbv_avx2(keys, a, nb, out, n);
    }
#else
    (void)id;
    narrow(q, n);
#endif
}

void kbm_mac96_batch_with(int id, const kbm_mac96_req *r, size_t n)
{
    if (!kbm_kernel_supported(id))
        id = KBM_KERNEL_PORTABLE;
    if (id == KBM_KERNEL_PORTABLE) {
        for (size_t i = 0; i < n; i++)
            kbm_mac96_portable(r[i].key, r[i].co, r[i].cn, r[i].mh, r[i].mh_len, r[i].out);
        return;
    }
    const size_t lanes = id == KBM_KERNEL_AVX512 ? 16 : id == KBM_KERNEL_AVX2 ? 8 : 0;
    if (!lanes) {
        const kbm_mac96_req *q[2];
        for (size_t i = 0; i < n; i += 2) {
            q[0] = &r[i];
            q[1] = i + 1 < n ? &r[i + 1] : NULL;
            narrow(q, q[1] ? 2 : 1);
        }
        return;
    }
    /* One lane group per class (equal block counts), each run when full; longer messages
       two at a time. */
    const kbm_mac96_req *group[KBM_WIDE_MAX_BLOCKS + 1][MAX_LANES], *rest[2];
    size_t in_group[KBM_WIDE_MAX_BLOCKS + 1] = {0}, in_rest = 0;
    for (size_t i = 0; i < n; i++) {
        size_t g = mac_class(&r[i]);
        if (g <= KBM_WIDE_MAX_BLOCKS) {
            group[g][in_group[g]++] = &r[i];
            if (in_group[g] == lanes) {
                wide(id, group[g], lanes);
                in_group[g] = 0;
            }
        } else {
            rest[in_rest++] = &r[i];
            if (in_rest == 2) {
                narrow(rest, 2);
                in_rest = 0;
            }
        }
    }
    narrow(rest, in_rest);
    /* The part-filled groups. With SHA-NI, each on its own, two at a time unless it fills
       half the lanes (a part-filled call costs as much as a full one, and SHA-NI makes two
       at a time cheap; not while kbm_sha1_force_portable holds: the tests' way to take the
       other branch on a CPU with SHA-NI): merged, a group runs its longest count on every
       lane, and the few longer messages of a chunk cost less on SHA-NI (Zen 4, issue 14's
       shapes traffic: MACs 7 % slower merged). Without it, portable C is the alternative:
       the classes, in order, run on in full groups, a group of mixed counts holding lanes for
       as few blocks as that order allows. */
    if (kbm_sha1_use_shani()) {
        for (size_t g = 0; g <= KBM_WIDE_MAX_BLOCKS; g++) {
            if (!in_group[g])
                continue;
            if (2 * in_group[g] < lanes)
                narrow(group[g], in_group[g]);
            else
                wide(id, group[g], in_group[g]);
        }
        return;
    }
    const kbm_mac96_req *q[MAX_LANES];
    size_t k = 0;
    for (size_t g = 0; g <= KBM_WIDE_MAX_BLOCKS; g++)
        for (size_t i = 0; i < in_group[g]; i++) {
            q[k++] = group[g][i];
            if (k == lanes) {
                wide(id, q, k);
                k = 0;
            }
        }
    if (k)
        wide(id, q, k);
}

void kbm_mac96_batch(const kbm_mac96_req *r, size_t n)
{
    kbm_mac96_batch_with(kbm_kernel_current(), r, n);
}

/* ---- Return routability's batches (mac.h) ---- */

typedef void compress2_fn(uint32_t s0[5], const uint8_t *b0, size_t nblocks0, uint32_t s1[5],
                          const uint8_t *b1, size_t nblocks1);

static void compress2_portable(uint32_t s0[5], const uint8_t *b0, size_t nblocks0,
                               uint32_t s1[5], const uint8_t *b1, size_t nblocks1)
{
    for (size_t i = 0; i < nblocks0; i++)
        kbm_sha1_compress_portable(s0, b0 + 64 * i);
    for (size_t i = 0; i < nblocks1; i++)
        kbm_sha1_compress_portable(s1, b1 + 64 * i);
}

/* One stage of an RR batch: HMAC-SHA1-96 of one-block messages with one key (key != NULL,
   into mac[]), or Kbm midstates from one-block messages (into keys[]). */
typedef struct {
    const kbm_mac_key *key;
    const uint8_t *const *blk;
    uint8_t *const *mac;
    kbm_mac_key *const *keys;
} rr_stage;

/* Items at .. at + n, two at a time (SHA-NI interleaved, or portable C). */
static void rr_narrow(compress2_fn *c2, const rr_stage *st, size_t at, size_t n)
{
    uint8_t b[2][64], d[20];
    uint32_t s[2][5];
    for (size_t i = at; i < at + n; i += 2) {
        size_t use1 = i + 1 < at + n, j = use1 ? i + 1 : i;
        if (st->key) {
            memcpy(s[0], st->key->inner, sizeof s[0]);
            memcpy(s[1], st->key->inner, sizeof s[1]);
            c2(s[0], st->blk[i], 1, s[1], st->blk[j], use1);
            for (int k = 0; k < 2; k++) {
                for (int w = 0; w < 5; w++)
                    kbm_store32_be(d + 4 * w, s[k][w]);
                kbm_pad_block(b[k], d, 20, 64);
                memcpy(s[k], st->key->outer, sizeof s[k]);
            }
            c2(s[0], b[0], 1, s[1], b[1], use1);
            for (size_t k = 0; k <= use1; k++)
                for (int w = 0; w < 3; w++)
                    kbm_store32_be(st->mac[i + k] + 4 * w, s[k][w]);
        } else {
            kbm_sha1_init(s[0]);
            kbm_sha1_init(s[1]);
            c2(s[0], st->blk[i], 1, s[1], st->blk[j], use1);
            for (int k = 0; k < 2; k++) {
                memset(b[k], 0x36, 64);
                for (int w = 0; w < 5; w++)
                    for (int x = 0; x < 4; x++)
                        b[k][4 * w + x] ^= (uint8_t)(s[k][w] >> (24 - 8 * x));
            }
            for (int pad = 0; pad < 2; pad++) { /* inner, then outer midstates */
                for (int k = 0; pad && k < 2; k++)
                    for (int x = 0; x < 64; x++)
                        b[k][x] ^= 0x36 ^ 0x5C;
                kbm_sha1_init(s[0]);
                kbm_sha1_init(s[1]);
                c2(s[0], b[0], 1, s[1], b[1], use1);
                for (size_t k = 0; k <= use1; k++)
                    memcpy(pad ? st->keys[i + k]->outer : st->keys[i + k]->inner, s[k],
                           sizeof s[k]);
            }
        }
    }
    kbm_wipe(b, sizeof b);
    kbm_wipe(d, sizeof d);
    kbm_wipe(s, sizeof s);
}

/* Items at .. at + n (n <= the kernel's lanes) in one multi-buffer call. */
static void rr_wide(int id, const rr_stage *st, size_t at, size_t n)
{
#if defined(__x86_64__)
    if (st->key && id == KBM_KERNEL_AVX512)
        kbm_hmac1_mb_avx512(st->key, st->blk + at, st->mac + at, n);
    else if (st->key)
        kbm_hmac1_mb_avx2(st->key, st->blk + at, st->mac + at, n);
    else if (id == KBM_KERNEL_AVX512)
        kbm_sha1_key_mb_avx512(st->blk + at, st->keys + at, n);
    else
        kbm_sha1_key_mb_avx2(st->blk + at, st->keys + at, n);
#else
    (void)id;
    rr_narrow(kbm_sha1_compress2, st, at, n);
#endif
}

/* Full lane groups on the wide kernels, the rest as kbm_mac96_batch_with does. */
static void rr_run(int id, const rr_stage *st, size_t n)
{
    if (!kbm_kernel_supported(id))
        id = KBM_KERNEL_PORTABLE;
    if (id == KBM_KERNEL_PORTABLE || id == KBM_KERNEL_SHANI) {
        rr_narrow(id == KBM_KERNEL_PORTABLE ? compress2_portable : kbm_sha1_compress2, st, 0, n);
        return;
    }
    const size_t lanes = id == KBM_KERNEL_AVX512 ? 16 : 8;
    size_t i = 0;
    for (; i + lanes <= n; i += lanes)
        rr_wide(id, st, i, lanes);
    if (i < n) {
        if (kbm_sha1_use_shani() && 2 * (n - i) < lanes)
            rr_narrow(kbm_sha1_compress2, st, i, n - i);
        else
            rr_wide(id, st, i, n - i);
    }
}

void kbm_hmac1_batch_with(int id, const kbm_mac_key *key, const uint8_t *const blk[],
                          uint8_t *const out[], size_t n)
{
    rr_stage st = {key, blk, out, NULL};
    rr_run(id, &st, n);
}

void kbm_sha1_key_batch_with(int id, const uint8_t *const blk[], kbm_mac_key *const out[],
                             size_t n)
{
    rr_stage st = {NULL, blk, NULL, out};
    rr_run(id, &st, n);
}

/* ---- RFC 4449 registration keys (mac.h) ---- */

/* The care-of token's message, care_of | nonce | 1, padded after the ipad block into buf
   (128 bytes); returns its block count (1, or 2 for a nonce over 38 bytes). */
static size_t token_block(uint8_t buf[128], const kbm_derive_req *r)
{
    const size_t len = 17 + r->nonce_len, blocks = (len + 8) / 64 + 1;
    memcpy(buf, r->care_of, 16);
    if (r->nonce_len)
        memcpy(buf + 16, r->nonce, r->nonce_len);
    buf[len - 1] = 1;
    buf[len] = 0x80;
    memset(buf + len + 1, 0, 64 * blocks - 4 - (len + 1));
    kbm_store32_be(buf + 64 * blocks - 4, (uint32_t)((64 + len) * 8));
    return blocks;
}

/* n <= MAX_LANES derivations two at a time (SHA-NI interleaved, or portable C): the care-of
   tokens, then SHA1(tokens) as HMAC midstates (rr_narrow's key stage). */
static void derive_narrow(compress2_fn *c2, const kbm_derive_req *r, size_t n)
{
    uint8_t msg[2][128], b[2][64], d[20], pair[16], blk[MAX_LANES][64];
    uint32_t s[2][5];
    const uint8_t *bp[MAX_LANES];
    kbm_mac_key *op[MAX_LANES];
    for (size_t i = 0; i < n; i += 2) {
        size_t use1 = i + 1 < n, j = use1 ? i + 1 : i;
        size_t nb0 = token_block(msg[0], &r[i]), nb1 = token_block(msg[1], &r[j]);
        memcpy(s[0], r[i].kcn->inner, sizeof s[0]);
        memcpy(s[1], r[j].kcn->inner, sizeof s[1]);
        c2(s[0], msg[0], nb0, s[1], msg[1], use1 ? nb1 : 0);
        for (size_t k = 0; k < 2; k++) {
            for (int w = 0; w < 5; w++)
                kbm_store32_be(d + 4 * w, s[k][w]);
            kbm_pad_block(b[k], d, 20, 64);
            memcpy(s[k], r[k ? j : i].kcn->outer, sizeof s[k]);
        }
        c2(s[0], b[0], 1, s[1], b[1], use1);
        for (size_t k = 0; k <= use1; k++) {
            memcpy(pair, r[i + k].hkt, 8);
            kbm_store32_be(pair + 8, s[k][0]);
            kbm_store32_be(pair + 12, s[k][1]);
            kbm_pad_block(blk[i + k], pair, sizeof pair, 0);
            bp[i + k] = blk[i + k];
            op[i + k] = r[i + k].out;
        }
    }
    rr_stage st = {NULL, bp, NULL, op};
    rr_narrow(c2, &st, 0, n);
    kbm_wipe(msg, sizeof msg);
    kbm_wipe(b, sizeof b);
    kbm_wipe(d, sizeof d);
    kbm_wipe(pair, sizeof pair);
    kbm_wipe(blk, 64 * n);
    kbm_wipe(s, sizeof s);
}

/* n <= lanes derivations in two multi-buffer calls: the care-of tokens (each lane its own Kcn,
   held lanes for long nonces), then SHA1(tokens) as HMAC midstates. */
static void derive_wide(int id, const kbm_derive_req *r, size_t n)
{
#if defined(__x86_64__)
    _Alignas(64) uint8_t msg[MAX_LANES][128], blk[MAX_LANES][64], tok[MAX_LANES][12];
    uint8_t pair[16];
    const kbm_mac_key *keys[MAX_LANES];
    const uint8_t *bp[MAX_LANES];
    uint8_t *tp[MAX_LANES];
    kbm_mac_key *op[MAX_LANES];
    size_t nb[MAX_LANES];
    for (size_t i = 0; i < n; i++) {
        nb[i] = token_block(msg[i], &r[i]);
        keys[i] = r[i].kcn;
        bp[i] = msg[i];
        tp[i] = tok[i];
    }
    if (id == KBM_KERNEL_AVX512)
        kbm_mac96_mbv_avx512(keys, bp, nb, tp, n);
    else
        kbm_mac96_mbv_avx2(keys, bp, nb, tp, n);
    for (size_t i = 0; i < n; i++) {
        memcpy(pair, r[i].hkt, 8);
        memcpy(pair + 8, tok[i], 8);
        kbm_pad_block(blk[i], pair, sizeof pair, 0);
        bp[i] = blk[i];
        op[i] = r[i].out;
    }
    if (id == KBM_KERNEL_AVX512)
        kbm_sha1_key_mb_avx512(bp, op, n);
    else
        kbm_sha1_key_mb_avx2(bp, op, n);
    kbm_wipe(msg, sizeof msg[0] * n);
    kbm_wipe(blk, sizeof blk[0] * n);
    kbm_wipe(tok, sizeof tok[0] * n);
    kbm_wipe(pair, sizeof pair);
#else
    (void)id;
    derive_narrow(kbm_sha1_compress2, r, n);
#endif
}

void kbm_derive_batch_with(int id, const kbm_derive_req *r, size_t n)
{
    if (!n)
        return;
    if (!kbm_kernel_supported(id))
        id = KBM_KERNEL_PORTABLE;
    const size_t lanes = id == KBM_KERNEL_AVX512 ? 16 : id == KBM_KERNEL_AVX2 ? 8 : MAX_LANES;
    const int shani = kbm_sha1_use_shani();
    compress2_fn *c2 = id == KBM_KERNEL_PORTABLE ? compress2_portable : kbm_sha1_compress2;
    for (size_t i = 0; i < n;) {
        size_t k = n - i > lanes ? lanes : n - i;
        /* as kbm_mac96_batch_with: a wide call costs about what 7 of 16 lanes (4 of 8 for
           AVX2) cost on two SHA-NI streams (Zen 4) */
        if (id < KBM_KERNEL_AVX2 || (shani && 2 * k < lanes))
            derive_narrow(c2, r + i, k);
        else
            derive_wide(id, r + i, k);
        i += k;
    }
    kbm_burn_stack();
}

/* ---- Calibration ---- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e9 * (double)ts.tv_sec + (double)ts.tv_nsec;
}

#define CAL_MSGS 16  /* one full call of the widest kernel */
#define CAL_CALLS 8  /* per timed run: 128 MACs */
#define CAL_ROUNDS 6 /* the first warms up (caches, the vector unit); best of the rest */

/* Minimal Binding Updates with distinct keys, every supported kernel timed in turn, round by
   round, so a burst of load elsewhere spoils one round of all of them, not all rounds of one. */
static void calibrate(void)
{
    static kbm_mac_key keys[CAL_MSGS];
    static uint8_t data[CAL_MSGS][64], out[CAL_MSGS][12];
    kbm_mac96_req r[CAL_MSGS];
    for (int i = 0; i < CAL_MSGS; i++) {
        uint8_t key[20];
        for (int j = 0; j < 20; j++)
            key[j] = (uint8_t)(i * 31 + j);
        for (int j = 0; j < 64; j++)
            data[i][j] = (uint8_t)(i * 7 + j * 13);
        kbm_mac_key_init(&keys[i], key, sizeof key);
        r[i] = (kbm_mac96_req){&keys[i], data[i], data[i] + 16, data[i] + 32, 32, out[i]};
    }
    double best[KBM_KERNELS];
    for (int id = 0; id < KBM_KERNELS; id++)
        best[id] = 0;
    for (int round = 0; round < CAL_ROUNDS; round++) {
        for (int id = 0; id < KBM_KERNELS; id++) {
            if (!kbm_kernel_supported(id))
                continue;
            double t = now_ns();
            for (int c = 0; c < CAL_CALLS; c++)
                kbm_mac96_batch_with(id, r, CAL_MSGS);
            t = (now_ns() - t) / (CAL_CALLS * CAL_MSGS);
            if (round > 0 && (best[id] == 0 || t < best[id]))
                best[id] = t > 0 ? t : 1e-3;
        }
    }
    int pick = KBM_KERNEL_PORTABLE;
    for (int id = 0; id < KBM_KERNELS; id++) {
        calibration_ns[id] = best[id];
        if (best[id] > 0 && best[id] < best[pick])
            pick = id;
    }
    calibrated = pick;
}

int kbm_kernel_current(void)
{
    int f = atomic_load_explicit(&forced, memory_order_relaxed);
    if (f >= 0)
        return f;
    pthread_once(&calibrate_once, calibrate);
    return calibrated;
}

int kbm_kernel_force(int id)
{
    if (id >= 0 && !kbm_kernel_supported(id))
        return -1;
    atomic_store_explicit(&forced, id < 0 ? -1 : id, memory_order_relaxed);
    return 0;
}

double kbm_kernel_calibration_ns(int id)
{
    pthread_once(&calibrate_once, calibrate);
    return id >= 0 && id < KBM_KERNELS ? calibration_ns[id] : 0;
}

uint32_t kbm_sha1_kernel_bench(int id, uint64_t blocks)
{
    uint8_t data[MAX_LANES * 64];
    uint32_t s[2][5] = {{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}};
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 13 + 5);
    if (!kbm_kernel_supported(id))
        return 0;
    switch (id) {
#if defined(__x86_64__)
    case KBM_KERNEL_AVX512:
        return kbm_sha1_mb_bench_avx512(data, blocks / 16);
    case KBM_KERNEL_AVX2:
        return kbm_sha1_mb_bench_avx2(data, blocks / 8);
    case KBM_KERNEL_SHANI:
        for (uint64_t i = 0; i < blocks / 2; i++)
            kbm_sha1_shani_x2(s[0], data, 1, s[1], data + 64, 1);
        break;
#endif
    default:
        for (uint64_t i = 0; i < blocks; i++)
            kbm_sha1_compress_portable(s[0], data);
    }
    return s[0][0] ^ s[1][0];
}

/* ---- kbm.h's view ---- */

const char *kbm_kernel(void)
{
    return kbm_kernel_name(kbm_kernel_current());
}

int kbm_kernel_select(const char *name)
{
    if (!strcmp(name, "auto")) {
        kbm_kernel_force(-1);
        return KBM_OK;
    }
    for (int id = 0; id < KBM_KERNELS; id++)
        if (!strcmp(name, kbm_kernel_name(id)))
            return kbm_kernel_force(id) ? KBM_ENOENT : KBM_OK;
    return KBM_EINVAL;
}

const char *kbm_kernel_info(int i, int *supported, double *ns)
{
    *supported = kbm_kernel_supported(i);
    *ns = kbm_kernel_calibration_ns(i);
    return kbm_kernel_name(i);
}
