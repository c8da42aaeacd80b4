/* The lines of `kbmfast verify` (kbmfast.cli.verify.format_plain and format_json, byte for
   byte) and the verdict bookkeeping of its batches, one call per batch.

   The text lines have fixed columns: the common row (a frame number of at most 8 digits, a
   time before the year 2286) is written with fixed-size copies from per-call tables and the
   address cache (texts kept padded with spaces); any other row goes the general way. Every
   read of a packet is bounded by its offsets; nothing is allocated here. */
#include "kbm.h"

#include <stddef.h>
#include <string.h>

static const char *const verdict_names[KBM_V_END] = {
    "ACCEPTED", "MALFORMED", "BAD_CHECKSUM", "NOT_BINDING_UPDATE", "NOT_CONFIGURED",
    "MISSING_AUTHORIZATION", "BAD_AUTHENTICATOR", "SEQUENCE_OUT_OF_WINDOW",
    "HOME_REGISTRATION", "INVALID_CARE_OF", "KEY_EXHAUSTED", "HOME_NONCE_EXPIRED",
    "CARE_OF_NONCE_EXPIRED", "NONCES_EXPIRED", "RR_TABLE_FULL", "TRUNCATED", "BA_VALID",
    "BA_UNMATCHED", "BA_BAD_AUTHENTICATOR", "BA_NO_AUTHORIZATION", "BA_NOT_CONFIGURED",
    "BA_BAD_CHECKSUM", "RR_REPLIED"};
/* Binding Acknowledgement status per verdict, -1: none (kbmfast._types.BA_STATUS); -2: the
   status the acknowledgement in the packet carries */
static const int16_t ba_status[KBM_V_END] = {0,   -1,  -1,  -1,  -1,  -1, -1, 135, 131, 174, 129,
                                             136, 137, 138, 130, -1, -2, -2, -2, -2, -2, -1, -1};
/* Whether a line shows home, care-of and sequence */
static const uint8_t shows_fields[KBM_V_END] = {1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1,
                                               1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0};
/* The names of kbm_perr and kbm_why codes (kbmfast.cli.verify.REASON_NAMES) */
static const char *const reason_names[KBM_WHY_END] = {
    "", "SHORT", "VERSION", "PAYLOAD_LENGTH", "EXT_TRUNCATED", "EXT_ORDER", "NO_MH",
    "OPT_TRUNCATED", "OPT_DISCARD", "HAO_LENGTH", "HAO_REPEATED", "", "ROUTING_TYPE",
    "RH2_FORMAT", "MH_LENGTH", "PAYLOAD_PROTO", "HEADER_LEN", "MOPT_TRUNCATED", "MOPT_LENGTH",
    "MOPT_DUPLICATE", "BAD_NOT_LAST", "HAO_NOT_ROUTABLE", "ROUTING_HEADER",
    "SOURCE_NOT_UNICAST", "HOME_NOT_ROUTABLE", "CARE_OF_NOT_ROUTABLE",
    "NONCE_IN_HOME_REGISTRATION", "SNAP_LENGTH"};


static const char *const mh_names[] = {"BRR", "HoTI", "CoTI", "HoT", "CoT", "BU", "BA", "BE"};

static char *pad(char *o, size_t have, size_t width)
{
    if (have >= width)
        return o;
    memset(o, ' ', width - have);
    return o + (width - have);
}

