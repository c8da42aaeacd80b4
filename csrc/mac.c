/* HMAC-SHA1 on precomputed midstates, and the 96-bit Binding Authorization MAC. */
#include "mac.h"

#include <string.h>

static void store64_be(uint8_t *p, uint64_t x)
{
    kbm_store32_be(p, (uint32_t)(x >> 32));
    kbm_store32_be(p + 4, (uint32_t)x);
}

static void digest_out(const uint32_t s[5], uint8_t *out, int words)
{
    for (int i = 0; i < words; i++)
        kbm_store32_be(out + 4 * i, s[i]);
}

/* Hashes msg into s, which has already absorbed `prefix` bytes (a multiple of 64), pads, and
   writes the digest. */
static void sha1_finish(uint32_t s[5], uint64_t prefix, const uint8_t *msg, size_t len,
                        uint8_t out[20])
{
    uint8_t tail[128];
    size_t full = len / 64, rest = len % 64;
    size_t tail_len = rest < 56 ? 64 : 128;

    kbm_sha1_blocks(s, msg, full);
    memset(tail, 0, sizeof tail);
    if (rest)
        memcpy(tail, msg + 64 * full, rest);
    tail[rest] = 0x80;
    store64_be(tail + tail_len - 8, (prefix + len) * 8);
    kbm_sha1_blocks(s, tail, tail_len / 64);
    digest_out(s, out, 5);
    kbm_wipe(tail, sizeof tail);
}

void kbm_sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t s[5];
    kbm_sha1_init(s);
    sha1_finish(s, 0, msg, len, out);
    kbm_wipe(s, sizeof s); /* this may be a hashed HMAC key */
}

void kbm_mac_key_init(kbm_mac_key *k, const uint8_t *key, size_t key_len)
{
    uint8_t block[64] = {0};

    if (key_len > 64)
        kbm_sha1(key, key_len, block);
    else if (key_len)
        memcpy(block, key, key_len);

    for (int i = 0; i < 64; i++)
        block[i] ^= 0x36;
    kbm_sha1_init(k->inner);
    kbm_sha1_compress(k->inner, block);

    for (int i = 0; i < 64; i++)
        block[i] ^= 0x36 ^ 0x5c;
    kbm_sha1_init(k->outer);
    kbm_sha1_compress(k->outer, block);

    kbm_wipe(block, sizeof block);
}

void kbm_hmac_sha1(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                   uint8_t out[20])
{
    kbm_mac_key k;

    kbm_mac_key_init(&k, key, key_len);
    kbm_hmac_sha1_mid(&k, msg, len, out);
    kbm_wipe(&k, sizeof k);
}

void kbm_hmac_sha1_mid(const kbm_mac_key *k, const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t s[5];
    uint8_t inner[20];
    memcpy(s, k->inner, sizeof s);
    sha1_finish(s, 64, msg, len, inner);
    memcpy(s, k->outer, sizeof s);
    sha1_finish(s, 64, inner, sizeof inner, out);
    kbm_wipe(inner, sizeof inner);
    kbm_wipe(s, sizeof s);
}


/* ---- Binding Authorization Data ---- */

/* MAC input: care_of (16) | correspondent (16) | mh without its 12 authenticator bytes, at most
   32 + KBM_MH_MAX - 12 bytes, plus 9 bytes of padding, in whole blocks. */
#define MAC96_MAX_BLOCKS ((32 + KBM_MH_MAX - 12 + 9 + 63) / 64)

/* Lays out the padded inner message; returns its block count. */
size_t kbm_mac96_block(uint8_t *buf, const uint8_t co[16], const uint8_t cn[16],
                       const uint8_t *mh, size_t mh_len)
{
    size_t n = 32 + mh_len - 12;
    size_t blocks = kbm_mac96_nblocks(mh_len);

    memcpy(buf, co, 16);
    memcpy(buf + 16, cn, 16);
    memcpy(buf + 32, mh, mh_len - 12);
    buf[32 + 4] = 0; /* the MH checksum counts as zero */
    buf[32 + 5] = 0;
    buf[n] = 0x80;
    memset(buf + n + 1, 0, 64 * blocks - 8 - (n + 1));
    /* the inner state has already absorbed the 64-byte ipad block */
    store64_be(buf + 64 * blocks - 8, (uint64_t)(64 + n) * 8);
    return blocks;
}

/* The outer message is the 20-byte inner digest, padded to one block (bit length (64+20)*8). */
static void mac96_outer(uint8_t block[64], const uint32_t inner[5])
{
    digest_out(inner, block, 5);
    memset(block + 20, 0, 44);
    block[20] = 0x80;
    block[62] = (uint8_t)((64 + 20) * 8 >> 8);
    block[63] = (uint8_t)((64 + 20) * 8);
}

typedef void sha1_blocks_fn(uint32_t state[5], const uint8_t *blocks, size_t nblocks);

