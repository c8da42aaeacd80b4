/* Live capture through libpcap: frames go straight into a verify batch and through kbm_verify,
   in one call that releases the GIL (cffi does) and costs no Python per packet.

   A batch is handed on when it holds `max` packets, when the buffer could not hold one more
   snaplen, or max_delay_us after its first packet arrived; a call that sees no mobility packet
   returns empty after idle_ms, so the caller can look at its signals. The link-layer header of
   each frame is kept (kbm_live_meta) so that an answer can go back the way the frame came. */
#define _GNU_SOURCE /* ppoll; the BSD types pcap.h uses */
#include "hash.h"
#include "internal.h"
#include "kbm.h"

#include <errno.h>
#include <linux/if_packet.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

enum { DLT_ETH = 1, DLT_RAW_IP = 101, DLT_RAW12 = 12, DLT_RAW14 = 14, DLT_IPV6_ = 229 };

struct kbm_live {
    pcap_t *p;
    int fd;
    int linktype;
    size_t snaplen;
};

static void set_error(char *errbuf, const char *what, const char *detail)
{
    if (detail && strcmp(detail, what) == 0)
        detail = NULL;
    if (errbuf)
        snprintf(errbuf, KBM_LIVE_ERRBUF, "%s%s%s", what, detail && *detail ? ": " : "",
                 detail ? detail : "");
}

static int activate_status(int rc)
{
    switch (rc) {
    case PCAP_ERROR_NO_SUCH_DEVICE:
        return KBM_LIVE_ENODEV;
    case PCAP_ERROR_PERM_DENIED:
    case PCAP_ERROR_PROMISC_PERM_DENIED:
        return KBM_LIVE_EPERM;
    default:
        return KBM_LIVE_EPCAP;
    }
}

