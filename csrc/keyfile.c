/* The key file's own simple form, read in C (kbmfast._keys.KeyTable.load's fast path).

   kbm_keyfile_parse accepts only a file that the Python loader would accept as it stands and
   read to the same table: lines exactly as KeyTable.save writes them (a subset of what
   _keys._SIMPLE_LINES matches), every peer complete and valid, no home address and no key
   given twice. Anything else (another layout, an error of any kind) returns 1 and leaves the
   file to the Python loader, which then accepts it or refuses it with its own message: so both
   paths give the same answer by construction, and the messages are written in one place.

   Keys and nonces are decoded from the text straight into the caller's material buffer (which
   the caller wipes); nothing else here holds them but the stack, which is wiped. */
#define _GNU_SOURCE
#include "hash.h"
#include "kbm.h"
#include "mac.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

enum { F_HOME = 1, F_KBM = 2, F_KCN = 4, F_HN = 8, F_CN = 16, F_EPOCH = 32 };

/* hex digit -> value + 1, 0 for any other byte (a table: the decode loop has no branch) */
static const uint8_t hexval1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,
    ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16};

/* Decodes hex digits (an even number, nothing else) into out; -1 if not that. */
static long unhex(const uint8_t *s, size_t len, uint8_t *out, size_t cap)
{
    if (len % 2 || len / 2 > cap)
        return -1;
    int bad = 0;
    for (size_t i = 0; i < len; i += 2) {
        unsigned hi = hexval1[s[i]], lo = hexval1[s[i + 1]];
        bad |= !hi | !lo;
        out[i / 2] = (uint8_t)((hi - 1u) << 4 | ((lo - 1u) & 15u)); /* unsigned: no UB on 0 */
    }
    return bad ? -1 : (long)(len / 2);
}

/* inet_ntop's text for an address whose first 80 bits are not all zero (so never the dotted
   IPv4 forms): lower-case hex words without leading zeros, the first longest run of two or more
   zero words as "::" (RFC 5952, as glibc writes it). */
static size_t ntop6(const uint8_t a[16], char out[INET6_ADDRSTRLEN])
{
    static const char digits[] = "0123456789abcdef";
    unsigned words[8];
    int best = -1, best_len = 0;
    for (int i = 0; i < 8; i++)
        words[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    for (int i = 0; i < 8;) {
        int j = i;
        while (j < 8 && words[j] == 0)
            j++;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j > i ? j : i + 1;
    }
    if (best_len < 2)
        best = -1;
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            out[n++] = ':';
            if (i + best_len == 8)
                out[n++] = ':';
            i += best_len - 1;
            continue;
        }
        if (i)
            out[n++] = ':';
        int started = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned d = words[i] >> shift & 15;
            if (d || started || shift == 0) {
                out[n++] = digits[d];
                started = 1;
            }
        }
    }
    out[n] = 0;
    return n;
}

/* The home address, only in the form _util.address_bytes reads on its exact fast path: text
   inet_ntop writes back unchanged, with a non-zero first 80 bits. */
static int home_address(const uint8_t *s, size_t len, uint8_t out[16])
{
    char text[INET6_ADDRSTRLEN], back[INET6_ADDRSTRLEN];
    static const uint8_t zero10[10];
    if (len == 0 || len >= sizeof text)
        return -1;
    memcpy(text, s, len);
    text[len] = 0;
    if (inet_pton(AF_INET6, text, out) != 1 || memcmp(out, zero10, 10) == 0 ||
        ntop6(out, back) != len || memcmp(back, text, len) != 0)
        return -1;
    return 0;
}

static int starts(const uint8_t *line, size_t len, const char *prefix, size_t *at)
{
    size_t n = strlen(prefix);
    if (len < n || memcmp(line, prefix, n) != 0)
        return 0;
    *at = n;
    return 1;
}

/* One open-addressing set of indexes, keyed by a seeded hash of what they point at. */
struct set {
    uint32_t *slot; /* index + 1, 0 = empty */
    size_t mask;
};

static uint64_t hash_bytes(const uint64_t seed[2], const uint8_t *p, size_t len, uint8_t kind)
{
    uint64_t h = kbm_fmix64(seed[0] ^ len ^ ((uint64_t)kind << 32));
    uint8_t block[16];
    for (size_t i = 0; i < len; i += 16) {
        size_t n = len - i < 16 ? len - i : 16;
        memset(block, 0, sizeof block);
        memcpy(block, p + i, n);
        uint64_t pair[2] = {h, seed[1]};
        h = kbm_hash16(pair, block);
    }
    kbm_wipe(block, sizeof block);
    return h;
}

