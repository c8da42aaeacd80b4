/* SHA-1 with the x86 SHA extensions: the standard Intel sequence, one stream and two interleaved.
   Only these functions are built for SHA-NI (target attribute), so the library still runs on
   CPUs without it; sha1.c calls them only after CPUID says they are safe. */
#include "mac.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* One stream: abcd holds A..D with A in the top lane, e[] holds E (top lane) in turn with the
   pre-round copies of abcd that sha1nexte turns into the next group's E + W. */
typedef struct {
    __m128i abcd, e[2], m[4];
    __m128i abcd_in, e_in;
} lane;

SHANI static inline void lane_load(lane *l, const uint32_t s[5])
{
    l->abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)s), 0x1B);
    l->e[0] = _mm_set_epi32((int)s[4], 0, 0, 0);
}

SHANI static inline void lane_store(const lane *l, uint32_t s[5])
{
    _mm_storeu_si128((__m128i *)(void *)s, _mm_shuffle_epi32(l->abcd, 0x1B));
    s[4] = (uint32_t)_mm_extract_epi32(l->e[0], 3);
}

/* Rounds 4g..4g+3 of lane L. Group g consumes message group M[g] (kept in m[g & 3]; the first
   four are W[0..3], already byte-swapped) and advances the schedule
   M[g+4] = msg2(msg1(M[g], M[g+1]) ^ M[g+2], M[g+3]) in three steps spread over groups
   g+1..g+3, which is what hides the message latency.
   g must be a literal: every condition folds and rnds4 needs an immediate. */
#define GROUP(L, g, W)                                                                        \
    do {                                                                                      \
        if ((g) < 4)                                                                          \
            L.m[(g) & 3] = (W)[(g) & 3];                                                      \
        if ((g) == 0)                                                                         \
            L.e[0] = _mm_add_epi32(L.e[0], L.m[0]);                                           \
        else                                                                                  \
            L.e[(g) & 1] = _mm_sha1nexte_epu32(L.e[(g) & 1], L.m[(g) & 3]);                   \
        L.e[((g) + 1) & 1] = L.abcd;                                                          \
        if ((g) >= 3 && (g) <= 18)                                                            \
            L.m[((g) + 1) & 3] = _mm_sha1msg2_epu32(L.m[((g) + 1) & 3], L.m[(g) & 3]);        \
        L.abcd = _mm_sha1rnds4_epu32(L.abcd, L.e[(g) & 1], (g) / 5);                          \
        if ((g) >= 1 && (g) <= 16)                                                            \
            L.m[((g) + 3) & 3] = _mm_sha1msg1_epu32(L.m[((g) + 3) & 3], L.m[(g) & 3]);        \
        if ((g) >= 2 && (g) <= 17)                                                            \
            L.m[((g) + 2) & 3] = _mm_xor_si128(L.m[((g) + 2) & 3], L.m[(g) & 3]);             \
    } while (0)

/* The four message groups of one 64-byte block, big-endian words, W0 in the top lane. */
SHANI static inline void load_block(__m128i w[4], const uint8_t *p, __m128i bswap)
{
    for (int i = 0; i < 4; i++)
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)),
                                bswap);
}

/* Runs X(g) for all 20 groups. */
#define GROUPS(X)                                                                             \
    X(0); X(1); X(2); X(3); X(4); X(5); X(6); X(7); X(8); X(9);                               \
    X(10); X(11); X(12); X(13); X(14); X(15); X(16); X(17); X(18); X(19)

#define BLOCK_BEGIN(L) (L.abcd_in = L.abcd, L.e_in = L.e[0])
/* After group 19, e[0] holds the abcd that entered it; nexte rotates its A into the final E. */
#define BLOCK_END(L)                                                                          \
    (L.e[0] = _mm_sha1nexte_epu32(L.e[0], L.e_in), L.abcd = _mm_add_epi32(L.abcd, L.abcd_in))

SHANI void kbm_sha1_shani(uint32_t state[5], const uint8_t *blocks, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    lane a;
    lane_load(&a, state);
    for (; nblocks; nblocks--, blocks += 64) {
        __m128i w[4];
        load_block(w, blocks, bswap);
        BLOCK_BEGIN(a);
#define ONE(g) GROUP(a, g, w)
        GROUPS(ONE);
#undef ONE
        BLOCK_END(a);
    }
    lane_store(&a, state);
}

/* In one stream each sha1rnds4 waits for the previous one; a second independent chain, issued
   group by group, fills those waits. The gain depends on the core: near 2x where the SHA unit is
   latency-bound, little where it is already near its throughput limit. */
SHANI void kbm_sha1_shani_x2(uint32_t s0[5], const uint8_t *b0, size_t nblocks0,
                             uint32_t s1[5], const uint8_t *b1, size_t nblocks1)
{
    const __m128i bswap = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    size_t common = nblocks0 < nblocks1 ? nblocks0 : nblocks1;
    if (common) {
        lane a, b;
        lane_load(&a, s0);
        lane_load(&b, s1);
        for (size_t i = 0; i < common; i++, b0 += 64, b1 += 64) {
            __m128i w0[4], w1[4];
            load_block(w0, b0, bswap);
            load_block(w1, b1, bswap);
            BLOCK_BEGIN(a);
            BLOCK_BEGIN(b);
#define TWO(g) GROUP(a, g, w0); GROUP(b, g, w1)
            GROUPS(TWO);
#undef TWO
            BLOCK_END(a);
            BLOCK_END(b);
        }
        lane_store(&a, s0);
        lane_store(&b, s1);
    }
    if (nblocks0 > common)
        kbm_sha1_shani(s0, b0, nblocks0 - common);
    if (nblocks1 > common)
        kbm_sha1_shani(s1, b1, nblocks1 - common);
}