kbm_live *kbm_live_open(const char *device, const char *filter, int snaplen, int buffer_bytes,
                        int inbound_only, int fanout_group, char *errbuf, int *status)
{
    char perr[PCAP_ERRBUF_SIZE] = "";
    *status = KBM_LIVE_EPCAP;
    if (snaplen < 128 || snaplen > KBM_CAP_MAX_CAPLEN || buffer_bytes < 0) {
        *status = KBM_EINVAL;
        set_error(errbuf, "invalid snaplen or buffer size", NULL);
        return NULL;
    }
    kbm_live *l = calloc(1, sizeof *l);
    if (!l) {
        *status = KBM_ENOMEM;
        set_error(errbuf, "out of memory", NULL);
        return NULL;
    }
    l->snaplen = (size_t)snaplen;
    l->p = pcap_create(device, perr);
    if (!l->p) {
        set_error(errbuf, "pcap_create", perr);
        free(l);
        return NULL;
    }
    pcap_set_snaplen(l->p, snaplen);
    pcap_set_promisc(l->p, 0);
    pcap_set_immediate_mode(l->p, 1);
    if (buffer_bytes > 0)
        pcap_set_buffer_size(l->p, buffer_bytes);
    int rc = pcap_activate(l->p);
    if (rc < 0) {
        *status = activate_status(rc);
        set_error(errbuf, pcap_statustostr(rc), pcap_geterr(l->p));
        goto fail;
    }
    l->linktype = pcap_datalink(l->p);
    struct bpf_program prog;
    if (pcap_compile(l->p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) < 0) {
        *status = KBM_LIVE_EFILTER;
        set_error(errbuf, "filter", pcap_geterr(l->p));
        goto fail;
    }
    rc = pcap_setfilter(l->p, &prog);
    pcap_freecode(&prog);
    if (rc < 0) {
        *status = KBM_LIVE_EFILTER;
        set_error(errbuf, "filter", pcap_geterr(l->p));
        goto fail;
    }
    if (inbound_only && pcap_setdirection(l->p, PCAP_D_IN) < 0) {
        set_error(errbuf, "pcap_setdirection", pcap_geterr(l->p));
        goto fail;
    }
    if (pcap_setnonblock(l->p, 1, perr) < 0) {
        set_error(errbuf, "pcap_setnonblock", perr);
        goto fail;
    }
    l->fd = pcap_get_selectable_fd(l->p);
    if (l->fd < 0) {
        set_error(errbuf, "no selectable descriptor for this device", NULL);
        goto fail;
    }
    if (fanout_group >= 0) {
        /* unsigned: the DEFRAG flag is 0x8000, shifted into the sign bit */
        unsigned val = ((unsigned)fanout_group & 0xFFFFu) | (unsigned)(PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16;
        if (setsockopt(pcap_fileno(l->p), SOL_PACKET, PACKET_FANOUT, &val, sizeof val) < 0) {
            set_error(errbuf, "PACKET_FANOUT", strerror(errno));
            goto fail;
        }
    }
    *status = 0;
    return l;
fail:
    pcap_close(l->p);
    free(l);
    return NULL;
}

int kbm_live_linktype(const kbm_live *l)
{
    return l->linktype;
}

void kbm_live_close(kbm_live *l)
{
    if (l) {
        pcap_close(l->p);
        free(l);
    }
}

typedef struct {
    const kbm_live *l;
    uint8_t *buf;
    size_t buf_len;
    uint64_t *offsets;
    size_t n;
    kbm_live_meta *meta;
    kbm_live_stats *st;
} batch_ctx;

static void on_frame(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes)
{
    batch_ctx *c = (batch_ctx *)(void *)user;
    c->st->frames++;
    size_t caplen = h->caplen;
    int64_t ip = kbm_cap_ipv6_start(bytes, 0, caplen, (uint32_t)c->l->linktype);
    int64_t len = -1;
    if (ip >= 0 && ip <= KBM_LIVE_LINK_MAX)
        len = kbm_cap_mobility_length(bytes + ip, caplen - (size_t)ip);
    if (len < 0) {
        c->st->other++;
        return;
    }
    uint64_t at = c->offsets[c->n];
    if ((uint64_t)len > c->buf_len - at) { /* not reached: a batch stops a snaplen short */
        c->st->other++;
        return;
    }
    memcpy(c->buf + at, bytes + ip, (size_t)len);
    c->offsets[c->n + 1] = at + (uint64_t)len;
    kbm_live_meta *m = &c->meta[c->n];
    m->time_us = (int64_t)h->ts.tv_sec * 1000000 + (int64_t)h->ts.tv_usec;
    m->frame = c->st->frames;
    m->link_len = (uint8_t)ip;
    memcpy(m->link, bytes, (size_t)ip);
    c->n++;
}

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int kbm_live_batch(kbm_live *l, kbm_verifier *v, uint8_t *buf, size_t buf_len,
                   uint64_t *offsets, size_t max, kbm_live_meta *meta, uint8_t *verdicts,
                   kbm_detail *details, uint32_t max_delay_us, uint32_t idle_ms,
                   kbm_live_stats *st, char *errbuf)
{
    batch_ctx c = {l, buf, buf_len, offsets, 0, meta, st};
    offsets[0] = 0;
    int64_t idle_end = now_us() + (int64_t)idle_ms * 1000, deadline = -1;
    for (;;) {
        size_t room = (buf_len - (size_t)offsets[c.n]) / l->snaplen;
        size_t want = max - c.n < room ? max - c.n : room;
        if (want == 0)
            break;
        int r = pcap_dispatch(l->p, want > 1000000 ? 1000000 : (int)want, on_frame, (u_char *)&c);
        if (r < 0) {
            set_error(errbuf, "capture", r == PCAP_ERROR_BREAK ? "interrupted" : pcap_geterr(l->p));
            return KBM_LIVE_EPCAP;
        }
        int64_t now = now_us();
        if (c.n > 0 && deadline < 0)
            deadline = now + max_delay_us;
        int64_t end = deadline >= 0 ? deadline : idle_end;
        if (now >= end)
            break;
        if (r > 0)
            continue;
        int64_t wait = end - now;
        struct timespec ts = {(time_t)(wait / 1000000), (long)(wait % 1000000) * 1000};
        struct pollfd pfd = {l->fd, POLLIN, 0};
        if (ppoll(&pfd, 1, &ts, NULL) < 0 && errno != EINTR) {
            set_error(errbuf, "poll", strerror(errno));
            return KBM_LIVE_EPCAP;
        }
        if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) {
            set_error(errbuf, "capture", "the interface went away");
            return KBM_LIVE_EPCAP;
        }
    }
    if (c.n == 0)
        return 0;
    st->packets += c.n;
    st->batches++;
    if (v) {
        size_t where;
        int rc = kbm_verify(v, buf, (size_t)offsets[c.n], offsets, c.n, verdicts, details, &where);
        if (rc < 0) {
            set_error(errbuf, "verify", "bad offsets");
            return rc;
        }
    }
    return (int)c.n;
}

