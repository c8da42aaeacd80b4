/* The sequence table: slots of docs/state-format.md, mapped once and never moved.

   The whole address range for KBM_STATE_MAX_SLOTS is mapped up front (pages past the end of the
   file are never touched), so the file can grow under running verifiers without a remap.
   Slots are appended under flock(LOCK_EX), complete before the count that publishes them.
   The file is opened by the rules of kbmfast/_stateformat.py (no link followed; a regular file
   of the effective user that group and others cannot write), marked "in use" by an OFD read
   lock for as long as it is open, and checked for truncation or replacement before each use. */
#define _GNU_SOURCE
#include "hash.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t magic[8] = {'K', 'B', 'M', 'S', 'T', 'A', 'T', 'E'};
#define GROW_SLOTS 4096
#define LOCK_OFFSET 0  /* the byte of the "in use" lock (_stateformat.LOCK_OFFSET) */
#define REOPEN_TRIES 8
#define SLOT_CHECK 24   /* a slot's CRC-32 over salt, index and address */
#define SLOT_HISTORY 28 /* then KBM_STATE_HISTORY earlier fingerprints, newest first */
#define FP_MAX UINT32_C(0x7FFFFFFF)

/* ---- CRC-32 (zlib's: reflected 0xEDB88320), the header's and the slots' checks ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ UINT32_C(0xEDB88320) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* Once the header is checked (or written) and the salt known: what every check starts with. */
static void set_salt(kbm_state *s)
{
    s->crc_head = crc32_update(crc32_update(0, s->base, 24), s->salt, KBM_STATE_SALT);
    s->crc_salt = crc32_update(0, s->salt, KBM_STATE_SALT);
    kbm_mac_key_init(&s->salt_mac, s->salt, KBM_STATE_SALT);
}

/* The count word: the slot count (bits 0-31) and CRC-32(header bytes 0-23 | salt | count). */
static uint64_t make_count_word(const kbm_state *s, uint32_t count)
{
    uint8_t c[4];
    memcpy(c, &count, 4);
    uint32_t crc = crc32_update(s->crc_head, c, 4); /* header bytes 0-23 | salt | count */
    return (uint64_t)count | (uint64_t)crc << 32;
}

static uint32_t slot_check(const kbm_state *s, uint32_t index, const uint8_t addr[16])
{
    uint8_t i[4];
    memcpy(i, &index, 4);
    uint32_t crc = crc32_update(s->crc_salt, i, 4); /* salt | index | address */
    return crc32_update(crc, addr, 16);
}

static uint8_t *slot_at(const kbm_state *s, size_t i)
{
    return s->base + KBM_STATE_HEADER + i * KBM_STATE_SLOT;
}

static _Atomic uint32_t *history(const kbm_state *s, uint32_t slot)
{
    return (_Atomic uint32_t *)(void *)(slot_at(s, slot) + SLOT_HISTORY);
}

/* The mutex, then flock, retried when a signal interrupts the wait (CPython's handlers do not
   restart it). flock belongs to the open file, so our own threads need the mutex. */
