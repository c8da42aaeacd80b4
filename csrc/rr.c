/* Return routability (RFC 6275 §5.2, §9.4, §9.5.1): the RR branch of the verifier pipeline
   and the Home Test / Care-of Test replies. The rules are kbmfast/_rr.py's (the oracle).

   The Python layer owns the secrets' lifecycle (kbmfast.ReturnRoutability: Kcn, a nonce every
   nonce_interval, each kept MAX_NONCE_LIFETIME) and pushes a snapshot here whenever the set of
   live nonces or Kcn changes: Kcn as HMAC midstates and the live nonces, whose serials are
   consecutive (oldest .. oldest + count - 1; the index of a nonce is its serial mod 2^16).
   At most 241 are live at once, so serial mod 256 is their slot.

   The RR peers' last sequence numbers live in a bounded open-addressing table in memory
   (never in the state file): an entry written when the newest live nonce was serial s stays
   live while a nonce with serial <= s is: after that, every Binding Update it accepted names
   an expired nonce, so forgetting the entry cannot let a replay through. A new peer finding
   max_peers live entries gets KBM_RR_TABLE_FULL (BA 130). */
#include "internal.h"
#include "hash.h"

#include <stdlib.h>
#include <string.h>

#define NONCE_SLOTS 256
#define NONCE_SIZE 8
#define REPLY_SIZE 64        /* IPv6 header + 24-byte Home / Care-of Test */
#define INIT_MAX 2048        /* longer init messages are not answered */

/* The usual init message (56 bytes: no extension header, a 16-byte MH) as seven words loaded
   from the caller's memory once, judged in registers (check_init's copy in memory, read back
   byte by byte right after it was stored, waited for store forwarding). */
typedef struct {
    uint64_t q[7];
} plain_init;

struct rr_entry {
    uint8_t home[16];
    uint64_t serial; /* newest live nonce's serial when written */
    uint16_t seq;
    uint8_t used;
};

struct kbm_rr {
    pthread_mutex_t mu;
    int ready;
    kbm_mac_key kcn;
    uint64_t oldest;
    size_t count;
    uint8_t nonce[NONCE_SLOTS][NONCE_SIZE];
    struct rr_entry *tab, *spare; /* spare: made by the first purge */
    size_t mask, used, max;
    /* kbm_rr_reply's Kcn as midstates, computed once per Kcn: reply_id names the Kcn (the
       caller's, never reused; 0: none), wiped by kbm_rr_forget and kbm_rr_free */
    uint64_t reply_id;
    kbm_mac_key reply_kcn;
};

void kbm_rr_free(struct kbm_rr *rr)
{
    if (!rr)
        return;
    pthread_mutex_destroy(&rr->mu);
    free(rr->tab);
    free(rr->spare);
    kbm_wipe(rr, sizeof *rr);
    free(rr);
}

int kbm_rr_enable(kbm_verifier *v, size_t max_peers)
{
    if (v->rr || max_peers == 0 || max_peers > ((size_t)1 << 22))
        return KBM_EINVAL;
    struct kbm_rr *rr = calloc(1, sizeof *rr);
    if (!rr)
        return KBM_ENOMEM;
    size_t cap = 16;
    while (cap < max_peers * 2)
        cap *= 2;
    rr->tab = calloc(cap, sizeof *rr->tab);
    if (!rr->tab) {
        free(rr);
        return KBM_ENOMEM;
    }
    rr->mask = cap - 1;
    rr->max = max_peers;
    pthread_mutex_init(&rr->mu, NULL);
    v->rr = rr;
    return KBM_OK;
}

void kbm_rr_forget(kbm_verifier *v)
{
    struct kbm_rr *rr = v->rr;
    if (!rr)
        return;
    pthread_mutex_lock(&rr->mu);
    kbm_wipe(&rr->kcn, sizeof rr->kcn);
    kbm_wipe(rr->nonce, sizeof rr->nonce);
    kbm_wipe(&rr->reply_kcn, sizeof rr->reply_kcn);
    rr->reply_id = 0;
    rr->count = 0;
    rr->ready = 0;
    pthread_mutex_unlock(&rr->mu);
}

int kbm_rr_set(kbm_verifier *v, const uint8_t *kcn, size_t kcn_len, uint64_t oldest,
               const uint8_t *nonces, size_t count)
{
    struct kbm_rr *rr = v->rr;
    if (!rr || count > NONCE_SLOTS || kcn_len == 0)
        return KBM_EINVAL;
    kbm_mac_key k;
    kbm_mac_key_init(&k, kcn, kcn_len);
    pthread_mutex_lock(&rr->mu);
    rr->kcn = k;
    rr->oldest = oldest;
    rr->count = count;
    for (size_t i = 0; i < count; i++)
        memcpy(rr->nonce[(oldest + i) % NONCE_SLOTS], nonces + i * NONCE_SIZE, NONCE_SIZE);
    rr->ready = 1;
    pthread_mutex_unlock(&rr->mu);
    kbm_wipe(&k, sizeof k);
    return KBM_OK;
}

void kbm_verifier_set_compat(kbm_verifier *v, int rfc3775)
{
    v->compat = rfc3775 != 0;
}

/* The live nonce with this index into out: 1, or 0 when it expired (or never was). */
static int nonce_of(const struct kbm_rr *rr, uint16_t index, uint8_t out[NONCE_SIZE])
{
    uint16_t d = (uint16_t)(index - (uint16_t)rr->oldest);
    if (!rr->ready || d >= rr->count)
        return 0;
    memcpy(out, rr->nonce[(rr->oldest + d) % NONCE_SLOTS], NONCE_SIZE);
    return 1;
}

