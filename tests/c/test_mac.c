/* Checks csrc/mac.c and the SHA-1 kernels against OpenSSL, RFC 2202 and the spec's known answer,
   and that kbm_parse_mh never reads again what kbm_scan bounded.
     test_mac [seed]   run the checks (exit status 1 on any failure)
     test_mac bench    micro-benchmark */
#define _POSIX_C_SOURCE 200809L

#include "kbm.h"
#include "mac.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static unsigned long passed, failed;

static void check(int ok, const char *what, unsigned long a, unsigned long b)
{
    if (ok) {
        passed++;
        return;
    }
    if (failed++ < 20)
        fprintf(stderr, "FAIL %s (%lu, %lu) kernel=%s\n", what, a, b, kbm_sha1_kernel());
}

/* splitmix64: reproducible inputs from one seed */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}
static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }
static void rnd_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

static size_t unhex(uint8_t *out, const char *hex)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* ---- OpenSSL oracles ---- */

static void ref_sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    if (!EVP_Digest(msg, len, out, NULL, EVP_sha1(), NULL))
        abort();
}

static void ref_hmac(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                     uint8_t out[20])
{
    static const uint8_t empty[1];
    if (!HMAC(EVP_sha1(), key_len ? key : empty, (int)key_len, len ? msg : empty, len, out, NULL))
        abort();
}

static void ref_mac96(const uint8_t *key, size_t key_len, const uint8_t co[16],
                      const uint8_t cn[16], const uint8_t *mh, size_t mh_len, uint8_t out[12])
{
    uint8_t input[32 + KBM_MH_MAX], full[20];
    if (mh_len < 14 || mh_len > KBM_MH_MAX)
        abort();
    memcpy(input, co, 16);
    memcpy(input + 16, cn, 16);
    memcpy(input + 32, mh, mh_len - 12);
    input[36] = input[37] = 0;
    ref_hmac(key, key_len, input, 32 + mh_len - 12, full);
    memcpy(out, full, 12);
}

/* ---- Checks ---- */

static void test_compress(void)
{
    uint8_t blocks[2][8 * 64];
    for (int iter = 0; iter < 2000; iter++) {
        uint32_t s[5], r[5], s1[5], r1[5];
        for (int i = 0; i < 5; i++)
            s[i] = r[i] = (uint32_t)rnd(), s1[i] = r1[i] = (uint32_t)rnd();
        rnd_bytes(blocks[0], sizeof blocks[0]);
        rnd_bytes(blocks[1], sizeof blocks[1]);

        uint32_t t[5];
        memcpy(t, s, sizeof t);
        kbm_sha1_compress(t, blocks[0]);
        kbm_sha1_compress_portable(r, blocks[0]);
        check(!memcmp(t, r, sizeof t), "compress", (unsigned long)iter, 0);

        size_t n0 = rnd_below(9), n1 = rnd_below(9);
        memcpy(r, s, sizeof r);
        for (size_t i = 0; i < n0; i++)
            kbm_sha1_compress_portable(r, blocks[0] + 64 * i);
        for (size_t i = 0; i < n1; i++)
            kbm_sha1_compress_portable(r1, blocks[1] + 64 * i);
        kbm_sha1_compress2(s, blocks[0], n0, s1, blocks[1], n1);
        check(!memcmp(s, r, sizeof s) && !memcmp(s1, r1, sizeof s1), "compress2", n0, n1);
    }
}

static void test_sha1_hmac(void)
{
    static uint8_t msg[5000], key[200];
    uint8_t a[20], b[20];
    rnd_bytes(msg, sizeof msg);

    kbm_sha1(NULL, 0, a); /* empty inputs may be NULL */
    ref_sha1(msg, 0, b);
    check(!memcmp(a, b, 20), "sha1 NULL", 0, 0);
    kbm_hmac_sha1(NULL, 0, NULL, 0, a);
    ref_hmac(key, 0, msg, 0, b);
    check(!memcmp(a, b, 20), "hmac NULL", 0, 0);

    for (size_t len = 0; len <= 300; len++) {
        kbm_sha1(msg, len, a);
        ref_sha1(msg, len, b);
        check(!memcmp(a, b, 20), "sha1", len, 0);
    }
    for (int iter = 0; iter < 1000; iter++) {
        size_t len = rnd_below(sizeof msg + 1), key_len = rnd_below(sizeof key + 1);
        rnd_bytes(key, key_len);
        kbm_sha1(msg, len, a);
        ref_sha1(msg, len, b);
        check(!memcmp(a, b, 20), "sha1", len, 0);
        kbm_hmac_sha1(key, key_len, msg, len, a);
        ref_hmac(key, key_len, msg, len, b);
        check(!memcmp(a, b, 20), "hmac", key_len, len);
    }
    for (size_t key_len = 0; key_len <= 200; key_len++) {
        size_t len = rnd_below(200);
        rnd_bytes(key, key_len);
        kbm_hmac_sha1(key, key_len, msg, len, a);
        ref_hmac(key, key_len, msg, len, b);
        check(!memcmp(a, b, 20), "hmac", key_len, len);
    }
}

