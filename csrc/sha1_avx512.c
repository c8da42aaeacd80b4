/* 16-lane multi-buffer SHA-1 with AVX-512 (F, BW, VL): sixteen messages at once, one per 32-bit
   lane, blocks transposed in with 16x16 shuffles. Every function carries the target attribute,
   so the library still runs on CPUs without AVX-512; sha1.c calls these only after CPUID (and
   the OS's XCR0) say they are safe. */
#include "mac.h"

#if defined(__x86_64__)

#include "sha1_avx512_ops.h"

#define MB_NAME(x) x##_avx512
#define MB_ROWS(w, rows, off) rows16((w), (rows), (off))
#define MB_MIN_ROWS(w, co, cn, mh) min_rows16((w), (co), (cn), (mh))
#define MB_KEYS(s, o, keys) keys16((s), (o), (keys))
#define MB_PICK_GT(a, b, x, y) _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask((a), (b)), (y), (x))

/* w[j] lane i = r[i] word j: 32-bit unpacks, 64-bit unpacks, two rounds of 128-bit lane
   shuffles. r is clobbered. */
MB_FN static inline void transpose16(__m512i r[16], __m512i w[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int j = 0; j < 16; j += 4) {
        r[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
        r[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
        r[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
        r[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
    }
    /* r[4j + m], 128-bit lane k = column 4k + m of rows 4j..4j+3 */
    for (int m = 0; m < 4; m++) {
        __m512i x0 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x88);
        __m512i x1 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xDD);
        __m512i y0 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x88);
        __m512i y1 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xDD);
        w[m] = _mm512_shuffle_i32x4(x0, y0, 0x88);
        w[8 + m] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
        w[4 + m] = _mm512_shuffle_i32x4(x1, y1, 0x88);
        w[12 + m] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
    }
}

MB_FN static inline __m512i bswap32x16(__m512i x)
{
    return _mm512_shuffle_epi8(
        x, _mm512_broadcast_i32x4(_mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3)));
}

/* w[j] lane i = big-endian word j of the 64-byte block at rows[i] + off */
MB_FN static inline void rows16(__m512i w[16], const uint8_t *const rows[16], size_t off)
{
    __m512i r[16];
    for (int i = 0; i < 16; i++)
        r[i] = bswap32x16(_mm512_loadu_si512((const void *)(rows[i] + off)));
    transpose16(r, w);
}

/* The padded inner block of a minimal Binding Update, lane i: co | cn | mh[0..20) with the
   checksum (mh[4..6)) zeroed | 0x80 | 0 | bit length of ipad + 52 bytes. */
MB_FN static inline void min_rows16(__m512i w[16], const uint8_t *const co[16],
                                    const uint8_t *const cn[16], const uint8_t *const mh[16])
{
    const __m512i keep = _mm512_set_epi32(0, 0, 0, -1, -1, -1, 0xFFFF, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1);
    const __m512i pad = _mm512_set_epi32((64 + 52) * 8, 0, (int)0x80000000u, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0);
    __m512i r[16];
    for (int i = 0; i < 16; i++) {
        __m256i addr = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)co[i])),
            _mm_loadu_si128((const __m128i *)(const void *)cn[i]), 1);
        __m512i row = _mm512_inserti64x4(
            _mm512_castsi256_si512(addr),
            _mm256_loadu_si256((const __m256i *)(const void *)mh[i]), 1);
        r[i] = _mm512_ternarylogic_epi32(bswap32x16(row), keep, pad, 0xEA); /* a & b | c */
    }
    transpose16(r, w);
}

/* s / o = the inner / outer midstates of keys[i] (40 bytes: ten words), lane i. */
MB_FN static inline void keys16(__m512i s[5], __m512i o[5], const kbm_mac_key *const keys[16])
{
    __m512i r[16], w[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_maskz_loadu_epi32(0x03FF, (const void *)keys[i]);
    transpose16(r, w);
    for (int j = 0; j < 5; j++) {
        s[j] = w[j];
        o[j] = w[5 + j];
    }
}

#include "sha1_mb.h"

#else
typedef int kbm_sha1_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