static struct rr_entry *slot_of(struct rr_entry *tab, size_t mask, const uint64_t seed[2],
                                const uint8_t home[16])
{
    uint64_t h0, h1;
    memcpy(&h0, home, 8);
    memcpy(&h1, home + 8, 8);
    size_t i = kbm_hash16(seed, home) & mask;
    for (;; i = (i + 1) & mask) {
        uint64_t e0, e1;
        memcpy(&e0, tab[i].home, 8);
        memcpy(&e1, tab[i].home + 8, 8);
        if (!tab[i].used || ((e0 ^ h0) | (e1 ^ h1)) == 0)
            return &tab[i];
    }
}

/* Drop the entries no live nonce covers (the table is full of the others otherwise). */
static void purge(struct kbm_rr *rr, const uint64_t seed[2])
{
    if (!rr->spare && !(rr->spare = malloc((rr->mask + 1) * sizeof *rr->spare)))
        return; /* out of memory: the table stays full */
    memset(rr->spare, 0, (rr->mask + 1) * sizeof *rr->spare);
    size_t used = 0;
    for (size_t i = 0; i <= rr->mask; i++) {
        const struct rr_entry *e = &rr->tab[i];
        if (e->used && e->serial >= rr->oldest) {
            *slot_of(rr->spare, rr->mask, seed, e->home) = *e;
            used++;
        }
    }
    struct rr_entry *t = rr->tab;
    rr->tab = rr->spare;
    rr->spare = t;
    rr->used = used;
}

/* ---- Authentication: each stage one batch over the chunk (kernels.c's lanes) ---- */

/* The padded inner block of a keygen token's HMAC: address | nonce | which (25 bytes). */
static void token_block(uint8_t b[64], const uint8_t addr[16], const uint8_t nonce[NONCE_SIZE],
                        uint8_t which)
{
    memset(b, 0, 64);
    memcpy(b, addr, 16);
    memcpy(b + 16, nonce, NONCE_SIZE);
    b[24] = which;
    b[25] = 0x80;
    kbm_store32_be(b + 60, (64 + 16 + NONCE_SIZE + 1) * 8);
}

static const uint8_t *mac_co(const kbm_rr_item *it)
{
    return it->dereg ? it->home : it->care_of;
}

/* ---- AVX-512: the RR hashes of 16 messages per call, blocks built in registers ----

   The generic stages (kernels.c) each take their blocks from memory, transposed, and leave
   their results there for the next stage. Here a minimal RR Binding Update's nine
   compressions run in one call: both keygen tokens, Kbm and its HMAC midstates, the
   authenticator, the tokens and keys never leaving the vector registers; and a reply's token
   is computed from the words of its block, not from a padded copy of it. Only when
   kbm_kernel_current() is the AVX-512 kernel (which implies the CPU runs it). */
#if defined(__x86_64__)
#include "sha1_avx512_ops.h"

#define MB_NAME(x) x##_rr512
#define MB_COMPRESS_ONLY
#include "sha1_mb.h"

#define TOKEN_WORDS 7 /* address, nonce, which and the pad bit; the rest of the block is fixed */
#define MAC_WORDS 13  /* care-of | correspondent | a 32-byte MH without its authenticator */

/* Inlined: token16 and hmac_outer16 hold a copy each, rr_bu16 four (measured faster than one
   out-of-line copy, whose states go through memory). */
MB_FN __attribute__((always_inline)) static inline void compress16(__m512i s[5], __m512i w[16])
{
    compress_rr512(s, w);
}

MB_FN static inline __m512i bcast16(uint32_t x)
{
    return _mm512_set1_epi32((int)x);
}

/* s: an HMAC's inner digest in; its outer hash with midstates o out. */
MB_FN static void hmac_outer16(__m512i s[5], const __m512i o[5])
{
    __m512i w[16];
    for (int j = 0; j < 5; j++) {
        w[j] = s[j];
        s[j] = o[j];
    }
    w[5] = bcast16(0x80000000u);
    for (int j = 6; j < 15; j++)
        w[j] = _mm512_setzero_si512();
    w[15] = bcast16((64 + 20) * 8);
    compress16(s, w);
}

/* t[0..2) lane i = the first two words of HMAC_SHA1(k, address | nonce | which), the first
   TOKEN_WORDS words of its padded block being in[.][i] (token_words). */
MB_FN static void token16(const kbm_mac_key *k, uint32_t in[TOKEN_WORDS][16], __m512i t[2])
{
    __m512i s[5], o[5], w[16];
    for (int j = 0; j < 5; j++) {
        s[j] = bcast16(k->inner[j]);
        o[j] = bcast16(k->outer[j]);
    }
    for (int j = 0; j < TOKEN_WORDS; j++)
        w[j] = _mm512_load_si512((const void *)in[j]);
    for (int j = TOKEN_WORDS; j < 15; j++)
        w[j] = _mm512_setzero_si512();
    w[15] = bcast16((64 + 16 + NONCE_SIZE + 1) * 8);
    compress16(s, w);
    hmac_outer16(s, o);
    t[0] = s[0];
    t[1] = s[1];
}

