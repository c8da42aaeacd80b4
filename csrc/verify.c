/* The batch pipeline: parse -> find the peer -> MAC -> compare -> compare-and-swap, in chunks.

   Every step before the sequence check is a pure function of the packet and the peer, so a
   chunk is parsed, looked up and MACed in one batch (kernels.c: 16 or 8 lanes at a time, or two
   SHA-NI streams) first; then the sequence stage runs strictly in packet order, which gives the
   in-order semantics of verify_batch. The stages run one chunk ahead, so that memory latency
   hides behind work: chunk k+1 is parsed (its buckets prefetched) before chunk k's peers are
   read and its MACs computed, and chunk k+1's buckets are read (its peers and sequence slots
   prefetched together: the bucket names both) before chunk k's sequence stage. Only reads of
   the immutable index and of packets move ahead; everything that touches shared state (the
   RFC 4449 key cache, the sequence slots, return routability) keeps its order. The checks and
   their order are those of kbmfast/reference/verifier.py. */
#include "hash.h"
#include "internal.h"

#include <string.h>

#ifndef CHUNK
#define CHUNK 32
#endif
#define PENDING 0xFF
#define RR_PENDING 0xFE
_Static_assert(CHUNK <= KBM_RR_BATCH, "rr.c authenticates at most KBM_RR_BATCH items at once");
#define FLAG_H 0x4000