typedef struct {
    const uint8_t *homes;
    const uint8_t *kinds;
    const uint16_t *key_lens;
    const uint64_t *key_at;
    const uint8_t *material;
} peers_view;

static int same_home(const peers_view *p, size_t a, size_t b)
{
    return memcmp(p->homes + 16 * a, p->homes + 16 * b, 16) == 0;
}

static int same_key(const peers_view *p, size_t a, size_t b)
{
    return p->kinds[a] == p->kinds[b] && p->key_lens[a] == p->key_lens[b] &&
           memcmp(p->material + p->key_at[a], p->material + p->key_at[b], p->key_lens[a]) == 0;
}

static uint64_t home_hash(const uint64_t seed[2], const peers_view *p, size_t i)
{
    return kbm_hash16(seed, p->homes + 16 * i);
}

static uint64_t key_hash(const uint64_t seed[2], const peers_view *p, size_t i)
{
    return hash_bytes(seed, p->material + p->key_at[i], p->key_lens[i], p->kinds[i]);
}

/* Puts peer i in the table (entries: hash tag << 32 | index + 1); 1 if same() finds it there. */
static int insert(uint64_t *table, size_t mask, uint64_t h, size_t i, const peers_view *p,
                  int (*same)(const peers_view *, size_t, size_t))
{
    uint64_t tag = h >> 32 << 32;
    size_t j = h & mask;
    for (; table[j]; j = (j + 1) & mask)
        if ((table[j] & ~UINT64_C(0xFFFFFFFF)) == tag && same(p, (size_t)(uint32_t)table[j] - 1, i))
            return 1;
    table[j] = tag | (uint64_t)(i + 1);
    return 0;
}

/* 1 if two peers share a home address or a key (kind and bytes: the fingerprint's rule). The
   tables are far larger than the caches: each probe is prefetched PREFETCH peers ahead, and a
   tag in the entry keeps most probes from reading another peer's data. */
#define PREFETCH 16
static int any_repeat(const peers_view *p, size_t n, int *err)
{
    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        *err = KBM_EIO;
        return 0;
    }
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    uint64_t *homes = calloc(cap, sizeof *homes), *keys = calloc(cap, sizeof *keys);
    int repeat = 0;
    if (!homes || !keys) {
        *err = KBM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n && !repeat; i++) {
        if (i + PREFETCH < n) {
            __builtin_prefetch(&homes[home_hash(seed, p, i + PREFETCH) & (cap - 1)], 1);
            __builtin_prefetch(&keys[key_hash(seed, p, i + PREFETCH) & (cap - 1)], 1);
        }
        repeat = insert(homes, cap - 1, home_hash(seed, p, i), i, p, same_home) ||
                 insert(keys, cap - 1, key_hash(seed, p, i), i, p, same_key);
    }
out:
    free(homes);
    free(keys);
    kbm_wipe(seed, sizeof seed);
    return repeat;
}

typedef struct {
    int fields;
    size_t key_at, key_len, hn_len, cn_len;
} peer_fields;

/* The end of peer i: complete (home and a Kbm, or home, a Kcn and both nonces), or not ours. */
static int close_peer(const peer_fields *f, size_t i, uint8_t *kinds, uint16_t *key_lens,
                      uint8_t *hn_lens, uint8_t *cn_lens, uint64_t *key_at)
{
    int need = F_HOME | F_KBM;
    if (f->fields & F_KCN)
        need = F_HOME | F_KCN | F_HN | F_CN;
    if ((f->fields & ~F_EPOCH) != need)
        return 1;
    kinds[i] = (uint8_t)(f->fields & F_KCN ? KBM_KIND_KCN : KBM_KIND_KBM);
    key_lens[i] = (uint16_t)f->key_len;
    hn_lens[i] = (uint8_t)f->hn_len;
    cn_lens[i] = (uint8_t)f->cn_len;
    key_at[i] = f->key_at;
    return 0;
}

static const struct {
    const char *prefix;
    int field;
    int before; /* the fields given before it, in the order save() writes them */
} names[] = {{"home = \"", F_HOME, 0},
             {"kbm = \"", F_KBM, F_HOME},
             {"kcn = \"", F_KCN, F_HOME},
             {"home_nonce = \"", F_HN, F_HOME | F_KCN},
             {"care_of_nonce = \"", F_CN, F_HOME | F_KCN | F_HN}};