/* The frame that carries pkt back the way the frame described by m came, into frame (cap
   bytes): its length, or a negative status. */
static int64_t frame_for(const kbm_live *l, const kbm_live_meta *m, const uint8_t *pkt,
                         size_t len, uint8_t *frame, size_t cap)
{
    size_t hdr = 0;
    if (l->linktype == DLT_ETH) {
        if (m->link_len < 14 || m->link_len > KBM_LIVE_LINK_MAX)
            return KBM_EINVAL;
        memcpy(frame, m->link + 6, 6); /* to the frame's source */
        memcpy(frame + 6, m->link, 6); /* from the address it was sent to */
        memcpy(frame + 12, m->link + 12, (size_t)m->link_len - 12); /* tags, EtherType */
        hdr = m->link_len;
    } else if (l->linktype != DLT_RAW_IP && l->linktype != DLT_RAW12 && l->linktype != DLT_RAW14 &&
               l->linktype != DLT_IPV6_) {
        return KBM_LIVE_ELINK;
    }
    if (len > cap - hdr)
        return KBM_EINVAL;
    memcpy(frame + hdr, pkt, len);
    return (int64_t)(hdr + len);
}

int kbm_live_send(kbm_live *l, const kbm_live_meta *m, const uint8_t *pkt, size_t len,
                  kbm_live_stats *st)
{
    uint8_t frame[KBM_LIVE_LINK_MAX + KBM_MH_MAX + 512];
    int64_t n = frame_for(l, m, pkt, len, frame, sizeof frame);
    if (n < 0)
        return (int)n;
    if (pcap_inject(l->p, frame, (size_t)n) < 0) {
        st->send_errors++;
        return KBM_LIVE_EPCAP;
    }
    st->sent++;
    return 0;
}

int kbm_live_can_send(const kbm_live *l)
{
    return l->linktype == DLT_ETH || l->linktype == DLT_RAW_IP || l->linktype == DLT_RAW12 ||
           l->linktype == DLT_RAW14 || l->linktype == DLT_IPV6_;
}

int kbm_live_pcap_stats(kbm_live *l, kbm_live_stats *st)
{
    struct pcap_stat ps;
    if (pcap_stats(l->p, &ps) < 0)
        return KBM_LIVE_EPCAP;
    st->ps_recv = ps.ps_recv;
    st->ps_drop = ps.ps_drop;
    st->ps_ifdrop = ps.ps_ifdrop;
    return 0;
}

enum { BA_MH_LEN = 32 }; /* a BA's Mobility Header, the last bytes of its packet */

