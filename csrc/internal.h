/* What the verifier's files share: the state mapping, the peer index, the verifier itself. */
#ifndef KBM_INTERNAL_H
#define KBM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kbm.h"
#include "mac.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the state file is little-endian and mapped in place: little-endian hosts only"
#endif

/* ---- state.c: the sequence table (docs/state-format.md) ---- */

#define KBM_STATE_HEADER 64
#define KBM_STATE_SLOT 64
#define KBM_STATE_MAX_SLOTS (1u << 25)
#define KBM_STATE_VERSION 2
#define KBM_STATE_SALT 16
#define KBM_STATE_HISTORY 9 /* earlier key fingerprints per slot (bytes 28-63) */

/* slot word: seq (0-15), has-seq (16), advance (17-32), key fingerprint (33-63; 0: none yet) */
#define KBM_W_HAS_SEQ (UINT64_C(1) << 16)
#define KBM_W_SEQ(w) ((uint16_t)((w)&0xFFFF))
#define KBM_W_ADVANCE(w) ((uint32_t)(((w) >> 17) & 0xFFFF))
#define KBM_W_FP(w) ((uint32_t)((w) >> 33))
#define KBM_W_PACK(seq, adv, fp)                                                               \
    ((uint64_t)(seq) | KBM_W_HAS_SEQ | (uint64_t)(adv) << 17 | (uint64_t)(fp) << 33)

typedef struct {
    int fd;          /* -1: anonymous memory */
    uint8_t *base;   /* header then slots; KBM_STATE_MAX_SLOTS reserved, mapped once */
    size_t reserved; /* bytes of address space mapped */
    size_t count;    /* slots this process has indexed */
    size_t file_size;
    /* address -> slot, open addressing, touched only by writers: an entry is the address hash's
       low 32 bits (its position, and a tag that spares reading most slots) << 32 | slot + 1 */
    uint64_t *index;
    size_t index_mask;
    int index_mapped; /* kbm_big_alloc's */
    uint64_t seed[2];
    _Atomic size_t need; /* bytes the indexed slots need: a shorter file was truncated */
    _Atomic int broken;  /* 0, or the status every call returns once the file changed */
    uint8_t salt[KBM_STATE_SALT]; /* the file's: keys the fingerprints and checks */
    kbm_mac_key salt_mac;         /* the salt as HMAC midstates (fingerprints) */
    uint32_t crc_head, crc_salt;  /* CRC-32 of header bytes 0-23 | salt, and of the salt */
    pthread_mutex_t mu; /* taken with the file's flock (flock does not exclude our threads) */
    int mu_ready;
} kbm_state;

int kbm_state_open(kbm_state *s, const char *path, const uint64_t seed[2]);
void kbm_state_close(kbm_state *s);
/* Without creating: 1 and *slot if address has one, else 0. */
int kbm_state_find(kbm_state *s, const uint8_t addr[16], uint32_t *slot);
/* The file's lock (and the mutex) held across many calls, as kbm_verifier_set_peers does for
   its peers: kbm_state_lock checks the file and indexes other processes' slots; in between,
   the _locked calls below take no lock and make no system call but to grow the file. Never
   held while waiting for verifiers (they may wait for it in kbm_state_retire). */
int kbm_state_lock(kbm_state *s);
void kbm_state_unlock(kbm_state *s);
/* The slot of address, appended if it has none. */
int kbm_state_slot_locked(kbm_state *s, const uint8_t addr[16], uint32_t *slot);
/* Like kbm_state_find, after indexing slots other processes appended; <0 on error. */
int kbm_state_lookup(kbm_state *s, const uint8_t addr[16], uint32_t *slot);
int kbm_state_flush(kbm_state *s);
/* KBM_ECHANGED (then on every later call) once the file was truncated below its slots (or cut
   and grown back: its magic reads as zeros), removed or renamed over since it was opened; one
   fstat. Called before any access to the mapping. */
int kbm_state_check(kbm_state *s);
/* The fingerprint of a peer's key identity under the file's salt: 1..2^31-1 (_stateformat). */
uint32_t kbm_state_fingerprint(const kbm_state *s, const kbm_peer_spec *spec);
/* Installing a key, under kbm_state_lock: KBM_OK, KBM_EEXHAUSTED (the slot's key, used up) or
   KBM_EEARLIER. */
int kbm_state_key_status_locked(kbm_state *s, uint32_t slot, uint32_t fp, uint32_t rekey_limit);
/* Key fp replaces the slot's key current: 1 when fp is an earlier key (refuse); else 0 once
   current is in the slot's history (written before the caller stores the new word); <0 error
   (KBM_ECHANGED: kbm_state_check failed, nothing was touched). */
