/* IPv6 extension headers and the Mobility Header, checked byte for byte as
   kbmfast/reference/wire.py does: same rules, same order, same error offsets. */
#include "kbm.h"

#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "host_sum below adds little-endian words (and the state file is little-endian anyway)"
#endif

enum { NH_HOP_BY_HOP = 0, NH_ROUTING = 43, NH_NONE = 59, NH_DEST_OPTS = 60, NH_MH = 135 };
enum { OPT_HOME_ADDRESS = 0xC9, MOPT_BAD = 5 };

static const uint8_t min_header_len[8] = {0, 1, 1, 2, 2, 1, 1, 2};
static const uint8_t options_start[8] = {8, 16, 16, 24, 24, 12, 12, 24};
/* exact data length of mobility options 2..5; 0 = no rule */
static const uint8_t mopt_len[6] = {0, 0, 2, 16, 4, 12};

#define FAIL(code, at)                                                                          \
    do {                                                                                        \
        *where = (uint32_t)(at);                                                                \
        return (code);                                                                          \
    } while (0)

/* TLV options of a Hop-by-Hop or Destination Options header in p[i, end). */
static int ip_options(const uint8_t *p, size_t i, size_t end, int destination, kbm_layout *l,
                      uint32_t *where)
{
    while (i < end) {
        uint8_t t = p[i];
        if (t == 0) {
            i++;
            continue;
        }
        if (i + 2 > end)
            FAIL(KBM_E_OPT_TRUNCATED, i);
        uint8_t len = p[i + 1]; /* read once: the buffer may be shared with other threads */
        if (i + 2 + len > end)
            FAIL(KBM_E_OPT_TRUNCATED, i);
        if (t == 1) {
            /* PadN */
        } else if (t == OPT_HOME_ADDRESS && destination) {
            if (len != 16)
                FAIL(KBM_E_HAO_LENGTH, i);
            if (l->hao >= 0)
                FAIL(KBM_E_HAO_REPEATED, i);
            l->hao = (int32_t)(i + 2);
        } else if (t >> 6) {
            /* unrecognised, and its two high bits say discard (RFC 8200 §4.2) */
            FAIL(KBM_E_OPT_DISCARD, i);
        }
        i += 2u + len;
    }
    return 0;
}

int kbm_scan(const uint8_t *p, size_t n, kbm_layout *l, uint32_t *where)
{
    l->mh = l->hao = l->rh2 = l->alt = l->bad = l->nonce = -1;
    l->mh_type = 0;
    if (n < 48)
        FAIL(KBM_E_SHORT, 0);
    if (p[0] >> 4 != 6)
        FAIL(KBM_E_VERSION, 0);
    if (40u + ((size_t)p[4] << 8 | p[5]) != n)
        FAIL(KBM_E_PAYLOAD_LENGTH, 4);

    uint8_t nh = p[6];
    size_t nh_at = 6, off = 40;
    int seen_routing = 0, dst_before = 0, dst_after = 0;
    while (nh != NH_MH) {
        if (nh == NH_HOP_BY_HOP) {
            if (off != 40)
                FAIL(KBM_E_EXT_ORDER, nh_at);
        } else if (nh == NH_DEST_OPTS) {
            /* at most one before a Routing header and one after it */
            if (dst_after || (dst_before && !seen_routing))
                FAIL(KBM_E_EXT_ORDER, nh_at);
            if (seen_routing)
                dst_after = 1;
            else
                dst_before = 1;
        } else if (nh == NH_ROUTING) {
            if (seen_routing || dst_after)
                FAIL(KBM_E_EXT_ORDER, nh_at);
            seen_routing = 1;
        } else {
            FAIL(KBM_E_NO_MH, nh_at);
        }
        if (off + 2 > n)
            FAIL(KBM_E_EXT_TRUNCATED, off);
        uint8_t hdr_len = p[off + 1]; /* read once: the end below and RH2's 16 bytes rest on it */
        size_t end = off + ((size_t)hdr_len + 1) * 8;
        if (end > n)
            FAIL(KBM_E_EXT_TRUNCATED, off);
        if (nh == NH_ROUTING) {
            if (p[off + 2] != 2)
                FAIL(KBM_E_ROUTING_TYPE, off + 2);
            if (hdr_len != 2)
                FAIL(KBM_E_RH2_FORMAT, off + 1);
            if (p[off + 3] != 1)
                FAIL(KBM_E_RH2_FORMAT, off + 3);
            l->rh2 = (int32_t)(off + 8);
        } else {
            int rc = ip_options(p, off + 2, end, nh == NH_DEST_OPTS, l, where);
            if (rc)
                return rc;
        }
        nh = p[off];
        nh_at = off;
        off = end;
    }
    if (off + 8 > n)
        FAIL(KBM_E_MH_LENGTH, off);
    if (((size_t)p[off + 1] + 1) * 8 != n - off)
        FAIL(KBM_E_MH_LENGTH, off + 1);
    l->mh = (int32_t)off;
    l->mh_type = p[off + 2];
    return 0;
}

/* One's complement sums (RFC 1071). The 16-bit words are added in host order, eight bytes at
   a time, into a 64-bit total that is folded only at the end: RFC 1071 §2(B), the sum does not
   depend on byte order, and x * 256 mod 0xFFFF is x with its two bytes swapped. */