/* ---- HMAC-SHA1-96 of minimal Binding Updates, blocks built in registers ----

   The MAC input of a Binding Update whose Mobility Header is 32 bytes (the minimal one: the
   fields, PadN(4), the Binding Authorization Data option) is 52 bytes: care-of 16 |
   correspondent 16 | the MH's first 20 bytes, its checksum (bytes 4-5) taken as zero. That is
   one padded block after the ipad midstate, and the outer message (the 20-byte inner digest)
   is one more. Both are assembled in registers: no padding buffer, no digest stored and
   reloaded between the two compressions. */

/* The inner block: co | cn | mh[0..20) with mh[4..6) zeroed | 0x80 | 0 | bit length of
   ipad + 52 bytes. Reads exactly co[0..16), cn[0..16) and mh[0..32). */
SHANI static inline void min_inner(__m128i w[4], const uint8_t *co, const uint8_t *cn,
                                   const uint8_t *mh, __m128i bswap)
{
    const __m128i no_checksum =
        _mm_set_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, -1, -1, -1, -1);
    w[0] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)co), bswap);
    w[1] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)cn), bswap);
    w[2] = _mm_shuffle_epi8(
        _mm_and_si128(_mm_loadu_si128((const __m128i *)(const void *)mh), no_checksum), bswap);
    /* mh[16..32): keep word 12 (mh[16..20)), then the padding and the length */
    __m128i last =
        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(mh + 16)), bswap);
    w[3] = _mm_or_si128(_mm_and_si128(last, _mm_set_epi32(-1, 0, 0, 0)),
                        _mm_set_epi32(0, (int)0x80000000u, 0, (64 + 52) * 8));
}

/* The outer block: the inner digest A..E | 0x80 | 0 | bit length of opad + 20 bytes.
   abcd holds A..D with A in the top lane, which is already W0..W3; E is e's top lane. */
SHANI static inline void min_outer(__m128i w[4], __m128i abcd, __m128i e)
{
    w[0] = abcd;
    w[1] = _mm_or_si128(_mm_and_si128(e, _mm_set_epi32(-1, 0, 0, 0)),
                        _mm_set_epi32(0, (int)0x80000000u, 0, 0));
    w[2] = _mm_setzero_si128();
    w[3] = _mm_set_epi32(0, 0, 0, (64 + 20) * 8);
}

/* The first 96 bits of the digest in abcd (A..C), big-endian. */
SHANI static inline void min_out(uint8_t out[12], __m128i abcd, __m128i bswap)
{
    uint8_t t[16];
    _mm_storeu_si128((__m128i *)(void *)t, _mm_shuffle_epi8(abcd, bswap));
    memcpy(out, t, 12);
}

SHANI void kbm_mac96_min_shani(const kbm_mac_key *k, const uint8_t co[16], const uint8_t cn[16],
                               const uint8_t mh[32], uint8_t out[12])
{
    const __m128i bswap = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    __m128i w[4];
    lane a;
    min_inner(w, co, cn, mh, bswap);
    lane_load(&a, k->inner);
    BLOCK_BEGIN(a);
#define ONE(g) GROUP(a, g, w)
    GROUPS(ONE);
    BLOCK_END(a);
    min_outer(w, a.abcd, a.e[0]);
    lane_load(&a, k->outer);
    BLOCK_BEGIN(a);
    GROUPS(ONE);
#undef ONE
    BLOCK_END(a);
    min_out(out, a.abcd, bswap);
}

SHANI void kbm_mac96_min_x2_shani(const kbm_mac_key *k0, const uint8_t co0[16],
                                  const uint8_t cn0[16], const uint8_t mh0[32], uint8_t out0[12],
                                  const kbm_mac_key *k1, const uint8_t co1[16],
                                  const uint8_t cn1[16], const uint8_t mh1[32], uint8_t out1[12])
{
    const __m128i bswap = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    __m128i w0[4], w1[4];
    lane a, b;
    min_inner(w0, co0, cn0, mh0, bswap);
    min_inner(w1, co1, cn1, mh1, bswap);
    lane_load(&a, k0->inner);
    lane_load(&b, k1->inner);
    BLOCK_BEGIN(a);
    BLOCK_BEGIN(b);
#define TWO(g) GROUP(a, g, w0); GROUP(b, g, w1)
    GROUPS(TWO);
    BLOCK_END(a);
    BLOCK_END(b);
    min_outer(w0, a.abcd, a.e[0]);
    min_outer(w1, b.abcd, b.e[0]);
    lane_load(&a, k0->outer);
    lane_load(&b, k1->outer);
    BLOCK_BEGIN(a);
    BLOCK_BEGIN(b);
    GROUPS(TWO);
#undef TWO
    BLOCK_END(a);
    BLOCK_END(b);
    min_out(out0, a.abcd, bswap);
    min_out(out1, b.abcd, bswap);
}

#else
typedef int kbm_sha1_shani_unused; /* ISO C forbids an empty translation unit */
#endif