/* The keygen tokens of 16 token blocks (lanes past the caller's count are never read). */
MB_FN static void reply_tokens16(const kbm_mac_key *k, uint32_t in[TOKEN_WORDS][16],
                                 uint32_t out[2][16])
{
    __m512i t[2];
    token16(k, in, t);
    _mm512_store_si512((void *)out[0], t[0]);
    _mm512_store_si512((void *)out[1], t[1]);
}

/* Lane i: home and care-of token blocks hin / cin, Kbm = SHA1(home token | care-of token), or
   SHA1(home token) where bit i of dereg is set, turned into HMAC midstates key[0..5) (inner)
   and key[5..10) (outer), and the first three words of HMAC_SHA1(Kbm, m) into mac, where
   m[.][i] are the MAC input's 13 words (a minimal Binding Update's 52 bytes). */
MB_FN static void rr_bu16(const kbm_mac_key *kcn, uint32_t hin[TOKEN_WORDS][16],
                          uint32_t cin[TOKEN_WORDS][16], __mmask16 dereg,
                          uint32_t m[MAC_WORDS][16], uint32_t key[10][16],
                          uint32_t mac[3][16])
{
    __m512i h[2], c[2], s[5], d[5], k[2][5], w[16];
    uint32_t iv[5];
    kbm_sha1_init(iv);
    token16(kcn, hin, h);
    token16(kcn, cin, c);
    const __m512i pad = bcast16(0x80000000u), zero = _mm512_setzero_si512();
    w[0] = h[0];
    w[1] = h[1];
    w[2] = _mm512_mask_blend_epi32(dereg, c[0], pad);
    w[3] = _mm512_mask_blend_epi32(dereg, c[1], zero);
    w[4] = _mm512_mask_blend_epi32(dereg, pad, zero);
    for (int j = 5; j < 15; j++)
        w[j] = zero;
    w[15] = _mm512_mask_blend_epi32(dereg, bcast16(16 * 8), bcast16(8 * 8));
    for (int j = 0; j < 5; j++)
        s[j] = bcast16(iv[j]);
    compress16(s, w);
    for (int j = 0; j < 5; j++)
        d[j] = s[j];
    /* the 20-byte Kbm padded to 64 bytes (zeros) XOR ipad, then XOR opad */
    for (int p = 0; p < 2; p++) {
        const __m512i x = bcast16(p ? 0x5C5C5C5Cu : 0x36363636u);
        for (int j = 0; j < 5; j++) {
            w[j] = _mm512_xor_si512(d[j], x);
            k[p][j] = bcast16(iv[j]);
        }
        for (int j = 5; j < 16; j++)
            w[j] = x;
        compress16(k[p], w);
        for (int j = 0; j < 5; j++)
            _mm512_store_si512((void *)key[5 * p + j], k[p][j]);
    }
    for (int j = 0; j < MAC_WORDS; j++)
        w[j] = _mm512_load_si512((const void *)m[j]);
    w[13] = pad;
    w[14] = zero;
    w[15] = bcast16((64 + 52) * 8);
    for (int j = 0; j < 5; j++)
        s[j] = k[0][j];
    compress16(s, w);
    hmac_outer16(s, k[1]);
    for (int j = 0; j < 3; j++)
        _mm512_store_si512((void *)mac[j], s[j]);
}
#endif

static inline uint32_t load_be32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return __builtin_bswap32(x); /* little-endian host (internal.h) */
}

/* Lane i of the words a keygen token's block starts with (token_block's first 25 bytes and
   its pad bit). */
static inline void token_words(uint32_t in[][16], size_t i, const uint8_t addr[16],
                               const uint8_t nonce[NONCE_SIZE], uint8_t which)
{
    for (int j = 0; j < 4; j++)
        in[j][i] = load_be32(addr + 4 * j);
    in[4][i] = load_be32(nonce);
    in[5][i] = load_be32(nonce + 4);
    in[6][i] = (uint32_t)which << 24 | 0x800000u;
}

/* token_words for a plain init's source address (w->q[1], w->q[2]) and a nonce given as its
   two big-endian words nw. */
static inline void token_words_plain(uint32_t in[][16], size_t i, const plain_init *w,
                                     const uint32_t nw[2], uint8_t which)
{
    for (int j = 0; j < 2; j++) {
        in[2 * j][i] = __builtin_bswap32((uint32_t)w->q[1 + j]);
        in[2 * j + 1][i] = __builtin_bswap32((uint32_t)(w->q[1 + j] >> 32));
    }
    in[4][i] = nw[0];
    in[5][i] = nw[1];
    in[6][i] = (uint32_t)which << 24 | 0x800000u;
}

/* What authenticate_live works in; key material (tokens, Kbm), wiped once it is done. */
typedef struct {
    uint8_t blk[2 * KBM_RR_BATCH][64]; /* the tokens' blocks, then the Kbm ones */
    uint8_t tok[2 * KBM_RR_BATCH][12];
    uint8_t m[16];
    kbm_mac_key key[KBM_RR_BATCH];
    uint8_t mac[KBM_RR_BATCH][KBM_AUTH_SIZE];
} auth_scratch;

/* Items live[0 .. k) (nonces in hn / cn): verdict 0 or 6. Three batches on the current kernel:
   the home and care-of keygen tokens of all of them, their Kbm = SHA1(home token | care-of
   token) (SHA1(home token) for a de-registration) as midstates, their authenticators. */