typedef struct {
    const uint8_t *p;
    size_t n;
    const uint8_t *home, *care_of, *mac_co;
    const struct kbm_peer *peer;
    struct kbm_kcn *kcn;    /* the peer's RFC 4449 extras when it has them */
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

static inline int is_routable(const uint8_t a[16])
{
    /* kbm_is_routable on one read of the address: not multicast, not link-local (fe80::/10),
       not :: or ::1 */
    uint64_t lo = load64(a), hi = load64(a + 8);
    uint8_t b0 = (uint8_t)lo, b1 = (uint8_t)(lo >> 8);
    if (b0 == 0xFF || (b0 == 0xFE && (b1 & 0xC0) == 0x80))
        return 0;
    return (lo | (hi & UINT64_C(0x00FFFFFFFFFFFFFF))) != 0 || (hi >> 56) > 1;
}

static inline int is_unicast(const uint8_t a[16])
{
    uint64_t lo = load64(a), hi = load64(a + 8);
    return (uint8_t)lo != 0xFF && (lo | hi) != 0;
}

/* kbm_checksum_ok for the minimal layout: source = the Home Address (48), destination (24), the
   32-byte Mobility Header (64), eight word loads and one fold. */
static inline int checksum_min_ok(const uint8_t *p)
{
    static const uint8_t at[8] = {48, 56, 24, 32, 64, 72, 80, 88};
    uint64_t s = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t w = load64(p + at[i]);
        s += (w & 0xFFFFFFFFu) + (w >> 32);
    }
    /* host order to big-endian modulo 0xFFFF (parse.c: host_to_be), then length and NH 135 */
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    s = (uint16_t)(s << 8 | s >> 8);
    s += 32 + 135;
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return s == 0xFFFF;
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
    if (j->minimal) {
        /* a non-routable Home Address is dropped (RFC 6275 §9.3.1), then the checksum */
        if (!is_routable(p + 48))
            return;
        if (!checksum_min_ok(p)) {
            j->verdict = KBM_BAD_CHECKSUM;
            return;
        }
    } else {
        if (kbm_scan(p, j->n, &j->l, &where))
            return;
        /* a CN drops a non-routable HAO and any type 2 Routing header (RFC 6275 §9.3.1, §6.1) */
        if ((j->l.hao >= 0 && !is_routable(p + j->l.hao)) || j->l.rh2 >= 0)
            return;
        if (!kbm_checksum_ok(p, j->n, &j->l)) {
            j->verdict = KBM_BAD_CHECKSUM;
            return;
        }
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
    /* a Home Address option's address was checked above; a care-of address that is the source
       is routable, hence unicast */
    if (j->l.hao < 0 && !is_routable(source))
        return;
    if (j->l.alt >= 0 ? !is_unicast(source) || !is_routable(j->care_of)
                      : j->l.hao >= 0 && !is_routable(source))
        return;
    /* sequence, flags, lifetime: one load of the Mobility Header's bytes 4-11 (a Binding Update
       has at least 12: kbm_parse_mh checked its Header Len, the minimal layout has 32) */
    uint64_t f = load64(mh + 4);
    j->seq = __builtin_bswap16((uint16_t)(f >> 16));
    j->flags = __builtin_bswap16((uint16_t)(f >> 32));
    j->lifetime = __builtin_bswap16((uint16_t)(f >> 48));
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

/* First bucket whose tag matches (or the empty one ending the chain); prefetch its peer (one
   cache line) and, from the slot the bucket names, its sequence slot: one round of misses
   instead of peer, then slot. */
static void probe(job *j, const kbm_verifier *v, const struct kbm_index *x)
{
    uint32_t tag = KBM_H_TAG(j->hash);
    size_t b = j->bucket;
    kbm_bucket e;
    while (KBM_B_IDX(e = x->buckets[b]) && KBM_B_TAG(e) != tag)
        b = (b + 1) & x->mask;
    j->bucket = b;
    if (KBM_B_IDX(e)) {
        __builtin_prefetch(&x->peers[KBM_B_IDX(e) - 1]);
        __builtin_prefetch(kbm_state_word(&v->state, KBM_B_SLOT(e)));
        if (e & KBM_B_KCN) /* an RFC 4449 peer: resolve reads where its extras are */
            __builtin_prefetch(&x->kcn[KBM_B_IDX(e) - 1]);
    }
}

static void resolve(job *j, const kbm_verifier *v, const struct kbm_index *x)
{
    const struct kbm_peer *peer = NULL;
    struct kbm_kcn *kcn = NULL;
    kbm_bucket e = x->buckets[j->bucket];
    uint32_t idx = KBM_B_IDX(e);
    if (idx) {
        peer = &x->peers[idx - 1];
        if (e & KBM_B_KCN)
            kcn = x->kcn[idx - 1];
        if (memcmp(peer->home, j->home, 16) != 0) { /* a tag collision: walk on */
            peer = kbm_index_find(x, j->hash, j->home);
            kcn = peer ? x->kcn[peer - x->peers] : NULL;
        }
    }
    if (!peer) {
        /* RR: judged in packet order in kbm_verify's last stage (rr.c) */
        j->rr = v->rr != NULL && j->l.nonce >= 0;
        j->verdict = j->rr ? RR_PENDING : KBM_NOT_CONFIGURED;
        return;
    }
    j->peer = peer;
    j->kcn = kcn;
    if (kcn && !j->dereg) {
        /* resolve_chunk reads the key cache (prefetched here: the extras live apart from
           the peer) and derives its misses with the rest of the chunk's */
        kbm_kcn_prefetch(kcn);
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
        kbm_kcn_publish(j->kcn, j->care_of, &j->derived);
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

/* How far the pipeline runs: all of it (kbm_verify), or a stripped variant that stops after a
   stage, for benchmarks/pipeline_parts.c's per-stage measurements. */
enum { UPTO_PARSE = 1, UPTO_PROBE, UPTO_RESOLVE, UPTO_MAC, UPTO_ALL };

typedef struct {
    job j[CHUNK];
    size_t m;
} chunk;

/* Takes the packets [base, base + c->m) (a stream the hardware prefetcher follows: prefetching
   them a chunk ahead, tried, gained nothing). The offsets are the caller's memory, which another thread may change at
   any time: each is read once, into off, and only that copy is checked and used. A packet whose
   copy fails the check kbm_verify made first (the caller changed them during the call) is
   empty, so MALFORMED: a garbage answer for a garbage caller, never a read out of bounds. */
static void take_chunk(chunk *c, const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                       size_t base, size_t n)
{
    uint64_t off[CHUNK + 1];
    size_t m = n - base < CHUNK ? n - base : CHUNK;
    c->m = m;
    memcpy(off, offsets + base, (m + 1) * sizeof off[0]);
    for (size_t k = 0; k < m; k++) {
        int sane = off[k] <= off[k + 1] && off[k + 1] <= buf_len;
        c->j[k].p = buf + (sane ? off[k] : 0);
        c->j[k].n = sane ? (size_t)(off[k + 1] - off[k]) : 0;
    }
}

/* Parses the chunk's packets, prefetching their buckets. */
static void parse_chunk(chunk *c, const kbm_verifier *v, const struct kbm_index *x)
{
    for (size_t k = 0; k < c->m; k++)
        parse(&c->j[k], v, x);
}

static void probe_chunk(chunk *c, const kbm_verifier *v, const struct kbm_index *x)
{
    for (size_t k = 0; k < c->m; k++)
        if (c->j[k].verdict == PENDING)
            probe(&c->j[k], v, x);
}

/* Finds the chunk's peers, then derives the RFC 4449 keys their caches missed, all in one
   batch (lanes of the wide kernels filled across packets). */
static void resolve_chunk(chunk *c, const kbm_verifier *v, const struct kbm_index *x)
{
    kbm_derive_req r[CHUNK];
    size_t n = 0;
    for (size_t k = 0; k < c->m; k++)
        if (c->j[k].verdict == PENDING)
            resolve(&c->j[k], v, x);
    for (size_t k = 0; k < c->m; k++) {
        job *j = &c->j[k];
        if (j->verdict != PENDING || j->key != &j->derived)
            continue;
        j->fresh = !kbm_kcn_cached(j->kcn, j->care_of, &j->derived);
        if (j->fresh)
            kbm_kcn_derive_req(j->kcn, j->care_of, &j->derived, &r[n++]);
    }
    if (n)
        kbm_derive_batch_with(kbm_kernel_current(), r, n);
}

/* The in-order stage: return routability, then each packet's decision and its answer. Returns
   1 when one was accepted. */
static int finish_chunk(chunk *c, kbm_verifier *v, uint8_t *verdicts, kbm_detail *details)
{
    uint8_t rr_verdict[CHUNK];
    int accepted = 0;
    if (v->rr)
        rr_authenticate(v, c->j, c->m, rr_verdict);
    for (size_t k = 0; k < c->m; k++) {
        job *j = &c->j[k];
        uint16_t last = 0;
        if (j->verdict == PENDING)
            j->verdict = decide(j, v, &last);
        else if (j->verdict == RR_PENDING)
            j->verdict = rr_verdict[k] ? rr_verdict[k]
                                       : kbm_rr_sequence(v, j->home, j->care_of, j->seq,
                                                         j->dereg, &last);
        if (j->key == &j->derived)
            kbm_wipe(&j->derived, sizeof j->derived);
        verdicts[k] = j->verdict;
        accepted |= j->verdict == KBM_ACCEPTED;
        if (details) {
            kbm_detail *d = &details[k];
            d->home = j->has_detail ? (int32_t)(j->home - j->p) : -1;
            d->care_of = j->has_detail ? (int32_t)(j->care_of - j->p) : -1;
            d->sequence = j->seq;
            d->lifetime = j->lifetime;
            d->flags = j->flags;
            d->last_sequence = last;
            d->nonce = j->rr ? j->l.nonce : -1;
        }
    }
    return accepted;
}

/* kbm_verify, or with upto < UPTO_ALL a stripped variant (verdicts: where the stages it ran
   left them; the sequence state is not touched). */
static inline __attribute__((always_inline)) int
verify_upto(kbm_verifier *v, const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
            size_t n, uint8_t *verdicts, kbm_detail *details, size_t *where, int upto)
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
    chunk c[2];
    int accepted = 0;
    if (n) {
        take_chunk(&c[0], buf, buf_len, offsets, 0, n);
        parse_chunk(&c[0], v, x);
        if (upto >= UPTO_PROBE)
            probe_chunk(&c[0], v, x);
    }
    for (size_t base = 0, k = 0; base < n; base += CHUNK, k ^= 1) {
        chunk *cur = &c[k], *next = &c[k ^ 1];
        int more = n - base > CHUNK;
        /* chunk k+1's parse and bucket prefetches run while chunk k's peers arrive */
        if (more) {
            take_chunk(next, buf, buf_len, offsets, base + CHUNK, n);
            parse_chunk(next, v, x);
        }
        if (upto >= UPTO_RESOLVE)
            resolve_chunk(cur, v, x);
        if (upto >= UPTO_MAC)
            mac_pending(cur->j, cur->m);
        /* chunk k+1's buckets have arrived: prefetch its peers and slots before chunk k's
           sequence stage */
        if (more && upto >= UPTO_PROBE)
            probe_chunk(next, v, x);
        if (upto >= UPTO_ALL) {
            accepted |= finish_chunk(cur, v, verdicts + base, details ? details + base : NULL);
        } else {
            for (size_t i = 0; i < cur->m; i++) {
                verdicts[base + i] = cur->j[i].verdict;
                if (cur->j[i].key == &cur->j[i].derived)
                    kbm_wipe(&cur->j[i].derived, sizeof cur->j[i].derived);
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

int kbm_verify(kbm_verifier *v, const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
               size_t n, uint8_t *verdicts, kbm_detail *details, size_t *where)
{
    return verify_upto(v, buf, buf_len, offsets, n, verdicts, details, where, UPTO_ALL);
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
