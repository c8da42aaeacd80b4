/* The batch pipeline: parse -> find the peer -> MAC -> compare -> compare-and-swap, in chunks.

   Every step before the sequence check is a pure function of the packet and the peer, so a
   chunk is parsed, looked up (prefetching buckets, peers and slots for the whole chunk) and
   MACed in one batch (kernels.c: 16 or 8 lanes at a time, or two SHA-NI streams) first; then
   the sequence stage runs strictly in packet order, which gives the in-order semantics of
   verify_batch. The checks and their order are those of
   kbmfast/reference/verifier.py. */
#include "hash.h"
#include "internal.h"

#include <string.h>

#define CHUNK 32
#define PENDING 0xFF
#define RR_PENDING 0xFE
_Static_assert(CHUNK <= KBM_RR_BATCH, "rr.c authenticates at most KBM_RR_BATCH items at once");
#define FLAG_H 0x4000

typedef struct {
    const uint8_t *p;
    size_t n;
    const uint8_t *home, *care_of, *mac_co;
    const struct kbm_peer *peer;
    const kbm_mac_key *key; /* the peer's midstates, or `derived` */
    uint64_t hash;
    size_t bucket;
    kbm_layout l;
    uint16_t seq, flags, lifetime;
    uint8_t verdict;
    uint8_t has_detail;
    uint8_t minimal; /* the canonical layout below: a 32-byte Mobility Header */
    uint8_t fresh;   /* `derived` was computed for this packet, not taken from the cache */
    uint8_t dereg;   /* a de-registration (lifetime 0; compat: also care-of == home) */
    uint8_t rr;      /* no configured peer: the return-routability branch (rr.c) */
    uint8_t mac[KBM_AUTH_SIZE];
    kbm_mac_key derived; /* RFC 4449: the registration Kbm for this care-of address */
} job;

/* The fast path: the canonical minimal Binding Update of a mobile node away from home, 96
   bytes, as kbmfast and most stacks build it:
     0  IPv6 header, Payload Length 56, Next Header 60
    40  Destination Options (Next Header 135, 24 bytes): PadN with 2 data bytes, Home Address
        option (type 0xC9, 16 bytes) whose address is at 48
    64  Mobility Header (Payload Proto 59, length 3 = 32 bytes, type 5: Binding Update),
        options at 76: PadN with 4 data bytes (or, in a return-routability one, Nonce Indices:
        type 4, 4 bytes at 78), Binding Authorization Data (type 5, 12 bytes) whose
        authenticator is at 84.
   A packet matching these bytes is exactly one for which kbm_scan and kbm_parse_mh return 0
   with the layout set here (the bytes left free are ones they never look at: traffic class,
   flow label, hop limit, addresses, padding contents, the MH's reserved byte, checksum and
   message fields). Anything else takes the general parser; every later check is shared. */
#define MIN_LEN 96
#define LE_BYTE(i, x) ((uint64_t)(x) << (8 * (i))) /* byte i of a little-endian 8-byte load */

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

static int minimal_layout(const uint8_t *p, size_t n, kbm_layout *l)
{
    if (n != MIN_LEN)
        return 0;
    const uint8_t opt = p[76]; /* read once: PadN (1) or Nonce Indices (4) */
    uint64_t diff =
        ((load64(p) ^ (LE_BYTE(0, 0x60) | LE_BYTE(5, 56) | LE_BYTE(6, 60))) &
         (LE_BYTE(0, 0xF0) | LE_BYTE(4, 0xFF) | LE_BYTE(5, 0xFF) | LE_BYTE(6, 0xFF))) |
        ((load64(p + 40) ^ (LE_BYTE(0, 135) | LE_BYTE(1, 2) | LE_BYTE(2, 1) | LE_BYTE(3, 2) |
                            LE_BYTE(6, 0xC9) | LE_BYTE(7, 16))) &
         ~(LE_BYTE(4, 0xFF) | LE_BYTE(5, 0xFF))) |
        ((load64(p + 64) ^ (LE_BYTE(0, 59) | LE_BYTE(1, 3) | LE_BYTE(2, 5))) &
         (LE_BYTE(0, 0xFF) | LE_BYTE(1, 0xFF) | LE_BYTE(2, 0xFF))) |
        ((load64(p + 72) ^ LE_BYTE(5, 4)) & LE_BYTE(5, 0xFF)) | (opt != 1 && opt != 4) |
        ((load64(p + 80) ^ (LE_BYTE(2, 5) | LE_BYTE(3, 12))) &
         (LE_BYTE(2, 0xFF) | LE_BYTE(3, 0xFF)));
    if (diff)
        return 0;
    l->mh = 64;
    l->hao = 48;
    l->rh2 = l->alt = -1;
    l->nonce = opt == 4 ? 78 : -1;
    l->bad = 84;
    l->mh_type = 5;
    return 1;
}

