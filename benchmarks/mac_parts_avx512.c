/* Where the 16-lane AVX-512 MAC's time goes: stripped variants of kbm_mac96_min_mb_avx512 on
   16 minimal Binding Updates (keys and blocks in L1), ns per MAC:
     - prologue: the key and block transposes alone (keys16 + min_rows16);
     - 2 compress: the inner and outer compressions alone (blocks from broadcasts);
     - full: the kernel as the verifier calls it.
   Build and run (from the repository root, after a build in build/crel):
     cmake -S . -B build/crel -DCMAKE_BUILD_TYPE=Release && cmake --build build/crel --target kbmcore
     gcc -O3 -std=c11 -Icsrc benchmarks/mac_parts_avx512.c build/crel/libkbmcore.a -lcrypto \
         -lpthread -o build/mac_parts && taskset -c 1 build/mac_parts
   Needs a CPU with AVX-512 (F, BW, VL); prints three rounds. */
#define _POSIX_C_SOURCE 200809L
#include "../csrc/sha1_avx512.c"
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kbm_mac_key keys[16];
static uint8_t data[16][64], outb[16][12];
static const kbm_mac_key *k[16];
static const uint8_t *co[16], *cn[16], *mh[16];
static uint8_t *o[16];

MB_FN __attribute__((noinline)) static uint32_t prologue(uint64_t n)
{
    __m512i acc = _mm512_setzero_si512();
    for (uint64_t r = 0; r < n; r++) {
        __m512i s[5], ou[5], w[16];
        keys16(s, ou, k);
        min_rows16(w, co, cn, mh);
        for (int j = 0; j < 5; j++)
            acc = _mm512_add_epi32(acc, _mm512_add_epi32(s[j], ou[j]));
        for (int j = 0; j < 16; j++)
            acc = _mm512_xor_si512(acc, w[j]);
        __asm__ volatile("" ::: "memory"); /* reload the pointers: no hoisting */
    }
    _Alignas(64) uint32_t t[16];
    _mm512_store_si512(t, acc);
    return t[0];
}

MB_FN __attribute__((noinline)) static uint32_t two_compressions(uint64_t n)
{
    __m512i s[5], w[16];
    for (int j = 0; j < 5; j++)
        s[j] = _mm512_set1_epi32(j);
    for (uint64_t r = 0; r < n; r++) {
        for (int j = 0; j < 16; j++)
            w[j] = _mm512_set1_epi32((int)(j + r));
        compress_avx512(s, w);
        for (int j = 0; j < 5; j++)
            w[j] = s[j];
        for (int j = 5; j < 16; j++)
            w[j] = _mm512_set1_epi32(j == 5 ? (int)0x80000000u : j == 15 ? 672 : 0);
        compress_avx512(s, w);
    }
    _Alignas(64) uint32_t t[16];
    _mm512_store_si512(t, s[0]);
    return t[0];
}

int main(void)
{
    for (int i = 0; i < 16; i++) {
        uint8_t key[20] = {(uint8_t)i};
        kbm_mac_key_init(&keys[i], key, 20);
        k[i] = &keys[i];
        co[i] = data[i];
        cn[i] = data[i] + 16;
        mh[i] = data[i] + 32;
        o[i] = outb[i];
    }
    unsigned sink = 0;
    for (int round = 0; round < 3; round++) {
        const uint64_t n = 2000000;
        double t = now();
        sink += prologue(n);
        t = now() - t;
        printf("prologue %.2f ns/mac  ", t / (double)n / 16 * 1e9);
        t = now();
        sink += two_compressions(n);
        t = now() - t;
        printf("2 compress %.2f ns/mac  ", t / (double)n / 16 * 1e9);
        t = now();
        for (uint64_t r = 0; r < n; r++)
            kbm_mac96_min_mb_avx512(k, co, cn, mh, o, 16);
        t = now() - t;
        printf("full %.2f ns/mac\n", t / (double)n / 16 * 1e9);
    }
    printf("(sink %u)\n", sink + outb[0][0]);
    return 0;
}