/* A message length drawn to hit the block-boundary cases often. */
static size_t rnd_mh_len(void)
{
    if (rnd() & 1)
        return 14 + rnd_below(KBM_MH_MAX - 14 + 1);
    size_t inner = 64 * (1 + rnd_below(32)) - 8 + rnd_below(17); /* MAC input near a boundary */
    size_t len = inner - 20;
    return len < 14 ? 14 : len > KBM_MH_MAX ? KBM_MH_MAX : len;
}

static void test_mac96(void)
{
    static uint8_t mh[2][KBM_MH_MAX];
    uint8_t key[2][200], co[2][16], cn[2][16], a[2][12], b[2][12];
    kbm_mac_key k[2];

    for (int iter = 0; iter < 4000; iter++) {
        size_t key_len[2], len[2];
        for (int j = 0; j < 2; j++) {
            key_len[j] = iter < 201 ? (size_t)iter : rnd_below(201);
            len[j] = iter < KBM_MH_MAX - 13 ? (size_t)(14 + iter) : rnd_mh_len();
            if (j == 1 && (rnd() & 1))
                len[1] = rnd_mh_len();
            rnd_bytes(key[j], key_len[j]);
            rnd_bytes(co[j], 16);
            rnd_bytes(cn[j], 16);
            rnd_bytes(mh[j], len[j]);
            kbm_mac_key_init(&k[j], key[j], key_len[j]);
            ref_mac96(key[j], key_len[j], co[j], cn[j], mh[j], len[j], b[j]);
        }
        kbm_mac96(&k[0], co[0], cn[0], mh[0], len[0], a[0]);
        check(!memcmp(a[0], b[0], 12), "mac96", key_len[0], len[0]);

        memset(a, 0, sizeof a);
        kbm_mac96_x2(&k[0], co[0], cn[0], mh[0], len[0], a[0],
                     &k[1], co[1], cn[1], mh[1], len[1], a[1]);
        check(!memcmp(a[0], b[0], 12), "mac96_x2 lane 0", len[0], len[1]);
        check(!memcmp(a[1], b[1], 12), "mac96_x2 lane 1", len[0], len[1]);

        /* the same key in both lanes, as when one peer sends twice */
        kbm_mac96_x2(&k[0], co[0], cn[0], mh[0], len[0], a[0],
                     &k[0], co[1], cn[1], mh[1], len[1], a[1]);
        ref_mac96(key[0], key_len[0], co[1], cn[1], mh[1], len[1], b[1]);
        check(!memcmp(a[0], b[0], 12) && !memcmp(a[1], b[1], 12), "mac96_x2 same key",
              len[0], len[1]);
    }
}

/* The minimal-Binding-Update kernels (32-byte MH, built in registers on SHA-NI). Their inputs
   sit at the very end of a buffer, so ASan catches any read beyond co/cn[16] or mh[32]. */
