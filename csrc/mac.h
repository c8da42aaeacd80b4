/* SHA-1 kernels and the HMAC-SHA1-96 Binding Authorization MAC (RFC 6275 §5.2.6, RFC 4449).
   Internal header: no allocation, no global state beyond the cached kernel choice. */
#ifndef KBM_MAC_H
#define KBM_MAC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- Shared helpers (static inline: mac.c, kernels.c, rr.c) ---- */

/* The SHA-1 initial hash value (FIPS 180-4 §5.3.1). */
static inline void kbm_sha1_init(uint32_t s[5])
{
    s[0] = 0x67452301u;
    s[1] = 0xEFCDAB89u;
    s[2] = 0x98BADCFEu;
    s[3] = 0x10325476u;
    s[4] = 0xC3D2E1F0u;
}

static inline void kbm_store32_be(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* b = the one padded SHA-1 block holding msg (len <= 55 bytes), after `prefix` bytes already
   hashed (64: an HMAC inner or outer message after its pad block). */
static inline void kbm_pad_block(uint8_t b[64], const uint8_t *msg, size_t len, uint32_t prefix)
{
    memset(b, 0, 64);
    memcpy(b, msg, len);
    b[len] = 0x80;
    kbm_store32_be(b + 60, (uint32_t)((prefix + len) * 8));
}

/* ---- SHA-1 compression ---- */

/* Advances state by one 64-byte block. Dispatched: SHA-NI when the CPU has it, else portable C. */
void kbm_sha1_compress(uint32_t state[5], const uint8_t block[64]);
void kbm_sha1_compress_portable(uint32_t state[5], const uint8_t block[64]);
/* Advances state by nblocks consecutive 64-byte blocks (dispatched). */
void kbm_sha1_blocks(uint32_t state[5], const uint8_t *blocks, size_t nblocks);
/* Two independent streams, each advanced by nblocks0 / nblocks1 consecutive 64-byte blocks;
   interleaved on SHA-NI. Either count may be 0. */
void kbm_sha1_compress2(uint32_t s0[5], const uint8_t *b0, size_t nblocks0,
                        uint32_t s1[5], const uint8_t *b1, size_t nblocks1);
/* Returns "sha-ni" or "portable": the kernel the dispatcher uses now. */
const char *kbm_sha1_kernel(void);
/* 1 when the dispatcher uses SHA-NI now (what kbm_sha1_kernel() names), else 0. */
int kbm_sha1_use_shani(void);
/* 1 when the CPU has the SHA extensions (whatever kbm_sha1_force_portable says). */
int kbm_cpu_has_shani(void);
/* Testing only: on != 0 makes the dispatcher use portable C, 0 restores CPU detection.
   Not thread-safe to flip while another thread hashes: results stay correct, but which kernel
   that thread uses is then unspecified. */
void kbm_sha1_force_portable(int on);

#if defined(__x86_64__)
/* SHA-NI kernels behind the dispatcher; call only when kbm_sha1_kernel() says "sha-ni". */
void kbm_sha1_shani(uint32_t state[5], const uint8_t *blocks, size_t nblocks);
void kbm_sha1_shani_x2(uint32_t s0[5], const uint8_t *b0, size_t nblocks0,
                       uint32_t s1[5], const uint8_t *b1, size_t nblocks1);
#endif

/* ---- One-shot helpers ---- */

void kbm_sha1(const uint8_t *msg, size_t len, uint8_t out[20]);
/* Full HMAC-SHA1 with a key of any length (keys over 64 bytes are hashed first). */
void kbm_hmac_sha1(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                   uint8_t out[20]);

/* ---- Binding Authorization Data ---- */

/* HMAC-SHA1 key reduced to its two midstates: each verification then costs
   only the compressions of the message itself. 40 bytes. */
typedef struct {
    uint32_t inner[5];
    uint32_t outer[5];
} kbm_mac_key;

/* HMAC-SHA1 of msg (any length) with a key already reduced to midstates. */
void kbm_hmac_sha1_mid(const kbm_mac_key *k, const uint8_t *msg, size_t len, uint8_t out[20]);

/* Any key length. Wipes its temporaries; the result is key material (kbm_wipe it when done). */
void kbm_mac_key_init(kbm_mac_key *k, const uint8_t *key, size_t key_len);

/* out = First(96, HMAC_SHA1(Kbm, care_of | correspondent | mh[0 .. mh_len-12))), where mh is the
   whole Mobility Header ending with the 12 authenticator bytes and its checksum (bytes 4-5) is
   taken as zero. Requires 14 <= mh_len <= KBM_MH_MAX (not checked). */
#define KBM_MH_MAX 2048
void kbm_mac96(const kbm_mac_key *k, const uint8_t care_of[16], const uint8_t correspondent[16],
               const uint8_t *mh, size_t mh_len, uint8_t out[12]);
/* kbm_mac96 on portable C whatever the CPU (the "portable" batch kernel). */
void kbm_mac96_portable(const kbm_mac_key *k, const uint8_t care_of[16],
                        const uint8_t correspondent[16], const uint8_t *mh, size_t mh_len,
                        uint8_t out[12]);
/* The same for two independent messages at once (interleaved SHA-NI when available). */
void kbm_mac96_x2(const kbm_mac_key *k0, const uint8_t co0[16], const uint8_t cn0[16],
                  const uint8_t *mh0, size_t len0, uint8_t out0[12],
                  const kbm_mac_key *k1, const uint8_t co1[16], const uint8_t cn1[16],
                  const uint8_t *mh1, size_t len1, uint8_t out1[12]);

/* kbm_mac96 for a 32-byte Mobility Header (a minimal Binding Update: 52-byte MAC input, one
   block per compression), with both blocks built in registers on SHA-NI. Reads exactly
   co[0..16), cn[0..16) and mh[0..32). Dispatched; the portable kernel runs kbm_mac96. */
void kbm_mac96_min(const kbm_mac_key *k, const uint8_t co[16], const uint8_t cn[16],
                   const uint8_t mh[32], uint8_t out[12]);
void kbm_mac96_min_x2(const kbm_mac_key *k0, const uint8_t co0[16], const uint8_t cn0[16],
                      const uint8_t mh0[32], uint8_t out0[12],
                      const kbm_mac_key *k1, const uint8_t co1[16], const uint8_t cn1[16],
                      const uint8_t mh1[32], uint8_t out1[12]);

#if defined(__x86_64__)
/* The SHA-NI kernels behind kbm_mac96_min / kbm_mac96_min_x2 (only when kbm_sha1_use_shani()). */
void kbm_mac96_min_shani(const kbm_mac_key *k, const uint8_t co[16], const uint8_t cn[16],
                         const uint8_t mh[32], uint8_t out[12]);
void kbm_mac96_min_x2_shani(const kbm_mac_key *k0, const uint8_t co0[16],
                            const uint8_t cn0[16], const uint8_t mh0[32], uint8_t out0[12],
                            const kbm_mac_key *k1, const uint8_t co1[16],
                            const uint8_t cn1[16], const uint8_t mh1[32], uint8_t out1[12]);
#endif

/* ---- MAC kernels for batches (kernels.c), chosen by measurement ----

   A kernel computes many MACs at once: "portable" (C, one at a time), "sha-ni" (the SHA
   extensions, two interleaved streams), "avx2" (8 messages per call, one per 32-bit lane) and
   "avx512" (16 per call). Which one runs is decided once per process, on first use, by timing
   each one this CPU supports on minimal Binding Updates (well under a millisecond), unless
   kbm_kernel_force chose one. */
enum { KBM_KERNEL_PORTABLE, KBM_KERNEL_SHANI, KBM_KERNEL_AVX2, KBM_KERNEL_AVX512, KBM_KERNELS };

/* One MAC to compute: kbm_mac96(key, co, cn, mh, mh_len, out). 14 <= mh_len <= KBM_MH_MAX. */
typedef struct {
    const kbm_mac_key *key;
    const uint8_t *co, *cn, *mh;
    size_t mh_len;
    uint8_t *out;
} kbm_mac96_req;

const char *kbm_kernel_name(int id);       /* NULL past the last kernel */
int kbm_kernel_supported(int id);          /* 1 when this CPU (and OS) can run it */
int kbm_kernel_current(void);              /* the kernel batches use (calibrates on first call) */
/* id < 0: the calibration's choice again. Returns 0, or -1 when id is not supported here. */
int kbm_kernel_force(int id);
/* Nanoseconds per minimal-BU MAC measured for kernel id by the calibration (calibrating first
   if it has not run), or 0 when id is not supported. */
double kbm_kernel_calibration_ns(int id);
/* The MACs of r[0..n), any n, with the current kernel / with kernel id (an unsupported one
   runs portable C). Wide kernels take messages of up to KBM_WIDE_MAX_BLOCKS inner blocks in
   full lane groups of one block count; the part-filled groups go two at a time on SHA-NI
   (unless half full), or without SHA-NI merge in block-count order, a group of mixed counts
   holding its finished lanes (kbm_mac96_mbv); longer messages go two at a time. */
#define KBM_WIDE_MAX_BLOCKS 4
void kbm_mac96_batch(const kbm_mac96_req *r, size_t n);
void kbm_mac96_batch_with(int id, const kbm_mac96_req *r, size_t n);
/* Runs about `blocks` compressions with kernel id (a benchmark of its raw rate). */
uint32_t kbm_sha1_kernel_bench(int id, uint64_t blocks);

/* Blocks of the padded inner message of kbm_mac96 for an mh_len-byte Mobility Header, and the
   padded message itself (64 * that many bytes written to buf). */
static inline size_t kbm_mac96_nblocks(size_t mh_len)
{
    return (32 + mh_len - 12 + 8) / 64 + 1;
}
size_t kbm_mac96_block(uint8_t *buf, const uint8_t co[16], const uint8_t cn[16],
                       const uint8_t *mh, size_t mh_len);

#if defined(__x86_64__)
/* The multi-buffer kernels: n <= 8 / 16 messages of nblocks padded inner blocks each at blk[i]
   (kbm_mac96_block), keys key[i], the 12-byte MACs to out[i]. Only when supported. */
void kbm_mac96_mb_avx2(const kbm_mac_key *const key[], const uint8_t *const blk[],
                       size_t nblocks, uint8_t *const out[], size_t n);
void kbm_mac96_mb_avx512(const kbm_mac_key *const key[], const uint8_t *const blk[],
                         size_t nblocks, uint8_t *const out[], size_t n);
/* The same for minimal Binding Updates (kbm_mac96_min's inputs), blocks built in registers. */
void kbm_mac96_min_mb_avx2(const kbm_mac_key *const key[], const uint8_t *const co[],
                           const uint8_t *const cn[], const uint8_t *const mh[],
                           uint8_t *const out[], size_t n);
void kbm_mac96_min_mb_avx512(const kbm_mac_key *const key[], const uint8_t *const co[],
                             const uint8_t *const cn[], const uint8_t *const mh[],
                             uint8_t *const out[], size_t n);
/* kbm_mac96_mb with nblocks[i] (>= 1) blocks in lane i: lanes that finish early are held. */
void kbm_mac96_mbv_avx2(const kbm_mac_key *const key[], const uint8_t *const blk[],
                        const size_t nblocks[], uint8_t *const out[], size_t n);
void kbm_mac96_mbv_avx512(const kbm_mac_key *const key[], const uint8_t *const blk[],
                          const size_t nblocks[], uint8_t *const out[], size_t n);
/* rounds compressions on each of 8 / 16 lanes, transposing the blocks at blocks[64 * i]. */
uint32_t kbm_sha1_mb_bench_avx2(const uint8_t *blocks, uint64_t rounds);
uint32_t kbm_sha1_mb_bench_avx512(const uint8_t *blocks, uint64_t rounds);
/* kbm_hmac1_batch_with's wide kernels: n <= 8 / 16 padded blocks, one key. */
void kbm_hmac1_mb_avx2(const kbm_mac_key *key, const uint8_t *const blk[], uint8_t *const out[],
                       size_t n);
void kbm_hmac1_mb_avx512(const kbm_mac_key *key, const uint8_t *const blk[],
                         uint8_t *const out[], size_t n);
/* kbm_sha1_key_batch_with's wide kernels: n <= 8 / 16 padded blocks. */
void kbm_sha1_key_mb_avx2(const uint8_t *const blk[], kbm_mac_key *const out[], size_t n);
void kbm_sha1_key_mb_avx512(const uint8_t *const blk[], kbm_mac_key *const out[], size_t n);
#endif

/* ---- Return routability's batches (rr.c), on kernel id as kbm_mac96_batch_with ----

   Every stage of an RR Binding Update (RFC 6275 §5.2.5) is one of these over a chunk's
   messages, so the wide kernels get full lanes: the keygen tokens (HMAC_SHA1 with Kcn's
   midstates, 2 compressions each), Kbm = SHA1(tokens) turned into HMAC midstates (3), then
   kbm_mac96_batch_with (2). */

/* out[i] = First(96, HMAC_SHA1(key, m_i)) for messages of at most 55 bytes given as their
   padded blocks blk[i] (kbm_pad_block with prefix 64); a keygen token is the first 8 bytes. */
void kbm_hmac1_batch_with(int id, const kbm_mac_key *key, const uint8_t *const blk[],
                          uint8_t *const out[], size_t n);
/* out[i] = kbm_mac_key_init of the 20-byte key SHA1(m_i), for messages of at most 55 bytes
   given as their padded blocks blk[i] (kbm_pad_block with prefix 0). out[i] is key material. */
void kbm_sha1_key_batch_with(int id, const uint8_t *const blk[], kbm_mac_key *const out[],
                             size_t n);

/* ---- RFC 4449 registration keys in batches (kernels.c) ----

   The Kbm of an RFC 4449 peer for a care-of address (RFC 6275 §5.2.5 with preconfigured Kcn
   and nonces): Kbm = SHA1(home keygen token | care-of keygen token), the care-of token being
   First(64, HMAC_SHA1(Kcn, care_of | care-of nonce | 1)); as HMAC midstates, 5 compressions
   (one more for a nonce over 38 bytes). A chunk's derivations run as one batch so the wide
   kernels get full lanes. */
typedef struct {
    const kbm_mac_key *kcn; /* Kcn's midstates */
    const uint8_t *hkt;     /* the home keygen token, 8 bytes */
    const uint8_t *care_of; /* 16 bytes */
    const uint8_t *nonce;   /* the care-of nonce, nonce_len <= 64 (KBM_NONCE_MAX) bytes */
    size_t nonce_len;
    kbm_mac_key *out; /* the Kbm's midstates: key material (kbm_wipe it when done) */
} kbm_derive_req;

/* out of r[0..n), any n, on kernel id (as kbm_mac96_batch_with); wipes its temporaries. */
void kbm_derive_batch_with(int id, const kbm_derive_req *r, size_t n);

/* ---- Utilities ---- */

/* Returns 1 if a == b, else 0, in time independent of the contents. */
int kbm_ct_equal12(const uint8_t a[12], const uint8_t b[12]);

/* The same, inlined for the verifier's hot loop: three unaligned word loads, no branch. */
static inline int kbm_ct_equal12_inline(const uint8_t a[12], const uint8_t b[12])
{
    uint64_t a0, b0;
    uint32_t a1, b1;
    memcpy(&a0, a, 8);
    memcpy(&b0, b, 8);
    memcpy(&a1, a + 8, 4);
    memcpy(&b1, b + 8, 4);
    uint64_t d = (a0 ^ b0) | (uint64_t)(a1 ^ b1);
    /* d | -d has its top bit set exactly when d != 0 */
    return (int)(((d | (0 - d)) >> 63) ^ 1);
}
/* Zeroes n bytes in a way the compiler cannot elide (memset and a compiler barrier). */
void kbm_wipe(void *p, size_t n);
/* Overwrites the 8 KiB of stack below the caller: the SHA-1 kernels leave key schedules,
   midstates and spilled vectors there (the fused AVX-512 RR kernel's frames reach ~5 KiB). Call
   it once a batch that handled keys is done. */
void kbm_burn_stack(void);

#endif /* KBM_MAC_H */
