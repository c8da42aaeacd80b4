/* Portable SHA-1 compression (FIPS 180-4 §6.1.2) and the run-time kernel choice. */
#include "mac.h"

#include <stdatomic.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static inline uint32_t rol32(uint32_t x, unsigned n) /* 0 < n < 32 */
{
    return (x << n) | (x >> (32 - n));
}

static inline uint32_t load32_be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void kbm_sha1_compress_portable(uint32_t state[5], const uint8_t block[64])
{
    uint32_t w[16];
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3], e = state[4];

    for (int i = 0; i < 16; i++)
        w[i] = load32_be(block + 4 * i);

    /* The schedule lives in a 16-word ring: w[t] = rol1(w[t-3] ^ w[t-8] ^ w[t-14] ^ w[t-16]). */
#define W(t) (w[(t) & 15] = rol32(w[((t) + 13) & 15] ^ w[((t) + 8) & 15] ^ w[((t) + 2) & 15] ^ \
                                  w[(t) & 15], 1))
#define ROUND(f, k, wt)                                                                        \
    do {                                                                                       \
        uint32_t tmp = rol32(a, 5) + (f) + e + (k) + (wt);                                     \
        e = d;                                                                                 \
        d = c;                                                                                 \
        c = rol32(b, 30);                                                                      \
        b = a;                                                                                 \
        a = tmp;                                                                               \
    } while (0)

    int t = 0;
    for (; t < 16; t++)
        ROUND(d ^ (b & (c ^ d)), 0x5A827999u, w[t]);
    for (; t < 20; t++)
        ROUND(d ^ (b & (c ^ d)), 0x5A827999u, W(t));
    for (; t < 40; t++)
        ROUND(b ^ c ^ d, 0x6ED9EBA1u, W(t));
    for (; t < 60; t++)
        ROUND((b & c) | (d & (b | c)), 0x8F1BBCDCu, W(t));
    for (; t < 80; t++)
        ROUND(b ^ c ^ d, 0xCA62C1D6u, W(t));
#undef ROUND
#undef W

    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
}

/* ---- Dispatch ---- */

enum { KERNEL_UNKNOWN, KERNEL_PORTABLE, KERNEL_SHANI };

/* The cached probe result, or KERNEL_PORTABLE while forced. Relaxed atomics make the benign
   first-use race well defined and compile to plain loads and stores. */
static _Atomic int kernel_choice = KERNEL_UNKNOWN;

static int probe(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return KERNEL_PORTABLE;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_SHA))
        return KERNEL_PORTABLE;
    return KERNEL_SHANI;
#else
    return KERNEL_PORTABLE;
#endif
}

static inline int use_shani(void)
{
    int k = atomic_load_explicit(&kernel_choice, memory_order_relaxed);
    if (k == KERNEL_UNKNOWN) {
        k = probe();
        atomic_store_explicit(&kernel_choice, k, memory_order_relaxed);
    }
    return k == KERNEL_SHANI;
}

int kbm_cpu_has_shani(void)
{
    return probe() == KERNEL_SHANI;
}

int kbm_sha1_use_shani(void)
{
    return use_shani();
}

const char *kbm_sha1_kernel(void)
{
    return use_shani() ? "sha-ni" : "portable";
}

void kbm_sha1_force_portable(int on)
{
    atomic_store_explicit(&kernel_choice, on ? KERNEL_PORTABLE : KERNEL_UNKNOWN,
                          memory_order_relaxed);
}

void kbm_sha1_compress(uint32_t state[5], const uint8_t block[64])
{
#if defined(__x86_64__)
    if (use_shani()) {
        kbm_sha1_shani(state, block, 1);
        return;
    }
#endif
    kbm_sha1_compress_portable(state, block);
}

void kbm_sha1_blocks(uint32_t state[5], const uint8_t *blocks, size_t nblocks)
{
#if defined(__x86_64__)
    if (use_shani()) {
        kbm_sha1_shani(state, blocks, nblocks);
        return;
    }
#endif
    for (size_t i = 0; i < nblocks; i++)
        kbm_sha1_compress_portable(state, blocks + 64 * i);
}

void kbm_sha1_compress2(uint32_t s0[5], const uint8_t *b0, size_t nblocks0,
                        uint32_t s1[5], const uint8_t *b1, size_t nblocks1)
{
#if defined(__x86_64__)
    if (use_shani()) {
        kbm_sha1_shani_x2(s0, b0, nblocks0, s1, b1, nblocks1);
        return;
    }
#endif
    for (size_t i = 0; i < nblocks0; i++)
        kbm_sha1_compress_portable(s0, b0 + 64 * i);
    for (size_t i = 0; i < nblocks1; i++)
        kbm_sha1_compress_portable(s1, b1 + 64 * i);
}