/* The BA kbm_build_ack builds, but for its authenticator and checksum (zero): its length. */
static size_t build_ack_unsigned(const uint8_t home[16], const uint8_t cn[16],
                                 const uint8_t dest[16], uint8_t status, uint16_t sequence,
                                 uint16_t units, uint8_t out[KBM_ACK_MAX])
{
    enum { MH_LEN = BA_MH_LEN, RH2_LEN = 24 };
    int routed = memcmp(dest, home, 16) != 0;
    size_t ext = routed ? RH2_LEN : 0, payload = ext + MH_LEN;
    uint8_t *ip = out, *mh = out + 40 + ext;
    memset(out, 0, 40 + payload);
    ip[0] = 0x60;
    ip[4] = (uint8_t)(payload >> 8);
    ip[5] = (uint8_t)payload;
    ip[6] = routed ? 43 : 135;
    ip[7] = 64;
    memcpy(ip + 8, cn, 16);
    memcpy(ip + 24, dest, 16);
    if (routed) { /* type 2 Routing header: the home address, one segment left */
        uint8_t *rh = out + 40;
        rh[0] = 135;
        rh[1] = 2;
        rh[2] = 2;
        rh[3] = 1;
        memcpy(rh + 8, home, 16);
    }
    /* BA: no next header, length, type 6, status, K = 0, sequence, lifetime; PadN(6) so that
       the Binding Authorization Data option starts at 8n+2 and ends the header */
    mh[0] = 59;
    mh[1] = MH_LEN / 8 - 1;
    mh[2] = 6;
    mh[6] = status;
    mh[8] = (uint8_t)(sequence >> 8);
    mh[9] = (uint8_t)sequence;
    mh[10] = (uint8_t)(units >> 8);
    mh[11] = (uint8_t)units;
    mh[12] = 1;
    mh[13] = 4;
    mh[18] = 5;
    mh[19] = KBM_AUTH_SIZE;
    return 40 + payload;
}

/* The checksum of a BA's Mobility Header once its authenticator is in (from cn to home). */
static void ack_checksum(uint8_t mh[BA_MH_LEN], const uint8_t cn[16], const uint8_t home[16])
{
    uint16_t sum = kbm_mh_checksum(cn, home, mh, BA_MH_LEN);
    mh[4] = (uint8_t)(sum >> 8);
    mh[5] = (uint8_t)sum;
}

/* kbm_build_ack with the key's midstates (a verifier's peer key, read in place). */
static size_t build_ack(const kbm_mac_key *key, const uint8_t home[16],
                        const uint8_t mac_care_of[16], const uint8_t cn[16],
                        const uint8_t dest[16], uint8_t status, uint16_t sequence,
                        uint16_t units, uint8_t out[KBM_ACK_MAX])
{
    size_t len = build_ack_unsigned(home, cn, dest, status, sequence, units, out);
    uint8_t *mh = out + len - BA_MH_LEN;
    kbm_mac96(key, mac_care_of, cn, mh, BA_MH_LEN, mh + 20);
    ack_checksum(mh, cn, home);
    return len;
}

size_t kbm_build_ack(const uint8_t kbm[KBM_SIZE], const uint8_t home[16],
                     const uint8_t mac_care_of[16], const uint8_t cn[16], const uint8_t dest[16],
                     uint8_t status, uint16_t sequence, uint16_t units, uint8_t out[KBM_ACK_MAX])
{
    kbm_mac_key k;
    kbm_mac_key_init(&k, kbm, KBM_SIZE);
    size_t n = build_ack(&k, home, mac_care_of, cn, dest, status, sequence, units, out);
    kbm_wipe(&k, sizeof k);
    return n;
}

int kbm_live_answer(kbm_live *l, const kbm_live_meta *m, const uint8_t kbm[KBM_SIZE],
                    const uint8_t home[16], const uint8_t mac_care_of[16], const uint8_t cn[16],
                    const uint8_t dest[16], uint8_t status, uint16_t sequence, uint16_t units,
                    kbm_live_stats *st)
{
    uint8_t ba[KBM_ACK_MAX];
    size_t n = kbm_build_ack(kbm, home, mac_care_of, cn, dest, status, sequence, units, ba);
    if (n == 0)
        return KBM_EINVAL;
    return kbm_live_send(l, m, ba, n, st);
}

