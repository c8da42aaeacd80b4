/* sha1_mb.h's vector operations on AVX-512 (16 lanes of 32 bits): shared by sha1_avx512.c and
   rr.c's fused return-routability kernels. Every function using them carries MB_FN. */
#ifndef KBM_SHA1_AVX512_OPS_H
#define KBM_SHA1_AVX512_OPS_H

#include <immintrin.h>

#define MB_FN __attribute__((target("avx512f,avx512bw,avx512vl")))
#define MB_L 16
#define MB_V __m512i
#define MB_ADD _mm512_add_epi32
#define MB_XOR _mm512_xor_si512
#define MB_SET1 _mm512_set1_epi32
#define MB_ROL(x, n) _mm512_rol_epi32((x), (n))
#define MB_CH(b, c, d) _mm512_ternarylogic_epi32((b), (c), (d), 0xCA)
#define MB_PAR(b, c, d) _mm512_ternarylogic_epi32((b), (c), (d), 0x96)
#define MB_MAJ(b, c, d) _mm512_ternarylogic_epi32((b), (c), (d), 0xE8)
#define MB_XOR3(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)
#define MB_LOAD(p) _mm512_load_si512((const void *)(p))
#define MB_STORE(p, v) _mm512_store_si512((void *)(p), (v))

#endif