static void authenticate_live(const kbm_verifier *v, const kbm_mac_key *kcn, kbm_rr_item *items,
                              const size_t *live, size_t k,
                              uint8_t hn[][NONCE_SIZE], uint8_t cn[][NONCE_SIZE])
{
    const int id = kbm_kernel_current();
    auth_scratch x;
    const uint8_t *blk[2 * KBM_RR_BATCH];
    uint8_t *tok[2 * KBM_RR_BATCH];
    kbm_mac_key *keys[KBM_RR_BATCH];
    kbm_mac96_req r[KBM_RR_BATCH];
    size_t ht[KBM_RR_BATCH], ct[KBM_RR_BATCH], nt = 0;
    for (size_t j = 0; j < k; j++) {
        const kbm_rr_item *it = &items[live[j]];
        token_block(x.blk[nt], it->home, hn[live[j]], 0);
        ct[j] = ht[j] = nt++;
        if (!it->dereg) {
            token_block(x.blk[nt], it->care_of, cn[live[j]], 1);
            ct[j] = nt++;
        }
    }
    for (size_t i = 0; i < nt; i++) {
        blk[i] = x.blk[i];
        tok[i] = x.tok[i];
    }
    kbm_hmac1_batch_with(id, kcn, blk, tok, nt);
    for (size_t j = 0; j < k; j++) {
        memcpy(x.m, x.tok[ht[j]], 8);
        memcpy(x.m + 8, x.tok[ct[j]], 8);
        kbm_pad_block(x.blk[j], x.m, items[live[j]].dereg ? 8 : 16, 0);
        keys[j] = &x.key[j];
    }
    kbm_sha1_key_batch_with(id, blk, keys, k);
    for (size_t j = 0; j < k; j++) {
        const kbm_rr_item *it = &items[live[j]];
        r[j] = (kbm_mac96_req){&x.key[j], mac_co(it), it->p + 24, it->p + it->l->mh,
                               it->n - (size_t)it->l->mh, x.mac[j]};
    }
    kbm_mac96_batch_with(id, r, k);
    for (size_t j = 0; j < k; j++) {
        kbm_rr_item *it = &items[live[j]];
        int ok = kbm_ct_equal12(x.mac[j], it->p + it->l->bad);
        /* compat: a de-registration MACed over its care-of address (UMIP's mobile nodes) */
        if (!ok && it->dereg && v->compat && memcmp(it->home, it->care_of, 16) != 0) {
            kbm_mac96(&x.key[j], it->care_of, it->p + 24, it->p + it->l->mh,
                      it->n - (size_t)it->l->mh, x.mac[j]);
            ok = kbm_ct_equal12(x.mac[j], it->p + it->l->bad);
        }
        it->verdict = ok ? KBM_ACCEPTED : KBM_BAD_AUTHENTICATOR;
    }
    kbm_wipe(x.blk, 64 * nt);
    kbm_wipe(x.tok, 12 * nt);
    kbm_wipe(x.m, sizeof x.m);
    kbm_wipe(x.key, k * sizeof x.key[0]);
    kbm_wipe(x.mac, k * sizeof x.mac[0]);
}

#if defined(__x86_64__)
/* Lanes lane[0 .. g) of the rr_bu16 call just made: their verdicts, 0 or 6. */
static void judge16(const kbm_verifier *v, kbm_rr_item *items, const size_t *lane, size_t g,
                    uint32_t key[10][16], uint32_t mac[3][16])
{
    uint8_t got[KBM_AUTH_SIZE];
    for (size_t q = 0; q < g; q++) {
        kbm_rr_item *it = &items[lane[q]];
        /* kbm_ct_equal12_inline on the MAC's words as they are (its bytes stored and loaded
           back whole would wait for store forwarding) */
        const uint8_t *auth = it->p + it->l->bad;
        uint64_t a0, m0 = __builtin_bswap32(mac[0][q]);
        uint32_t a1, m1 = __builtin_bswap32(mac[2][q]);
        m0 |= (uint64_t)__builtin_bswap32(mac[1][q]) << 32;
        memcpy(&a0, auth, 8);
        memcpy(&a1, auth + 8, 4);
        uint64_t d = (a0 ^ m0) | (uint64_t)(a1 ^ m1);
        int ok = (int)(((d | (0 - d)) >> 63) ^ 1);
        /* compat: a de-registration MACed over its care-of address (UMIP's mobile nodes) */
        if (!ok && it->dereg && v->compat && memcmp(it->home, it->care_of, 16) != 0) {
            kbm_mac_key k;
            for (int j = 0; j < 5; j++) {
                k.inner[j] = key[j][q];
                k.outer[j] = key[5 + j][q];
            }
            kbm_mac96(&k, it->care_of, it->p + 24, it->p + it->l->mh, 32, got);
            ok = kbm_ct_equal12(got, it->p + it->l->bad);
            kbm_wipe(&k, sizeof k);
        }
        it->verdict = ok ? KBM_ACCEPTED : KBM_BAD_AUTHENTICATOR;
    }
    kbm_wipe(got, sizeof got);
}

/* authenticate_live for the items with a 32-byte Mobility Header (a minimal RR Binding Update),
   16 per rr_bu16 call; the others are moved to live[0 .. returned count) for authenticate_live. */
