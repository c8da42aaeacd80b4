/* 8-lane multi-buffer SHA-1 with AVX2: eight messages at once, one per 32-bit lane, blocks
   transposed in with two 8x8 shuffles per block. Every function carries the target attribute,
   so the library still runs on CPUs without AVX2; sha1.c calls these only after CPUID (and the
   OS's XCR0) say they are safe. */
#include "mac.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define MB_FN __attribute__((target("avx2")))
#define MB_L 8
#define MB_V __m256i
#define MB_NAME(x) x##_avx2
#define MB_ADD _mm256_add_epi32
#define MB_XOR _mm256_xor_si256
#define MB_SET1 _mm256_set1_epi32
#define MB_ROL(x, n) _mm256_or_si256(_mm256_slli_epi32((x), (n)), _mm256_srli_epi32((x), 32 - (n)))
#define MB_CH(b, c, d) _mm256_xor_si256((d), _mm256_and_si256((b), _mm256_xor_si256((c), (d))))
#define MB_PAR(b, c, d) _mm256_xor_si256(_mm256_xor_si256((b), (c)), (d))
#define MB_MAJ(b, c, d)                                                                       \
    _mm256_or_si256(_mm256_and_si256((b), (c)), _mm256_and_si256((d), _mm256_or_si256((b), (c))))
#define MB_XOR3(a, b, c) MB_PAR(a, b, c)
#define MB_LOAD(p) _mm256_load_si256((const __m256i *)(const void *)(p))
#define MB_STORE(p, v) _mm256_store_si256((__m256i *)(void *)(p), (v))
#define MB_ROWS(w, rows, off) rows8((w), (rows), (off))
#define MB_MIN_ROWS(w, co, cn, mh) min_rows8((w), (co), (cn), (mh))
#define MB_KEYS(s, o, keys) keys8((s), (o), (keys))
#define MB_PICK_GT(a, b, x, y) _mm256_blendv_epi8((y), (x), _mm256_cmpgt_epi32((a), (b)))

/* w[j] lane i = r[i] word j: 32-bit unpacks, 64-bit unpacks, 128-bit lane permutes. r is
   clobbered. */
MB_FN static inline void transpose8(__m256i r[8], __m256i w[8])
{
    __m256i t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        r[j] = _mm256_unpacklo_epi64(t[j], t[j + 2]);
        r[j + 1] = _mm256_unpackhi_epi64(t[j], t[j + 2]);
        r[j + 2] = _mm256_unpacklo_epi64(t[j + 1], t[j + 3]);
        r[j + 3] = _mm256_unpackhi_epi64(t[j + 1], t[j + 3]);
    }
    /* r[4j + m], 128-bit lane k = column 4k + m of rows 4j..4j+3 */
    for (int m = 0; m < 4; m++) {
        w[m] = _mm256_permute2x128_si256(r[m], r[4 + m], 0x20);
        w[4 + m] = _mm256_permute2x128_si256(r[m], r[4 + m], 0x31);
    }
}

MB_FN static inline __m256i bswap32x8(__m256i x)
{
    return _mm256_shuffle_epi8(
        x, _mm256_broadcastsi128_si256(
               _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3)));
}

static inline const __m256i *at(const uint8_t *p)
{
    return (const __m256i *)(const void *)p;
}

/* w[j] lane i = big-endian word j of the 64-byte block at rows[i] + off, half a block at a
   time */
MB_FN static inline void rows8(__m256i w[16], const uint8_t *const rows[8], size_t off)
{
    __m256i r[8];
    for (int i = 0; i < 8; i++)
        r[i] = bswap32x8(_mm256_loadu_si256(at(rows[i] + off)));
    transpose8(r, w);
    for (int i = 0; i < 8; i++)
        r[i] = bswap32x8(_mm256_loadu_si256(at(rows[i] + off + 32)));
    transpose8(r, w + 8);
}

/* The padded inner block of a minimal Binding Update, lane i: co | cn | mh[0..20) with the
   checksum (mh[4..6)) zeroed | 0x80 | 0 | bit length of ipad + 52 bytes. */
MB_FN static inline void min_rows8(__m256i w[16], const uint8_t *const co[8],
                                   const uint8_t *const cn[8], const uint8_t *const mh[8])
{
    const __m256i keep = _mm256_set_epi32(0, 0, 0, -1, -1, -1, 0xFFFF, -1);
    const __m256i pad = _mm256_set_epi32((64 + 52) * 8, 0, (int)0x80000000u, 0, 0, 0, 0, 0);
    __m256i r[8];
    for (int i = 0; i < 8; i++)
        r[i] = bswap32x8(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)co[i])),
            _mm_loadu_si128((const __m128i *)(const void *)cn[i]), 1));
    transpose8(r, w);
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_or_si256(
            _mm256_and_si256(bswap32x8(_mm256_loadu_si256(at(mh[i]))), keep), pad);
    transpose8(r, w + 8);
}

/* s / o = the inner / outer midstates of keys[i] (40 bytes: ten words), lane i. */
MB_FN static inline void keys8(__m256i s[5], __m256i o[5], const kbm_mac_key *const keys[8])
{
    const __m256i two = _mm256_set_epi32(0, 0, 0, 0, 0, 0, -1, -1);
    __m256i r[8], w[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_si256(at((const uint8_t *)keys[i]));
    transpose8(r, w);
    for (int j = 0; j < 5; j++)
        s[j] = w[j];
    o[0] = w[5];
    o[1] = w[6];
    o[2] = w[7];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_maskload_epi32((const int *)(const void *)keys[i]->outer + 3, two);
    transpose8(r, w);
    o[3] = w[0];
    o[4] = w[1];
}

#include "sha1_mb.h"

#else
typedef int kbm_sha1_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
