/* Capture files in memory: the record walk of classic pcap and pcapng, the link-layer and IPv6
   headers of each frame, the gather of the mobility packets, the fields and MALFORMED reasons
   `kbmfast verify`'s lines show (format.c writes the lines) and its acknowledgements. The same
   rules as kbmfast/capture.py and kbmfast/cli/verify.py (the Python code is the oracle;
   tests/test_capture.py compares the two on every capture it builds).

   Every read is checked against the buffer's size; nothing is allocated here. */
#include "kbm.h"
#include "mac.h"

#include <string.h>

enum {
    LT_NULL = 0, LT_ETHERNET = 1, LT_RAW12 = 12, LT_RAW14 = 14, LT_RAW = 101, LT_LOOP = 108,
    LT_SLL = 113, LT_IPV6 = 229, LT_SLL2 = 276
};
enum { MAX_EXT = 16, NH_MH = 135 };

#define PCAP_MAGIC_US 0xA1B2C3D4u
#define PCAP_MAGIC_NS 0xA1B23C4Du
#define PCAPNG_SHB 0x0A0D0D0Au

static uint32_t rd32(const uint8_t *p, int big)
{
    if (big)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint16_t rd16(const uint8_t *p, int big)
{
    unsigned v = big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
    return (uint16_t)v;
}

static int is_af_inet6(uint32_t family)
{
    return family == 10 || family == 24 || family == 28 || family == 30;
}

int64_t kbm_cap_ipv6_start(const uint8_t *buf, size_t start, size_t caplen, uint32_t linktype)
{
    size_t end = start + caplen;
    switch (linktype) {
    case LT_ETHERNET:
        for (size_t p = start + 12; p + 2 <= end; p += 4) {
            uint16_t et = rd16(buf + p, 1);
            if (et == 0x86DD)
                return (int64_t)(p + 2);
            if (et != 0x8100 && et != 0x88A8 && et != 0x9100)
                return -1;
        }
        return -1;
    case LT_RAW:
    case LT_IPV6:
    case LT_RAW12:
    case LT_RAW14:
        return caplen && buf[start] >> 4 == 6 ? (int64_t)start : -1;
    case LT_SLL:
        return caplen >= 16 && rd16(buf + start + 14, 1) == 0x86DD ? (int64_t)(start + 16) : -1;
    case LT_SLL2:
        return caplen >= 20 && rd16(buf + start, 1) == 0x86DD ? (int64_t)(start + 20) : -1;
    case LT_NULL:
        if (caplen < 4)
            return -1;
        return is_af_inet6(rd32(buf + start, 0)) || is_af_inet6(rd32(buf + start, 1))
                   ? (int64_t)(start + 4)
                   : -1;
    case LT_LOOP:
        return caplen >= 4 && is_af_inet6(rd32(buf + start, 1)) ? (int64_t)(start + 4) : -1;
    default:
        return -1;
    }
}

int64_t kbm_cap_mobility_length(const uint8_t *ip, size_t available)
{
    if (available < 40 || ip[0] >> 4 != 6)
        return -1;
    size_t length = 40 + (size_t)rd16(ip + 4, 1);
    if (length > available)
        length = available;
    unsigned nh = ip[6];
    size_t pos = 40;
    for (int k = 0; k < MAX_EXT; k++) {
        if (nh == NH_MH)
            return (int64_t)length;
        if ((nh != 0 && nh != 43 && nh != 60) || pos + 2 > length)
            return -1;
        nh = ip[pos];
        pos += ((size_t)ip[pos + 1] + 1) * 8;
    }
    return nh == NH_MH ? (int64_t)length : -1;
}

int kbm_capture_open(kbm_capture *c, const uint8_t *buf, size_t size)
{
    memset(c, 0, sizeof *c);
    c->buf = buf;
    c->size = size;
    if (size < 4)
        return KBM_CAP_ENOTCAP;
    uint32_t le = rd32(buf, 0), be = rd32(buf, 1);
    if (le == PCAPNG_SHB) {
        c->format = KBM_CAP_PCAPNG;
        return 0;
    }
    for (int big = 0; big < 2; big++) {
        uint32_t magic = big ? be : le;
        if (magic == PCAP_MAGIC_US || magic == PCAP_MAGIC_NS) {
            if (size < 24)
                return KBM_CAP_EHEADER;
            c->format = KBM_CAP_PCAP;
            c->big_endian = big;
            c->nanoseconds = magic == PCAP_MAGIC_NS;
            c->linktype = rd32(buf + 20, big) & 0xFFFF;
            c->pos = 24;
            return 0;
        }
    }
    return KBM_CAP_ENOTCAP;
}

static void damage(kbm_capture *c, int code, uint64_t frame, uint64_t a, uint64_t b)
{
    c->error = code;
    c->error_frame = frame;
    c->error_offset = c->pos;
    c->error_a = a;
    c->error_b = b;
    c->done = 1;
}

/* A record or block of `need` bytes at pos runs past buf: in a window, the caller moves it on
   (1); at the end of the file it is damage (0). */
static int more(kbm_capture *c, uint64_t need)
{
    if (!c->partial)
        return 0;
    c->need_more = 1;
    c->need = need;
    return 1;
}

/* The walk used up buf: the end of the file, or of a window (the caller moves it on). */
static void at_end(kbm_capture *c)
{
    if (c->pos < c->size)
        return;
    if (c->partial)
        (void)more(c, 1);
    else
        c->done = 1;
}

/* units * num / den (an interface's if_tsresol, see kbm_cap_iface) in µs; 0 on overflow of
   the signed 64-bit range. */
static int scale_time(const kbm_cap_iface *f, uint64_t ts, int64_t *us)
{
    uint64_t r;
    if (f->mode == KBM_TS_MUL) {
        if (f->factor && ts > (uint64_t)INT64_MAX / f->factor)
            return 0;
        r = ts * f->factor;
    } else if (f->mode == KBM_TS_DIV) {
        r = f->factor ? ts / f->factor : 0;
    } else { /* ts * 10^6 >> factor, with a 128-bit product */
        uint64_t a0 = ts & 0xFFFFFFFFu, a1 = ts >> 32, m = 1000000;
        uint64_t p0 = a0 * m, p1 = a1 * m;
        uint64_t lo = p0 + (p1 << 32);
        uint64_t hi = (p1 >> 32) + (lo < p0);
        unsigned s = (unsigned)f->factor;
        if (s == 0)
            r = hi ? UINT64_MAX : lo;
        else if (s < 64) {
            if (hi >> s)
                return 0;
            r = lo >> s | hi << (64 - s);
        } else
            r = s - 64 < 64 ? hi >> (s - 64) : 0;
    }
    if (r > (uint64_t)INT64_MAX)
        return 0;
    *us = (int64_t)r;
    return 1;
}

static void set_tsresol(kbm_cap_iface *f, const uint8_t *buf, size_t pos, size_t end, int big)
{
    f->mode = KBM_TS_MUL;
    f->factor = 1;
    while (pos + 4 <= end) {
        uint16_t code = rd16(buf + pos, big), len = rd16(buf + pos + 2, big);
        if (code == 0)
            break;
        if (code == 9 && len >= 1) {
            /* the caller guarantees the block's 4-byte trailer follows end */
            uint8_t v = buf[pos + 4];
            unsigned exp = v & 0x7Fu;
            if (v & 0x80) {
                f->mode = KBM_TS_SHIFT;
                f->factor = exp;
            } else if (exp <= 6) {
                uint64_t k = 1;
                for (unsigned i = exp; i < 6; i++)
                    k *= 10;
                f->factor = k;
            } else {
                f->mode = KBM_TS_DIV;
                uint64_t k = 1;
                for (unsigned i = 6; i < exp && k; i++)
                    k = k <= UINT64_MAX / 10 ? k * 10 : 0; /* 0: beyond 64 bits, every time is 0 */
                f->factor = k;
            }
            return;
        }
        pos += 4 + ((size_t)len + 3) / 4 * 4;
    }
}

/* One frame read: classify it and, for a mobility packet, append it. */
static int take(kbm_capture *c, size_t start, size_t caplen, uint64_t origlen, uint32_t linktype,
                int64_t us, kbm_cap_out *o, size_t n)
{
    int64_t ip = kbm_cap_ipv6_start(c->buf, start, caplen, linktype);
    int64_t len = ip < 0 ? -1
                         : kbm_cap_mobility_length(c->buf + ip, start + caplen - (size_t)ip);
    if (len < 0) {
        c->other++;
        return 0;
    }
    /* cut by the snap length: the frame was longer than captured, and the IPv6 packet is
       shorter than its Payload Length says (len >= 40: mobility_length checked it) */
    const uint8_t *h = c->buf + ip;
    int cut = origlen > caplen && (uint64_t)len < 40u + ((uint64_t)h[4] << 8 | h[5]);
    c->cut += (uint64_t)cut;
    if (o->cut)
        o->cut[n] = (uint8_t)cut;
    o->ip_off[n] = (uint64_t)ip;
    o->ip_len[n] = (uint32_t)len;
    o->frame[n] = c->frames;
    o->time_us[n] = us;
    return 1;
}

static size_t walk_pcap(kbm_capture *c, kbm_cap_out *o, size_t max, uint64_t max_bytes,
                        uint64_t *bytes)
{
    const uint8_t *buf = c->buf;
    size_t size = c->size, n = 0;
    int big = c->big_endian;
    while (c->pos < size && n < max) {
        size_t pos = c->pos;
        uint64_t frame = c->frames + 1;
        if (c->max_frames && c->frames >= c->max_frames) {
            c->done = 1;
            return n;
        }
        if (size - pos < 16) {
            if (!more(c, 16))
                damage(c, KBM_CAP_E_RECORD_TRUNCATED, frame, size - pos, 0);
            return n;
        }
        uint32_t sec = rd32(buf + pos, big), frac = rd32(buf + pos + 4, big);
        uint32_t caplen = rd32(buf + pos + 8, big), origlen = rd32(buf + pos + 12, big);
        if (caplen > KBM_CAP_MAX_CAPLEN) {
            damage(c, KBM_CAP_E_RECORD_CAPLEN, frame, caplen, 0);
            return n;
        }
        if (caplen > size - pos - 16) {
            if (!more(c, 16 + (uint64_t)caplen))
                damage(c, KBM_CAP_E_RECORD_PAST_END, frame, caplen, size - pos - 16);
            return n;
        }
        uint32_t second = c->nanoseconds ? 1000000000u : 1000000u;
        if (frac >= second) { /* not a time: its fraction of a second is a second or more */
            damage(c, KBM_CAP_E_RECORD_FRACTION, frame, frac, second);
            return n;
        }
        /* a packet that would overflow the byte budget waits for the next chunk */
        if (*bytes && max_bytes) {
            int64_t ip = kbm_cap_ipv6_start(buf, pos + 16, caplen, c->linktype);
            if (ip >= 0 && *bytes + (uint64_t)(pos + 16 + caplen - (size_t)ip) > max_bytes)
                return n;
        }
        c->frames = frame;
        c->pos = pos + 16 + caplen;
        int64_t us = (int64_t)sec * 1000000 + (c->nanoseconds ? frac / 1000 : frac);
        if (take(c, pos + 16, caplen, origlen, c->linktype, us, o, n))
            *bytes += o->ip_len[n++];
    }
    at_end(c);
    return n;
}

static size_t walk_pcapng(kbm_capture *c, kbm_cap_out *o, size_t max, uint64_t max_bytes,
                          uint64_t *bytes)
{
    const uint8_t *buf = c->buf;
    size_t size = c->size, n = 0;
    while (c->pos < size && n < max) {
        size_t pos = c->pos;
        uint64_t where = c->frames + 1;
        if (c->max_frames && c->frames >= c->max_frames) {
            c->done = 1;
            return n;
        }
        if (size - pos < 12) {
            if (!more(c, 12))
                damage(c, KBM_CAP_E_BLOCK_TRUNCATED, where, size - pos, 0);
            return n;
        }
        int big = c->big_endian;
        uint32_t btype = rd32(buf + pos, big);
        if (btype == PCAPNG_SHB) {
            const uint8_t *bom = buf + pos + 8;
            if (bom[0] == 0x4d && bom[1] == 0x3c && bom[2] == 0x2b && bom[3] == 0x1a)
                big = 0;
            else if (bom[0] == 0x1a && bom[1] == 0x2b && bom[2] == 0x3c && bom[3] == 0x4d)
                big = 1;
            else {
                damage(c, KBM_CAP_E_SHB_BOM, where, 0, 0);
                return n;
            }
            /* committed only once the block is whole (a retry would otherwise differ) */
        }
        uint32_t total = rd32(buf + pos + 4, big);
        if (total < 12 || total % 4) {
            damage(c, KBM_CAP_E_BLOCK_LENGTH, where, total, 0);
            return n;
        }
        if (total > size - pos) {
            if (!more(c, total))
                damage(c, KBM_CAP_E_BLOCK_PAST_END, where, total, size - pos);
            return n;
        }
        if (rd32(buf + pos + total - 4, big) != total) {
            damage(c, KBM_CAP_E_BLOCK_TRAILER, where, 0, 0);
            return n;
        }
        size_t body = pos + 8, body_len = (size_t)total - 12;
        if (btype == PCAPNG_SHB) {
            c->big_endian = big;
            c->n_ifaces = 0;
        } else if (btype == 1) {
            if (body_len < 8) {
                damage(c, KBM_CAP_E_IDB_SHORT, where, 0, 0);
                return n;
            }
            if (c->n_ifaces == c->cap_ifaces) {
                c->need_ifaces = 1; /* the caller gives a larger table and calls again */
                return n;
            }
            kbm_cap_iface *f = &c->ifaces[c->n_ifaces];
            f->linktype = rd16(buf + body, big);
            set_tsresol(f, buf, body + 8, body + body_len, big);
            c->n_ifaces++;
        } else if (btype == 6 || btype == 2 || btype == 3) {
            uint64_t frame = c->frames + 1;
            size_t iface, caplen, data;
            uint64_t ts = 0, origlen;
            if (btype == 3) {
                if (body_len < 4) {
                    damage(c, KBM_CAP_E_SPB_SHORT, frame, 0, 0);
                    return n;
                }
                iface = 0;
                caplen = rd32(buf + body, big);
                origlen = caplen; /* an SPB holds the original length; the block, what fits */
                if (caplen > body_len - 4)
                    caplen = body_len - 4;
                data = body + 4;
            } else {
                if (body_len < 20) {
                    damage(c, KBM_CAP_E_PB_SHORT, frame, 0, 0);
                    return n;
                }
                if (btype == 6) {
                    iface = rd32(buf + body, big);
                    ts = (uint64_t)rd32(buf + body + 4, big) << 32 | rd32(buf + body + 8, big);
                } else {
                    iface = rd16(buf + body, big);
                    ts = (uint64_t)rd32(buf + body + 4, big) << 32 | rd32(buf + body + 8, big);
                }
                caplen = rd32(buf + body + 12, big);
                origlen = rd32(buf + body + 16, big);
                data = body + 20;
                if (caplen > body_len - 20) {
                    damage(c, KBM_CAP_E_PB_CAPLEN, frame, caplen, body_len - 20);
                    return n;
                }
            }
            if (iface >= c->n_ifaces) {
                damage(c, KBM_CAP_E_IFACE, frame, iface, 0);
                return n;
            }
            const kbm_cap_iface *f = &c->ifaces[iface];
            int64_t us = 0;
            if (btype != 3 && !scale_time(f, ts, &us)) {
                damage(c, KBM_CAP_E_TIME, frame, ts, 0);
                return n;
            }
            if (*bytes && max_bytes) {
                int64_t ip = kbm_cap_ipv6_start(buf, data, caplen, f->linktype);
                if (ip >= 0 && *bytes + (uint64_t)(data + caplen - (size_t)ip) > max_bytes)
                    return n;
            }
            c->frames = frame;
            c->pos = pos + total;
            if (take(c, data, caplen, origlen, f->linktype, us, o, n))
                *bytes += o->ip_len[n++];
            continue;
        }
        c->pos = pos + total;
    }
    at_end(c);
    return n;
}

size_t kbm_capture_walk(kbm_capture *c, kbm_cap_out *out, size_t max, uint64_t max_bytes)
{
    size_t n = 0;
    c->need_ifaces = 0;
    c->need_more = 0;
    c->need = 0;
    if (c->done || max == 0)
        return 0;
    if (c->format == KBM_CAP_PCAP)
        n = walk_pcap(c, out, max, max_bytes, &c->walked_bytes);
    else if (c->format == KBM_CAP_PCAPNG)
        n = walk_pcapng(c, out, max, max_bytes, &c->walked_bytes);
    else
        c->done = 1;
    return n;
}

int kbm_capture_gather(const uint8_t *buf, size_t size, const uint64_t *ip_off,
                       const uint32_t *ip_len, size_t n, uint8_t *data, size_t data_len,
                       uint64_t *offsets)
{
    uint64_t start = offsets[0]; /* read once */
    if (start > data_len)
        return KBM_EINVAL;
    size_t at = (size_t)start;
    for (size_t i = 0; i < n; i++) {
        uint64_t from = ip_off[i]; /* each read once: checked, then used */
        size_t len = ip_len[i];
        if (from > size || len > size - from || len > data_len - at)
            return KBM_EINVAL;
        memcpy(data + at, buf + from, len);
        at += len;
        offsets[i + 1] = at;
    }
    return KBM_OK;
}

/* ---- what the lines of `kbmfast verify` show (format.c writes them) ---- */

static size_t find_option(const uint8_t *p, size_t pos, size_t end, uint8_t want,
                          uint8_t want_len, int *found)
{
    *found = 0;
    while (pos < end) {
        uint8_t t = p[pos];
        if (t == 0) {
            pos++;
            continue;
        }
        if (pos + 1 >= end)
            return 0;
        uint8_t n = p[pos + 1];
        if (t == want && n == want_len && pos + 2 + n <= end) {
            *found = 1;
            return pos;
        }
        pos += 2 + (size_t)n;
    }
    return 0;
}

int kbm_packet_fields(const uint8_t *p, size_t length, kbm_fields *f)
{
    memset(f, 0, sizeof *f);
    f->mh_type = -1;
    if (length < 40)
        return KBM_EINVAL;
    unsigned nh = p[6];
    size_t pos = 40, hao = 0, rh2 = 0;
    int has_hao = 0;
    for (int k = 0; k < MAX_EXT; k++) {
        if ((nh != 0 && nh != 43 && nh != 60) || pos + 2 > length)
            break;
        size_t next = pos + ((size_t)p[pos + 1] + 1) * 8;
        if (nh == 60 && !has_hao)
            hao = find_option(p, pos + 2, next < length ? next : length, 0xC9, 16, &has_hao);
        if (nh == 43 && !rh2 && pos + 24 <= length && p[pos + 2] == 2)
            rh2 = pos + 8;
        nh = p[pos];
        pos = next;
    }
    f->home = has_hao ? (int32_t)(hao + 2) : 8;
    f->care_of = 8;
    if (nh != NH_MH || pos + 3 > length)
        return 0;
    f->mh_type = p[pos + 2];
    if (f->mh_type == 6) {
        f->home = rh2 ? (int32_t)rh2 : 24;
        f->care_of = 24;
        if (pos + 12 <= length) {
            f->flags = p[pos + 6];
            f->seq = rd16(p + pos + 8, 1);
            f->units = rd16(p + pos + 10, 1);
        }
        return 0;
    }
    if (f->mh_type != 5 || pos + 12 > length)
        return 0;
    f->seq = rd16(p + pos + 6, 1);
    f->flags = rd16(p + pos + 8, 1);
    f->units = rd16(p + pos + 10, 1);
    size_t end = pos + ((size_t)p[pos + 1] + 1) * 8;
    int has_alt;
    size_t alt = find_option(p, pos + 12, end < length ? end : length, 3, 16, &has_alt);
    if (has_alt)
        f->care_of = (int32_t)(alt + 2);
    return 0;
}

int kbm_malformed_reason(const uint8_t *p, size_t n, uint32_t *where)
{
    kbm_layout l;
    *where = 0;
    int rc = kbm_scan(p, n, &l, where);
    if (rc)
        return rc;
    if (l.hao >= 0 && !kbm_is_routable(p + l.hao)) {
        *where = (uint32_t)l.hao - 2;
        return KBM_WHY_HAO_NOT_ROUTABLE;
    }
    if (l.rh2 >= 0) {
        *where = (uint32_t)l.rh2 - 8;
        return KBM_WHY_ROUTING_HEADER;
    }
    if (!kbm_checksum_ok(p, n, &l))
        return 0;
    rc = kbm_parse_mh(p, n, &l, NULL, 0, NULL, where);
    if (rc == KBM_UNKNOWN_MH || (rc == 0 && l.mh_type != 5))
        return 0;
    if (rc)
        return rc;
    int32_t home = l.hao >= 0 ? l.hao : 8, care_of = l.alt >= 0 ? l.alt : 8;
    *where = 8;
    if (!kbm_is_unicast(p + 8))
        return KBM_WHY_SOURCE_NOT_UNICAST;
    *where = (uint32_t)home;
    if (!kbm_is_routable(p + home))
        return KBM_WHY_HOME_NOT_ROUTABLE;
    *where = (uint32_t)care_of;
    if (!kbm_is_routable(p + care_of))
        return KBM_WHY_CARE_OF_NOT_ROUTABLE;
    *where = 0;
    if (l.bad < 0)
        return 0;
    if ((p[l.mh + 8] & 0x40) && l.nonce >= 0) {
        *where = (uint32_t)l.nonce - 2;
        return KBM_WHY_NONCE_IN_HOME_REGISTRATION;
    }
    return 0;
}
/* ---- --acks-out: the Binding Acknowledgements (kbmfast.reference.verifier.acknowledge) ---- */

_Static_assert(sizeof(kbm_mac_key) == sizeof(((kbm_ack_peer *)0)->mid), "midstates fit");

size_t kbm_ack_slot(const kbm_ack_peer *peers, size_t slots, const uint8_t home[16])
{
    if (slots == 0 || (slots & (slots - 1)))
        return SIZE_MAX;
    size_t s = kbm_addr_slot_of(home, slots);
    for (size_t k = 0; k < slots; k++, s = (s + 1) & (slots - 1))
        if (!peers[s].peer.kind || memcmp(peers[s].peer.home, home, 16) == 0)
            return s;
    return SIZE_MAX;
}

static void le32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)v, o[1] = (uint8_t)(v >> 8), o[2] = (uint8_t)(v >> 16), o[3] = (uint8_t)(v >> 24);
}

