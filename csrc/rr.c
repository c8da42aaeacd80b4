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

/* ---- Authentication, two Binding Updates at a time (interleaved SHA-NI) ---- */

static const uint32_t sha1_iv[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u,
                                    0xC3D2E1F0u};

static void be32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* One padded block holding msg (len <= 55 bytes) after `prefix` bytes already hashed. */
static void one_block(uint8_t b[64], const uint8_t *msg, size_t len, uint32_t prefix)
{
    memset(b, 0, 64);
    memcpy(b, msg, len);
    b[len] = 0x80;
    be32(b + 60, (uint32_t)((prefix + len) * 8));
}

/* tokens2's working memory: the caller wipes it once it is done with a batch (key material:
   a stream with no block to hash keeps Kcn's midstates). */
typedef struct {
    uint8_t m[2][25], b[2][64], d[20];
    uint32_t s[2][5];
} tok_scratch;

/* Keygen tokens for up to two (address, nonce, which) at once: First(64, HMAC_SHA1(Kcn, ...)). */
static void tokens2(const kbm_mac_key *kcn, const uint8_t *a0, const uint8_t *n0, uint8_t w0,
                    size_t use0, const uint8_t *a1, const uint8_t *n1, uint8_t w1, size_t use1,
                    uint8_t out0[8], uint8_t out1[8], tok_scratch *x)
{
    const uint8_t *addr[2] = {a0, a1}, *nonce[2] = {n0, n1};
    uint8_t which[2] = {w0, w1};
    for (int i = 0; i < 2; i++) {
        memcpy(x->m[i], addr[i], 16);
        memcpy(x->m[i] + 16, nonce[i], NONCE_SIZE);
        x->m[i][24] = which[i];
        one_block(x->b[i], x->m[i], 25, 64);
        memcpy(x->s[i], kcn->inner, sizeof x->s[i]);
    }
    kbm_sha1_compress2(x->s[0], x->b[0], use0, x->s[1], x->b[1], use1);
    for (int i = 0; i < 2; i++) {
        for (int w = 0; w < 5; w++)
            be32(x->d + 4 * w, x->s[i][w]);
        one_block(x->b[i], x->d, 20, 64);
        memcpy(x->s[i], kcn->outer, sizeof x->s[i]);
    }
    kbm_sha1_compress2(x->s[0], x->b[0], use0, x->s[1], x->b[1], use1);
    be32(out0, x->s[0][0]);
    be32(out0 + 4, x->s[0][1]);
    be32(out1, x->s[1][0]);
    be32(out1 + 4, x->s[1][1]);
}

/* Kbm = SHA1(tokens) as HMAC midstates, for up to two at once. */
static void kbm_keys2(const uint8_t *t0, size_t len0, const uint8_t *t1, size_t len1,
                      size_t use1, kbm_mac_key *k0, kbm_mac_key *k1)
{
    uint8_t b[2][64], key[2][20];
    uint32_t s[2][5];
    one_block(b[0], t0, len0, 0);
    one_block(b[1], t1, len1, 0);
    memcpy(s[0], sha1_iv, sizeof s[0]);
    memcpy(s[1], sha1_iv, sizeof s[1]);
    kbm_sha1_compress2(s[0], b[0], 1, s[1], b[1], use1);
    for (int i = 0; i < 2; i++) {
        for (int w = 0; w < 5; w++)
            be32(key[i] + 4 * w, s[i][w]);
        memset(b[i], 0x36, 64);
        for (int j = 0; j < 20; j++)
            b[i][j] ^= key[i][j];
    }
    memcpy(k0->inner, sha1_iv, sizeof k0->inner);
    memcpy(k1->inner, sha1_iv, sizeof k1->inner);
    kbm_sha1_compress2(k0->inner, b[0], 1, k1->inner, b[1], use1);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 64; j++)
            b[i][j] ^= 0x36 ^ 0x5c;
    memcpy(k0->outer, sha1_iv, sizeof k0->outer);
    memcpy(k1->outer, sha1_iv, sizeof k1->outer);
    kbm_sha1_compress2(k0->outer, b[0], 1, k1->outer, b[1], use1);
    kbm_wipe(b, sizeof b);
    kbm_wipe(key, sizeof key);
    kbm_wipe(s, sizeof s);
}

