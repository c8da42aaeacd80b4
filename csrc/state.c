/* The sequence table: slots of docs/state-format.md, mapped once and never moved.

   The whole address range for KBM_STATE_MAX_SLOTS is mapped up front (pages past the end of the
   file are never touched), so the file can grow under running verifiers without a remap.
   Slots are appended under flock(LOCK_EX), complete before the count that publishes them.
   The file is opened by the rules of kbmfast/_stateformat.py (no link followed; a regular file
   of the effective user that group and others cannot write), marked "in use" by an OFD read
   lock for as long as it is open, and checked for truncation or replacement before each use. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t magic[8] = {'K', 'B', 'M', 'S', 'T', 'A', 'T', 'E'};
#define GROW_SLOTS 4096
#define LOCK_OFFSET 0  /* the byte of the "in use" lock (_stateformat.LOCK_OFFSET) */
#define REOPEN_TRIES 8

/* flock, retried when a signal interrupts the wait (CPython's handlers do not restart it) */
static int lock(int fd)
{
    int rc;
    while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    return rc;
}

static _Atomic uint64_t *count_word(const kbm_state *s)
{
    return (_Atomic uint64_t *)(void *)(s->base + 24);
}

static int index_insert(kbm_state *s, const uint8_t addr[16], uint32_t slot)
{
    if ((s->count + 1) * 2 > s->index_mask + 1) {
        size_t cap = (s->index_mask + 1) * 2;
        uint32_t *grown = calloc(cap, sizeof *grown);
        if (!grown)
            return KBM_ENOMEM;
        for (size_t i = 0; i <= s->index_mask; i++) {
            uint32_t e = s->index[i];
            if (!e)
                continue;
            const uint8_t *a = s->base + KBM_STATE_HEADER + (size_t)(e - 1) * KBM_STATE_SLOT;
            size_t j = kbm_hash16(s->seed, a) & (cap - 1);
            while (grown[j])
                j = (j + 1) & (cap - 1);
            grown[j] = e;
        }
        free(s->index);
        s->index = grown;
        s->index_mask = cap - 1;
    }
    size_t j = kbm_hash16(s->seed, addr) & s->index_mask;
    while (s->index[j])
        j = (j + 1) & s->index_mask;
    s->index[j] = slot + 1;
    return KBM_OK;
}

int kbm_state_find(kbm_state *s, const uint8_t addr[16], uint32_t *slot)
{
    size_t j = kbm_hash16(s->seed, addr) & s->index_mask;
    for (uint32_t e; (e = s->index[j]) != 0; j = (j + 1) & s->index_mask) {
        const uint8_t *a = s->base + KBM_STATE_HEADER + (size_t)(e - 1) * KBM_STATE_SLOT;
        if (memcmp(a, addr, 16) == 0) {
            *slot = e - 1;
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

/* Index the slots other processes appended since we last looked. */
static int refresh(kbm_state *s)
{
    int rc = kbm_state_check(s);
    if (rc)
        return rc;
    uint64_t count = atomic_load(count_word(s));
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
        const uint8_t *a = s->base + KBM_STATE_HEADER + i * KBM_STATE_SLOT;
        uint32_t existing;
        if (kbm_state_find(s, a, &existing))
            return KBM_ESTATE; /* two slots for one address */
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
    s->index = calloc(64, sizeof *s->index);
    if (!s->index)
        return KBM_ENOMEM;
    int rc = KBM_EIO;
    if (!path) {
        s->base = mmap(NULL, s->reserved, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s->base == MAP_FAILED)
            goto fail;
        memcpy(s->base, magic, 8);
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
    if (s->file_size < KBM_STATE_HEADER || memcmp(s->base, magic, 8) != 0)
        goto fail;
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
    free(s->index);
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
    uint8_t *p = s->base + KBM_STATE_HEADER + i * KBM_STATE_SLOT;
    memcpy(p, addr, 16);
    atomic_store(kbm_state_word(s, (uint32_t)i), 0);
    memset(p + 24, 0, 8);
    int rc = index_insert(s, addr, (uint32_t)i);
    if (rc)
        return rc;
    /* the slot is whole before the count that makes it visible */
    atomic_store(count_word(s), (uint64_t)(i + 1));
    set_count(s, i + 1);
    *slot = (uint32_t)i;
    return KBM_OK;
}

int kbm_state_slot(kbm_state *s, const uint8_t addr[16], uint32_t *slot)
{
    int rc = kbm_state_check(s);
    if (rc)
        return rc;
    if (kbm_state_find(s, addr, slot))
        return KBM_OK;
    if (s->fd < 0)
        return append(s, addr, slot);
    if (lock(s->fd) != 0)
        return KBM_EIO;
    rc = refresh(s);
    if (rc == KBM_OK && !kbm_state_find(s, addr, slot))
        rc = append(s, addr, slot);
    int saved = errno;
    flock(s->fd, LOCK_UN);
    errno = saved;
    return rc;
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
    if (lock(s->fd) != 0)
        return KBM_EIO;
    rc = refresh(s);
    if (rc == KBM_OK)
        rc = kbm_state_find(s, addr, slot);
    int saved = errno;
    flock(s->fd, LOCK_UN);
    errno = saved;
    return rc;
}