static void parse(job *j, const kbm_verifier *v, const struct kbm_index *x)
{
    const uint8_t *p = j->p;
    uint32_t where;
    j->has_detail = 0;
    j->fresh = 0;
    j->rr = 0;
    j->seq = j->flags = j->lifetime = 0;
    j->peer = NULL;
    j->key = NULL;
    j->verdict = KBM_MALFORMED;
    j->minimal = (uint8_t)minimal_layout(p, j->n, &j->l);
    if (!j->minimal && kbm_scan(p, j->n, &j->l, &where))
        return;
    /* a CN drops a non-routable HAO and any type 2 Routing header (RFC 6275 §9.3.1, §6.1) */
    if ((j->l.hao >= 0 && !kbm_is_routable(p + j->l.hao)) || j->l.rh2 >= 0)
        return;
    if (!kbm_checksum_ok(p, j->n, &j->l)) {
        j->verdict = KBM_BAD_CHECKSUM;
        return;
    }
    if (!j->minimal) {
        int rc = kbm_parse_mh(p, j->n, &j->l, NULL, 0, NULL, &where);
        if (rc == KBM_UNKNOWN_MH || (rc == 0 && j->l.mh_type != 5)) {
            j->verdict = KBM_NOT_BINDING_UPDATE;
            return;
        }
        if (rc)
            return;
    }
    const uint8_t *source = p + 8, *mh = p + j->l.mh;
    j->home = j->l.hao >= 0 ? p + j->l.hao : source;
    j->care_of = j->l.alt >= 0 ? p + j->l.alt : source;
    if (!kbm_is_unicast(source) || !kbm_is_routable(j->home) || !kbm_is_routable(j->care_of))
        return;
    j->seq = (uint16_t)(mh[6] << 8 | mh[7]);
    j->flags = (uint16_t)(mh[8] << 8 | mh[9]);
    j->lifetime = (uint16_t)(mh[10] << 8 | mh[11]);
    j->has_detail = 1;
    if (j->l.bad < 0) {
        j->verdict = KBM_MISSING_AUTHORIZATION;
        return;
    }
    if ((j->flags & FLAG_H) && j->l.nonce >= 0) {
        j->has_detail = 0;
        return;
    }
    j->dereg = j->lifetime == 0 || (v->compat && memcmp(j->home, j->care_of, 16) == 0);
    j->mac_co = j->dereg ? j->home : j->care_of;
    j->hash = kbm_hash16(v->seed, j->home);
    j->bucket = j->hash & x->mask;
    __builtin_prefetch(&x->buckets[j->bucket]);
    j->verdict = PENDING;
}

/* First bucket whose tag matches (or the empty one ending the chain); prefetch its peer. */
static void probe(job *j, const struct kbm_index *x)
{
    uint32_t tag = (uint32_t)(j->hash >> 32);
    size_t b = j->bucket;
    while (x->buckets[b].idx && x->buckets[b].tag != tag)
        b = (b + 1) & x->mask;
    j->bucket = b;
    if (x->buckets[b].idx)
        __builtin_prefetch(&x->peers[x->buckets[b].idx - 1]);
}

static void resolve(job *j, const kbm_verifier *v, const struct kbm_index *x)
{
    const struct kbm_peer *peer = NULL;
    size_t b = j->bucket;
    if (x->buckets[b].idx) {
        peer = &x->peers[x->buckets[b].idx - 1];
        if (memcmp(peer->home, j->home, 16) != 0) /* a 32-bit tag collision: walk on */
            peer = kbm_index_find(x, j->hash, j->home);
    }
    if (!peer) {
        /* RR: judged in packet order in kbm_verify's last stage (rr.c) */
        j->rr = v->rr != NULL && j->l.nonce >= 0;
        j->verdict = j->rr ? RR_PENDING : KBM_NOT_CONFIGURED;
        return;
    }
    j->peer = peer;
    __builtin_prefetch(kbm_state_word(&v->state, peer->slot));
    if (peer->kcn && !j->dereg) {
        j->fresh = !kbm_kcn_key(peer->kcn, j->care_of, &j->derived);
        j->key = &j->derived;
    } else {
        j->key = &peer->key; /* read in place: the index outlives this call (kbm_read_begin) */
    }
}

/* The MACs of the chunk's pending jobs in one call, so the multi-buffer kernels get full
   lanes (up to CHUNK messages: two full 16-lane calls). */