static void test_mac96_min(void)
{
    uint8_t key[2][200], *co[2], *cn[2], *mh[2], a[2][12], b[2][12];
    static uint8_t room[2][3][64];
    kbm_mac_key k[2];
    for (int j = 0; j < 2; j++) {
        co[j] = room[j][0] + 64 - 16;
        cn[j] = room[j][1] + 64 - 16;
        mh[j] = room[j][2] + 64 - 32;
    }
    for (int iter = 0; iter < 4000; iter++) {
        size_t key_len[2];
        for (int j = 0; j < 2; j++) {
            key_len[j] = rnd_below(201);
            if (iter % 4 == 0)
                key_len[j] = 20; /* a Kbm */
            rnd_bytes(key[j], key_len[j]);
            rnd_bytes(co[j], 16);
            rnd_bytes(cn[j], 16);
            rnd_bytes(mh[j], 32);
            if (iter & 1)
                mh[j][4] = mh[j][5] = 0xFF; /* the checksum must not matter */
            kbm_mac_key_init(&k[j], key[j], key_len[j]);
            ref_mac96(key[j], key_len[j], co[j], cn[j], mh[j], 32, b[j]);
        }
        memset(a, 0, sizeof a);
        kbm_mac96_min(&k[0], co[0], cn[0], mh[0], a[0]);
        check(!memcmp(a[0], b[0], 12), "mac96_min", key_len[0], (unsigned long)iter);

        memset(a, 0, sizeof a);
        kbm_mac96_min_x2(&k[0], co[0], cn[0], mh[0], a[0], &k[1], co[1], cn[1], mh[1], a[1]);
        check(!memcmp(a[0], b[0], 12), "mac96_min_x2 lane 0", key_len[0], key_len[1]);
        check(!memcmp(a[1], b[1], 12), "mac96_min_x2 lane 1", key_len[0], key_len[1]);

        /* one key in both lanes; the same output buffer aliasing nothing else */
        kbm_mac96_min_x2(&k[0], co[0], cn[0], mh[0], a[0], &k[0], co[1], cn[1], mh[1], a[1]);
        ref_mac96(key[0], key_len[0], co[1], cn[1], mh[1], 32, b[1]);
        check(!memcmp(a[0], b[0], 12) && !memcmp(a[1], b[1], 12), "mac96_min_x2 same key",
              key_len[0], 0);

        /* and the general kernel agrees on the same input */
        kbm_mac96(&k[1], co[1], cn[1], mh[1], 32, a[1]);
        ref_mac96(key[1], key_len[1], co[1], cn[1], mh[1], 32, b[1]);
        check(!memcmp(a[1], b[1], 12), "mac96 at 32", key_len[1], 0);
    }
}

/* Every kernel this CPU runs, on batches of random size and shape (mostly minimal and near-
   minimal Mobility Headers, the ones the multi-buffer kernels take, some longer), against
   OpenSSL. Each input is its own exact-size heap block, so ASan sees any read past it. */
static void test_batch(void)
{
    enum { MAXN = 41 };
    for (int id = 0; id < KBM_KERNELS; id++) {
        if (!kbm_kernel_supported(id))
            continue;
        for (int iter = 0; iter < 300; iter++) {
            size_t n = 1 + rnd_below(MAXN);
            kbm_mac96_req r[MAXN];
            kbm_mac_key k[MAXN];
            uint8_t key[MAXN][64], *co[MAXN], *cn[MAXN], *mh[MAXN], got[MAXN][12], want[12];
            size_t key_len[MAXN];
            for (size_t i = 0; i < n; i++) {
                size_t pick = rnd_below(10), len;
                if (pick < 5)
                    len = 32;
                else if (pick < 9)
                    len = 14 + rnd_below(100 - 14); /* one or two inner blocks */
                else
                    len = 14 + rnd_below(KBM_MH_MAX - 13);
                key_len[i] = iter % 3 ? 20 : rnd_below(65);
                rnd_bytes(key[i], key_len[i]);
                kbm_mac_key_init(&k[i], key[i], key_len[i]);
                co[i] = malloc(16);
                cn[i] = malloc(16);
                mh[i] = malloc(len);
                if (!co[i] || !cn[i] || !mh[i])
                    abort();
                rnd_bytes(co[i], 16);
                rnd_bytes(cn[i], 16);
                rnd_bytes(mh[i], len);
                r[i] = (kbm_mac96_req){&k[i], co[i], cn[i], mh[i], len, got[i]};
            }
            memset(got, 0, sizeof got);
            kbm_mac96_batch_with(id, r, n);
            for (size_t i = 0; i < n; i++) {
                ref_mac96(key[i], key_len[i], co[i], cn[i], mh[i], r[i].mh_len, want);
                check(!memcmp(got[i], want, 12), kbm_kernel_name(id), r[i].mh_len, i);
                free(co[i]);
                free(cn[i]);
                free(mh[i]);
            }
        }
    }
}

/* Return routability's batches (kernels.c) on every kernel and any count (part-filled lane
   groups): one-key HMACs of one-block messages (the keygen tokens) against OpenSSL's HMAC, and
   SHA-1 digests turned into HMAC midstates (Kbm) against OpenSSL's HMAC keyed with the digest. */