static void mac96_with(sha1_blocks_fn *blocks_fn, const kbm_mac_key *k, const uint8_t care_of[16],
                       const uint8_t correspondent[16], const uint8_t *mh, size_t mh_len,
                       uint8_t out[12])
{
    uint8_t buf[MAC96_MAX_BLOCKS * 64];
    uint32_t s[5];
    size_t blocks = kbm_mac96_block(buf, care_of, correspondent, mh, mh_len);

    memcpy(s, k->inner, sizeof s);
    blocks_fn(s, buf, blocks);
    mac96_outer(buf, s);
    memcpy(s, k->outer, sizeof s);
    blocks_fn(s, buf, 1);
    digest_out(s, out, 3);
}

void kbm_mac96(const kbm_mac_key *k, const uint8_t care_of[16], const uint8_t correspondent[16],
               const uint8_t *mh, size_t mh_len, uint8_t out[12])
{
    mac96_with(kbm_sha1_blocks, k, care_of, correspondent, mh, mh_len, out);
}

static void portable_blocks(uint32_t state[5], const uint8_t *blocks, size_t nblocks)
{
    for (size_t i = 0; i < nblocks; i++)
        kbm_sha1_compress_portable(state, blocks + 64 * i);
}

void kbm_mac96_portable(const kbm_mac_key *k, const uint8_t care_of[16],
                        const uint8_t correspondent[16], const uint8_t *mh, size_t mh_len,
                        uint8_t out[12])
{
    mac96_with(portable_blocks, k, care_of, correspondent, mh, mh_len, out);
}

void kbm_mac96_x2(const kbm_mac_key *k0, const uint8_t co0[16], const uint8_t cn0[16],
                  const uint8_t *mh0, size_t len0, uint8_t out0[12],
                  const kbm_mac_key *k1, const uint8_t co1[16], const uint8_t cn1[16],
                  const uint8_t *mh1, size_t len1, uint8_t out1[12])
{
    uint8_t buf0[MAC96_MAX_BLOCKS * 64], buf1[MAC96_MAX_BLOCKS * 64];
    uint32_t s0[5], s1[5];
    size_t blocks0 = kbm_mac96_block(buf0, co0, cn0, mh0, len0);
    size_t blocks1 = kbm_mac96_block(buf1, co1, cn1, mh1, len1);

    memcpy(s0, k0->inner, sizeof s0);
    memcpy(s1, k1->inner, sizeof s1);
    kbm_sha1_compress2(s0, buf0, blocks0, s1, buf1, blocks1);
    mac96_outer(buf0, s0);
    mac96_outer(buf1, s1);
    memcpy(s0, k0->outer, sizeof s0);
    memcpy(s1, k1->outer, sizeof s1);
    kbm_sha1_compress2(s0, buf0, 1, s1, buf1, 1);
    digest_out(s0, out0, 3);
    digest_out(s1, out1, 3);
}

void kbm_mac96_min(const kbm_mac_key *k, const uint8_t co[16], const uint8_t cn[16],
                   const uint8_t mh[32], uint8_t out[12])
{
#if defined(__x86_64__)
    if (kbm_sha1_use_shani()) {
        kbm_mac96_min_shani(k, co, cn, mh, out);
        return;
    }
#endif
    kbm_mac96(k, co, cn, mh, 32, out);
}

void kbm_mac96_min_x2(const kbm_mac_key *k0, const uint8_t co0[16], const uint8_t cn0[16],
                      const uint8_t mh0[32], uint8_t out0[12],
                      const kbm_mac_key *k1, const uint8_t co1[16], const uint8_t cn1[16],
                      const uint8_t mh1[32], uint8_t out1[12])
{
#if defined(__x86_64__)
    if (kbm_sha1_use_shani()) {
        kbm_mac96_min_x2_shani(k0, co0, cn0, mh0, out0, k1, co1, cn1, mh1, out1);
        return;
    }
#endif
    kbm_mac96_x2(k0, co0, cn0, mh0, 32, out0, k1, co1, cn1, mh1, 32, out1);
}

/* ---- Utilities ---- */

int kbm_ct_equal12(const uint8_t a[12], const uint8_t b[12])
{
    return kbm_ct_equal12_inline(a, b);
}

void kbm_wipe(void *p, size_t n)
{
    if (n == 0)
        return;
    memset(p, 0, n);
    /* the compiler must assume this reads *p, so the stores above stay: BoringSSL's
       OPENSSL_cleanse, at memset's speed (OpenSSL's stores 8 bytes at a time, and the RR
       batches wipe kilobytes of tokens per chunk) */
    __asm__ __volatile__("" : : "r"(p) : "memory");
}

__attribute__((noinline)) void kbm_burn_stack(void)
{
    uint8_t scratch[8192];
    kbm_wipe(scratch, sizeof scratch);
}