static void mac_pending(job *jobs, size_t m)
{
    kbm_mac96_req r[CHUNK];
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        job *a = &jobs[i];
        if (a->verdict == PENDING)
            r[k++] = (kbm_mac96_req){a->key, a->mac_co, a->p + 24, a->p + a->l.mh,
                                     a->n - (size_t)a->l.mh, a->mac};
    }
    kbm_mac96_batch(r, k);
}

/* Return routability (rr.c): nonces, RR Kbm and MAC for the chunk's RR jobs, two at a time. */
static void rr_authenticate(kbm_verifier *v, job *jobs, size_t m, uint8_t *rr_verdict)
{
    kbm_rr_item items[CHUNK];
    size_t idx[CHUNK], k = 0;
    for (size_t i = 0; i < m; i++) {
        rr_verdict[i] = 0;
        if (jobs[i].verdict == RR_PENDING) {
            const job *j = &jobs[i];
            items[k] = (kbm_rr_item){j->p, j->n, &j->l, j->home, j->care_of, j->dereg, 0};
            idx[k++] = i;
        }
    }
    if (k)
        kbm_rr_authenticate(v, items, k);
    for (size_t i = 0; i < k; i++)
        rr_verdict[idx[i]] = items[i].verdict;
}

/* Authentication, then the answers only an authenticated Binding Update may get. */
static uint8_t decide(job *j, kbm_verifier *v, uint16_t *last_out)
{
    if (!kbm_ct_equal12_inline(j->mac, j->p + j->l.bad)) {
        /* compat: a de-registration MACed over its care-of address (UMIP's mobile nodes) */
        if (!(v->compat && j->dereg && memcmp(j->home, j->care_of, 16) != 0))
            return KBM_BAD_AUTHENTICATOR;
        kbm_mac96(j->key, j->care_of, j->p + 24, j->p + j->l.mh, j->n - (size_t)j->l.mh, j->mac);
        if (!kbm_ct_equal12_inline(j->mac, j->p + j->l.bad))
            return KBM_BAD_AUTHENTICATOR;
    }
    if (j->fresh)
        kbm_kcn_publish(j->peer->kcn, j->care_of, &j->derived);
    if (j->flags & FLAG_H)
        return KBM_HOME_REGISTRATION;
    const struct kbm_peer *peer = j->peer;
    _Atomic uint64_t *word = kbm_state_word(&v->state, peer->slot);
    uint64_t w = atomic_load(word);
    uint32_t retired = 0; /* a fingerprint this call saw go into the slot's history */
    for (;;) {
        uint32_t advance = KBM_W_ADVANCE(w);
        int has = (w & KBM_W_HAS_SEQ) != 0;
        uint16_t last = KBM_W_SEQ(w);
        uint32_t step = has ? (uint16_t)(j->seq - last) : 0;
        if (has && (step == 0 || step > 32767)) {
            *last_out = last;
            return KBM_SEQUENCE_OUT_OF_WINDOW;
        }
        if (!j->dereg && memcmp(j->home, j->care_of, 16) == 0)
            return KBM_INVALID_CARE_OF;
        uint32_t current = KBM_W_FP(w);
        if (__builtin_expect(current != peer->fp && current != 0, 0)) {
            /* The slot counts for another key (another process installed ours, or still uses
               an older one). An earlier key is refused; else the slot's key goes into the
               history (under the file lock) before the CAS below names ours. */
            if (current != retired) {
                if (kbm_state_retire(&v->state, peer->slot, current, peer->fp) != 0)
                    return KBM_KEY_EXHAUSTED;
                retired = current;
            }
            advance = 0;
        }
        if (advance + step > v->rekey_limit)
            return KBM_KEY_EXHAUSTED;
        /* the one write: a concurrent acceptance makes it fail and we judge again */
        if (atomic_compare_exchange_weak(word, &w, KBM_W_PACK(j->seq, advance + step, peer->fp)))
            return KBM_ACCEPTED;
    }
}