static void test_rr_batches(void)
{
    enum { MAXN = 70 };
    for (int id = 0; id < KBM_KERNELS; id++) {
        if (!kbm_kernel_supported(id))
            continue;
        for (int iter = 0; iter < 200; iter++) {
            size_t n = 1 + rnd_below(MAXN), len[MAXN];
            uint8_t key[20], msg[MAXN][55], blk[MAXN][64], mac[MAXN][12], want[20], got[20];
            uint8_t probe[40], digest[20];
            const uint8_t *bp[MAXN];
            uint8_t *mp[MAXN];
            kbm_mac_key kcn, keys[MAXN], *kp[MAXN];
            rnd_bytes(key, sizeof key);
            rnd_bytes(probe, sizeof probe);
            kbm_mac_key_init(&kcn, key, sizeof key);
            for (size_t i = 0; i < n; i++) {
                len[i] = rnd_below(56);
                rnd_bytes(msg[i], len[i]);
                kbm_pad_block(blk[i], msg[i], len[i], 64);
                bp[i] = blk[i];
                mp[i] = mac[i];
                kp[i] = &keys[i];
            }
            kbm_hmac1_batch_with(id, &kcn, bp, mp, n);
            for (size_t i = 0; i < n; i++) {
                ref_hmac(key, sizeof key, msg[i], len[i], want);
                check(!memcmp(mac[i], want, 12), "hmac1 batch", n, i);
                kbm_pad_block(blk[i], msg[i], len[i], 0);
            }
            kbm_sha1_key_batch_with(id, bp, kp, n);
            for (size_t i = 0; i < n; i++) {
                ref_sha1(msg[i], len[i], digest);
                ref_hmac(digest, sizeof digest, probe, sizeof probe, want);
                kbm_hmac_sha1_mid(&keys[i], probe, sizeof probe, got);
                check(!memcmp(got, want, 20), "sha1 key batch", n, i);
            }
        }
    }
}

/* Mixed traffic's MAC batches (kernels.c): every kernel, any count, the classes the sort
   groups (minimal, one to KBM_WIDE_MAX_BLOCKS inner blocks, longer) interleaved in random
   order, so lane groups hold mixed block counts and part-filled groups, against OpenSSL; and
   the held-lane kernels (kbm_mac96_mbv_*) called directly with every lane count. */
static void test_mixed_batch(void)
{
    enum { MAXN = 70, LEN_MAX = 300 };
    /* inner blocks: 1 (up to 35 bytes), 2 (36..99), 3, 4, then 5 (228...) */
    static const size_t lens[] = {32, 14, 31, 35, 36, 48, 56, 99, 100, 163, 164, 227, 228, 300};
    enum { WIDE_LENS = 12 }; /* the ones of at most KBM_WIDE_MAX_BLOCKS */
    for (int id = 0; id < KBM_KERNELS; id++) {
        if (!kbm_kernel_supported(id))
            continue;
        for (int iter = 0; iter < 150; iter++) {
            size_t n = 1 + rnd_below(MAXN), len[MAXN];
            kbm_mac96_req r[MAXN];
            kbm_mac_key k[MAXN];
            uint8_t key[MAXN][20], co[MAXN][16], cn[MAXN][16], mh[MAXN][LEN_MAX];
            uint8_t got[MAXN][12], want[12];
            for (size_t i = 0; i < n; i++) {
                len[i] = lens[rnd_below(sizeof lens / sizeof lens[0])];
                rnd_bytes(key[i], sizeof key[i]);
                rnd_bytes(co[i], 16);
                rnd_bytes(cn[i], 16);
                rnd_bytes(mh[i], len[i]);
                kbm_mac_key_init(&k[i], key[i], sizeof key[i]);
                r[i] = (kbm_mac96_req){&k[i], co[i], cn[i], mh[i], len[i], got[i]};
            }
            memset(got, 0, sizeof got);
            kbm_mac96_batch_with(id, r, n);
            for (size_t i = 0; i < n; i++) {
                ref_mac96(key[i], sizeof key[i], co[i], cn[i], mh[i], len[i], want);
                check(!memcmp(got[i], want, 12), "mixed batch", len[i], n);
            }
        }
    }
#if defined(__x86_64__)
    for (int id = KBM_KERNEL_AVX2; id <= KBM_KERNEL_AVX512; id++) {
        if (!kbm_kernel_supported(id))
            continue;
        const size_t lanes = id == KBM_KERNEL_AVX512 ? 16 : 8;
        for (int iter = 0; iter < 200; iter++) {
            size_t n = 1 + rnd_below(lanes), nb[16];
            _Alignas(64) uint8_t blk[16][64 * KBM_WIDE_MAX_BLOCKS];
            uint8_t key[16][20], co[16][16], cn[16][16], mh[16][LEN_MAX], got[16][12], want[12];
            size_t len[16];
            kbm_mac_key k[16];
            const kbm_mac_key *kp[16];
            const uint8_t *bp[16];
            uint8_t *op[16];
            for (size_t i = 0; i < n; i++) {
                len[i] = lens[rnd_below(WIDE_LENS)];
                rnd_bytes(key[i], sizeof key[i]);
                rnd_bytes(co[i], 16);
                rnd_bytes(cn[i], 16);
                rnd_bytes(mh[i], len[i]);
                kbm_mac_key_init(&k[i], key[i], sizeof key[i]);
                nb[i] = kbm_mac96_block(blk[i], co[i], cn[i], mh[i], len[i]);
                kp[i] = &k[i];
                bp[i] = blk[i];
                op[i] = got[i];
            }
            if (id == KBM_KERNEL_AVX512)
                kbm_mac96_mbv_avx512(kp, bp, nb, op, n);
            else
                kbm_mac96_mbv_avx2(kp, bp, nb, op, n);
            for (size_t i = 0; i < n; i++) {
                ref_mac96(key[i], sizeof key[i], co[i], cn[i], mh[i], len[i], want);
                check(!memcmp(got[i], want, 12), "held lanes", nb[i], n);
            }
        }
    }
#endif
}