static int lock(kbm_state *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->fd < 0)
        return 0;
    int rc;
    while ((rc = flock(s->fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    if (rc != 0) {
        int saved = errno;
        pthread_mutex_unlock(&s->mu);
        errno = saved;
    }
    return rc;
}

static void unlock(kbm_state *s)
{
    int saved = errno;
    if (s->fd >= 0)
        flock(s->fd, LOCK_UN);
    pthread_mutex_unlock(&s->mu);
    errno = saved;
}

static _Atomic uint64_t *count_word(const kbm_state *s)
{
    return (_Atomic uint64_t *)(void *)(s->base + 24);
}

#define ENTRY_HASH(e) ((uint32_t)((e) >> 32))
#define ENTRY_SLOT(e) ((uint32_t)(e) - 1)

static int index_insert(kbm_state *s, const uint8_t addr[16], uint32_t slot)
{
    if ((s->count + 1) * 2 > s->index_mask + 1) {
        /* the entries carry their position: growing reads no slot */
        size_t cap = (s->index_mask + 1) * 2;
        int mapped;
        uint64_t *grown = kbm_big_alloc(cap * sizeof *grown, &mapped);
        if (!grown)
            return KBM_ENOMEM;
        for (size_t i = 0; i <= s->index_mask; i++) {
            uint64_t e = s->index[i];
            if (!e)
                continue;
            size_t j = ENTRY_HASH(e) & (cap - 1);
            while (grown[j])
                j = (j + 1) & (cap - 1);
            grown[j] = e;
        }
        kbm_big_free(s->index, (s->index_mask + 1) * sizeof *s->index, s->index_mapped);
        s->index = grown;
        s->index_mask = cap - 1;
        s->index_mapped = mapped;
    }
    uint32_t h = (uint32_t)kbm_hash16(s->seed, addr);
    size_t j = h & s->index_mask;
    while (s->index[j])
        j = (j + 1) & s->index_mask;
    s->index[j] = (uint64_t)h << 32 | ((uint64_t)slot + 1);
    return KBM_OK;
}

int kbm_state_find(kbm_state *s, const uint8_t addr[16], uint32_t *slot)
{
    uint32_t h = (uint32_t)kbm_hash16(s->seed, addr);
    size_t j = h & s->index_mask;
    for (uint64_t e; (e = s->index[j]) != 0; j = (j + 1) & s->index_mask) {
        if (ENTRY_HASH(e) == h && memcmp(slot_at(s, ENTRY_SLOT(e)), addr, 16) == 0) {
            *slot = ENTRY_SLOT(e);
            return 1;
        }
    }
    return 0;
}

static void set_count(kbm_state *s, size_t count)
{
    s->count = count;
    atomic_store(&s->need, KBM_STATE_HEADER + count * KBM_STATE_SLOT);
}

int kbm_state_check(kbm_state *s)
{
    if (s->fd < 0)
        return KBM_OK;
    int broken = atomic_load_explicit(&s->broken, memory_order_relaxed);
    if (broken)
        return broken;
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return KBM_EIO;
    /* the size first: only then is the header's page safe to read; a magic gone means the file
       was cut and grown back (its pages now read as zeros) */
    if (st.st_nlink == 0 || (uint64_t)st.st_size < atomic_load(&s->need) ||
        memcmp(s->base, magic, 8) != 0) {
        atomic_store(&s->broken, KBM_ECHANGED);
        return KBM_ECHANGED;
    }
    return KBM_OK;
}

/* The key file's standard (_stateformat.file_problem). */
static int check_file(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return KBM_EIO;
    if (!S_ISREG(st.st_mode))
        return KBM_ENOTREG;
    if (st.st_uid != geteuid())
        return KBM_EOWNER;
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return KBM_EMODE;
    return KBM_OK;
}

/* An OFD read lock on LOCK_OFFSET, released when the descriptor closes: "in use", so that
   kbmfast state compact (which needs the write lock) refuses. Never waits. */
static int mark_in_use(int fd)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = LOCK_OFFSET;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return KBM_OK;
    return errno == EAGAIN || errno == EACCES ? KBM_EBUSY : KBM_EIO;
}

/* Whether path still names the open file (a rewrite renames a new file over the old one). */
static int same_file(const char *path, int fd)
{
    struct stat a, b;
    return lstat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Open path by the rules, marked in use: KBM_OK and *fd, or a status. */
static int open_in_use(const char *path, int *fd)
{
    for (int tries = 0; tries < REOPEN_TRIES; tries++) {
        *fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (*fd < 0)
            return errno == ELOOP ? KBM_ESYMLINK : KBM_EIO;
        int rc = check_file(*fd);
        if (rc == KBM_OK)
            rc = mark_in_use(*fd);
        if (rc == KBM_OK && same_file(path, *fd))
            return KBM_OK;
        int saved = errno;
        close(*fd);
        *fd = -1;
        errno = saved;
        if (rc)
            return rc;
    }
    return KBM_ECHANGED;
}

/* Index the slots other processes appended since we last looked; damage is KBM_ESTATE. */
static int refresh(kbm_state *s)
{
    int rc = kbm_state_check(s);
    if (rc)
        return rc;
    uint64_t word = atomic_load(count_word(s));
    uint64_t count = word & 0xFFFFFFFF;
    if (word != make_count_word(s, (uint32_t)count) || count < s->count)
        return KBM_ESTATE; /* the count is not the one its check binds, or it went down */
    if (s->fd >= 0) {
        struct stat st;
        if (fstat(s->fd, &st) != 0)
            return KBM_EIO;
        s->file_size = (size_t)st.st_size;
    }
    if (count > KBM_STATE_MAX_SLOTS ||
        KBM_STATE_HEADER + count * KBM_STATE_SLOT > s->file_size)
        return KBM_ESTATE;
    for (size_t i = s->count; i < count; i++) {
        const uint8_t *a = slot_at(s, i);
        uint32_t existing, check;
        memcpy(&check, a + SLOT_CHECK, 4);
        if (check != slot_check(s, (uint32_t)i, a) || kbm_state_find(s, a, &existing))
            return KBM_ESTATE; /* a damaged slot, or two slots for one address */
        rc = index_insert(s, a, (uint32_t)i);
        if (rc)
            return rc;
        set_count(s, i + 1);
    }
    return KBM_OK;
}

int kbm_state_open(kbm_state *s, const char *path, const uint64_t seed[2])
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->seed[0] = seed[0];
    s->seed[1] = seed[1];
    s->reserved = KBM_STATE_HEADER + (size_t)KBM_STATE_MAX_SLOTS * KBM_STATE_SLOT;
    s->index_mask = 63;
    pthread_once(&crc_once, crc_init);
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        return KBM_ENOMEM;
    s->mu_ready = 1;
    s->index = kbm_big_alloc(64 * sizeof *s->index, &s->index_mapped);
    if (!s->index) {
        kbm_state_close(s);
        return KBM_ENOMEM;
    }
    int rc = KBM_EIO;
    if (!path) {
        s->base = mmap(NULL, s->reserved, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s->base == MAP_FAILED)
            goto fail;
        /* slots past the first 2 MiB on huge pages (a small table keeps its 4 KiB ones); a file
           mapping gets none (not on a regular file system), so only the anonymous one */
        kbm_advise_huge(s->base + ((size_t)2 << 20), s->reserved - ((size_t)2 << 20));
        if (getrandom(s->salt, sizeof s->salt, 0) != (ssize_t)sizeof s->salt)
            goto fail;
        /* the same header a file has, so one code path serves both */
        const uint32_t fields[4] = {KBM_STATE_VERSION, KBM_STATE_HEADER, KBM_STATE_SLOT, 0};
        memcpy(s->base, magic, 8);
        memcpy(s->base + 8, fields, sizeof fields);
        memcpy(s->base + 32, s->salt, sizeof s->salt);
        set_salt(s);
        atomic_store(count_word(s), make_count_word(s, 0));
        s->file_size = s->reserved;
        return KBM_OK;
    }
    rc = open_in_use(path, &s->fd);
    if (rc)
        goto fail;
    rc = KBM_EIO;
    set_count(s, 0);
    s->base = mmap(NULL, s->reserved, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (s->base == MAP_FAILED)
        goto fail;
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        goto fail;
    s->file_size = (size_t)st.st_size;
    rc = KBM_ESTATE;
    uint32_t fields[4];
    if (s->file_size < KBM_STATE_HEADER || memcmp(s->base, magic, 8) != 0)
        goto fail;
    memcpy(fields, s->base + 8, sizeof fields);
    if (fields[0] != KBM_STATE_VERSION || fields[1] != KBM_STATE_HEADER ||
        fields[2] != KBM_STATE_SLOT || fields[3] != 0)
        goto fail;
    memcpy(s->salt, s->base + 32, sizeof s->salt);
    set_salt(s);
    rc = refresh(s);
    if (rc)
        goto fail;
    return KBM_OK;
fail:
    kbm_state_close(s);
    return rc;
}

void kbm_state_close(kbm_state *s)
{
    if (s->base && s->base != MAP_FAILED) {
        if (s->fd >= 0)
            msync(s->base, s->file_size < s->reserved ? s->file_size : s->reserved, MS_SYNC);
        munmap(s->base, s->reserved);
    }
    if (s->fd >= 0) {
        fsync(s->fd);
        close(s->fd);
    }
    if (s->index)
        kbm_big_free(s->index, (s->index_mask + 1) * sizeof *s->index, s->index_mapped);
    kbm_wipe(&s->salt_mac, sizeof s->salt_mac);
    if (s->mu_ready)
        pthread_mutex_destroy(&s->mu);
    s->mu_ready = 0;
    s->base = NULL;
    s->index = NULL;
    s->fd = -1;
}

static int append(kbm_state *s, const uint8_t addr[16], uint32_t *slot)
{
    size_t i = s->count;
    if (i >= KBM_STATE_MAX_SLOTS)
        return KBM_EFULL;
    size_t need = KBM_STATE_HEADER + (i + 1) * KBM_STATE_SLOT;
    if (s->fd >= 0 && need > s->file_size) {
        /* a long kbm_state_lock: look again whether the file was cut or replaced meanwhile */
        int rc = kbm_state_check(s);
        if (rc)
            return rc;
        size_t grown = KBM_STATE_HEADER + (i + GROW_SLOTS) * KBM_STATE_SLOT;
        if (grown > s->reserved)
            grown = s->reserved;
        /* allocate the blocks now: a sparse ftruncate would turn a full disk into a SIGBUS at
           the first store into the new page, instead of this error */
        int err = posix_fallocate(s->fd, 0, (off_t)grown);
        if (err) {
            errno = err;
            return KBM_EIO;
        }
        s->file_size = grown;
    }
    uint8_t *p = slot_at(s, i);
    uint32_t check = slot_check(s, (uint32_t)i, addr);
    memcpy(p, addr, 16);
    atomic_store(kbm_state_word(s, (uint32_t)i), 0);
    memcpy(p + SLOT_CHECK, &check, 4);
    memset(p + SLOT_HISTORY, 0, KBM_STATE_SLOT - SLOT_HISTORY);
    int rc = index_insert(s, addr, (uint32_t)i);
    if (rc)
        return rc;
    /* the slot is whole before the count (and its check) that makes it visible */
    atomic_store(count_word(s), make_count_word(s, (uint32_t)(i + 1)));
    set_count(s, i + 1);
    *slot = (uint32_t)i;
    return KBM_OK;
}

int kbm_state_lock(kbm_state *s)
{
    if (lock(s) != 0)
        return KBM_EIO;
    int rc = s->fd < 0 ? KBM_OK : refresh(s); /* checks the file, indexes others' slots */
    if (rc)
        unlock(s);
    return rc;
}

void kbm_state_unlock(kbm_state *s)
{
    unlock(s);
}

int kbm_state_slot_locked(kbm_state *s, const uint8_t addr[16], uint32_t *slot)
{
    if (kbm_state_find(s, addr, slot))
        return KBM_OK;
    return append(s, addr, slot);
}

int kbm_state_flush(kbm_state *s)
{
    if (s->fd < 0)
        return KBM_OK;
    if (msync(s->base, KBM_STATE_HEADER + s->count * KBM_STATE_SLOT, MS_SYNC) != 0 ||
        fsync(s->fd) != 0)
        return KBM_EIO;
    return KBM_OK;
}

int kbm_state_lookup(kbm_state *s, const uint8_t addr[16], uint32_t *slot)
{
    int rc = kbm_state_check(s);
    if (rc)
        return rc;
    if (kbm_state_find(s, addr, slot) || s->fd < 0)
        return kbm_state_find(s, addr, slot);
    if (lock(s) != 0)
        return KBM_EIO;
    rc = refresh(s);
    if (rc == KBM_OK)
        rc = kbm_state_find(s, addr, slot);
    unlock(s);
    return rc;
}

/* ---- Keys (docs/state-format.md, "Keys"; kbmfast/_stateformat.py has the same rules) ---- */

uint32_t kbm_state_fingerprint(const kbm_state *s, const kbm_peer_spec *spec)
{
    /* HMAC-SHA1(salt, address | kind | key length (2, big-endian) | key | nonce lengths and
       nonces), reduced to 1..2^31-1; key_len <= 1024 and nonces <= KBM_NONCE_MAX (checked) */
    uint8_t msg[16 + 3 + 1024 + 2 + 2 * KBM_NONCE_MAX], digest[20];
    size_t n = 0;
    memcpy(msg, spec->home, 16);
    n = 16;
    msg[n++] = (uint8_t)(spec->kind == KBM_KIND_KBM ? 1 : 2);
    msg[n++] = (uint8_t)(spec->key_len >> 8);
    msg[n++] = (uint8_t)spec->key_len;
    if (spec->key_len)
        memcpy(msg + n, spec->key, spec->key_len);
    n += spec->key_len;
    msg[n++] = (uint8_t)spec->home_nonce_len;
    if (spec->home_nonce_len)
        memcpy(msg + n, spec->home_nonce, spec->home_nonce_len);
    n += spec->home_nonce_len;
    msg[n++] = (uint8_t)spec->care_of_nonce_len;
    if (spec->care_of_nonce_len)
        memcpy(msg + n, spec->care_of_nonce, spec->care_of_nonce_len);
    n += spec->care_of_nonce_len;
    kbm_hmac_sha1_mid(&s->salt_mac, msg, n, digest);
    uint32_t h;
    memcpy(&h, digest, 4);
    kbm_wipe(msg, n); /* the bytes written: the rest of msg was never set */
    kbm_wipe(digest, sizeof digest);
    return h % FP_MAX + 1;
}

static int in_history(const kbm_state *s, uint32_t slot, uint32_t fp)
{
    _Atomic uint32_t *h = history(s, slot);
    for (int i = 0; i < KBM_STATE_HISTORY; i++)
        if (atomic_load_explicit(&h[i], memory_order_relaxed) == fp)
            return 1;
    return 0;
}

int kbm_state_key_status_locked(kbm_state *s, uint32_t slot, uint32_t fp, uint32_t rekey_limit)
{
    /* flock does not stop another process's ftruncate: check the file is still whole before
       reading its slot (a cut file would fault on the read), as kbm_state_key_status does; slot is
       one kbm_state_lock indexed or appended since */
    int rc = kbm_state_check(s);
    if (rc)
        return rc;
    uint64_t w = atomic_load(kbm_state_word(s, slot));
    if (KBM_W_FP(w) == fp) {
        if ((w & KBM_W_HAS_SEQ) && KBM_W_ADVANCE(w) >= rekey_limit)
            rc = KBM_EEXHAUSTED;
    } else if (in_history(s, slot, fp)) {
        rc = KBM_EEARLIER;
    }
    return rc;
}

int kbm_state_retire(kbm_state *s, uint32_t slot, uint32_t current, uint32_t fp)
{
    int changed = kbm_state_check(s); /* the history is in the mapping */
    if (changed)
        return changed;
    if (lock(s) != 0)
        return KBM_EIO;
    int rc = 1;
    if (!in_history(s, slot, fp)) {
        rc = 0;
        if (!in_history(s, slot, current)) {
            /* shift right one entry at a time from the end, then the newest in front: a crash
               midway leaves a repeated entry, never a gap or a lost newer one */
            _Atomic uint32_t *h = history(s, slot);
            for (int i = KBM_STATE_HISTORY - 1; i > 0; i--)
                atomic_store(&h[i], atomic_load(&h[i - 1]));
            atomic_store(&h[0], current);
        }
    }
    unlock(s);
    return rc;
}

uint32_t kbm_state_advance(kbm_state *s, uint32_t slot, uint32_t fp, uint32_t rekey_limit)
{
    uint64_t w = atomic_load(kbm_state_word(s, slot));
    if (KBM_W_FP(w) == fp || KBM_W_FP(w) == 0)
        return KBM_W_ADVANCE(w);
    return in_history(s, slot, fp) ? rekey_limit : 0;
}