/* Adds the host-order 16-bit words of d[0, len) to s. Each step adds less than
   2^33, so no length that fits in memory can overflow s. */
static uint64_t host_sum(uint64_t s, const uint8_t *d, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, d + i, 8);
        s += (x & 0xFFFFFFFFu) + (x >> 32);
    }
    for (; i + 2 <= len; i += 2) {
        uint16_t x;
        memcpy(&x, d + i, 2);
        s += x;
    }
    if (i < len) /* an odd last byte, padded with zero: host order puts it low */
        s += d[i];
    return s;
}

/* A host-order sum as a big-endian 16-bit value congruent to it modulo 0xFFFF. */
static uint64_t host_to_be(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)(s << 8 | s >> 8);
}

/* sum + the big-endian 16-bit words of d[0, len), unfolded; len is even. */
static uint64_t ones_add(uint64_t sum, const uint8_t *d, size_t len)
{
    return sum + host_to_be(host_sum(0, d, len));
}

static uint32_t ones_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint32_t)sum;
}

static uint64_t pseudo_sum(const uint8_t src[16], const uint8_t dst[16], size_t len)
{
    /* RFC 8200 §8.1 with Next Header 135 (RFC 6275; RFC 3775 printed 2 by mistake) */
    return ones_add(ones_add(0, src, 16), dst, 16) + (len >> 16) + (len & 0xFFFF) + NH_MH;
}

int kbm_checksum_ok(const uint8_t *p, size_t n, const kbm_layout *l)
{
    const uint8_t *src = l->hao >= 0 ? p + l->hao : p + 8;
    const uint8_t *dst = l->rh2 >= 0 ? p + l->rh2 : p + 24;
    size_t len = n - (size_t)l->mh;
    /* pseudo_sum and ones_add in one pass: the three regions summed, then folded once */
    uint64_t s = host_to_be(host_sum(host_sum(host_sum(0, src, 16), dst, 16), p + l->mh, len));
    return ones_fold(s + (len >> 16) + (len & 0xFFFF) + NH_MH) == 0xFFFF;
}

uint16_t kbm_mh_checksum(const uint8_t src[16], const uint8_t dst[16], const uint8_t *mh,
                         size_t len)
{
    if (len < 6)
        return 0; /* not a Mobility Header; callers never pass one */
    uint64_t sum = ones_add(pseudo_sum(src, dst, len), mh, 4);
    sum = ones_add(sum, mh + 6, len - 6);
    return (uint16_t)~ones_fold(sum);
}

int kbm_parse_mh(const uint8_t *p, size_t n, kbm_layout *l, kbm_option *opts, size_t max,
                 size_t *nopts, uint32_t *where)
{
    /* The MH Type and Header Len are the values kbm_scan read (its layout and n - mh = (Header
       Len + 1) * 8), never read again: the buffer may be changing under us (a caller's
       bytearray shared with another thread), and a second read could pass the length check
       below for a header shorter than the type's fixed fields. */
    size_t mh = (size_t)l->mh, count = 0;
    uint8_t type = l->mh_type;
    if (nopts)
        *nopts = 0;
    if (type >= sizeof min_header_len)
        return KBM_UNKNOWN_MH;
    if (p[mh] != NH_NONE)
        FAIL(KBM_E_PAYLOAD_PROTO, mh);
    if ((n - mh) / 8 - 1 < min_header_len[type])
        FAIL(KBM_E_HEADER_LEN, mh + 1);

    unsigned seen = 0;
    int bad_seen = 0;
    size_t i = mh + options_start[type];
    while (i < n) {
        if (bad_seen)
            FAIL(KBM_E_BAD_NOT_LAST, i);
        uint8_t t = p[i], len = 0;
        if (t != 0) {
            if (i + 2 > n)
                FAIL(KBM_E_MOPT_TRUNCATED, i);
            len = p[i + 1];
            if (i + 2 + len > n)
                FAIL(KBM_E_MOPT_TRUNCATED, i);
            if (t < sizeof mopt_len && mopt_len[t]) {
                if (len != mopt_len[t])
                    FAIL(KBM_E_MOPT_LENGTH, i);
                if (seen & (1u << t))
                    FAIL(KBM_E_MOPT_DUPLICATE, i);
                seen |= 1u << t;
            }
            if (t == 3)
                l->alt = (int32_t)(i + 2);
            else if (t == 4)
                l->nonce = (int32_t)(i + 2);
            else if (t == MOPT_BAD) {
                l->bad = (int32_t)(i + 2);
                bad_seen = 1;
            }
        }
        if (opts && count < max) {
            opts[count].offset = (uint16_t)(i - mh);
            opts[count].type = t;
            opts[count].len = len;
        }
        count++;
        i += t == 0 ? 1u : 2u + len;
    }
    if (nopts)
        *nopts = count;
    return 0;
}

int kbm_is_unicast(const uint8_t a[16])
{
    static const uint8_t zero[16];
    return a[0] != 0xFF && memcmp(a, zero, 16) != 0;
}

int kbm_is_routable(const uint8_t a[16])
{
    static const uint8_t zero[15];
    if (a[0] == 0xFF || (a[0] == 0xFE && (a[1] & 0xC0) == 0x80))
        return 0;
    return memcmp(a, zero, 15) != 0 || a[15] > 1;
}