static size_t authenticate_avx512(const kbm_verifier *v, const kbm_mac_key *kcn,
                                  kbm_rr_item *items, size_t *live, size_t k,
                                  uint8_t hn[][NONCE_SIZE], uint8_t cn[][NONCE_SIZE])
{
    _Alignas(64) uint32_t hin[TOKEN_WORDS][16], cin[TOKEN_WORDS][16], m[MAC_WORDS][16];
    _Alignas(64) uint32_t key[10][16], mac[3][16];
    size_t lane[16], g = 0, rest = 0;
    uint32_t dereg = 0;
    for (size_t j = 0; j < k; j++) {
        const kbm_rr_item *it = &items[live[j]];
        const uint8_t *mh = it->p + it->l->mh, *co = mac_co(it);
        if (it->n - (size_t)it->l->mh != 32) {
            live[rest++] = live[j];
            continue;
        }
        token_words(hin, g, it->home, hn[live[j]], 0);
        token_words(cin, g, it->care_of, cn[live[j]], 1);
        dereg |= (uint32_t)(it->dereg != 0) << g;
        for (int q = 0; q < 4; q++) {
            m[q][g] = load_be32(co + 4 * q);
            m[4 + q][g] = load_be32(it->p + 24 + 4 * q);
        }
        for (int q = 0; q < 5; q++)
            m[8 + q][g] = load_be32(mh + 4 * q);
        m[9][g] &= 0xFFFFu; /* the MH checksum counts as zero */
        lane[g++] = live[j];
        if (g == 16) {
            rr_bu16(kcn, hin, cin, (__mmask16)dereg, m, key, mac);
            judge16(v, items, lane, g, key, mac);
            g = 0;
            dereg = 0;
        }
    }
    if (g) {
        /* the lanes past g are computed and never read: lane 0's copies, not garbage */
        for (size_t q = g; q < 16; q++) {
            for (int j = 0; j < TOKEN_WORDS; j++) {
                hin[j][q] = hin[j][0];
                cin[j][q] = cin[j][0];
            }
            for (int j = 0; j < MAC_WORDS; j++)
                m[j][q] = m[j][0];
        }
        rr_bu16(kcn, hin, cin, (__mmask16)dereg, m, key, mac);
        judge16(v, items, lane, g, key, mac);
    }
    kbm_wipe(hin, sizeof hin);
    kbm_wipe(cin, sizeof cin);
    kbm_wipe(key, sizeof key);
    kbm_wipe(mac, sizeof mac);
    return rest;
}
#endif

void kbm_rr_authenticate(kbm_verifier *v, kbm_rr_item *items, size_t n)
{
    struct kbm_rr *rr = v->rr;
    uint8_t hn[KBM_RR_BATCH][NONCE_SIZE], cn[KBM_RR_BATCH][NONCE_SIZE];
    size_t live[KBM_RR_BATCH], k = 0;
    kbm_mac_key kcn;
    if (n > KBM_RR_BATCH)
        n = KBM_RR_BATCH; /* the caller's chunks are never larger */
    /* the nonce indices (a de-registration needs the home one only), under the lock; the
       sequence table's first slots are fetched meanwhile for kbm_rr_sequence (a prefetch of
       a slot that purge moves is only wasted) */
    pthread_mutex_lock(&rr->mu);
    for (size_t i = 0; i < n; i++) {
        const struct rr_entry *e = &rr->tab[kbm_hash16(v->seed, items[i].home) & rr->mask];
        __builtin_prefetch(e); /* the table is calloc's: an entry may straddle two lines */
        __builtin_prefetch((const uint8_t *)e + sizeof *e - 1);
    }
    for (size_t i = 0; i < n; i++) {
        kbm_rr_item *it = &items[i];
        const uint8_t *ni = it->p + it->l->nonce;
        uint16_t hidx = (uint16_t)(ni[0] << 8 | ni[1]), cidx = (uint16_t)(ni[2] << 8 | ni[3]);
        int home_ok = nonce_of(rr, hidx, hn[i]);
        int care_ok = it->dereg || nonce_of(rr, cidx, cn[i]);
        if (it->dereg)
            memset(cn[i], 0, NONCE_SIZE);
        it->verdict = !home_ok && !care_ok ? KBM_NONCES_EXPIRED
                      : !home_ok           ? KBM_HOME_NONCE_EXPIRED
                      : !care_ok           ? KBM_CARE_OF_NONCE_EXPIRED
                                           : KBM_ACCEPTED;
        if (it->verdict == KBM_ACCEPTED)
            live[k++] = i;
    }
    kcn = rr->kcn;
    pthread_mutex_unlock(&rr->mu);
#if defined(__x86_64__)
    if (k && kbm_kernel_current() == KBM_KERNEL_AVX512)
        k = authenticate_avx512(v, &kcn, items, live, k, hn, cn);
#endif
    if (k)
        authenticate_live(v, &kcn, items, live, k, hn, cn);
    kbm_wipe(&kcn, sizeof kcn);
    kbm_wipe(hn, sizeof hn);
    kbm_wipe(cn, sizeof cn);
    kbm_burn_stack(); /* Kcn's midstates, tokens and Kbm midstates spilled by the kernels */
}