int kbm_state_retire(kbm_state *s, uint32_t slot, uint32_t current, uint32_t fp);
/* The advance the slot counts for key fp (fmt.advance_under); rekey_limit for an earlier key.
   The caller runs kbm_state_check first (the word and history are in the mapping). */
uint32_t kbm_state_advance(kbm_state *s, uint32_t slot, uint32_t fp, uint32_t rekey_limit);

static inline _Atomic uint64_t *kbm_state_word(const kbm_state *s, uint32_t slot)
{
    return (_Atomic uint64_t *)(void *)(s->base + KBM_STATE_HEADER +
                                        (size_t)slot * KBM_STATE_SLOT + 16);
}

/* ---- peers.c: the copy-on-write peer index ---- */

/* RFC 4449 extras: Kcn midstates, the home keygen token, and a one-entry cache of the Kbm for
   the last care-of address (read under a seqlock, so verifiers never wait). */
struct kbm_kcn {
    kbm_mac_key kcn;
    uint8_t hkt[8];
    uint8_t care_of_nonce[KBM_NONCE_MAX];
    size_t care_of_nonce_len;
    _Atomic uint32_t version;
    _Atomic uint64_t cache[7]; /* care-of address (2 words), then the Kbm's midstates (5) */
};

/* One cache line: what verifying a packet reads. A peer's RFC 4449 extras are beside it, in the
   index's kcn array, read only when its bucket says it has them. */
struct kbm_peer {
    uint8_t home[16];
    kbm_mac_key key; /* draft: Kbm; RFC 4449: the de-registration Kbm, SHA1(hkt) */
    uint32_t slot;
    uint32_t fp; /* the key's fingerprint in the state file (kbm_state_fingerprint) */
};
_Static_assert(sizeof(struct kbm_peer) == 64, "a peer is one cache line");

/* A bucket is one word: the tag (the hash's 12 high bits), whether the peer has RFC 4449 extras
   (1 bit), the peer's index + 1 (26 bits; 0: empty) and the peer's state slot (25 bits), so that
   the verifier can prefetch the peer and its sequence slot together from the bucket alone. The
   slot there is a prefetch hint: every read and write of the sequence state uses peer->slot
   (set together, kept equal by peers.c, checked by kbm_index_check). Every peer has its own
   slot, so there are at most KBM_STATE_MAX_SLOTS peers and both fields fit. */
typedef uint64_t kbm_bucket;
#define KBM_B_SLOT_BITS 25
#define KBM_B_IDX_BITS 26
#define KBM_B_KCN (UINT64_C(1) << (KBM_B_SLOT_BITS + KBM_B_IDX_BITS))
#define KBM_B_TAG_SHIFT (KBM_B_SLOT_BITS + KBM_B_IDX_BITS + 1)
_Static_assert(KBM_STATE_MAX_SLOTS <= (1u << KBM_B_SLOT_BITS), "a slot fits in a bucket");
_Static_assert(KBM_STATE_MAX_SLOTS < (1u << KBM_B_IDX_BITS), "a peer index + 1 fits too");
#define KBM_B_SLOT(b) ((uint32_t)((b) & ((UINT64_C(1) << KBM_B_SLOT_BITS) - 1)))
#define KBM_B_IDX(b) ((uint32_t)(((b) >> KBM_B_SLOT_BITS) & ((UINT64_C(1) << KBM_B_IDX_BITS) - 1)))
#define KBM_B_TAG(b) ((uint32_t)((b) >> KBM_B_TAG_SHIFT))
#define KBM_H_TAG(h) ((uint32_t)((h) >> KBM_B_TAG_SHIFT)) /* a hash's tag */
#define KBM_B_PACK(h, idx, slot, has_kcn)                                                      \
    ((uint64_t)KBM_H_TAG(h) << KBM_B_TAG_SHIFT | ((has_kcn) ? KBM_B_KCN : 0) |                 \
     (uint64_t)(idx) << KBM_B_SLOT_BITS | (slot))

struct kbm_index {
    struct kbm_peer *peers; /* 64-byte aligned */
    struct kbm_kcn **kcn;   /* peer i's RFC 4449 extras, or NULL (a draft Kbm peer) */
    size_t n, cap;
    kbm_bucket *buckets;
    size_t mask;
    int peers_mapped, buckets_mapped; /* from kbm_big_alloc's mapping (1) or the heap (0) */
};