/* decimal digits of v, at most 20 */
static size_t digits(uint64_t v, char tmp[20])
{
    size_t k = 20;
    do {
        tmp[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return k;
}

static char *num_right(char *o, uint64_t v, size_t width)
{
    char tmp[20];
    size_t k = digits(v, tmp);
    o = pad(o, 20 - k, width);
    memcpy(o, tmp + k, 20 - k);
    return o + 20 - k;
}

static char *text_left(char *o, const char *s, size_t len, size_t width)
{
    memcpy(o, s, len);
    return pad(o + len, len, width);
}

static char *text_right(char *o, const char *s, size_t len, size_t width)
{
    o = pad(o, len, width);
    memcpy(o, s, len);
    return o + len;
}

/* Python's str(IPv6Address): RFC 5952, and on Python >= 3.13 "::ffff:a.b.c.d" for IPv4-mapped */
size_t kbm_ipv6_text(const uint8_t *a, int mapped_dotted, char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (mapped_dotted && memcmp(a, mapped, 12) == 0) {
        memcpy(o, "::ffff:", 7);
        o += 7;
        for (int i = 12; i < 16; i++) {
            char tmp[20];
            size_t k = digits(a[i], tmp);
            memcpy(o, tmp + k, 20 - k);
            o += 20 - k;
            if (i < 15)
                *o++ = '.';
        }
        return (size_t)(o - out);
    }
    unsigned h[8];
    for (int i = 0; i < 8; i++)
        h[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    int best = -1, best_len = 0;
    for (int i = 0; i < 8;) {
        if (h[i]) {
            i++;
            continue;
        }
        int j = i;
        while (j < 8 && !h[j])
            j++;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j;
    }
    if (best_len < 2)
        best = -1;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            *o++ = ':';
            if (i == 0)
                *o++ = ':';
            i += best_len - 1;
            continue;
        }
        int started = 0;
        for (int s = 12; s >= 0; s -= 4) {
            unsigned d = h[i] >> s & 0xF;
            if (d || started || s == 0) {
                *o++ = hex[d];
                started = 1;
            }
        }
        if (i < 7)
            *o++ = ':';
    }
    return (size_t)(o - out);
}

size_t kbm_addr_slot_of(const uint8_t a[16], size_t slots)
{
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, a + 8, 8);
    uint64_t h = (x * 0x9E3779B97F4A7C15u) ^ (y * 0xC2B2AE3D27D4EB4Fu);
    h ^= h >> 29;
    return (size_t)(h * 0x9E3779B97F4A7C15u >> 32) & (slots - 1);
}

/* The slot of a, its text padded with spaces to 39 (every text but none fits: at most 39
   bytes) and its length. */
static const kbm_addr_slot *address(kbm_addr_slot *s, const uint8_t a[16], int mapped_dotted)
{
    if (!s->len || memcmp(s->key, a, 16) != 0) {
        memcpy(s->key, a, 16);
        memset(s->text, ' ', sizeof s->text);
        s->len = (uint8_t)kbm_ipv6_text(a, mapped_dotted, s->text);
    }
    return s;
}

enum { GROUP = 32 };

/* A JSON string or null: the slot's text (address texts need no escaping). */
static char *json_address(char *o, kbm_addr_slot *cache, size_t slot, const uint8_t *a, int md)
{
    if (slot == SIZE_MAX) {
        memcpy(o, "null", 4);
        return o + 4;
    }
    const kbm_addr_slot *s = address(&cache[slot], a, md);
    *o++ = '"';
    memcpy(o, s->text, s->len);
    o += s->len;
    *o++ = '"';
    return o;
}

static char *put(char *o, const char *s)
{
    size_t k = strlen(s);
    memcpy(o, s, k);
    return o + k;
}

static char *num(char *o, uint64_t v)
{
    return num_right(o, v, 1);
}

/* Literal text: a copy of constant size. */
#define PUT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