/* RFC 4449 registration keys in batches (kbm_derive_batch_with) on every kernel, any count,
   Kcn of any length, care-of nonces of 0..KBM_NONCE_MAX bytes (one or two token blocks): the
   midstates must be those of the key SHA1(hkt | First(64, HMAC_SHA1(Kcn, care_of | nonce |
   1))) computed with OpenSSL, checked by an HMAC under them against OpenSSL's. */
static void test_derive_batch(void)
{
    enum { MAXN = 40 };
    for (int id = 0; id < KBM_KERNELS; id++) {
        if (!kbm_kernel_supported(id))
            continue;
        for (int iter = 0; iter < 150; iter++) {
            size_t n = 1 + rnd_below(MAXN), kcn_len[MAXN], nonce_len[MAXN];
            uint8_t kcn[MAXN][80], hkt[MAXN][8], coa[MAXN][16], nonce[MAXN][KBM_NONCE_MAX];
            uint8_t msg[17 + KBM_NONCE_MAX], digest[20], pair[16], want[20], got[20], probe[40];
            kbm_mac_key mid[MAXN], out[MAXN];
            kbm_derive_req r[MAXN];
            rnd_bytes(probe, sizeof probe);
            for (size_t i = 0; i < n; i++) {
                kcn_len[i] = iter % 2 ? 20 : 1 + rnd_below(80);
                nonce_len[i] = iter % 3 ? 8 : rnd_below(KBM_NONCE_MAX + 1);
                rnd_bytes(kcn[i], kcn_len[i]);
                rnd_bytes(hkt[i], 8);
                rnd_bytes(coa[i], 16);
                rnd_bytes(nonce[i], nonce_len[i]);
                kbm_mac_key_init(&mid[i], kcn[i], kcn_len[i]);
                r[i] = (kbm_derive_req){&mid[i], hkt[i], coa[i], nonce[i], nonce_len[i], &out[i]};
            }
            memset(out, 0, sizeof out);
            kbm_derive_batch_with(id, r, n);
            for (size_t i = 0; i < n; i++) {
                memcpy(msg, coa[i], 16);
                memcpy(msg + 16, nonce[i], nonce_len[i]);
                msg[16 + nonce_len[i]] = 1;
                ref_hmac(kcn[i], kcn_len[i], msg, 17 + nonce_len[i], digest);
                memcpy(pair, hkt[i], 8);
                memcpy(pair + 8, digest, 8);
                ref_sha1(pair, sizeof pair, digest);
                ref_hmac(digest, sizeof digest, probe, sizeof probe, want);
                kbm_hmac_sha1_mid(&out[i], probe, sizeof probe, got);
                check(!memcmp(got, want, 20), "derive batch", nonce_len[i], n);
            }
        }
    }
}

/* The calibration picks a supported kernel and timed every supported one; forcing obeys and
   refuses what the CPU cannot run; the raw benchmarks run. */
static void test_kernels(void)
{
    int cur = kbm_kernel_current();
    check(kbm_kernel_supported(cur), "calibrated kernel supported", (unsigned long)cur, 0);
    check(kbm_kernel_supported(KBM_KERNEL_PORTABLE), "portable supported", 0, 0);
    check(kbm_kernel_name(KBM_KERNELS) == NULL && kbm_kernel_name(-1) == NULL, "names", 0, 0);
    for (int id = 0; id < KBM_KERNELS; id++) {
        int ok = kbm_kernel_supported(id);
        check((kbm_kernel_calibration_ns(id) > 0) == ok, "calibrated", (unsigned long)id, 0);
        check(kbm_kernel_force(id) == (ok ? 0 : -1), "force", (unsigned long)id, 0);
        check(kbm_kernel_current() == (ok ? id : cur), "forced", (unsigned long)id, 0);
        kbm_kernel_force(-1);
        check(kbm_kernel_current() == cur, "unforced", (unsigned long)id, 0);
        (void)kbm_sha1_kernel_bench(id, 64);
    }
    printf("kernels:");
    for (int id = 0; id < KBM_KERNELS; id++)
        printf(" %s %s %.1f ns", kbm_kernel_name(id), kbm_kernel_supported(id) ? "yes" : "no",
               kbm_kernel_calibration_ns(id));
    printf("; calibrated: %s\n", kbm_kernel_name(cur));
}