/* Zeroed memory for a large table that verifiers read at random: from 2 MiB up, a 2 MiB-aligned
   anonymous mapping advised MADV_HUGEPAGE, so that one TLB entry covers 2 MiB (*mapped = 1);
   smaller, or when that fails or KBMFAST_HUGEPAGES=0, 64-byte aligned heap memory (*mapped = 0).
   Huge pages are only advice: without them the memory is the same, on 4 KiB pages. */
void *kbm_big_alloc(size_t bytes, int *mapped);
void kbm_big_free(void *p, size_t bytes, int mapped);
/* Advise MADV_HUGEPAGE on the whole 2 MiB pages inside [p, p + bytes) (unless
   KBMFAST_HUGEPAGES=0); failure is ignored. */
void kbm_advise_huge(void *p, size_t bytes);

struct kbm_verifier {
    _Atomic(struct kbm_index *) index;
    _Atomic uint64_t readers[2];
    _Atomic uint32_t gen;
    pthread_mutex_t write_lock;
    kbm_state state;
    uint32_t rekey_limit;
    uint64_t seed[2];
    struct kbm_rr *rr; /* return routability (rr.c), NULL when off */
    int compat;        /* 1: RFC 3775 de-registration rules */
};

/* rr.c: the RR branch of the pipeline, for Binding Updates with Nonce Indices from home
   addresses with no configured peer. kbm_rr_authenticate sets each item's verdict: 0
   (authenticated), 11-13 (expired nonce indices) or KBM_BAD_AUTHENTICATOR, two at a time;
   kbm_rr_sequence then judges an authenticated one, in packet order (*last_out for 135). */
#define KBM_RR_BATCH 32
typedef struct {
    const uint8_t *p;
    size_t n;
    const kbm_layout *l;
    const uint8_t *home, *care_of;
    int dereg;
    uint8_t verdict;
} kbm_rr_item;
void kbm_rr_authenticate(kbm_verifier *v, kbm_rr_item *items, size_t n);
uint8_t kbm_rr_sequence(kbm_verifier *v, const uint8_t *home, const uint8_t *care_of,
                        uint16_t seq, int dereg, uint16_t *last_out);
void kbm_rr_free(struct kbm_rr *rr);

/* A keygen token (RFC 6275 §5.2.5): First(64, HMAC_SHA1(Kcn, address | nonce | which)),
   which = 0 for the home token, 1 for the care-of token; nonce_len <= KBM_NONCE_MAX. */
void kbm_keygen_token(const kbm_mac_key *kcn, const uint8_t address[16], const uint8_t *nonce,
                      size_t nonce_len, uint8_t which, uint8_t out[8]);

const struct kbm_peer *kbm_index_find(const struct kbm_index *x, uint64_t h,
                                      const uint8_t home[16]);
void kbm_index_free(struct kbm_index *x, int free_kcn);
/* 0 when every peer has exactly one bucket, on its probe chain, naming its slot and whether it
   has RFC 4449 extras; else the number of faults found (tests: kbm_verifier_check_index). */
size_t kbm_index_check(const struct kbm_index *x, const uint64_t seed[2]);
/* The registration Kbm's midstates for care_of: 1 when they came from the peer's cache, 0 when
   derived now. A derived key is cached by kbm_kcn_publish only once a Binding Update it
   verified has authenticated, so forged care-of addresses cannot evict the genuine one. */
int kbm_kcn_key(struct kbm_kcn *c, const uint8_t care_of[16], kbm_mac_key *out);
/* kbm_kcn_key's two halves, for a batch of derivations (kbm_derive_batch_with): 1 and *out
   from the cache, else 0; and the request that derives the key for care_of into *out. */
int kbm_kcn_cached(const struct kbm_kcn *c, const uint8_t care_of[16], kbm_mac_key *out);
static inline void kbm_kcn_prefetch(const struct kbm_kcn *c)
{
    __builtin_prefetch(&c->version);
    __builtin_prefetch(&c->cache[6]);
}
void kbm_kcn_derive_req(const struct kbm_kcn *c, const uint8_t care_of[16], kbm_mac_key *out,
                        kbm_derive_req *r);
void kbm_kcn_publish(struct kbm_kcn *c, const uint8_t care_of[16], const kbm_mac_key *key);

/* Readers bracket every use of the index; writers wait for both reader counts to drain. */
static inline uint32_t kbm_read_begin(kbm_verifier *v)
{
    uint32_t g = atomic_load(&v->gen) & 1;
    atomic_fetch_add(&v->readers[g], 1);
    return g;
}

static inline void kbm_read_end(kbm_verifier *v, uint32_t g)
{
    atomic_fetch_sub(&v->readers[g], 1);
}

#endif /* KBM_INTERNAL_H */