static const uint8_t *mac_co(const kbm_rr_item *it)
{
    return it->dereg ? it->home : it->care_of;
}

/* Items a and b (b == NULL: a alone) whose nonces are in hn / cn: verdict 0 or 6. */
static void auth2(const kbm_verifier *v, const kbm_mac_key *kcn, kbm_rr_item *a, kbm_rr_item *b,
                  const uint8_t *hna, const uint8_t *cna, const uint8_t *hnb, const uint8_t *cnb)
{
    size_t use1 = b != NULL;
    kbm_rr_item *bb = b ? b : a;
    if (!b)
        hnb = hna, cnb = cna;
    uint8_t ta[16], tb[16];
    kbm_mac_key ka, kb;
    tok_scratch x;
    tokens2(kcn, a->home, hna, 0, 1, bb->home, hnb, 0, use1, ta, tb, &x);
    tokens2(kcn, a->care_of, cna, 1, !a->dereg, bb->care_of, cnb, 1, use1 && !bb->dereg,
            ta + 8, tb + 8, &x);
    kbm_wipe(&x, sizeof x);
    kbm_keys2(ta, a->dereg ? 8 : 16, tb, bb->dereg ? 8 : 16, use1, &ka, &kb);
    uint8_t ma[KBM_AUTH_SIZE], mb[KBM_AUTH_SIZE];
    const uint8_t *mha = a->p + a->l->mh, *mhb = bb->p + bb->l->mh;
    size_t la = a->n - (size_t)a->l->mh, lb = bb->n - (size_t)bb->l->mh;
    if (!b) {
        kbm_mac96(&ka, mac_co(a), a->p + 24, mha, la, ma);
    } else if (la == 32 && lb == 32) {
        kbm_mac96_min_x2(&ka, mac_co(a), a->p + 24, mha, ma, &kb, mac_co(b), b->p + 24, mhb, mb);
    } else {
        kbm_mac96_x2(&ka, mac_co(a), a->p + 24, mha, la, ma, &kb, mac_co(b), b->p + 24, mhb, lb,
                     mb);
    }
    kbm_rr_item *items[2] = {a, b};
    const kbm_mac_key *keys[2] = {&ka, &kb};
    uint8_t *macs[2] = {ma, mb};
    for (size_t i = 0; i <= use1; i++) {
        kbm_rr_item *it = items[i];
        const uint8_t *mh = it->p + it->l->mh;
        size_t len = it->n - (size_t)it->l->mh;
        int ok = kbm_ct_equal12(macs[i], it->p + it->l->bad);
        /* compat: a de-registration MACed over its care-of address (UMIP's mobile nodes) */
        if (!ok && it->dereg && v->compat && memcmp(it->home, it->care_of, 16) != 0) {
            kbm_mac96(keys[i], it->care_of, it->p + 24, mh, len, macs[i]);
            ok = kbm_ct_equal12(macs[i], it->p + it->l->bad);
        }
        it->verdict = ok ? KBM_ACCEPTED : KBM_BAD_AUTHENTICATOR;
    }
    kbm_wipe(ta, sizeof ta);
    kbm_wipe(tb, sizeof tb);
    kbm_wipe(&ka, sizeof ka);
    kbm_wipe(&kb, sizeof kb);
}