uint8_t kbm_rr_sequence(kbm_verifier *v, const uint8_t *home, const uint8_t *care_of,
                        uint16_t seq, int dereg, uint16_t *last_out)
{
    struct kbm_rr *rr = v->rr;
    uint8_t verdict = KBM_ACCEPTED;
    pthread_mutex_lock(&rr->mu);
    struct rr_entry *e = slot_of(rr->tab, rr->mask, v->seed, home);
    if (e->used && e->serial >= rr->oldest) {
        uint16_t step = (uint16_t)(seq - e->seq);
        if (step == 0 || step > 32767) {
            *last_out = e->seq;
            verdict = KBM_SEQUENCE_OUT_OF_WINDOW;
        }
    }
    if (verdict == KBM_ACCEPTED && !dereg && memcmp(home, care_of, 16) == 0)
        verdict = KBM_INVALID_CARE_OF;
    if (verdict == KBM_ACCEPTED && !e->used) {
        if (rr->used >= rr->max) {
            purge(rr, v->seed);
            e = slot_of(rr->tab, rr->mask, v->seed, home);
        }
        if (rr->used >= rr->max)
            verdict = KBM_RR_TABLE_FULL;
        else
            rr->used++;
    }
    if (verdict == KBM_ACCEPTED) {
        memcpy(e->home, home, 16);
        e->used = 1;
        e->seq = seq;
        e->serial = rr->oldest + rr->count - 1;
    }
    pthread_mutex_unlock(&rr->mu);
    return verdict;
}

/* What a valid init message leaves for its reply: where its fields are in the copy
   check_init judged (the caller's memory is read once). */
typedef struct {
    const uint8_t *src, *dst, *cookie;
    uint8_t type;
} init_msg;

/* One's complement sums (RFC 1071) as parse.c's, for the fixed layouts of the usual init
   message and of the replies: s plus the host-order 16-bit words of d[0 .. 8 * n8). */
static uint64_t sum8(uint64_t s, const uint8_t *d, size_t n8)
{
    for (size_t i = 0; i < n8; i++) {
        uint64_t x;
        memcpy(&x, d + 8 * i, 8);
        s += (x & 0xFFFFFFFFu) + (x >> 32);
    }
    return s;
}

/* A host-order sum folded to 16 bits as a big-endian value, plus `extra` (big-endian, under
   2^16), folded again. */
static uint32_t fold_be(uint64_t s, uint32_t extra)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    uint32_t be = (uint32_t)((s << 8 | s >> 8) & 0xFFFF) + extra;
    while (be >> 16)
        be = (be & 0xFFFF) + (be >> 16);
    return be;
}

/* 1 when p is a Home (Care-of) Test Init to answer (docs/return-routability.md); fills m. */
static int check_init(const uint8_t *p, size_t n, init_msg *m)
{
    kbm_layout l;
    uint32_t where;
    /* the usual init: no extension header, a 16-byte MH without options; exactly the packets
       for which kbm_scan and kbm_parse_mh return 0 with this layout */
    int plain = n == 56 && (p[0] >> 4) == 6 && p[4] == 0 && p[5] == 16 && p[6] == 135 &&
                p[40] == 59 && p[41] == 1 && (p[42] == 1 || p[42] == 2);
    if (plain) {
        l.mh = 40;
        l.hao = l.rh2 = l.alt = l.bad = l.nonce = -1;
        l.mh_type = p[42];
    } else if (kbm_scan(p, n, &l, &where) || l.hao >= 0 || l.rh2 >= 0) {
        return 0;
    }
    uint8_t type = p[l.mh + 2];
    /* the checksum: the usual init's addresses and MH are p[8 .. 56), its length 16 */
    int sum_ok = plain ? fold_be(sum8(0, p + 8, 6), 16 + 135) == 0xFFFF : kbm_checksum_ok(p, n, &l);
    if ((type != 1 && type != 2) || !sum_ok ||
        (!plain && kbm_parse_mh(p, n, &l, NULL, 0, NULL, &where) != 0))
        return 0;
    if (!kbm_is_routable(p + 8) || !kbm_is_unicast(p + 24))
        return 0;
    m->src = p + 8;
    m->dst = p + 24;
    m->cookie = p + l.mh + 8;
    m->type = type;
    return 1;
}

/* The Home Test (3) or Care-of Test (4) answering m, built in place at out but for its
   checksum and keygen token (reply_finish's); returns the sum (sum8's) of what the checksum
   covers so far: the addresses, the MH's first 16 bytes with a zero checksum. */
static uint64_t reply_start(const init_msg *m, uint64_t serial, uint8_t out[REPLY_SIZE])
{
    static const uint8_t ip[8] = {0x60, 0, 0, 0, 0, 24 /* Payload Length */, 135, 64};
    /* the MH's first 8 bytes as a little-endian load reads them: Payload Proto, Header Len,
       MH Type, reserved, the checksum (0 while summing), the nonce index */
    uint64_t head = 59u | 2u << 8 | (uint64_t)(uint8_t)(m->type + 2) << 16 |
                    (uint64_t)(uint8_t)(serial >> 8) << 48 | (uint64_t)(uint8_t)serial << 56;
    memcpy(out, ip, 8);
    memcpy(out + 8, m->dst, 16);
    memcpy(out + 24, m->src, 16);
    memcpy(out + 40, &head, 8); /* little-endian host (internal.h) */
    memcpy(out + 48, m->cookie, 8);
    /* summed from the pieces, not read back from out (loads spanning the stores just made
       there would wait for them) */
    uint64_t s = sum8((head & 0xFFFFFFFFu) + (head >> 32), m->dst, 2);
    return sum8(sum8(s, m->src, 2), m->cookie, 1);
}

/* The keygen token (its big-endian words t0, t1) and the checksum of the reply reply_start
   began at out with sum s; pseudo-header: length 24, Next Header 135. */