/* Up to ACK_BURST frames go out in one sendmmsg. */
#define ACK_BURST 64
_Static_assert(KBM_LIVE_LINK_MAX + KBM_ACK_MAX <= KBM_LIVE_FRAME_MAX, "a BA's frame fits");

/* The BAs of kbm_live_ack waiting for their MACs: signed ACK_BURST at a time by
   kbm_mac96_batch (the verifier's multi-buffer kernels), then checksummed. */
typedef struct {
    kbm_mac96_req req[ACK_BURST];
    const uint8_t *home[ACK_BURST];
    kbm_mac_key derived[ACK_BURST]; /* RFC 4449 keys derived for the care-of address */
    size_t n;
} ack_pending;

static void sign_pending(ack_pending *a)
{
    kbm_mac96_batch(a->req, a->n);
    for (size_t j = 0; j < a->n; j++)
        ack_checksum((uint8_t *)a->req[j].mh, a->req[j].cn, a->home[j]);
    kbm_wipe(a->derived, sizeof a->derived);
    a->n = 0;
}

size_t kbm_live_ack(kbm_live *l, kbm_verifier *v, const uint8_t *buf, size_t buf_len,
                    const uint64_t *offsets, size_t n, const kbm_live_meta *meta,
                    const uint8_t *verdicts, const kbm_detail *details, uint32_t max_lifetime,
                    kbm_live_accept *out, uint8_t *handled, uint8_t *frames, uint32_t *frame_lens,
                    size_t *n_frames, kbm_live_stats *st)
{
    size_t m = 0, k = 0;
    ack_pending pending;
    pending.n = 0;
    uint32_t g = kbm_read_begin(v);
    const struct kbm_index *x = atomic_load(&v->index);
    for (size_t i = 0; i < n; i++) {
        handled[i] = 0;
        const kbm_detail *d = &details[i];
        if (verdicts[i] != KBM_ACCEPTED || d->home < 0 || d->care_of < 0 || d->nonce >= 0)
            continue;
        uint64_t at = offsets[i], end = offsets[i + 1];
        if (end < at || end > buf_len || end - at < 40 || (uint64_t)d->home + 16 > end - at ||
            (uint64_t)d->care_of + 16 > end - at)
            continue; /* not reached: kbm_verify gave these offsets */
        const uint8_t *p = buf + at, *home = p + d->home, *care_of = p + d->care_of;
        if (v->compat && d->lifetime != 0 && memcmp(home, care_of, 16) == 0)
            continue; /* an RFC 3775 de-registration: kbmfast.serve_rr derives its key */
        kbm_live_accept *r = &out[m++];
        handled[i] = 1;
        memcpy(r->home, home, 16);
        memcpy(r->care_of, care_of, 16);
        r->index = (uint32_t)i;
        uint32_t lifetime = (uint32_t)d->lifetime * 4;
        r->granted = lifetime < max_lifetime ? lifetime : max_lifetime;
        r->sequence = d->sequence;
        r->ack = 0;
        r->pad = 0;
        if (!(d->flags & 0x8000)) /* no A flag: no acknowledgement */
            continue;
        r->ack = 2;
        const struct kbm_peer *peer = kbm_index_find(x, kbm_hash16(v->seed, home), home);
        if (!peer) /* removed since the batch was verified (SIGHUP) */
            continue;
        int dereg = d->lifetime == 0;
        uint8_t ba[KBM_ACK_MAX];
        size_t len = build_ack_unsigned(home, p + 24, p + 8, 0, d->sequence,
                                        (uint16_t)(r->granted / 4), ba);
        uint8_t *frame = frames + k * KBM_LIVE_FRAME_MAX;
        int64_t fl = frame_for(l, &meta[i], ba, len, frame, KBM_LIVE_FRAME_MAX);
        if (fl < 0) {
            st->send_errors++;
            continue;
        }
        size_t j = pending.n++;
        const kbm_mac_key *key = &peer->key;
        struct kbm_kcn *kcn = x->kcn[peer - x->peers]; /* RFC 4449: the side array */
        if (kcn && !dereg) {
            kbm_kcn_key(kcn, care_of, &pending.derived[j]);
            key = &pending.derived[j];
        }
        uint8_t *mh = frame + fl - BA_MH_LEN;
        pending.req[j] = (kbm_mac96_req){key, dereg ? home : care_of, p + 24, mh, BA_MH_LEN, mh + 20};
        pending.home[j] = home;
        if (pending.n == ACK_BURST)
            sign_pending(&pending);
        r->ack = 1;
        frame_lens[k++] = (uint32_t)fl;
    }
    if (pending.n)
        sign_pending(&pending);
    kbm_read_end(v, g);
    *n_frames = k;
    return m;
}