/* RFC 2202 §3, test cases 1-7 */
static void test_rfc2202(void)
{
    static const struct {
        const char *key_hex; /* NULL: key_len bytes of key_byte */
        uint8_t key_byte;
        size_t key_len;
        const char *data; /* NULL: data_len bytes of data_byte */
        uint8_t data_byte;
        size_t data_len;
        const char *digest;
    } v[] = {
        {NULL, 0x0b, 20, "Hi There", 0, 8, "b617318655057264e28bc0b6fb378c8ef146be00"},
        {"4a656665", 0, 4, "what do ya want for nothing?", 0, 28,
         "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"},
        {NULL, 0xaa, 20, NULL, 0xdd, 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819", 0, 25, NULL, 0xcd, 50,
         "4c9007f4026250c6bc8414f9bf50c86c2d7235da"},
        {NULL, 0x0c, 20, "Test With Truncation", 0, 20,
         "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"},
        {NULL, 0xaa, 80, "Test Using Larger Than Block-Size Key - Hash Key First", 0, 54,
         "aa4ae5e15272d00e95705637ce8a3b55ed402112"},
        {NULL, 0xaa, 80,
         "Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data", 0, 73,
         "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t key[80], data[80], want[20], got[20];
        if (v[i].key_hex)
            unhex(key, v[i].key_hex);
        else
            memset(key, v[i].key_byte, v[i].key_len);
        if (v[i].data)
            memcpy(data, v[i].data, v[i].data_len);
        else
            memset(data, v[i].data_byte, v[i].data_len);
        unhex(want, v[i].digest);
        kbm_hmac_sha1(key, v[i].key_len, data, v[i].data_len, got);
        check(!memcmp(got, want, 20), "rfc2202", (unsigned long)i + 1, 0);
    }
}

/* Spec §3 worked example; the checksum field (ca35) is nonzero and must not matter. */
static void test_known_answer(void)
{
    uint8_t kbm[20], co[16], cn[16], mh[32], got[12], got2[12];
    kbm_mac_key k;
    unhex(kbm, "06fe1294dedbb6b085227e37ea4f9a198700c9f4");
    unhex(co, "20010db8000200000000000000000200");
    unhex(cn, "20010db8000300000000000000000300");
    unhex(mh, "3b030500ca35123480000069010400000000050ca3168e73d2a06c8d4fb43c8f");
    kbm_mac_key_init(&k, kbm, sizeof kbm);
    kbm_mac96(&k, co, cn, mh, sizeof mh, got);
    check(!memcmp(got, mh + 20, 12), "known answer", 0, 0);
    kbm_mac96_x2(&k, co, cn, mh, sizeof mh, got, &k, co, cn, mh, sizeof mh, got2);
    check(!memcmp(got, mh + 20, 12) && !memcmp(got2, mh + 20, 12), "known answer x2", 0, 0);
    kbm_mac96_min(&k, co, cn, mh, got);
    check(!memcmp(got, mh + 20, 12), "known answer, minimal kernel", 0, 0);
    memset(got2, 0, sizeof got2);
    kbm_mac96_min_x2(&k, co, cn, mh, got, &k, co, cn, mh, got2);
    check(!memcmp(got, mh + 20, 12) && !memcmp(got2, mh + 20, 12), "known answer, minimal x2",
          0, 0);
    mh[4] = mh[5] = 0;
    kbm_mac96(&k, co, cn, mh, sizeof mh, got);
    check(!memcmp(got, mh + 20, 12), "known answer, checksum 0", 0, 0);
}

static void test_ct_equal(void)
{
    uint8_t a[12], b[12];
    for (int iter = 0; iter < 100; iter++) {
        rnd_bytes(a, 12);
        memcpy(b, a, 12);
        check(kbm_ct_equal12(a, b) == 1, "ct_equal12 equal", 0, 0);
        for (unsigned i = 0; i < 96; i++) {
            b[i / 8] ^= (uint8_t)(1u << (i % 8));
            check(kbm_ct_equal12(a, b) == 0, "ct_equal12 bit", i, 0);
            b[i / 8] ^= (uint8_t)(1u << (i % 8));
        }
        rnd_bytes(b, 12);
        check(kbm_ct_equal12(a, b) == !memcmp(a, b, 12), "ct_equal12 random", 0, 0);
    }
    uint8_t w[16];
    memset(w, 0xff, sizeof w);
    kbm_wipe(w, 12);
    check(w[0] == 0 && w[11] == 0 && w[12] == 0xff, "wipe", 0, 0);
}

/* The dispatcher must pick SHA-NI exactly when the CPU has it, and obey the override. */
static void test_dispatch(void)
{
    int has_sha = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSSE3) && (c & bit_SSE4_1) &&
        __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA))
        has_sha = 1;