static void reply_finish(uint8_t out[REPLY_SIZE], uint64_t s, uint32_t t0, uint32_t t1)
{
    uint32_t b0 = __builtin_bswap32(t0), b1 = __builtin_bswap32(t1);
    uint16_t c = (uint16_t)~fold_be(s + b0 + b1, 24 + 135);
    out[44] = (uint8_t)(c >> 8);
    out[45] = (uint8_t)c;
    memcpy(out + 56, &b0, 4);
    memcpy(out + 60, &b1, 4);
}

/* Kcn's midstates into k: v's cached ones when they are those of Kcn kcn_id, else computed
   (and cached, unless kcn_id is 0). */
static void reply_kcn(kbm_verifier *v, const uint8_t *kcn, size_t kcn_len, uint64_t kcn_id,
                      kbm_mac_key *k)
{
    struct kbm_rr *rr = v && kcn_id ? v->rr : NULL;
    if (rr) {
        pthread_mutex_lock(&rr->mu);
        int hit = rr->reply_id == kcn_id;
        if (hit)
            *k = rr->reply_kcn;
        pthread_mutex_unlock(&rr->mu);
        if (hit)
            return;
    }
    kbm_mac_key_init(k, kcn, kcn_len);
    if (rr) {
        pthread_mutex_lock(&rr->mu);
        rr->reply_kcn = *k;
        rr->reply_id = kcn_id;
        pthread_mutex_unlock(&rr->mu);
    }
}

static inline uint64_t halves(uint64_t x)
{
    return (x & 0xFFFFFFFFu) + (x >> 32);
}

/* check_init for a 56-byte packet, exactly: 1 when it is a plain Home (Care-of) Test Init to
   answer, with *type its MH Type and *addr_sum the sum8 of its two addresses. */
static inline int check_plain(const plain_init *w, uint8_t *type, uint64_t *addr_sum)
{
    const uint64_t *q = w->q;
    uint8_t t = (uint8_t)(q[5] >> 16), s0 = (uint8_t)q[1], s1 = (uint8_t)(q[1] >> 8);
    /* p[0] >> 4 == 6; p[4..7) = 0, 16 (Payload Length), 135; p[40..42) = 59, 1 */
    if ((q[0] & 0xF0) != 0x60 || ((q[0] >> 32) & 0xFFFFFF) != (16u << 8 | 135u << 16) ||
        (q[5] & 0xFFFF) != (59u | 1u << 8) || (t != 1 && t != 2))
        return 0;
    uint64_t a = halves(q[1]) + halves(q[2]) + halves(q[3]) + halves(q[4]);
    if (fold_be(a + halves(q[5]) + halves(q[6]), 16 + 135) != 0xFFFF)
        return 0;
    /* kbm_is_routable(source), kbm_is_unicast(destination) */
    if (s0 == 0xFF || (s0 == 0xFE && (s1 & 0xC0) == 0x80) ||
        (q[1] == 0 && (q[2] << 8) == 0 && (q[2] >> 56) <= 1))
        return 0;
    if ((uint8_t)q[3] == 0xFF || (q[3] | q[4]) == 0)
        return 0;
    *type = t;
    *addr_sum = a;
    return 1;
}

/* reply_start for a plain init. */
static inline uint64_t reply_start_plain(const plain_init *w, uint8_t type, uint64_t addr_sum,
                                         uint64_t serial, uint8_t out[REPLY_SIZE])
{
    const uint64_t ip = 0x60u | (uint64_t)24 << 40 | (uint64_t)135 << 48 | (uint64_t)64 << 56;
    uint64_t head = 59u | 2u << 8 | (uint64_t)(uint8_t)(type + 2) << 16 |
                    (uint64_t)(uint8_t)(serial >> 8) << 48 | (uint64_t)(uint8_t)serial << 56;
    /* word by word: assembling them on the stack first and copying 16 bytes at a time made
       each load wait for two stores to forward */
    const uint64_t o[7] = {ip, w->q[3], w->q[4], w->q[1], w->q[2], head, w->q[6]};
    for (int j = 0; j < 7; j++)
        memcpy(out + 8 * j, &o[j], 8); /* little-endian host (internal.h) */
    return addr_sum + halves(head) + halves(w->q[6]);
}

#define REPLY_BATCH 64 /* init messages whose tokens are computed in one batch */