size_t kbm_live_withdraw(const kbm_live_accept *records, size_t m, uint8_t *frames,
                         uint32_t *frame_lens, size_t n_frames)
{
    size_t k = 0, w = 0; /* records with ack 1 or withdrawn own frames 0, 1, ... in order */
    for (size_t i = 0; i < m && k < n_frames; i++) {
        if (records[i].ack != 1 && records[i].ack != KBM_ACK_WITHDRAWN)
            continue;
        if (records[i].ack == 1) {
            if (w != k) {
                memmove(frames + w * KBM_LIVE_FRAME_MAX, frames + k * KBM_LIVE_FRAME_MAX, KBM_LIVE_FRAME_MAX);
                frame_lens[w] = frame_lens[k];
            }
            w++;
        }
        k++;
    }
    return w;
}

size_t kbm_live_send_frames(kbm_live *l, const uint8_t *frames, const uint32_t *frame_lens,
                            size_t n, kbm_live_stats *st)
{
    struct mmsghdr msgs[ACK_BURST];
    struct iovec iov[ACK_BURST];
    size_t sent = 0;
    for (size_t base = 0; base < n; base += ACK_BURST) {
        size_t k = n - base < ACK_BURST ? n - base : ACK_BURST, done = 0;
        memset(msgs, 0, sizeof msgs);
        for (size_t i = 0; i < k; i++) {
            size_t len = frame_lens[base + i] <= KBM_LIVE_FRAME_MAX ? frame_lens[base + i] : 0;
            iov[i] = (struct iovec){(void *)(uintptr_t)(frames + (base + i) * KBM_LIVE_FRAME_MAX), len};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        while (done < k) {
            int r = sendmmsg(pcap_fileno(l->p), msgs + done, (unsigned)(k - done), 0);
            if (r <= 0)
                break;
            done += (size_t)r;
        }
        for (size_t i = done; i < k; i++) { /* what sendmmsg refused: one at a time */
            if (pcap_inject(l->p, iov[i].iov_base, iov[i].iov_len) < 0)
                st->send_errors++;
            else
                done++;
        }
        sent += done;
    }
    st->sent += sent;
    return sent;
}

/* ---- The binding cache: home address -> care-of, sequence, granted lifetime, expiry ---- */

/* Open addressing with linear probing, keyed hash (kbm_hash16, a seed of its own from
   getrandom), deletion by backward shift (no tombstones, so probe chains never rot), the table
   at most half full (doubled when it would be more). At most max entries: an update for a new
   home address beyond that is refused and counted (an accepted Binding Update names a
   configured peer's home address, so with preconfigured keys the entries are bounded by the
   peers; the cap bounds what return routability's open set of home addresses could add). */
struct kbm_bcache {
    pthread_mutex_t lock;
    uint64_t seed[2];
    kbm_binding *slots; /* cap of them; a slot is free when its used is 0 */
    size_t cap, count, max;
    uint64_t refused;
};

enum { BCACHE_MIN = 64 };

kbm_bcache *kbm_bcache_new(size_t max_entries)
{
    if (max_entries == 0 || max_entries > ((size_t)1 << 40))
        return NULL;
    kbm_bcache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cap = BCACHE_MIN;
    c->max = max_entries;
    c->slots = calloc(c->cap, sizeof *c->slots);
    if (!c->slots || getrandom(c->seed, sizeof c->seed, 0) != (ssize_t)sizeof c->seed ||
        pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->slots);
        free(c);
        return NULL;
    }
    return c;
}

