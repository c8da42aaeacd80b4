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

#include <stdlib.h>
#include <string.h>

#define NONCE_SLOTS 256
#define NONCE_SIZE 8
#define REPLY_SIZE 64        /* IPv6 header + 24-byte Home / Care-of Test */
#define INIT_MAX 2048        /* longer init messages are not answered */

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
    struct rr_entry *tab, *spare;
    size_t mask, used, max;
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
    rr->spare = calloc(cap, sizeof *rr->spare);
    if (!rr->tab || !rr->spare) {
        free(rr->tab);
        free(rr->spare);
        free(rr);
        return KBM_ENOMEM;
    }
    rr->mask = cap - 1;
    rr->max = max_peers;
    pthread_mutex_init(&rr->mu, NULL);
    v->rr = rr;
    return KBM_OK;
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
    size_t i = kbm_hash16(seed, home) & mask;
    while (tab[i].used && memcmp(tab[i].home, home, 16) != 0)
        i = (i + 1) & mask;
    return &tab[i];
}

/* Drop the entries no live nonce covers (the table is full of the others otherwise). */
static void purge(struct kbm_rr *rr, const uint64_t seed[2])
{
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

uint8_t kbm_rr_decide(kbm_verifier *v, const uint8_t *p, size_t n, const kbm_layout *l,
                      const uint8_t *home, const uint8_t *care_of, uint16_t seq, int dereg,
                      uint16_t *last_out)
{
    struct kbm_rr *rr = v->rr;
    const uint8_t *ni = p + l->nonce;
    uint16_t hidx = (uint16_t)(ni[0] << 8 | ni[1]), cidx = (uint16_t)(ni[2] << 8 | ni[3]);
    uint8_t hn[NONCE_SIZE], cn[NONCE_SIZE];
    kbm_mac_key kcn;
    /* 1: the nonce indices (a de-registration needs the home one only), copied under the lock */
    pthread_mutex_lock(&rr->mu);
    int home_ok = nonce_of(rr, hidx, hn);
    int care_ok = dereg || nonce_of(rr, cidx, cn);
    kcn = rr->kcn;
    pthread_mutex_unlock(&rr->mu);
    uint8_t verdict = KBM_ACCEPTED;
    if (!home_ok || !care_ok) {
        verdict = !home_ok && !care_ok ? KBM_NONCES_EXPIRED
                  : !home_ok           ? KBM_HOME_NONCE_EXPIRED
                                       : KBM_CARE_OF_NONCE_EXPIRED;
        goto out;
    }
    /* 2: Kbm = SHA1(home token | care-of token), SHA1(home token) to de-register; the MAC */
    {
        uint8_t tokens[16], digest[20], mac[KBM_AUTH_SIZE];
        kbm_mac_key key;
        kbm_keygen_token(&kcn, home, hn, NONCE_SIZE, 0, tokens);
        if (!dereg)
            kbm_keygen_token(&kcn, care_of, cn, NONCE_SIZE, 1, tokens + 8);
        kbm_sha1(tokens, dereg ? 8 : 16, digest);
        kbm_mac_key_init(&key, digest, KBM_SIZE);
        const uint8_t *mh = p + l->mh;
        size_t mh_len = n - (size_t)l->mh;
        kbm_mac96(&key, dereg ? home : care_of, p + 24, mh, mh_len, mac);
        int ok = kbm_ct_equal12(mac, p + l->bad);
        if (!ok && dereg && v->compat && memcmp(home, care_of, 16) != 0) {
            kbm_mac96(&key, care_of, p + 24, mh, mh_len, mac);
            ok = kbm_ct_equal12(mac, p + l->bad);
        }
        kbm_wipe(tokens, sizeof tokens);
        kbm_wipe(digest, sizeof digest);
        kbm_wipe(&key, sizeof key);
        if (!ok) {
            verdict = KBM_BAD_AUTHENTICATOR;
            goto out;
        }
    }
    /* 3: the sequence rules of configured peers, in the bounded RR table */
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
out:
    kbm_wipe(&kcn, sizeof kcn);
    kbm_wipe(hn, sizeof hn);
    kbm_wipe(cn, sizeof cn);
    return verdict;
}

/* The Home Test (which = 0) or Care-of Test (1) answering the init message p, into out. */
static int reply_one(const kbm_mac_key *kcn, uint64_t serial, const uint8_t nonce[NONCE_SIZE],
                     const uint8_t *p, size_t n, uint8_t out[REPLY_SIZE])
{
    kbm_layout l;
    uint32_t where;
    if (n > INIT_MAX || kbm_scan(p, n, &l, &where) || l.hao >= 0 || l.rh2 >= 0)
        return 0;
    uint8_t type = p[l.mh + 2];
    if ((type != 1 && type != 2) || !kbm_checksum_ok(p, n, &l) ||
        kbm_parse_mh(p, n, &l, NULL, 0, NULL, &where) != 0)
        return 0;
    const uint8_t *src = p + 8, *dst = p + 24;
    if (!kbm_is_routable(src) || !kbm_is_unicast(dst))
        return 0;
    uint8_t *mh = out + 40;
    memset(out, 0, REPLY_SIZE);
    out[0] = 0x60;
    out[5] = 24; /* Payload Length */
    out[6] = 135;
    out[7] = 64;
    memcpy(out + 8, dst, 16);
    memcpy(out + 24, src, 16);
    mh[0] = 59;
    mh[1] = 2;
    mh[2] = (uint8_t)(type + 2);
    mh[6] = (uint8_t)(serial >> 8);
    mh[7] = (uint8_t)serial;
    memcpy(mh + 8, p + l.mh + 8, 8);
    kbm_keygen_token(kcn, src, nonce, NONCE_SIZE, (uint8_t)(type - 1), mh + 16);
    uint16_t c = kbm_mh_checksum(dst, src, mh, 24);
    mh[4] = (uint8_t)(c >> 8);
    mh[5] = (uint8_t)c;
    return 1;
}

int kbm_rr_reply(kbm_verifier *v, const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                 size_t n, uint8_t *out, uint64_t *out_offsets, size_t *where)
{
    struct kbm_rr *rr = v->rr;
    if (!rr)
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
    kbm_mac_key kcn;
    uint8_t nonce[NONCE_SIZE];
    pthread_mutex_lock(&rr->mu);
    int have = rr->ready && rr->count > 0;
    uint64_t serial = rr->oldest + rr->count - 1;
    kcn = rr->kcn;
    if (have)
        memcpy(nonce, rr->nonce[serial % NONCE_SLOTS], NONCE_SIZE);
    pthread_mutex_unlock(&rr->mu);
    uint8_t copy[INIT_MAX];
    uint64_t at = 0;
    out_offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        /* the caller's memory is read once: each packet is copied, then judged */
        uint64_t a = offsets[i], b = offsets[i + 1];
        if (have && a <= b && b <= buf_len && b - a <= INIT_MAX) {
            size_t len = (size_t)(b - a);
            memcpy(copy, buf + a, len);
            if (reply_one(&kcn, serial, nonce, copy, len, out + at))
                at += REPLY_SIZE;
        }
        out_offsets[i + 1] = at;
    }
    kbm_wipe(&kcn, sizeof kcn);
    kbm_wipe(nonce, sizeof nonce);
    return KBM_OK;
}