int kbm_verify(kbm_verifier *v, const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
               size_t n, uint8_t *verdicts, kbm_detail *details, size_t *where)
{
    for (size_t i = 0; i < n; i++) {
        if (offsets[i + 1] < offsets[i]) {
            *where = i + 1;
            return KBM_EOFFSET;
        }
    }
    if (offsets[n] > buf_len) {
        *where = n;
        return KBM_EOFFSET;
    }
    int rc = kbm_state_check(&v->state); /* before any slot is touched: no SIGBUS, no zeros */
    if (rc)
        return rc;
    uint32_t g = kbm_read_begin(v);
    const struct kbm_index *x = atomic_load(&v->index);
    job jobs[CHUNK];
    int accepted = 0;
    uint64_t off[CHUNK + 1];
    for (size_t base = 0; base < n; base += CHUNK) {
        size_t m = n - base < CHUNK ? n - base : CHUNK;
        /* The offsets are the caller's memory, which another thread may change at any time:
           each is read once, into off, and only that copy is checked and used. A packet whose
           copy fails the check above (the caller changed them during the call) is empty, so
           MALFORMED: a garbage answer for a garbage caller, never a read out of bounds. */
        memcpy(off, offsets + base, (m + 1) * sizeof off[0]);
        for (size_t k = 0; k < m; k++) {
            int sane = off[k] <= off[k + 1] && off[k + 1] <= buf_len;
            jobs[k].p = buf + (sane ? off[k] : 0);
            jobs[k].n = sane ? (size_t)(off[k + 1] - off[k]) : 0;
            parse(&jobs[k], v, x);
        }
        for (size_t k = 0; k < m; k++)
            if (jobs[k].verdict == PENDING)
                probe(&jobs[k], x);
        for (size_t k = 0; k < m; k++)
            if (jobs[k].verdict == PENDING)
                resolve(&jobs[k], v, x);
        mac_pending(jobs, m);
        uint8_t rr_verdict[CHUNK];
        if (v->rr)
            rr_authenticate(v, jobs, m, rr_verdict);
        for (size_t k = 0; k < m; k++) {
            job *j = &jobs[k];
            uint16_t last = 0;
            if (j->verdict == PENDING)
                j->verdict = decide(j, v, &last);
            else if (j->verdict == RR_PENDING)
                j->verdict = rr_verdict[k] ? rr_verdict[k]
                                           : kbm_rr_sequence(v, j->home, j->care_of, j->seq,
                                                             j->dereg, &last);
            if (j->key == &j->derived)
                kbm_wipe(&j->derived, sizeof j->derived);
            verdicts[base + k] = j->verdict;
            accepted |= j->verdict == KBM_ACCEPTED;
            if (details) {
                kbm_detail *d = &details[base + k];
                d->home = j->has_detail ? (int32_t)(j->home - j->p) : -1;
                d->care_of = j->has_detail ? (int32_t)(j->care_of - j->p) : -1;
                d->sequence = j->seq;
                d->lifetime = j->lifetime;
                d->flags = j->flags;
                d->last_sequence = last;
                d->nonce = j->rr ? j->l.nonce : -1;
            }
        }
    }
    kbm_read_end(v, g);
    /* Changed during the batch: no verdict is given. Only an acceptance can have come from a
       slot that read as zeros, so a batch without one needs no second look (unless a key
       change's kbm_state_retire already found the file changed: that is sticky). */
    return accepted ? kbm_state_check(&v->state)
                    : atomic_load_explicit(&v->state.broken, memory_order_relaxed);
}

int kbm_authenticator(const uint8_t kbm[KBM_SIZE], const uint8_t care_of[16],
                      const uint8_t correspondent[16], const uint8_t *mh, size_t mh_len,
                      uint8_t out[KBM_AUTH_SIZE])
{
    if (mh_len < 14 || mh_len > KBM_MH_MAX)
        return KBM_EINVAL;
    kbm_mac_key k;
    kbm_mac_key_init(&k, kbm, KBM_SIZE);
    kbm_mac96(&k, care_of, correspondent, mh, mh_len, out);
    kbm_wipe(&k, sizeof k);
    return KBM_OK;
}

int kbm_derive(const uint8_t *kcn, size_t kcn_len, const uint8_t *home_nonce, size_t hn_len,
               const uint8_t *care_of_nonce, size_t cn_len, const uint8_t home[16],
               const uint8_t care_of[16], int deregistration, uint8_t out[KBM_SIZE])
{
    if (hn_len > KBM_NONCE_MAX || cn_len > KBM_NONCE_MAX)
        return KBM_EINVAL;
    uint8_t tokens[16];
    kbm_mac_key k;
    kbm_mac_key_init(&k, kcn, kcn_len);
    kbm_keygen_token(&k, home, home_nonce, hn_len, 0, tokens);
    if (!deregistration)
        kbm_keygen_token(&k, care_of, care_of_nonce, cn_len, 1, tokens + 8);
    kbm_sha1(tokens, deregistration ? 8 : 16, out);
    kbm_wipe(&k, sizeof k);
    kbm_wipe(tokens, sizeof tokens);
    return KBM_OK;
}