int kbm_rr_reply(kbm_verifier *v, const uint8_t *kcn_key, size_t kcn_len, uint64_t kcn_id,
                 uint64_t serial, const uint8_t nonce[NONCE_SIZE], const uint8_t *buf, size_t buf_len,
                 const uint64_t *offsets, size_t n, uint8_t *out, uint64_t *out_offsets,
                 size_t *where)
{
    if (kcn_len == 0)
        return KBM_EINVAL;
    uint64_t prev = offsets[0];
    for (size_t i = 0; i < n; i++) {
        if (offsets[i + 1] < prev) {
            *where = i + 1;
            return KBM_EOFFSET;
        }
        prev = offsets[i + 1];
    }
    if (prev > buf_len) {
        *where = n;
        return KBM_EOFFSET;
    }
    /* the caller's snapshot (Kcn and the nonce to hand out), not the verifier's: a reply
       never depends on what another thread pushed meanwhile */
    kbm_mac_key kcn;
    reply_kcn(v, kcn_key, kcn_len, kcn_id, &kcn);
    const int id = kbm_kernel_current();
    uint8_t copy[INIT_MAX];
    uint8_t blk[REPLY_BATCH][64], tokens[REPLY_BATCH][12];
    uint64_t sums[REPLY_BATCH];
    const uint32_t nw[2] = {load_be32(nonce), load_be32(nonce + 4)};
#if defined(__x86_64__)
    /* the AVX-512 kernel's: the blocks' words and the tokens, 16 lanes a group */
    _Alignas(64) uint32_t tin[REPLY_BATCH / 16][TOKEN_WORDS][16], tout[REPLY_BATCH / 16][2][16];
    const int wide = id == KBM_KERNEL_AVX512;
    if (wide)
        memset(tin, 0, sizeof tin); /* lanes past the last group's count: zeros, never read */
#else
    const int wide = 0;
#endif
    const uint8_t *bp[REPLY_BATCH];
    uint8_t *tp[REPLY_BATCH];
    for (size_t j = 0; j < REPLY_BATCH; j++) {
        bp[j] = blk[j];
        tp[j] = tokens[j];
    }
    uint64_t at = 0;
    size_t k = 0, used = 0;
    out_offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        /* the caller's memory is read once: each packet is copied, then judged; its reply is
           built in place in out but for the token and checksum, added once the batch's
           tokens are known (offsets were checked above) */
        uint64_t a = offsets[i], b = offsets[i + 1];
        init_msg m;
        plain_init w;
        uint8_t type;
        uint64_t addr_sum;
        if (b - a == 56) {
            for (int j = 0; j < 7; j++)
                memcpy(&w.q[j], buf + a + 8 * j, 8);
            if (check_plain(&w, &type, &addr_sum)) {
                uint8_t which = (uint8_t)(type - 1);
#if defined(__x86_64__)
                if (wide)
                    token_words_plain(tin[k / 16], k % 16, &w, nw, which);
                else
#endif
                    token_block(blk[k], (const uint8_t *)&w.q[1], nonce, which);
                sums[k] = reply_start_plain(&w, type, addr_sum, serial, out + at + REPLY_SIZE * k);
                k++;
            }
        } else if (b - a <= INIT_MAX) {
            size_t len = (size_t)(b - a);
            memcpy(copy, buf + a, len);
            if (check_init(copy, len, &m)) {
                uint8_t which = (uint8_t)(m.type - 1);
#if defined(__x86_64__)
                if (wide)
                    token_words(tin[k / 16], k % 16, m.src, nonce, which);
                else
#endif
                    token_block(blk[k], m.src, nonce, which);
                sums[k] = reply_start(&m, serial, out + at + REPLY_SIZE * k);
                k++;
            }
        }
        out_offsets[i + 1] = at + REPLY_SIZE * k;
        if (k == REPLY_BATCH || (i + 1 == n && k)) {
            /* the tokens in one batch on the current kernel, then into the replies */
            uint8_t *r = out + at;
#if defined(__x86_64__)
            if (wide) {
                for (size_t g = 0; g < (k + 15) / 16; g++)
                    reply_tokens16(&kcn, tin[g], tout[g]);
                for (size_t j = 0; j < k; j++)
                    reply_finish(r + REPLY_SIZE * j, sums[j], tout[j / 16][0][j % 16],
                                 tout[j / 16][1][j % 16]);
            } else
#endif
            {
                kbm_hmac1_batch_with(id, &kcn, bp, tp, k);
                for (size_t j = 0; j < k; j++)
                    reply_finish(r + REPLY_SIZE * j, sums[j], load_be32(tokens[j]),
                                 load_be32(tokens[j] + 4));
            }
            at += REPLY_SIZE * k;
            used = k > used ? k : used;
            k = 0;
        }
    }
    kbm_wipe(&kcn, sizeof kcn);
#if defined(__x86_64__)
    if (wide) {
        kbm_wipe(tin, sizeof tin[0] * ((used + 15) / 16));
        kbm_wipe(tout, sizeof tout[0] * ((used + 15) / 16));
        kbm_burn_stack(); /* token16's spills: Kcn's outer midstates among them */
        return KBM_OK;
    }
#endif
    kbm_wipe(blk, 64 * used);
    kbm_wipe(tokens, 12 * used);
    return KBM_OK;
}

size_t kbm_rr_select(const uint8_t *buf, size_t buf_len, const uint64_t *offsets, size_t n,
                     const uint8_t *verdicts, const kbm_detail *details, const uint8_t kind[256],
                     int rfc3775, uint32_t *picked, uint32_t *inits, size_t *n_inits)
{
    size_t m = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t code = verdicts[i], what = kind[code];
        const kbm_detail *d = &details[i];
        if (code == KBM_NOT_BINDING_UPDATE && inits)
            inits[k++] = (uint32_t)i;
        if (what == 1 || (what == 2 && d->nonce >= 0)) {
            picked[m++] = (uint32_t)i;
        } else if (what == 2 && rfc3775 && d->lifetime != 0 && d->home >= 0 && d->care_of >= 0) {
            uint64_t at = offsets[i], end = offsets[i + 1];
            if (at > end || end > buf_len || (uint64_t)d->home + 16 > end - at ||
                (uint64_t)d->care_of + 16 > end - at)
                continue;
            if (memcmp(buf + at + d->home, buf + at + d->care_of, 16) == 0)
                picked[m++] = (uint32_t)i; /* RFC 3775: care-of = home is a de-registration */
        }
    }
    if (n_inits)
        *n_inits = k;
    return m;
}