int kbm_keyfile_parse(const uint8_t *text, size_t len, size_t cap, uint8_t *homes,
                      uint8_t *kinds, uint16_t *key_lens, uint8_t *hn_lens, uint8_t *cn_lens,
                      uint16_t *epochs, uint64_t *key_at, uint8_t *material,
                      size_t material_cap, size_t *n_out, size_t *material_out)
{
    size_t n = 0, used = 0, pos = 0;
    int in_peer = 0, version = 0;
    peer_fields f = {0, 0, 0, 0, 0};
    *n_out = 0;
    *material_out = 0;
    if (cap > UINT32_MAX - 1)
        return 1;
    while (pos < len) {
        const uint8_t *line = text + pos;
        const uint8_t *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos, at;
        pos += ll + 1;
        if (ll == 8 && memcmp(line, "[[peer]]", 8) == 0) {
            if (in_peer && close_peer(&f, n - 1, kinds, key_lens, hn_lens, cn_lens, key_at))
                return 1;
            if (n == cap)
                return 1;
            in_peer = 1;
            memset(&f, 0, sizeof f);
            epochs[n++] = 0;
        } else if (ll == 0 || line[0] == '#') {
            for (size_t i = 1; i < ll; i++)
                if (line[i] < 0x20 || line[i] > 0x7e)
                    return 1;
        } else if (!in_peer) {
            if (version || !starts(line, ll, "version = 1", &at) || at != ll)
                return 1;
            version = 1;
        } else if (starts(line, ll, "epoch = ", &at)) {
            if (f.fields & F_EPOCH || ll == at || ll - at > 5 || (line[at] == '0' && ll - at > 1))
                return 1;
            unsigned long e = 0;
            for (; at < ll; at++) {
                if (line[at] < '0' || line[at] > '9')
                    return 1;
                e = e * 10 + (unsigned long)(line[at] - '0');
            }
            if (e > 0xFFFF)
                return 1;
            epochs[n - 1] = (uint16_t)e;
            f.fields |= F_EPOCH;
        } else {
            size_t k = 0;
            while (k < sizeof names / sizeof names[0] && !starts(line, ll, names[k].prefix, &at))
                k++;
            if (k == sizeof names / sizeof names[0] || ll < at + 1 || line[ll - 1] != '"')
                return 1;
            int field = names[k].field;
            /* each field once, in save()'s order: then key and nonces lie back to back */
            if ((f.fields & ~F_EPOCH) != names[k].before)
                return 1;
            const uint8_t *v = line + at;
            size_t vl = ll - at - 1;
            f.fields |= field;
            if (field == F_HOME) {
                if (home_address(v, vl, homes + 16 * (n - 1)))
                    return 1;
                continue;
            }
            long got = unhex(v, vl, material + used, material_cap - used);
            if (got < 0)
                return 1;
            size_t g = (size_t)got;
            if ((field == F_KBM && g != KBM_SIZE) ||
                (field == F_KCN && (g < KBM_SIZE || g > KBM_KEY_MAX)) ||
                ((field == F_HN || field == F_CN) && (g < 1 || g > KBM_NONCE_MAX)))
                return 1;
            if (field == F_KBM || field == F_KCN) {
                f.key_at = used;
                f.key_len = g;
            } else if (field == F_HN) {
                f.hn_len = g;
            } else {
                f.cn_len = g;
            }
            used += g;
        }
    }
    if (in_peer && close_peer(&f, n - 1, kinds, key_lens, hn_lens, cn_lens, key_at))
        return 1;
    int err = 0;
    peers_view view = {homes, kinds, key_lens, key_at, material};
    if (any_repeat(&view, n, &err))
        return 1;
    if (err)
        return err;
    *n_out = n;
    *material_out = used;
    return 0;
}

/* kbm_peer_spec i for peer i of arrays as kbm_keyfile_parse writes them: key_lens[i] bytes of
   key, then hn_lens[i] and cn_lens[i] bytes of nonces, back to back in material from 0. */
void kbm_peer_specs(size_t n, const uint8_t *homes, const uint8_t *kinds,
                    const uint16_t *key_lens, const uint8_t *hn_lens, const uint8_t *cn_lens,
                    const uint8_t *material, kbm_peer_spec *specs)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        kbm_peer_spec *s = &specs[i];
        memcpy(s->home, homes + 16 * i, 16);
        s->kind = kinds[i];
        s->key = material + at;
        s->key_len = key_lens[i];
        at += key_lens[i];
        s->home_nonce = material + at;
        s->home_nonce_len = hn_lens[i];
        at += hn_lens[i];
        s->care_of_nonce = material + at;
        s->care_of_nonce_len = cn_lens[i];
        at += cn_lens[i];
    }
}