void kbm_rr_authenticate(kbm_verifier *v, kbm_rr_item *items, size_t n)
{
    struct kbm_rr *rr = v->rr;
    uint8_t hn[KBM_RR_BATCH][NONCE_SIZE], cn[KBM_RR_BATCH][NONCE_SIZE];
    size_t live[KBM_RR_BATCH], k = 0;
    kbm_mac_key kcn;
    if (n > KBM_RR_BATCH)
        n = KBM_RR_BATCH; /* the caller's chunks are never larger */
    /* the nonce indices (a de-registration needs the home one only), under the lock */
    pthread_mutex_lock(&rr->mu);
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
    size_t i = 0;
    for (; i + 1 < k; i += 2) {
        size_t a = live[i], b = live[i + 1];
        auth2(v, &kcn, &items[a], &items[b], hn[a], cn[a], hn[b], cn[b]);
    }
    if (i < k)
        auth2(v, &kcn, &items[live[i]], NULL, hn[live[i]], cn[live[i]], NULL, NULL);
    kbm_wipe(&kcn, sizeof kcn);
    kbm_wipe(hn, sizeof hn);
    kbm_wipe(cn, sizeof cn);
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

/* What a valid init message leaves for its reply (copied out of the caller's memory). */
typedef struct {
    uint8_t src[16], dst[16], cookie[8];
    uint8_t type;
} init_msg;

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
    if ((type != 1 && type != 2) || !kbm_checksum_ok(p, n, &l) ||
        (!plain && kbm_parse_mh(p, n, &l, NULL, 0, NULL, &where) != 0))
        return 0;
    if (!kbm_is_routable(p + 8) || !kbm_is_unicast(p + 24))
        return 0;
    memcpy(m->src, p + 8, 16);
    memcpy(m->dst, p + 24, 16);
    memcpy(m->cookie, p + l.mh + 8, 8);
    m->type = type;
    return 1;
}

/* The Home Test (3) or Care-of Test (4) answering m, with its keygen token. */
static void build_test(const init_msg *m, uint64_t serial, const uint8_t token[8],
                       uint8_t out[REPLY_SIZE])
{
    uint8_t *mh = out + 40;
    memset(out, 0, REPLY_SIZE);
    out[0] = 0x60;
    out[5] = 24; /* Payload Length */
    out[6] = 135;
    out[7] = 64;
    memcpy(out + 8, m->dst, 16);
    memcpy(out + 24, m->src, 16);
    mh[0] = 59;
    mh[1] = 2;
    mh[2] = (uint8_t)(m->type + 2);
    mh[6] = (uint8_t)(serial >> 8);
    mh[7] = (uint8_t)serial;
    memcpy(mh + 8, m->cookie, 8);
    memcpy(mh + 16, token, 8);
    uint16_t c = kbm_mh_checksum(m->dst, m->src, mh, 24);
    mh[4] = (uint8_t)(c >> 8);
    mh[5] = (uint8_t)c;
}

int kbm_rr_reply(const uint8_t *kcn_key, size_t kcn_len, uint64_t serial,
                 const uint8_t nonce[NONCE_SIZE], const uint8_t *buf, size_t buf_len,
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
    kbm_mac_key_init(&kcn, kcn_key, kcn_len);
    uint8_t copy[INIT_MAX];
    init_msg msgs[KBM_RR_BATCH];
    uint8_t tokens[KBM_RR_BATCH][8], spare[8];
    tok_scratch x;
    uint64_t at = 0;
    size_t k = 0;
    out_offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        /* the caller's memory is read once: each packet is copied, then judged */
        uint64_t a = offsets[i], b = offsets[i + 1];
        if (a <= b && b <= buf_len && b - a <= INIT_MAX) {
            size_t len = (size_t)(b - a);
            memcpy(copy, buf + a, len);
            k += (size_t)check_init(copy, len, &msgs[k]);
        }
        out_offsets[i + 1] = at + REPLY_SIZE * k;
        if (k == KBM_RR_BATCH || (i + 1 == n && k)) {
            /* the tokens two at a time (interleaved SHA-NI), then the replies */
            for (size_t j = 0; j < k; j += 2) {
                size_t j1 = j + 1 < k ? j + 1 : j;
                tokens2(&kcn, msgs[j].src, nonce, (uint8_t)(msgs[j].type - 1), 1, msgs[j1].src,
                        nonce, (uint8_t)(msgs[j1].type - 1), j + 1 < k, tokens[j],
                        j + 1 < k ? tokens[j1] : spare, &x);
            }
            for (size_t j = 0; j < k; j++)
                build_test(&msgs[j], serial, tokens[j], out + at + REPLY_SIZE * j);
            at += REPLY_SIZE * k;
            k = 0;
        }
    }
    kbm_wipe(&kcn, sizeof kcn);
    kbm_wipe(tokens, sizeof tokens);
    kbm_wipe(spare, sizeof spare);
    kbm_wipe(&x, sizeof x);
    return KBM_OK;
}