#endif
    kbm_sha1_force_portable(0);
    check(!strcmp(kbm_sha1_kernel(), has_sha ? "sha-ni" : "portable"), "dispatch", 0, 0);
    kbm_sha1_force_portable(1);
    check(!strcmp(kbm_sha1_kernel(), "portable"), "force_portable(1)", 0, 0);
    kbm_sha1_force_portable(0);
    check(!strcmp(kbm_sha1_kernel(), has_sha ? "sha-ni" : "portable"), "force_portable(0)", 0, 0);
}

/* ---- Benchmark ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define NKEYS 10000
#define NMSG 1024

/* kbm_parse_mh takes the MH Type and length that kbm_scan bounded from its layout, never from
   the buffer again: bytes changed between the two calls (another thread writing the caller's
   buffer) cannot turn an 8-byte Mobility Header into a Binding Update, whose fixed fields would
   then be read past the packet (issue 9, item 7). */
static void test_parse_mh_single_fetch(void)
{
    uint8_t p[48] = {0x60, 0, 0, 0, 0, 8, 135, 64, 0x20, 0x01, 0x0d, 0xb8};
    p[23] = 1;
    memcpy(p + 24, p + 8, 16);
    p[39] = 2;
    p[40] = 59; /* MH: Payload Proto 59, Header Len 0 (8 bytes), type 5 */
    p[42] = 5;
    kbm_layout l;
    uint32_t where = 0;
    check(kbm_scan(p, sizeof p, &l, &where) == 0 && l.mh == 40 && l.mh_type == 5, "scan", where, 0);
    p[41] = 1; /* now claims 16 bytes: enough for a Binding Update, were it read again */
    int rc = kbm_parse_mh(p, sizeof p, &l, NULL, 0, NULL, &where);
    check(rc == KBM_E_HEADER_LEN && where == 41, "parse_mh uses the scanned length", (unsigned long)rc,
          where);
    p[41] = 0;
    p[42] = 0; /* a Binding Refresh Request (no fixed fields) when scanned */
    check(kbm_scan(p, sizeof p, &l, &where) == 0 && l.mh_type == 0, "scan BRR", where, 0);
    p[42] = 5; /* then a Binding Update */
    rc = kbm_parse_mh(p, sizeof p, &l, NULL, 0, NULL, &where);
    check(rc == 0 && l.mh_type == 0, "parse_mh uses the scanned type", (unsigned long)rc, l.mh_type);
}