/* v (below 10^width) right-aligned in exactly width bytes. */
static void right_digits(char *o, uint64_t v, size_t width)
{
    memset(o, ' ', width);
    size_t k = width;
    do {
        o[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
}

/* The columns of a call's rows that only depend on small values: written once per call. */
typedef struct {
    char verdict[KBM_V_END][24]; /* the name, left-aligned in 22, then 2 spaces */
    char type[9][7];             /* MH types 0-7 and '?', left-aligned in 5, then 2 spaces */
    char none[41];               /* '-' left-aligned in 39, then 2 spaces */
    uint8_t verdict_len[KBM_V_END];
    uint64_t sec;                /* the last row's whole seconds... */
    char sec_text[10];           /* ...right-aligned in 10 (valid when sec_ok) */
    int sec_ok;
} columns;

static void columns_init(columns *c)
{
    memset(c, ' ', offsetof(columns, verdict_len));
    for (size_t v = 0; v < KBM_V_END; v++) {
        size_t k = strlen(verdict_names[v]);
        memcpy(c->verdict[v], verdict_names[v], k);
        c->verdict_len[v] = (uint8_t)k;
    }
    for (size_t t = 0; t < 8; t++)
        memcpy(c->type[t], mh_names[t], strlen(mh_names[t]));
    c->type[8][0] = '?';
    c->none[0] = '-';
    c->sec_ok = 0;
    c->sec = 0;
}

/* The row of the common case: every column at its width (see format_rows). Each address text
   is copied as soon as it is looked up (two addresses may share a cache slot). */
static char *row_fast(char *o, columns *c, uint64_t frame, uint64_t us, const kbm_fields *f,
                      unsigned v, int ba, kbm_addr_slot *cache, const size_t at[4],
                      const uint8_t *p, int md)
{
    right_digits(o, frame, 8);
    o[8] = ' ', o[9] = ' ';
    o += 10;
    uint64_t sec = us / 1000000, frac = us % 1000000;
    if (!c->sec_ok || c->sec != sec) {
        right_digits(c->sec_text, sec, 10);
        c->sec = sec;
        c->sec_ok = 1;
    }
    memcpy(o, c->sec_text, 10);
    o[10] = '.';
    for (int d = 16; d >= 11; d--) {
        o[d] = (char)('0' + frac % 10);
        frac /= 10;
    }
    o[17] = ' ', o[18] = ' ';
    o += 19;
    memcpy(o, c->type[f->mh_type < 0 ? 8 : f->mh_type], 7);
    o += 7;
    int with_fields = at[0] != SIZE_MAX;
    /* texts are padded with spaces past 41 bytes */
    memcpy(o, with_fields ? address(&cache[at[0]], p + f->home, md)->text : c->none, 41);
    o += 41;
    memcpy(o, with_fields ? address(&cache[at[1]], p + f->care_of, md)->text : c->none, 41);
    o += 41;
    if (with_fields)
        right_digits(o, f->seq, 5);
    else
        memcpy(o, "    -", 5);
    o[5] = ' ', o[6] = ' ';
    o += 7;
    memcpy(o, c->verdict[v], 24);
    o += 24;
    if (ba < 0)
        memcpy(o, "  -", 3);
    else
        right_digits(o, (uint64_t)ba, 3);
    o[3] = ' ', o[4] = ' ';
    o += 5;
    if (at[2] != SIZE_MAX) {
        const kbm_addr_slot *s = address(&cache[at[2]], p + 8, md);
        memcpy(o, s->text, 40); /* 40 >= len; the bytes past len are overwritten next */
        o += s->len;
        o = PUT(o, " > ");
        s = address(&cache[at[3]], p + 24, md);
        memcpy(o, s->text, 40);
        o += s->len;
    } else
        *o++ = '-';
    return o;
}

/* The rows of kbm_format_lines (name NULL) or kbm_format_json. */
static size_t format_rows(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                          const uint64_t *frames, const int64_t *times, const uint8_t *verdicts,
                          size_t n, kbm_addr_slot *cache, size_t slots, int mapped_dotted,
                          const char *name, size_t name_len, char *out, size_t out_len,
                          size_t *written)
{
    char *o = out;
    size_t i = 0, row_max = name ? KBM_JSON_MAX + name_len : KBM_LINE_MAX;
    *written = 0;
    if (slots == 0 || (slots & (slots - 1)))
        return 0;
    columns cols;
    columns_init(&cols);
    kbm_fields fs[GROUP];
    size_t at[GROUP][4]; /* address slots: home, care-of, source, destination */
    size_t length[GROUP];
    /* the caller's offsets, verdicts and times, each read once: checked, then only these used */
    uint64_t start[GROUP];
    int64_t when[GROUP];
    uint8_t verdict[GROUP];
    while (i < n) {
        /* a group: fields and address slots first (prefetched), then the lines */
        size_t m = 0, want = n - i < GROUP ? n - i : GROUP;
        for (; m < want; m++) {
            size_t k = i + m;
            uint64_t from = offsets[k], to = offsets[k + 1];
            unsigned v = verdicts[k];
            int64_t t = times[k];
            if (from > to || to > buf_len || v >= KBM_V_END || t < 0)
                break;
            start[m] = from;
            when[m] = t;
            verdict[m] = (uint8_t)v;
            const uint8_t *p = buf + from;
            size_t len = (size_t)(to - from);
            length[m] = len;
            (void)kbm_packet_fields(p, len, &fs[m]);
            at[m][0] = at[m][1] = at[m][2] = at[m][3] = SIZE_MAX;
            if (len >= 40) {
                if (shows_fields[v]) {
                    at[m][0] = kbm_addr_slot_of(p + fs[m].home, slots);
                    at[m][1] = kbm_addr_slot_of(p + fs[m].care_of, slots);
                }
                at[m][2] = kbm_addr_slot_of(p + 8, slots);
                at[m][3] = kbm_addr_slot_of(p + 24, slots);
                for (int s = 0; s < 4; s++)
                    if (at[m][s] != SIZE_MAX) { /* both lines of a slot the caller did not align */
                        __builtin_prefetch(&cache[at[m][s]]);
                        __builtin_prefetch((const char *)&cache[at[m][s]] + sizeof *cache - 1);
                    }
            }
        }
        for (size_t g = 0; g < m; g++, i++) {
            if ((size_t)(out + out_len - o) < row_max) {
                *written = (size_t)(o - out);
                return i;
            }
            const kbm_fields *f = &fs[g];
            const uint8_t *p = buf + start[g];
            unsigned v = verdict[g];
            int with_fields = at[g][0] != SIZE_MAX;
            int ba = ba_status[v];
            if (v == 0 && !(f->flags & 0x8000))
                ba = -1;
            else if (ba == -2)
                ba = f->mh_type == 6 ? f->flags : -1;
            uint32_t where = 0;
            int why = 0;
            if (v == KBM_MALFORMED)
                why = kbm_malformed_reason(p, length[g], &where);
            else if (v == KBM_V_TRUNCATED) {
                why = KBM_WHY_SNAP_LENGTH;
                where = (uint32_t)length[g];
            }
            if (why <= 0 || why >= KBM_WHY_END || !reason_names[why][0])
                why = 0;
            if (!name && frames[i] < 100000000u && (uint64_t)when[g] < 10000000000000000u &&
                f->mh_type < 8 && ba < 1000) {
                o = row_fast(o, &cols, frames[i], (uint64_t)when[g], f, v, ba, cache, at[g], p,
                             mapped_dotted);
                if (why) {
                    *o++ = ' ', *o++ = ' ';
                    o = put(o, reason_names[why]);
                    *o++ = '@';
                    o = num(o, where);
                }
                *o++ = '\n';
                continue;
            }
            char t[28], type[8];
            size_t t_len, type_len;
            {
                char tmp[20];
                uint64_t us = (uint64_t)when[g];
                size_t k = digits(us / 1000000, tmp), w = 20 - k;
                memcpy(t, tmp + k, w);
                t[w] = '.';
                uint64_t frac = us % 1000000;
                for (int d = 6; d >= 1; d--) {
                    t[w + (size_t)d] = (char)('0' + frac % 10);
                    frac /= 10;
                }
                t_len = w + 7;
            }
            if (f->mh_type < 0) {
                type[0] = '?';
                type_len = 1;
            } else if (f->mh_type < 8) {
                type_len = strlen(mh_names[f->mh_type]);
                memcpy(type, mh_names[f->mh_type], type_len);
            } else {
                char tmp[20];
                size_t k = digits((uint64_t)f->mh_type, tmp);
                type[0] = 'M', type[1] = 'H';
                memcpy(type + 2, tmp + k, 20 - k);
                type_len = 2 + 20 - k;
            }
            if (name) {
                o = PUT(o, "{\"capture\": ");
                memcpy(o, name, name_len);
                o += name_len;
                o = PUT(o, ", \"frame\": ");
                o = num(o, frames[i]);
                o = PUT(o, ", \"time\": ");
                memcpy(o, t, t_len);
                o += t_len;
                o = PUT(o, ", \"type\": \"");
                memcpy(o, type, type_len);
                o += type_len;
                o = PUT(o, "\", \"home\": ");
                o = json_address(o, cache, at[g][0], p + f->home, mapped_dotted);
                o = PUT(o, ", \"care_of\": ");
                o = json_address(o, cache, at[g][1], p + f->care_of, mapped_dotted);
                o = PUT(o, ", \"sequence\": ");
                o = with_fields ? num(o, f->seq) : PUT(o, "null");
                o = PUT(o, ", \"verdict\": \"");
                memcpy(o, verdict_names[v], cols.verdict_len[v]);
                o += cols.verdict_len[v];
                o = PUT(o, "\", \"code\": ");
                o = num(o, v);
                o = PUT(o, ", \"ba_status\": ");
                o = ba < 0 ? PUT(o, "null") : num(o, (uint64_t)ba);
                o = PUT(o, ", \"source\": ");
                o = json_address(o, cache, at[g][2], p + 8, mapped_dotted);
                o = PUT(o, ", \"destination\": ");
                o = json_address(o, cache, at[g][3], p + 24, mapped_dotted);
                o = PUT(o, ", \"reason\": ");
                if (why) {
                    *o++ = '"';
                    o = put(o, reason_names[why]);
                    *o++ = '"';
                } else
                    o = PUT(o, "null");
                o = PUT(o, ", \"offset\": ");
                o = why ? num(o, where) : PUT(o, "null");
                *o++ = '}';
                *o++ = '\n';
                continue;
            }
            o = num_right(o, frames[i], 8);
            *o++ = ' ', *o++ = ' ';
            o = text_right(o, t, t_len, 17);
            *o++ = ' ', *o++ = ' ';
            o = text_left(o, type, type_len, 5);
            *o++ = ' ', *o++ = ' ';
            for (int side = 0; side < 2; side++) {
                if (with_fields) {
                    const uint8_t *a = p + (side ? f->care_of : f->home);
                    memcpy(o, address(&cache[at[g][side]], a, mapped_dotted)->text, 39);
                    o += 39;
                } else
                    o = text_left(o, "-", 1, 39);
                *o++ = ' ', *o++ = ' ';
            }
            if (with_fields)
                o = num_right(o, f->seq, 5);
            else
                o = text_right(o, "-", 1, 5);
            *o++ = ' ', *o++ = ' ';
            o = text_left(o, verdict_names[v], strlen(verdict_names[v]), 22);
            *o++ = ' ', *o++ = ' ';
            if (ba < 0)
                o = text_right(o, "-", 1, 3);
            else
                o = num_right(o, (uint64_t)ba, 3);
            *o++ = ' ', *o++ = ' ';
            if (at[g][2] != SIZE_MAX) {
                const kbm_addr_slot *s = address(&cache[at[g][2]], p + 8, mapped_dotted);
                memcpy(o, s->text, s->len);
                o += s->len;
                memcpy(o, " > ", 3);
                o += 3;
                s = address(&cache[at[g][3]], p + 24, mapped_dotted);
                memcpy(o, s->text, s->len);
                o += s->len;
            } else
                *o++ = '-';
            if (why) {
                *o++ = ' ', *o++ = ' ';
                o = put(o, reason_names[why]);
                *o++ = '@';
                o = num(o, where);
            }
            *o++ = '\n';
        }
        if (m < want)
            break;
    }
    *written = (size_t)(o - out);
    return i;
}

size_t kbm_format_lines(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                        const uint64_t *frames, const int64_t *times, const uint8_t *verdicts,
                        size_t n, kbm_addr_slot *cache, size_t slots, int mapped_dotted,
                        char *out, size_t out_len, size_t *written)
{
    return format_rows(buf, buf_len, offsets, frames, times, verdicts, n, cache, slots,
                       mapped_dotted, NULL, 0, out, out_len, written);
}

size_t kbm_format_json(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                       const uint64_t *frames, const int64_t *times, const uint8_t *verdicts,
                       size_t n, kbm_addr_slot *cache, size_t slots, int mapped_dotted,
                       const char *name, size_t name_len, char *out, size_t out_len,
                       size_t *written)
{
    *written = 0;
    if (!name)
        return 0;
    return format_rows(buf, buf_len, offsets, frames, times, verdicts, n, cache, slots,
                       mapped_dotted, name, name_len, out, out_len, written);
}

/* ---- the bookkeeping of a verified batch (kbmfast.cli.verify._Directions, _count) ---- */

size_t kbm_verdict_marks(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                         uint8_t *verdicts, const uint8_t *cut, size_t n, uint32_t *look)
{
    size_t k = 0;
    for (size_t i = 0; i < n && i <= UINT32_MAX; i++) {
        if (cut && cut[i])
            verdicts[i] = KBM_V_TRUNCATED;
        unsigned v = verdicts[i];
        if (v != KBM_MALFORMED && v != KBM_NOT_BINDING_UPDATE)
            continue;
        uint64_t from = offsets[i], to = offsets[i + 1];
        kbm_fields f;
        if (from <= to && to <= buf_len && kbm_packet_fields(buf + from, (size_t)(to - from), &f) == 0 &&
            f.mh_type == 5)
            continue; /* a Binding Update: the Python side leaves it as it is */
        look[k++] = (uint32_t)i;
    }
    return k;
}

void kbm_verdict_counts(const uint8_t *verdicts, size_t n, uint64_t *counts)
{
    uint64_t c[4][256];
    memset(c, 0, sizeof c);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) { /* four tables: no store-to-load chain on a run of one verdict */
        c[0][verdicts[i]]++;
        c[1][verdicts[i + 1]]++;
        c[2][verdicts[i + 2]]++;
        c[3][verdicts[i + 3]]++;
    }
    for (; i < n; i++)
        c[0][verdicts[i]]++;
    for (size_t v = 0; v < KBM_V_END; v++)
        counts[v] += c[0][v] + c[1][v] + c[2][v] + c[3][v];
}
