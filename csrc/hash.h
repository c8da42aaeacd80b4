/* The keyed 64-bit hash of a 16-byte address, shared by the peer index (peers.c), the state
   file's slot index (state.c) and the verifier (verify.c). A header of its own, static inline,
   so that no C file depends on another for it. */
#ifndef KBM_HASH_H
#define KBM_HASH_H

#include <stdint.h>
#include <string.h>

static inline uint64_t kbm_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    return k ^ (k >> 33);
}

/* Keyed so that crafted home addresses cannot aim at one probe chain. */
static inline uint64_t kbm_hash16(const uint64_t seed[2], const uint8_t a[16])
{
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, a + 8, 8);
    return kbm_fmix64(kbm_fmix64(x ^ seed[0]) ^ y ^ seed[1]);
}

#endif