static int bench(void)
{
    static uint8_t blocks[2][64 * 16];
    static kbm_mac_key keys[NKEYS];
    static uint8_t raw_keys[NKEYS][20];
    static uint8_t mh[NMSG][32], addr[NMSG][32];
    const double min_time = 0.5;
    uint32_t s0[5] = {1, 2, 3, 4, 5}, s1[5] = {6, 7, 8, 9, 10};
    uint8_t out0[12], out1[12];
    uint32_t sink = 0;
    size_t n, i;
    double t;

    rnd_bytes(blocks[0], sizeof blocks[0]);
    rnd_bytes(blocks[1], sizeof blocks[1]);
    for (i = 0; i < NKEYS; i++) {
        rnd_bytes(raw_keys[i], 20);
        kbm_mac_key_init(&keys[i], raw_keys[i], 20);
    }
    for (i = 0; i < NMSG; i++) {
        rnd_bytes(mh[i], 32);
        rnd_bytes(addr[i], 32);
    }
    printf("dispatched kernel: %s\n", kbm_sha1_kernel());

#define TIMED(label, per_iter, ...)                                                           \
    do {                                                                                      \
        n = 0;                                                                                \
        t = now();                                                                            \
        double t_end = t + min_time;                                                          \
        do {                                                                                  \
            for (i = 0; i < 100000; i++) {                                                    \
                __VA_ARGS__;                                                                  \
            }                                                                                 \
            n += 100000;                                                                      \
        } while (now() < t_end);                                                              \
        t = now() - t;                                                                        \
        printf("  %-46s %7.2f M/s\n", label, (double)n * (per_iter) / t / 1e6);               \
    } while (0)

    printf("SHA-1 compressions/s:\n");
    TIMED("portable, 1 block per call", 1, kbm_sha1_compress_portable(s0, blocks[0]));
    TIMED("dispatched, 1 stream, 1 block per call", 1, kbm_sha1_compress(s0, blocks[0]));
    TIMED("dispatched, 2 streams, 1+1 blocks per call", 2,
          kbm_sha1_compress2(s0, blocks[0], 1, s1, blocks[1], 1));
    TIMED("dispatched, 1 stream, 16 blocks per call", 16, kbm_sha1_blocks(s0, blocks[0], 16));
    TIMED("dispatched, 2 streams, 16+16 blocks per call", 32,
          kbm_sha1_compress2(s0, blocks[0], 16, s1, blocks[1], 16));

    printf("verifications/s, 52-byte MAC input (32-byte MH), 10k keys:\n");
    TIMED("kbm_mac96", 1, {
        size_t m = i % NMSG;
        kbm_mac96(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], 32, out0);
        sink += out0[0];
    });
    TIMED("kbm_mac96_x2", 2, {
        size_t m = i % NMSG, m1 = (i + 1) % NMSG;
        kbm_mac96_x2(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], 32, out0,
                     &keys[(i * 7919 + 1) % NKEYS], addr[m1], addr[m1] + 16, mh[m1], 32, out1);
        sink += out0[0] + out1[0];
    });
    TIMED("kbm_mac96_min (registers)", 1, {
        size_t m = i % NMSG;
        kbm_mac96_min(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], out0);
        sink += out0[0];
    });
    TIMED("kbm_mac96_min_x2 (registers)", 2, {
        size_t m = i % NMSG, m1 = (i + 1) % NMSG;
        kbm_mac96_min_x2(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], out0,
                         &keys[(i * 7919 + 1) % NKEYS], addr[m1], addr[m1] + 16, mh[m1], out1);
        sink += out0[0] + out1[0];
    });
    TIMED("OpenSSL HMAC() one-shot, for scale", 1, {
        uint8_t input[52], full[20];
        size_t m = i % NMSG;
        memcpy(input, addr[m], 32);
        memcpy(input + 32, mh[m], 20);
        HMAC(EVP_sha1(), raw_keys[(i * 7919) % NKEYS], 20, input, sizeof input, full, NULL);
        sink += full[0];
    });
    kbm_sha1_force_portable(1);
    TIMED("kbm_mac96, portable forced", 1, {
        size_t m = i % NMSG;
        kbm_mac96(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], 32, out0);
        sink += out0[0];
    });
    TIMED("kbm_mac96_min_x2, portable forced", 2, {
        size_t m = i % NMSG, m1 = (i + 1) % NMSG;
        kbm_mac96_min_x2(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], out0,
                         &keys[(i * 7919 + 1) % NKEYS], addr[m1], addr[m1] + 16, mh[m1], out1);
        sink += out0[0] + out1[0];
    });
    TIMED("kbm_mac96_x2, portable forced", 2, {
        size_t m = i % NMSG, m1 = (i + 1) % NMSG;
        kbm_mac96_x2(&keys[(i * 7919) % NKEYS], addr[m], addr[m] + 16, mh[m], 32, out0,
                     &keys[(i * 7919 + 1) % NKEYS], addr[m1], addr[m1] + 16, mh[m1], 32, out1);
        sink += out0[0] + out1[0];
    });
    kbm_sha1_force_portable(0);
    printf("sink %u\n", (unsigned)(sink + s0[0] + s1[0]));
    return 0;
}

int main(int argc, char **argv)
{
    rng_state = 0x6b626d66617374u;
    if (argc > 1 && !strcmp(argv[1], "bench"))
        return bench();
    if (argc > 1)
        rng_state = strtoull(argv[1], NULL, 0);
    printf("seed %#llx, CPU kernel: %s\n", (unsigned long long)rng_state, kbm_sha1_kernel());

    test_dispatch();
    test_parse_mh_single_fetch();
    test_kernels();
    for (int pass = 0; pass < 2; pass++) {
        kbm_sha1_force_portable(pass);
        printf("kernel %s\n", kbm_sha1_kernel());
        test_compress();
        test_sha1_hmac();
        test_mac96();
        test_mac96_min();
        test_batch();
        test_rr_batches();
        test_mixed_batch();
        test_derive_batch();
        test_rfc2202();
        test_known_answer();
        test_ct_equal();
    }
    kbm_sha1_force_portable(0);

    printf("%lu passed, %lu failed\n", passed, failed);
    return failed != 0;
}
