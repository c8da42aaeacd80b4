/* The peer index: an immutable open-addressing table, replaced whole on every change.

   Readers (verifiers) never take a lock: they announce themselves in one of two counters and
   read the current index. A writer publishes a new index, then flips the counter generation
   twice, each time waiting for the previous generation to drain; after that no reader can
   still hold the old index, which is wiped and freed. */
#define _GNU_SOURCE
#include "hash.h"
#include "internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#define HUGE_PAGE ((size_t)2 << 20)

static int huge_wanted(void)
{
    const char *e = getenv("KBMFAST_HUGEPAGES");
    return !(e && strcmp(e, "0") == 0);
}

void kbm_advise_huge(void *p, size_t bytes)
{
    uintptr_t mask = (uintptr_t)HUGE_PAGE - 1, start = ((uintptr_t)p + mask) & ~mask,
              end = ((uintptr_t)p + bytes) & ~mask;
    if (end > start && huge_wanted())
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE); /* advice: may fail, harmless */
}

void *kbm_big_alloc(size_t bytes, int *mapped)
{
    *mapped = 0;
    if (bytes >= HUGE_PAGE && bytes <= SIZE_MAX / 2 && huge_wanted()) {
        /* map 2 MiB more than asked, keep the 2 MiB-aligned part: [m, m + head) and the tail
           after the rounded-up request go back */
        uint8_t *m = mmap(NULL, bytes + HUGE_PAGE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED) {
            size_t head = (HUGE_PAGE - ((uintptr_t)m & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
            size_t used = (bytes + 4095) & ~(size_t)4095;
            if (head)
                munmap(m, head);
            munmap(m + head + used, HUGE_PAGE - head);
            (void)madvise(m + head, used, MADV_HUGEPAGE);
            *mapped = 1;
            return m + head; /* zeroed by the kernel */
        }
    }
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p)
        memset(p, 0, rounded);
    return p;
}

void kbm_big_free(void *p, size_t bytes, int mapped)
{
    if (mapped)
        munmap(p, bytes);
    else
        free(p);
}

/* The bucket of the peer whose home address is home (hash h), or NULL. */
static kbm_bucket *bucket_of(const struct kbm_index *x, uint64_t h, const uint8_t home[16])
{
    uint32_t tag = KBM_H_TAG(h);
    for (size_t j = h & x->mask;; j = (j + 1) & x->mask) {
        kbm_bucket *b = &x->buckets[j];
        uint32_t idx = KBM_B_IDX(*b);
        if (idx == 0)
            return NULL;
        if (KBM_B_TAG(*b) == tag && memcmp(x->peers[idx - 1].home, home, 16) == 0)
            return b;
    }
}

const struct kbm_peer *kbm_index_find(const struct kbm_index *x, uint64_t h,
                                      const uint8_t home[16])
{
    const kbm_bucket *b = bucket_of(x, h, home);
    return b ? &x->peers[KBM_B_IDX(*b) - 1] : NULL;
}

size_t kbm_index_check(const struct kbm_index *x, const uint64_t seed[2])
{
    size_t faults = 0, used = 0;
    for (size_t j = 0; j <= x->mask; j++) {
        uint32_t idx = KBM_B_IDX(x->buckets[j]);
        if (!idx)
            continue;
        used++;
        if (idx > x->n) {
            faults++;
            continue;
        }
        const struct kbm_peer *p = &x->peers[idx - 1];
        uint64_t h = kbm_hash16(seed, p->home);
        /* the first bucket of its chain for this address is this one, naming its slot */
        faults += bucket_of(x, h, p->home) != &x->buckets[j];
        faults += KBM_B_SLOT(x->buckets[j]) != p->slot || KBM_B_TAG(x->buckets[j]) != KBM_H_TAG(h) ||
                  !(x->buckets[j] & KBM_B_KCN) != !x->kcn[idx - 1];
    }
    return faults + (used != x->n);
}

void kbm_keygen_token(const kbm_mac_key *kcn, const uint8_t address[16], const uint8_t *nonce,
                      size_t nonce_len, uint8_t which, uint8_t out[8])
{
    uint8_t msg[16 + KBM_NONCE_MAX + 1], digest[20];
    memcpy(msg, address, 16);
    if (nonce_len)
        memcpy(msg + 16, nonce, nonce_len);
    msg[16 + nonce_len] = which;
    kbm_hmac_sha1_mid(kcn, msg, 17 + nonce_len, digest);
    memcpy(out, digest, 8);
    kbm_wipe(digest, sizeof digest);
    kbm_wipe(msg, sizeof msg);
}

static void kcn_free(struct kbm_kcn *c)
{
    if (c) {
        kbm_wipe(c, sizeof *c);
        free(c);
    }
}

void kbm_index_free(struct kbm_index *x, int free_kcn)
{
    if (!x)
        return;
    if (x->kcn && free_kcn)
        for (size_t i = 0; i < x->n; i++)
            kcn_free(x->kcn[i]);
    if (x->peers) {
        kbm_wipe(x->peers, x->cap * sizeof *x->peers);
        kbm_big_free(x->peers, x->cap * sizeof *x->peers, x->peers_mapped);
    }
    free(x->kcn);
    if (x->buckets)
        kbm_big_free(x->buckets, (x->mask + 1) * sizeof *x->buckets, x->buckets_mapped);
    free(x);
}

static struct kbm_index *index_alloc(size_t cap)
{
    struct kbm_index *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    size_t nb = 16;
    while (nb < cap * 2)
        nb *= 2;
    x->cap = cap ? cap : 1;
    /* a peer per cache line; peers and buckets on huge pages when large (kbm_big_alloc) */
    x->peers = kbm_big_alloc(x->cap * sizeof *x->peers, &x->peers_mapped);
    x->kcn = calloc(x->cap, sizeof *x->kcn);
    x->mask = nb - 1;
    x->buckets = kbm_big_alloc(nb * sizeof *x->buckets, &x->buckets_mapped);
    if (!x->peers || !x->kcn || !x->buckets) {
        kbm_index_free(x, 0);
        return NULL;
    }
    return x;
}

static void bucket_put(struct kbm_index *x, const uint64_t seed[2], size_t i)
{
    uint64_t h = kbm_hash16(seed, x->peers[i].home);
    size_t j = h & x->mask;
    while (KBM_B_IDX(x->buckets[j]))
        j = (j + 1) & x->mask;
    x->buckets[j] = KBM_B_PACK(h, i + 1, x->peers[i].slot, x->kcn[i] != NULL);
}

/* Wait until no reader can hold an index published before this call. */
static void synchronize(kbm_verifier *v)
{
    for (int round = 0; round < 2; round++) {
        uint32_t g = atomic_load(&v->gen);
        atomic_store(&v->gen, g + 1);
        while (atomic_load(&v->readers[g & 1]) != 0)
            sched_yield();
    }
}

static void publish(kbm_verifier *v, struct kbm_index *fresh, struct kbm_kcn **retired,
                    size_t nretired)
{
    struct kbm_index *old = atomic_exchange(&v->index, fresh);
    synchronize(v);
    kbm_index_free(old, 0);
    for (size_t i = 0; i < nretired; i++)
        kcn_free(retired[i]);
}

/* Midstates and RFC 4449 precomputation (*kcn, or NULL) for one peer; the raw key is not kept. */
static int peer_init(struct kbm_peer *p, struct kbm_kcn **kcn, const kbm_peer_spec *s)
{
    memcpy(p->home, s->home, 16);
    *kcn = NULL;
    if (s->kind == KBM_KIND_KBM) {
        if (s->key_len != KBM_SIZE)
            return KBM_EINVAL;
        kbm_mac_key_init(&p->key, s->key, s->key_len);
        return KBM_OK; /* the caller burns the stack (once per call, not per peer) */
    }
    if (s->kind != KBM_KIND_KCN || s->key_len == 0 || s->home_nonce_len > KBM_NONCE_MAX ||
        s->care_of_nonce_len > KBM_NONCE_MAX)
        return KBM_EINVAL;
    struct kbm_kcn *c = calloc(1, sizeof *c);
    if (!c)
        return KBM_ENOMEM;
    uint8_t digest[20];
    kbm_mac_key_init(&c->kcn, s->key, s->key_len);
    kbm_keygen_token(&c->kcn, s->home, s->home_nonce, s->home_nonce_len, 0, c->hkt);
    kbm_sha1(c->hkt, 8, digest); /* de-registration: Kbm = SHA1(hkt) */
    kbm_mac_key_init(&p->key, digest, KBM_SIZE);
    if (s->care_of_nonce_len)
        memcpy(c->care_of_nonce, s->care_of_nonce, s->care_of_nonce_len);
    c->care_of_nonce_len = s->care_of_nonce_len;
    kbm_wipe(digest, sizeof digest);
    *kcn = c;
    return KBM_OK;
}

int kbm_kcn_cached(const struct kbm_kcn *c, const uint8_t care_of[16], kbm_mac_key *out)
{
    uint64_t coa[2], words[7];
    memcpy(coa, care_of, 16);
    /* version: even = stable, odd = being written. The empty cache holds ::, which is never
       routable, so it never matches. */
    uint32_t v0 = atomic_load_explicit(&c->version, memory_order_acquire);
    if (!(v0 & 1)) {
        for (int i = 0; i < 7; i++)
            words[i] = atomic_load_explicit(&c->cache[i], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        int hit = atomic_load_explicit(&c->version, memory_order_relaxed) == v0 &&
                  words[0] == coa[0] && words[1] == coa[1];
        if (hit)
            memcpy(out, &words[2], sizeof *out);
        kbm_wipe(words, sizeof words);
        return hit;
    }
    return 0;
}

void kbm_kcn_derive_req(const struct kbm_kcn *c, const uint8_t care_of[16], kbm_mac_key *out,
                        kbm_derive_req *r)
{
    *r = (kbm_derive_req){&c->kcn, c->hkt, care_of, c->care_of_nonce, c->care_of_nonce_len, out};
}

int kbm_kcn_key(struct kbm_kcn *c, const uint8_t care_of[16], kbm_mac_key *out)
{
    if (kbm_kcn_cached(c, care_of, out))
        return 1;
    /* Miss: Kbm = SHA1(hkt | First(64, HMAC_SHA1(Kcn, care_of | care-of nonce | 1))), one
       key (a batch of one: SHA-NI, or portable C on a CPU without it; the stack burnt after) */
    kbm_derive_req r;
    kbm_kcn_derive_req(c, care_of, out, &r);
    kbm_derive_batch_with(KBM_KERNEL_SHANI, &r, 1);
    return 0;
}

void kbm_kcn_publish(struct kbm_kcn *c, const uint8_t care_of[16], const kbm_mac_key *key)
{
    /* Publish unless another writer is at it; a reader racing us just misses. */
    uint32_t cur = atomic_load(&c->version);
    if ((cur & 1) || !atomic_compare_exchange_strong(&c->version, &cur, cur + 1))
        return;
    atomic_thread_fence(memory_order_release); /* the odd version is seen before the data */
    uint64_t words[7];
    memcpy(words, care_of, 16);
    memcpy(&words[2], key, sizeof *key);
    for (int i = 0; i < 7; i++)
        atomic_store_explicit(&c->cache[i], words[i], memory_order_relaxed);
    atomic_store_explicit(&c->version, cur + 2, memory_order_release);
    kbm_wipe(words, sizeof words);
}

static int copy_index(const struct kbm_index *old, size_t extra, const uint64_t seed[2],
                      struct kbm_index **out)
{
    size_t n = old ? old->n : 0;
    struct kbm_index *x = index_alloc(n + extra);
    if (!x)
        return KBM_ENOMEM;
    if (n) {
        memcpy(x->peers, old->peers, n * sizeof *x->peers);
        memcpy(x->kcn, old->kcn, n * sizeof *x->kcn);
    }
    x->n = n;
    for (size_t i = 0; i < n; i++)
        bucket_put(x, seed, i);
    *out = x;
    return KBM_OK;
}

int kbm_verifier_set_peers(kbm_verifier *v, const kbm_peer_spec *specs, size_t n, size_t *failed)
{
    int rc;
    pthread_mutex_lock(&v->write_lock);
    struct kbm_index *old = atomic_load(&v->index), *x = NULL;
    struct kbm_kcn **retired = calloc(n ? n : 1, sizeof *retired);
    size_t nretired = 0, done = 0;
    int locked = 0; /* the state file's lock, taken once for all the peers (at the first) */
    if (!retired) {
        rc = KBM_ENOMEM;
        goto out;
    }
    rc = copy_index(old, n, v->seed, &x);
    if (rc)
        goto out;
    for (; done < n; done++) {
        struct kbm_peer p;
        struct kbm_kcn *kcn;
        uint32_t slot;
        const kbm_peer_spec *spec = &specs[done];
        rc = KBM_EINVAL;
        if (spec->key_len > KBM_KEY_MAX || spec->home_nonce_len > KBM_NONCE_MAX ||
            spec->care_of_nonce_len > KBM_NONCE_MAX || (spec->key_len && !spec->key))
            goto out;
        if (!locked) {
            rc = kbm_state_lock(&v->state);
            if (rc)
                goto out;
            locked = 1;
        }
        rc = kbm_state_slot_locked(&v->state, spec->home, &slot);
        if (rc)
            goto out;
        /* a used-up or replaced key is refused here, with the peer's index for the message */
        uint32_t fp = kbm_state_fingerprint(&v->state, spec);
        rc = kbm_state_key_status_locked(&v->state, slot, fp, v->rekey_limit);
        if (rc) {
            *failed = done;
            goto out;
        }
        rc = peer_init(&p, &kcn, spec);
        if (rc)
            goto out;
        p.slot = slot;
        p.fp = fp;
        uint64_t h = kbm_hash16(v->seed, p.home);
        kbm_bucket *b = bucket_of(x, h, p.home);
        if (b) {
            size_t i = KBM_B_IDX(*b) - 1;
            if (x->kcn[i]) {
                /* a peer replaced twice in one call had its first kcn never published */
                int published = 0;
                for (size_t j = 0; old && j < old->n; j++)
                    published |= old->kcn[j] == x->kcn[i];
                if (published)
                    retired[nretired++] = x->kcn[i];
                else
                    kcn_free(x->kcn[i]);
            }
            x->peers[i] = p;
            x->kcn[i] = kcn;
            *b = KBM_B_PACK(h, i + 1, p.slot, kcn != NULL); /* the same address: the same slot */
        } else {
            x->peers[x->n] = p;
            x->kcn[x->n] = kcn;
            bucket_put(x, v->seed, x->n);
            x->n++;
        }
        kbm_wipe(&p, sizeof p);
    }
    if (locked) {
        /* cut or replaced while we held the lock (other writers wait for it; truncation does
           not): refuse as a check per peer would have */
        rc = kbm_state_check(&v->state);
        if (rc)
            goto out;
        /* before publish: verifiers it waits for may be waiting for this lock */
        kbm_state_unlock(&v->state);
        locked = 0;
    }
    publish(v, x, retired, nretired);
    x = NULL;
out:
    if (locked)
        kbm_state_unlock(&v->state);
    kbm_burn_stack(); /* the fingerprints' HMACs and peer_init read raw keys: once for all peers */
    if (x) {
        /* failure: free what this call created, keep what the old index still owns */
        for (size_t i = 0; i < x->n; i++) {
            int shared = 0;
            for (size_t j = 0; old && j < old->n && !shared; j++)
                shared = old->kcn[j] == x->kcn[i];
            if (!shared)
                kcn_free(x->kcn[i]);
        }
        kbm_index_free(x, 0);
    }
    free(retired);
    pthread_mutex_unlock(&v->write_lock);
    return rc;
}

int kbm_verifier_remove_peer(kbm_verifier *v, const uint8_t home[16])
{
    pthread_mutex_lock(&v->write_lock);
    struct kbm_index *old = atomic_load(&v->index);
    const struct kbm_peer *gone = old ? kbm_index_find(old, kbm_hash16(v->seed, home), home)
                                      : NULL;
    int rc = KBM_ENOENT;
    if (gone) {
        struct kbm_index *x = index_alloc(old->n);
        rc = KBM_ENOMEM;
        if (x) {
            for (size_t i = 0; i < old->n; i++) {
                if (&old->peers[i] == gone)
                    continue;
                x->peers[x->n] = old->peers[i];
                x->kcn[x->n] = old->kcn[i];
                bucket_put(x, v->seed, x->n);
                x->n++;
            }
            struct kbm_kcn *retired = old->kcn[gone - old->peers];
            publish(v, x, &retired, retired ? 1 : 0);
            rc = KBM_OK;
        }
    }
    pthread_mutex_unlock(&v->write_lock);
    return rc;
}

kbm_verifier *kbm_verifier_new(const char *state_path, uint32_t rekey_limit, int *status)
{
    *status = KBM_EINVAL;
    if (rekey_limit > 32768) /* beyond that the advance field of the slot word overflows */
        return NULL;
    kbm_verifier *v = calloc(1, sizeof *v);
    *status = KBM_ENOMEM;
    if (!v)
        return NULL;
    if (getrandom(v->seed, sizeof v->seed, 0) != (ssize_t)sizeof v->seed) {
        *status = KBM_EIO;
        free(v);
        return NULL;
    }
    pthread_mutex_init(&v->write_lock, NULL);
    v->rekey_limit = rekey_limit;
    struct kbm_index *x = index_alloc(0);
    int rc = x ? kbm_state_open(&v->state, state_path, v->seed) : KBM_ENOMEM;
    if (rc) {
        kbm_index_free(x, 0);
        pthread_mutex_destroy(&v->write_lock);
        free(v);
        *status = rc;
        return NULL;
    }
    atomic_store(&v->index, x);
    *status = KBM_OK;
    return v;
}

void kbm_verifier_free(kbm_verifier *v)
{
    if (!v)
        return;
    kbm_index_free(atomic_load(&v->index), 1);
    kbm_rr_free(v->rr);
    kbm_state_close(&v->state);
    pthread_mutex_destroy(&v->write_lock);
    kbm_wipe(v->seed, sizeof v->seed);
    free(v);
}

int kbm_verifier_last_sequence(kbm_verifier *v, const uint8_t home[16], uint16_t *seq)
{
    uint64_t w;
    int found = kbm_verifier_slot_word(v, home, &w);
    if (found <= 0 || !(w & KBM_W_HAS_SEQ))
        return found < 0 ? found : 0;
    *seq = KBM_W_SEQ(w);
    return 1;
}

int kbm_verifier_slot_word(kbm_verifier *v, const uint8_t home[16], uint64_t *word)
{
    uint32_t slot;
    pthread_mutex_lock(&v->write_lock);
    int found = kbm_state_lookup(&v->state, home, &slot);
    pthread_mutex_unlock(&v->write_lock);
    if (found > 0)
        *word = atomic_load(kbm_state_word(&v->state, slot));
    return found;
}

int kbm_verifier_key_advance(kbm_verifier *v, const uint8_t home[16], uint32_t *advance)
{
    int rc = kbm_state_check(&v->state); /* the slot word and history are in the mapping */
    if (rc)
        return rc;
    uint32_t g = kbm_read_begin(v);
    const struct kbm_index *x = atomic_load(&v->index);
    const struct kbm_peer *p = kbm_index_find(x, kbm_hash16(v->seed, home), home);
    if (p)
        *advance = kbm_state_advance(&v->state, p->slot, p->fp, v->rekey_limit);
    kbm_read_end(v, g);
    return p != NULL;
}

int kbm_verifier_flush(kbm_verifier *v)
{
    pthread_mutex_lock(&v->write_lock); /* appends change the slot count it reads */
    int rc = kbm_state_flush(&v->state);
    pthread_mutex_unlock(&v->write_lock);
    return rc;
}

size_t kbm_verifier_check_index(kbm_verifier *v)
{
    pthread_mutex_lock(&v->write_lock);
    size_t faults = kbm_index_check(atomic_load(&v->index), v->seed);
    pthread_mutex_unlock(&v->write_lock);
    return faults;
}