void kbm_bcache_free(kbm_bcache *c)
{
    if (c) {
        pthread_mutex_destroy(&c->lock);
        free(c->slots);
        free(c);
    }
}

static size_t slot_of(const kbm_bcache *c, const uint8_t home[16])
{
    return (size_t)kbm_hash16(c->seed, home) & (c->cap - 1);
}

/* The slot holding home, or the free slot where it would go. */
static size_t find_slot(const kbm_bcache *c, const uint8_t home[16])
{
    size_t mask = c->cap - 1, i = slot_of(c, home);
    while (c->slots[i].used && memcmp(c->slots[i].home, home, 16) != 0)
        i = (i + 1) & mask;
    return i;
}

static int grow(kbm_bcache *c)
{
    size_t cap = c->cap * 2;
    kbm_binding *old = c->slots, *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return KBM_ENOMEM;
    size_t old_cap = c->cap;
    c->slots = slots;
    c->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].used)
            c->slots[find_slot(c, old[i].home)] = old[i];
    free(old);
    return 0;
}

/* Removes slot i's entry and shifts the entries of its probe chain back over the hole. */
static void remove_at(kbm_bcache *c, size_t i)
{
    size_t mask = c->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!c->slots[j].used)
            break;
        size_t home = slot_of(c, c->slots[j].home);
        /* j's entry may move to the hole at i unless its home slot lies cyclically in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            c->slots[i] = c->slots[j];
            i = j;
        }
    }
    memset(&c->slots[i], 0, sizeof c->slots[i]);
    c->count--;
}

/* One update, the lock held: 1 stored, 0 deleted (or nothing to delete), KBM_ENOMEM, or
   KBM_EFULL when a new entry would pass max. */
static int update_locked(kbm_bcache *c, const uint8_t home[16], const uint8_t care_of[16],
                         uint16_t sequence, uint32_t lifetime, double now, double wall)
{
    size_t i = find_slot(c, home);
    kbm_binding *b = &c->slots[i];
    if (lifetime == 0 || memcmp(care_of, home, 16) == 0) {
        if (b->used)
            remove_at(c, i);
        return 0;
    }
    if (!b->used) {
        if (c->count >= c->max) {
            c->refused++;
            return KBM_EFULL;
        }
        if (2 * (c->count + 1) > c->cap) {
            if (grow(c) < 0)
                return KBM_ENOMEM;
            i = find_slot(c, home);
            b = &c->slots[i];
        }
        memcpy(b->home, home, 16);
        b->used = 1;
        c->count++;
    }
    memcpy(b->care_of, care_of, 16);
    b->sequence = sequence;
    b->lifetime = lifetime;
    b->expires = now + (double)lifetime;
    b->updated = wall;
    return 1;
}

int kbm_bcache_update(kbm_bcache *c, const uint8_t home[16], const uint8_t care_of[16],
                      uint16_t sequence, uint32_t lifetime, double now, double wall)
{
    pthread_mutex_lock(&c->lock);
    int rc = update_locked(c, home, care_of, sequence, lifetime, now, wall);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

size_t kbm_bcache_apply(kbm_bcache *c, kbm_live_accept *records, size_t n, double now,
                        double wall, uint64_t acks[2])
{
    size_t refused = 0;
    acks[0] = acks[1] = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        kbm_live_accept *r = &records[i];
        if (update_locked(c, r->home, r->care_of, r->sequence, r->granted, now, wall) < 0) {
            refused++;
            if (r->ack == 1) /* no binding: its BA (status 0) must not go out */
                r->ack = KBM_ACK_WITHDRAWN;
        }
        if (r->ack == 1)
            acks[0]++;
        else if (r->ack == 2)
            acks[1]++;
    }
    pthread_mutex_unlock(&c->lock);
    return refused;
}