#define PCAP_MAX_US ((int64_t)0xFFFFFFFF * 1000000 + 999999)

size_t kbm_write_acks(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                      const int64_t *times, const uint8_t *verdicts, size_t n,
                      kbm_ack_peer *peers, size_t slots, uint32_t max_lifetime, uint8_t *out,
                      size_t out_len, size_t *written, uint64_t *count, uint64_t *clamped)
{
    uint8_t *o = out;
    size_t i = 0;
    *written = 0;
    for (; i < n; i++) {
        if ((size_t)(out + out_len - o) < KBM_ACK_RECORD_MAX)
            break;
        uint64_t from = offsets[i], to = offsets[i + 1];
        if (from > to || to > buf_len)
            break;
        unsigned v = verdicts[i];
        int status;
        switch (v) {
        case KBM_ACCEPTED: status = 0; break;
        case KBM_SEQUENCE_OUT_OF_WINDOW: status = 135; break;
        case KBM_HOME_REGISTRATION: status = 131; break;
        case KBM_INVALID_CARE_OF: status = 174; break;
        case KBM_KEY_EXHAUSTED: status = 129; break;
        default: continue;
        }
        const uint8_t *p = buf + from;
        size_t len = (size_t)(to - from);
        kbm_fields f;
        if (kbm_packet_fields(p, len, &f) || f.mh_type != 5)
            continue; /* not what the verifier judged: a caller's mistake, no answer */
        const uint8_t *home = p + f.home, *care_of = p + f.care_of, *cn = p + 24, *dst = p + 8;
        size_t s = kbm_ack_slot(peers, slots, home);
        kbm_ack_peer *entry = s == SIZE_MAX || !peers[s].peer.kind ? NULL : &peers[s];
        const kbm_peer_spec *peer = entry ? &entry->peer : NULL;
        if (v == KBM_ACCEPTED) {
            if (entry)
                entry->last = f.seq;
            if (!(f.flags & 0x8000))
                continue;
        }
        if (!peer)
            continue;
        uint16_t seq = f.seq;
        if (status == 135) {
            if (entry->last < 0)
                continue;
            seq = (uint16_t)entry->last;
        }
        int dereg = f.units == 0;
        kbm_mac_key key;
        if (peer->kind == KBM_KIND_KCN) {
            uint8_t kbm[KBM_SIZE];
            int bad = kbm_derive(peer->key, peer->key_len, peer->home_nonce,
                                 peer->home_nonce_len, peer->care_of_nonce,
                                 peer->care_of_nonce_len, home, care_of, dereg, kbm);
            if (!bad)
                kbm_mac_key_init(&key, kbm, KBM_SIZE);
            kbm_wipe(kbm, sizeof kbm);
            if (bad)
                continue;
        } else if (peer->key_len == KBM_SIZE) {
            if (!entry->ready) { /* the midstates once per peer: two compressions per ack saved */
                kbm_mac_key_init(&key, peer->key, KBM_SIZE);
                memcpy(entry->mid, &key, sizeof entry->mid);
                entry->ready = 1;
            } else
                memcpy(&key, entry->mid, sizeof key);
        } else
            continue;
        uint32_t lifetime = 0;
        if (status < 128) {
            lifetime = (uint32_t)f.units * 4;
            if (lifetime > max_lifetime)
                lifetime = max_lifetime;
        }
        uint32_t units = lifetime / 4;
        int via_rh2 = memcmp(dst, home, 16) != 0;
        size_t plen = (via_rh2 ? 24u : 0u) + 32u, total = 40 + plen;
        int64_t t = times[i];
        if (t < 0 || t > PCAP_MAX_US) {
            t = t < 0 ? 0 : PCAP_MAX_US;
            (*clamped)++;
        }
        le32(o, (uint32_t)(t / 1000000));
        le32(o + 4, (uint32_t)(t % 1000000));
        le32(o + 8, (uint32_t)total);
        le32(o + 12, (uint32_t)total);
        uint8_t *ip = o + 16;
        memset(ip, 0, total);
        ip[0] = 0x60;
        ip[4] = (uint8_t)(plen >> 8), ip[5] = (uint8_t)plen;
        ip[6] = via_rh2 ? 43 : NH_MH;
        ip[7] = 64;
        memcpy(ip + 8, cn, 16);
        memcpy(ip + 24, dst, 16);
        uint8_t *mh = ip + 40;
        if (via_rh2) {
            mh[0] = NH_MH, mh[1] = 2, mh[2] = 2, mh[3] = 1;
            memcpy(mh + 8, home, 16);
            mh += 24;
        }
        mh[0] = 59, mh[1] = 3, mh[2] = 6;
        mh[6] = (uint8_t)status;
        mh[8] = (uint8_t)(seq >> 8), mh[9] = (uint8_t)seq;
        mh[10] = (uint8_t)(units >> 8), mh[11] = (uint8_t)units;
        mh[12] = 1, mh[13] = 4; /* PadN: the BAD option at 8n + 2 */
        mh[18] = 5, mh[19] = 12;
        kbm_mac96(&key, dereg ? home : care_of, ip + 8, mh, 32, mh + 20);
        kbm_wipe(&key, sizeof key);
        uint16_t sum = kbm_mh_checksum(ip + 8, home, mh, 32);
        mh[4] = (uint8_t)(sum >> 8), mh[5] = (uint8_t)sum;
        o += 16 + total;
        (*count)++;
    }
    *written = (size_t)(o - out);
    return i;
}