int kbm_bcache_get(kbm_bcache *c, const uint8_t home[16], kbm_binding *out)
{
    pthread_mutex_lock(&c->lock);
    const kbm_binding *b = &c->slots[find_slot(c, home)];
    int found = b->used;
    if (found)
        *out = *b;
    pthread_mutex_unlock(&c->lock);
    return found;
}

size_t kbm_bcache_count(kbm_bcache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint64_t kbm_bcache_refused(kbm_bcache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->refused;
    pthread_mutex_unlock(&c->lock);
    return n;
}

size_t kbm_bcache_expire(kbm_bcache *c, double now)
{
    size_t gone = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->cap;) {
        /* a backward shift may bring an unvisited entry into slot i: look at i again */
        if (c->slots[i].used && c->slots[i].expires <= now) {
            remove_at(c, i);
            gone++;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return gone;
}

size_t kbm_bcache_dump(kbm_bcache *c, kbm_binding *out, size_t max)
{
    size_t k = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->cap && k < max; i++)
        if (c->slots[i].used)
            out[k++] = c->slots[i];
    pthread_mutex_unlock(&c->lock);
    return k;
}

/* ---- serve's common case in one call ---- */

int kbm_live_serve(kbm_live *l, kbm_verifier *v, kbm_bcache *c, const kbm_live_buffers *b,
                   uint32_t max_delay_us, uint32_t idle_ms, uint32_t max_lifetime,
                   uint64_t python_verdicts, kbm_live_served *out, kbm_live_stats *st,
                   char *errbuf)
{
    memset(out, 0, sizeof *out);
    int n = kbm_live_batch(l, v, b->buf, b->buf_len, b->offsets, b->max, b->meta, b->verdicts,
                           b->details, max_delay_us, idle_ms, st, errbuf);
    if (n <= 0)
        return n;
    out->n = (uint32_t)n;
    for (int i = 0; i < n; i++) {
        uint8_t code = b->verdicts[i];
        if (code >= KBM_LIVE_VERDICTS || (python_verdicts >> code & 1))
            return n; /* the caller acts on this batch (out->done = 0, nothing sent) */
        out->counts[code]++;
    }
    out->time_us = b->meta[0].time_us;
    out->done = 1;
    if (out->counts[KBM_ACCEPTED] == 0)
        return n;
    size_t n_frames = 0;
    size_t m = kbm_live_ack(l, v, b->buf, b->buf_len, b->offsets, (size_t)n, b->meta, b->verdicts,
                            b->details, max_lifetime, b->accepts, b->handled, b->frames,
                            b->frame_lens, &n_frames, st);
    struct timespec mono, wall;
    clock_gettime(CLOCK_MONOTONIC, &mono); /* time.monotonic() and time.time(), as Python's cache
                                              updates have them */
    clock_gettime(CLOCK_REALTIME, &wall);
    uint64_t acks[2];
    out->refused = kbm_bcache_apply(c, b->accepts, m, (double)mono.tv_sec + (double)mono.tv_nsec / 1e9,
                                    (double)wall.tv_sec + (double)wall.tv_nsec / 1e9, acks);
    out->built = acks[0];
    out->no_key = acks[1];
    n_frames = kbm_live_withdraw(b->accepts, m, b->frames, b->frame_lens, n_frames);
    out->sent = kbm_live_send_frames(l, b->frames, b->frame_lens, n_frames, st);
    return n;
}
