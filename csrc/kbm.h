/* kbmfast: authorizing Mobile IPv6 Binding Updates with preconfigured Binding Management Keys
   (draft-ietf-mip6-precfgKbm / RFC 4449 on RFC 6275). The one public header of the C core.

   Conventions: every function that can fail returns 0 or a positive result on success and a
   negative kbm_status on failure. Offsets are counted from the first byte of the IPv6 header.
   The core allocates only when peers or state change, never while verifying. */
#ifndef KBM_H
#define KBM_H

#include <stddef.h>
#include <stdint.h>

#define KBM_SIZE 20
#define KBM_AUTH_SIZE 12
#define KBM_MH_MAX 2048

/* ---- Status codes (negative returns) ---- */
enum kbm_status {
    KBM_OK = 0,
    KBM_ENOMEM = -1,     /* out of memory */
    KBM_EINVAL = -2,     /* bad argument (the Python layer checks first; this is a backstop) */
    KBM_EIO = -3,        /* a system call on the state file failed; errno is kept */
    KBM_ESTATE = -4,     /* the state file is not valid (Python's validation explains why) */
    KBM_EFULL = -5,      /* the state file or peer table reached its size limit */
    KBM_ENOENT = -6,     /* no such peer */
    KBM_EOFFSET = -7,    /* offsets decrease or run past the buffer */
    KBM_EEXHAUSTED = -8, /* a peer's key is used up (its advance reached rekey_limit) */
    KBM_EEARLIER = -9,   /* a peer's key is one the state file has seen it replace */
    /* The state file's open rules and its in-use checks (docs/state-format.md "Opening"): */
    KBM_ESYMLINK = -10,  /* the state path is a symbolic link (never followed) */
    KBM_ENOTREG = -11,   /* the state file is not a regular file */
    KBM_EOWNER = -12,    /* the state file is not owned by the effective user */
    KBM_EMODE = -13,     /* the state file is writable by group or others */
    KBM_EBUSY = -14,     /* the state file is being rewritten (kbmfast state compact) */
    KBM_ECHANGED = -15,  /* the state file was truncated, removed or replaced while in use;
                            every later call on this verifier fails the same way */
};

/* ---- Verdicts (the same numbers as kbmfast.Verdict) ---- */
enum kbm_verdict {
    KBM_ACCEPTED = 0,
    KBM_MALFORMED = 1,
    KBM_BAD_CHECKSUM = 2,
    KBM_NOT_BINDING_UPDATE = 3,
    KBM_NOT_CONFIGURED = 4,
    KBM_MISSING_AUTHORIZATION = 5,
    KBM_BAD_AUTHENTICATOR = 6,
    KBM_SEQUENCE_OUT_OF_WINDOW = 7,
    KBM_HOME_REGISTRATION = 8,
    KBM_INVALID_CARE_OF = 9,
    KBM_KEY_EXHAUSTED = 10,
    KBM_HOME_NONCE_EXPIRED = 11,    /* return routability: BA 136 */
    KBM_CARE_OF_NONCE_EXPIRED = 12, /* BA 137 */
    KBM_NONCES_EXPIRED = 13,        /* BA 138 */
    KBM_RR_TABLE_FULL = 14,         /* BA 130 */
};

/* ---- Parsing (parse.c) ---- */

/* Parse error codes: the same numbers as kbmfast._types.E_*; Python holds the texts. */
enum kbm_perr {
    KBM_E_SHORT = 1, KBM_E_VERSION, KBM_E_PAYLOAD_LENGTH, KBM_E_EXT_TRUNCATED, KBM_E_EXT_ORDER,
    KBM_E_NO_MH, KBM_E_OPT_TRUNCATED, KBM_E_OPT_DISCARD, KBM_E_HAO_LENGTH, KBM_E_HAO_REPEATED,
    KBM_E_UNUSED_11, KBM_E_ROUTING_TYPE, KBM_E_RH2_FORMAT, KBM_E_MH_LENGTH,
    KBM_E_PAYLOAD_PROTO, KBM_E_HEADER_LEN, KBM_E_MOPT_TRUNCATED, KBM_E_MOPT_LENGTH,
    KBM_E_MOPT_DUPLICATE, KBM_E_BAD_NOT_LAST,
    KBM_UNKNOWN_MH = 100, /* not an error: an MH Type this implementation does not know */
};

/* Where the parts of a packet are; -1 where a part is absent. */
typedef struct {
    int32_t mh;       /* Mobility Header */
    int32_t hao;      /* address in the Home Address option */
    int32_t rh2;      /* address in the type 2 Routing header */
    int32_t alt;      /* address in the Alternate Care-of Address option */
    int32_t bad;      /* the 12 authenticator bytes */
    int32_t nonce;    /* the Nonce Indices option's data */
    uint8_t mh_type;
} kbm_layout;

/* One mobility option as found: type, data length and the offset of its type byte. */
typedef struct {
    uint16_t offset;
    uint8_t type;
    uint8_t len;
} kbm_option;

/* Walks the IPv6 header and extension headers to the Mobility Header.
   Returns 0, or a kbm_perr with *where set to the offending byte. */
int kbm_scan(const uint8_t *p, size_t n, kbm_layout *out, uint32_t *where);
/* 1 when the Mobility Header checksum is right (HAO pseudo-source, final destination). */
int kbm_checksum_ok(const uint8_t *p, size_t n, const kbm_layout *l);
/* The checksum to transmit for mh (its own checksum field ignored). */
uint16_t kbm_mh_checksum(const uint8_t src[16], const uint8_t dst[16], const uint8_t *mh,
                         size_t len);
/* Parses the Mobility Header found by kbm_scan, whose layout l must be for the same p and n:
   the MH Type and length are taken from it, not read again (p may be changing under the call).
   Returns 0, KBM_UNKNOWN_MH, or a kbm_perr.
   opts may be NULL; otherwise it receives up to max options and *nopts their count. */
int kbm_parse_mh(const uint8_t *p, size_t n, kbm_layout *l, kbm_option *opts, size_t max,
                 size_t *nopts, uint32_t *where);
/* 1 for a valid packet source: not :: and not multicast. */
int kbm_is_unicast(const uint8_t a[16]);
/* 1 for a routable unicast address: also not ::1 and not link-local fe80::/10. */
int kbm_is_routable(const uint8_t a[16]);

/* ---- Crypto (mac.c, sha1*.c) ---- */

/* First(96, HMAC_SHA1(kbm, care_of | correspondent | mh minus its last 12 bytes)), the MH
   checksum taken as zero. Requires 14 <= mh_len <= KBM_MH_MAX. */
int kbm_authenticator(const uint8_t kbm[KBM_SIZE], const uint8_t care_of[16],
                      const uint8_t correspondent[16], const uint8_t *mh, size_t mh_len,
                      uint8_t out[KBM_AUTH_SIZE]);
/* RFC 4449 / return routability: Kbm from Kcn and nonces of at most KBM_NONCE_MAX bytes. */
int kbm_derive(const uint8_t *kcn, size_t kcn_len, const uint8_t *home_nonce, size_t hn_len,
               const uint8_t *care_of_nonce, size_t cn_len, const uint8_t home[16],
               const uint8_t care_of[16], int deregistration, uint8_t out[KBM_SIZE]);
/* The MAC kernel verification uses: "portable", "sha-ni", "avx2" or "avx512"; on first use the
   fastest one this CPU supports is picked by timing each (kernels.c), unless one was selected. */
const char *kbm_kernel(void);
/* Selects kernel `name` for this process; "auto" returns to the measured choice. Returns 0,
   KBM_EINVAL for an unknown name, KBM_ENOENT when this CPU cannot run it. */
int kbm_kernel_select(const char *name);
/* Kernel i (0, 1, ...): its name (NULL past the last), whether this CPU supports it, and the
   nanoseconds per minimal-Binding-Update MAC the calibration measured (0 if unsupported). */
const char *kbm_kernel_info(int i, int *supported, double *ns);

/* ---- The verifier (verify.c, peers.c, state.c) ---- */

typedef struct kbm_verifier kbm_verifier;

#define KBM_KIND_KBM 1 /* draft: the configured Kbm */
#define KBM_KIND_KCN 2 /* RFC 4449: Kcn and nonces; Kbm derived per care-of address */
#define KBM_NONCE_MAX 64
#define KBM_KEY_MAX 1024 /* a Kcn's longest */

/* A peer as the caller describes it (key bytes are copied into midstates, then forgotten). */
typedef struct {
    uint8_t home[16];
    int kind;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *home_nonce;
    size_t home_nonce_len;
    const uint8_t *care_of_nonce;
    size_t care_of_nonce_len;
} kbm_peer_spec;

/* What a verdict refers to, for building a Result: offsets of the addresses in the packet. */
typedef struct {
    int32_t home;       /* -1 when the verdict carries no details */
    int32_t care_of;
    uint16_t sequence;
    uint16_t lifetime;  /* 4-second units */
    uint16_t flags;
    uint16_t last_sequence;
    int32_t nonce;      /* return routability: offset of the Nonce Indices data, else -1 */
} kbm_detail;

/* state_path NULL: the sequence table lives in anonymous memory. The file must already have
   been validated (kbmfast._stateformat); it is created if missing. */
kbm_verifier *kbm_verifier_new(const char *state_path, uint32_t rekey_limit, int *status);
/* Wipes every key and unmaps the state. */
void kbm_verifier_free(kbm_verifier *v);
/* Adds or replaces peers (one copy-on-write swap for the whole list; verifiers never block).
   A key the state file shows used up or replaced is refused (KBM_EEXHAUSTED, KBM_EEARLIER)
   with *failed = its index, and nothing changes. */
int kbm_verifier_set_peers(kbm_verifier *v, const kbm_peer_spec *peers, size_t n, size_t *failed);
int kbm_verifier_remove_peer(kbm_verifier *v, const uint8_t home[16]);

/* The key file's simple form (keyfile.c; kbmfast._keys reads every other form): 0 when text
   is a key file exactly as KeyTable.save writes one, whole and valid (no home address or key
   given twice), with its n <= cap peers in the arrays (homes 16 bytes each, kinds KBM_KIND_*,
   epochs, the lengths of key and nonces, key_at the offset of each key) and their keys and
   nonces decoded into material (key, home nonce, care-of nonce, peer after peer; the caller
   wipes it); 1 when it is not (the Python loader decides); KBM_ENOMEM or KBM_EIO. */
int kbm_keyfile_parse(const uint8_t *text, size_t len, size_t cap, uint8_t *homes,
                      uint8_t *kinds, uint16_t *key_lens, uint8_t *hn_lens, uint8_t *cn_lens,
                      uint16_t *epochs, uint64_t *key_at, uint8_t *material,
                      size_t material_cap, size_t *n_out, size_t *material_out);
/* Fills specs[0..n) from arrays laid out as kbm_keyfile_parse writes them (material from 0). */
void kbm_peer_specs(size_t n, const uint8_t *homes, const uint8_t *kinds,
                    const uint16_t *key_lens, const uint8_t *hn_lens, const uint8_t *cn_lens,
                    const uint8_t *material, kbm_peer_spec *specs);
/* Verifies packet i = buf[offsets[i] .. offsets[i+1]) for i < n, in order, writing verdicts
   (and details when details != NULL). Returns 0, or KBM_EOFFSET with *where = bad index. */
int kbm_verify(kbm_verifier *v, const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
               size_t n, uint8_t *verdicts, kbm_detail *details, size_t *where);
/* 1 and *seq when home has an accepted sequence, 0 when not. */
int kbm_verifier_last_sequence(kbm_verifier *v, const uint8_t home[16], uint16_t *seq);
/* The state slot word of home (docs/state-format.md): 1 and *word if it has a slot, else 0. */
int kbm_verifier_slot_word(kbm_verifier *v, const uint8_t home[16], uint64_t *word);
/* The sequence advance counted for home's current key (docs/state-format.md): 1 and *advance
   when home is configured, 0 when not; an earlier key counts as rekey_limit. <0 (KBM_ECHANGED)
   when the state file changed while in use. */
int kbm_verifier_key_advance(kbm_verifier *v, const uint8_t home[16], uint32_t *advance);
/* msync + fsync of the state file (no-op in memory). */
int kbm_verifier_flush(kbm_verifier *v);
/* Tests: 0 when the peer index is consistent (every peer in exactly one bucket, on its probe
   chain, whose tag and slot are the peer's), else the number of faults found. */
size_t kbm_verifier_check_index(kbm_verifier *v);

/* compat = 1: RFC 3775 rules (care-of == home is a de-registration at any lifetime; a
   de-registration's MAC may also be over the care-of address). Default 0: RFC 6275. */
void kbm_verifier_set_compat(kbm_verifier *v, int rfc3775);

/* ---- Return routability (rr.c; kbmfast/_rr.py holds the rules and the secrets' lifecycle) ---- */

#define KBM_RR_REPLY_SIZE 64
/* Turns RR on: peers without a preconfigured key are verified with RR keys (max_peers: the
   bounded table of their sequence numbers). Once, before verifying. */
int kbm_rr_enable(kbm_verifier *v, size_t max_peers);
/* The secrets as of now: Kcn and the count live nonces (8 bytes each, serials oldest ..). */
int kbm_rr_set(kbm_verifier *v, const uint8_t *kcn, size_t kcn_len, uint64_t oldest,
               const uint8_t *nonces, size_t count);
/* Kcn was regenerated: wipe the secrets pushed so far (Kcn's midstates, the nonces) and the
   replies' cached Kcn; until the next kbm_rr_set every nonce index is expired. */
void kbm_rr_forget(kbm_verifier *v);
/* Home / Care-of Test for each Home / Care-of Test Init buf[offsets[i] .. offsets[i+1]), with
   Kcn and the nonce of serial `serial` (its index: serial mod 2^16): reply i is
   out[out_offsets[i] .. out_offsets[i+1]) (empty: none); out holds 64 * n bytes. kcn_id names
   this Kcn (never reused for another in the process; 0: none): v (or NULL) then keeps Kcn's
   midstates between calls, computed once per Kcn. */
int kbm_rr_reply(kbm_verifier *v, const uint8_t *kcn, size_t kcn_len, uint64_t kcn_id,
                 uint64_t serial, const uint8_t nonce[8], const uint8_t *buf, size_t buf_len,
                 const uint64_t *offsets, size_t n, uint8_t *out, uint64_t *out_offsets,
                 size_t *where);
/* Which packets of a verified batch (verdicts, details as kbm_verify_buffer gave them) are
   return routability's to answer (kbmfast.serve_rr), so that Python touches those only: by
   kind[verdict] (1: a verdict only RR gives; 2: one acknowledged, the packet RR's when its
   detail has Nonce Indices, or under compat (rfc3775 != 0) a registration whose care-of
   address is its home address; 0: neither), their indices in packet order to picked (n
   entries at most); the count is returned. inits (NULL: skipped): the indices of the
   NOT_BINDING_UPDATE packets (the Home / Care-of Test Inits among them), the count in
   *n_inits. Offsets and details are bounds-checked (a packet they do not fit is skipped). */
size_t kbm_rr_select(const uint8_t *buf, size_t buf_len, const uint64_t *offsets, size_t n,
                     const uint8_t *verdicts, const kbm_detail *details, const uint8_t kind[256],
                     int rfc3775, uint32_t *picked, uint32_t *inits, size_t *n_inits);

/* ---- Yardsticks for benchmarks (bench.c) ---- */

/* What existing daemons do: parse, then a one-shot OpenSSL HMAC() and memcmp per packet, with
   kbms[20*i] the key of packet i. ok[i] = 1 when the authenticator matches. */
int kbm_bench_oneshot(const uint8_t *buf, const uint64_t *offsets, size_t n,
                      const uint8_t *kbms, uint8_t *ok);
/* Runs `blocks` SHA-1 compressions on 1 or 2 interleaved streams (the ceiling's measure). */
uint32_t kbm_bench_compress(uint64_t blocks, int streams);
/* Runs about `blocks` SHA-1 compressions with MAC kernel i (kbm_kernel_info), if supported:
   each kernel's raw rate, the ceiling's measure. */
uint32_t kbm_bench_kernel(int i, uint64_t blocks);
/* Tests: spins until *flag becomes non-zero (1) or max_spins pass (0). Only another thread
   can set it, so a 1 proves the GIL is released around calls into the core. */
int kbm_test_wait(const int *flag, uint64_t max_spins);
/* Tests: from now on, treat the kernels whose bit (1 << i, kbm_kernel_info's i) is set as ones
   this CPU cannot run, as on a CPU without them; call before the first verification (the
   calibration runs once). Portable cannot be hidden (KBM_EINVAL). */
int kbm_test_hide_kernels(unsigned mask);

/* ---- Capture files in memory (capture.c; the lines: format.c): kbmfast verify's hot path ---- */

/* The same rules as kbmfast/capture.py (the oracle): classic pcap (either byte order, us or
   ns) and pcapng (SHB, IDB with if_tsresol, EPB, obsolete PB, SPB); link types Ethernet with
   802.1Q/802.1ad tags, raw IP/IPv6, SLL, SLL2, NULL, LOOP. A frame is a mobility packet when
   its IPv6 next-header chain reaches 135; the packet is cut to 40 + Payload Length. */
#define KBM_CAP_MAX_CAPLEN 262144
#define KBM_CAP_PCAP 1
#define KBM_CAP_PCAPNG 2
enum kbm_cap_open_status {
    KBM_CAP_ENOTCAP = -20, /* kbm_capture_open: not a pcap or pcapng file */
    KBM_CAP_EHEADER = -21, /* kbm_capture_open: pcap file header truncated */
};

/* Damage codes (kbm_capture.error); error_a and error_b hold the numbers a message needs. */
enum kbm_cap_error {
    KBM_CAP_E_RECORD_TRUNCATED = 1, /* a: bytes left of 16 */
    KBM_CAP_E_RECORD_CAPLEN,        /* a: caplen */
    KBM_CAP_E_RECORD_PAST_END,      /* a: caplen, b: bytes left */
    KBM_CAP_E_BLOCK_TRUNCATED,      /* a: bytes left of 12 */
    KBM_CAP_E_SHB_BOM,
    KBM_CAP_E_BLOCK_LENGTH,         /* a: total length */
    KBM_CAP_E_BLOCK_PAST_END,       /* a: total length, b: bytes left */
    KBM_CAP_E_BLOCK_TRAILER,
    KBM_CAP_E_IDB_SHORT,
    KBM_CAP_E_SPB_SHORT,
    KBM_CAP_E_PB_SHORT,
    KBM_CAP_E_PB_CAPLEN,            /* a: caplen, b: bytes held */
    KBM_CAP_E_IFACE,                /* a: interface number */
    KBM_CAP_E_TIME,                 /* a: timestamp units (us past the signed 64-bit range) */
    KBM_CAP_E_RECORD_FRACTION,      /* a: the pcap record's us (ns) field, b: 10^6 (10^9) */
};

/* An interface's timestamp units to us: MUL: units * factor; DIV: units / factor (factor 0:
   a divisor past 64 bits, every time is 0); SHIFT: units * 10^6 >> factor. */
#define KBM_TS_MUL 0
#define KBM_TS_DIV 1
#define KBM_TS_SHIFT 2
typedef struct {
    uint32_t linktype;
    uint32_t mode;
    uint64_t factor;
} kbm_cap_iface;

/* A walk over a capture in memory; kbm_capture_open fills it, kbm_capture_walk goes on.
   buf holds the whole file, or (partial = 1) a window of it: a record or block that runs past
   the window's end then stops the walk with need_more = 1 instead of being damage, and the
   caller moves the window (buf[pos:] first, at least `need` bytes of it, pos = 0) and walks
   again. Offsets (pos, error_offset, ip_off) count from buf. */
typedef struct {
    const uint8_t *buf;
    size_t size;
    int partial;          /* set by the caller: more of the file follows buf[size - 1] */
    int need_more;        /* set when the record or block at pos is not whole in buf */
    uint64_t need;        /* then: the bytes from pos that show it (at least) */
    int format;           /* KBM_CAP_PCAP or KBM_CAP_PCAPNG */
    int big_endian;       /* pcap: file byte order; pcapng: the current section's */
    int nanoseconds;      /* pcap */
    uint32_t linktype;    /* pcap */
    size_t pos;           /* the next record or block */
    uint64_t frames;      /* frames read so far (numbered from 1) */
    uint64_t other;       /* of which not mobility packets */
    kbm_cap_iface *ifaces; /* pcapng: the current section's interfaces, a caller's table */
    size_t n_ifaces, cap_ifaces;
    int need_ifaces;      /* set when an IDB does not fit: give a larger table, walk again */
    int done;             /* the end, or damage */
    int error;            /* 0, or a kbm_cap_error: the walk stopped at frame error_frame, */
    uint64_t error_frame; /* whose record or block starts at byte error_offset */
    size_t error_offset;
    uint64_t error_a, error_b;
    uint64_t max_frames;  /* set by the caller: 0, or the walk ends (done) after this frame */
    uint64_t cut;         /* mobility packets cut short by the snap length (see kbm_cap_out) */
    uint64_t walked_bytes; /* total length of the chunk's packets: the caller sets 0 to start
                              a chunk (whose first packet is always taken), the walk adds */
} kbm_capture;

/* Per mobility packet: IPv6 header's offset in the file, length, frame number, time in us. */
typedef struct {
    uint64_t *ip_off;
    uint32_t *ip_len;
    uint64_t *frame;
    int64_t *time_us;
    uint8_t *cut; /* NULL, or per packet: 1 when the capture's snap length cut the IPv6 packet
                     short (captured < original length, and fewer bytes than 40 + Payload
                     Length); kbm_capture.cut counts them */
} kbm_cap_out;

int kbm_capture_open(kbm_capture *c, const uint8_t *buf, size_t size);
/* Walks on until max mobility packets are found (or, with max_bytes != 0, until the next would
   take walked_bytes past max_bytes; a chunk's first is always taken), the end, damage, an IDB
   that does not fit the interface table, or (partial) the end of the window. Returns the number
   of packets written to out. */
size_t kbm_capture_walk(kbm_capture *c, kbm_cap_out *out, size_t max, uint64_t max_bytes);
/* Copies the n packets back to back into data (data_len bytes) from offsets[0] on (set by the
   caller: the bytes data already holds), and sets offsets[1..n]. */
int kbm_capture_gather(const uint8_t *buf, size_t size, const uint64_t *ip_off,
                       const uint32_t *ip_len, size_t n, uint8_t *data, size_t data_len,
                       uint64_t *offsets);
/* The IPv6 header's offset in the frame buf[start, start + caplen), or -1 (capture.ipv6_start). */
int64_t kbm_cap_ipv6_start(const uint8_t *buf, size_t start, size_t caplen, uint32_t linktype);
/* The mobility packet's length at ip (available bytes), or -1 (capture.mobility_length). */
int64_t kbm_cap_mobility_length(const uint8_t *ip, size_t available);

/* What a line shows of a packet (capture.packet_fields): MH Type (-1: not captured), and for a
   Binding Update its Sequence, flags, Lifetime units, and the offsets of home (Home Address
   option, else source) and care-of (Alternate Care-of Address, else source); for a Binding
   Acknowledgement its Sequence, Status (in flags), Lifetime units, home (the type 2 Routing
   header's address, else the destination) and care-of (the destination). */
typedef struct {
    int32_t mh_type;
    int32_t home;
    int32_t care_of;
    uint16_t seq;
    uint16_t flags;
    uint16_t units;
} kbm_fields;
int kbm_packet_fields(const uint8_t *p, size_t n, kbm_fields *f);

/* Why the verifier calls a packet MALFORMED, in the order verify.c decides it: a kbm_perr, or
   one of these, with *where the offending byte; 0 when it would not call it MALFORMED. */
enum kbm_why {
    KBM_WHY_HAO_NOT_ROUTABLE = 21, /* a Home Address option with a non-routable address */
    KBM_WHY_ROUTING_HEADER,        /* a type 2 Routing header (a CN drops it, RFC 6275 6.1) */
    KBM_WHY_SOURCE_NOT_UNICAST,
    KBM_WHY_HOME_NOT_ROUTABLE,
    KBM_WHY_CARE_OF_NOT_ROUTABLE,
    KBM_WHY_NONCE_IN_HOME_REGISTRATION,
    KBM_WHY_SNAP_LENGTH, /* not the verifier's: the capture's snap length cut the packet */
    KBM_WHY_END
};
int kbm_malformed_reason(const uint8_t *p, size_t n, uint32_t *where);

/* kbmfast verify's verdict codes past the verifier's (0-10): */
enum kbm_cli_verdict {
    KBM_V_TRUNCATED = 15,         /* cut by the capture's snap length (after the RR verdicts) */
    KBM_V_BA_VALID,               /* a Binding Acknowledgement, authentic (as the MN checks it) */
    KBM_V_BA_UNMATCHED,           /* authentic, but no earlier Binding Update has its sequence */
    KBM_V_BA_BAD_AUTHENTICATOR,
    KBM_V_BA_NO_AUTHORIZATION,    /* no Binding Authorization Data option */
    KBM_V_BA_NOT_CONFIGURED,      /* no key for its home address */
    KBM_V_BA_BAD_CHECKSUM,
    KBM_V_RR_REPLIED,             /* a Home/Care-of Test Init that verify --rr answered */
    KBM_V_END
};

#define KBM_ADDR_TEXT_MAX 47
#define KBM_LINE_MAX 320
/* Python's str(IPv6Address(a)) (mapped_dotted: Python >= 3.13 writes ::ffff:a.b.c.d). */
size_t kbm_ipv6_text(const uint8_t *a, int mapped_dotted, char *out);
/* A cache of address texts; a zeroed table of a power-of-two number of slots. */
typedef struct {
    uint8_t key[16];
    uint8_t len;
    char text[47];
} kbm_addr_slot;
/* The slot of address a in a table of a power-of-two number of slots (format.c). */
size_t kbm_addr_slot_of(const uint8_t a[16], size_t slots);
/* The text lines of `kbmfast verify` (kbmfast.cli.verify.format_plain) for packets 0..n-1 of a
   verify_buffer batch and their verdicts (kbm_verdict or kbm_cli_verdict), into out. Returns the number of lines written (fewer
   than n when out has less than KBM_LINE_MAX bytes left, or at a packet it cannot format: a
   bad offset or verdict, a negative time) and their length in *written. */
size_t kbm_format_lines(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                        const uint64_t *frames, const int64_t *times, const uint8_t *verdicts,
                        size_t n, kbm_addr_slot *cache, size_t slots, int mapped_dotted,
                        char *out, size_t out_len, size_t *written);
/* --acks-out: a configured peer as kbm_write_acks finds it, in a table of a power-of-two
   number of slots, placed by kbm_ack_slot. The key and nonces are the caller's (not copied); last is the peer's last accepted sequence (-1: none), which
   kbm_write_acks keeps up to date as it walks the acceptances. */
typedef struct {
    kbm_peer_spec peer; /* kind 0: an empty slot; epoch unused */
    int32_t last;
    int32_t ready;      /* set by kbm_write_acks once mid holds a Kbm peer's HMAC midstates */
    uint32_t mid[10];   /* key material: the caller wipes the table when done */
} kbm_ack_peer;
/* The slot for home: its own, or the empty one where it goes (SIZE_MAX: the table is full). */
size_t kbm_ack_slot(const kbm_ack_peer *peers, size_t slots, const uint8_t home[16]);
#define KBM_ACK_RECORD_MAX 112 /* a pcap record header and the largest acknowledgement */
/* The Binding Acknowledgements a correspondent sends for packets 0..n-1 of a verify_buffer
   batch and their verdicts (Verifier.acknowledge, as kbmfast verify --acks-out writes them):
   pcap records (little-endian, us), each stamped with its Binding Update's time (clamped to
   0..2^32 s - 1 us, counted in *clamped), into out. max_lifetime: UINT32_MAX for none. Returns
   the packets done (fewer than n when out has less than KBM_ACK_RECORD_MAX bytes left or at a
   bad offset), the bytes written in *written and the records in *count. */
size_t kbm_write_acks(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                      const int64_t *times, const uint8_t *verdicts, size_t n,
                      kbm_ack_peer *peers, size_t slots, uint32_t max_lifetime, uint8_t *out,
                      size_t out_len, size_t *written, uint64_t *count, uint64_t *clamped);

#define KBM_JSON_MAX 640
/* The same rows as JSON lines (kbmfast.cli.verify.format_json); name is the capture's name as a JSON
   string, quotes included (json.dumps). Each row needs KBM_JSON_MAX + name_len bytes of out. */
size_t kbm_format_json(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                       const uint64_t *frames, const int64_t *times, const uint8_t *verdicts,
                       size_t n, kbm_addr_slot *cache, size_t slots, int mapped_dotted,
                       const char *name, size_t name_len, char *out, size_t out_len,
                       size_t *written);
/* kbmfast verify's bookkeeping of a verified batch: sets verdicts[i] to KBM_V_TRUNCATED where
   cut[i] (cut may be NULL), and lists in look[] (n entries at most) the MALFORMED and
   NOT_BINDING_UPDATE packets that are not Binding Updates (acknowledgements, messages with a type
   2 Routing header: the Python side judges those). Returns how many it listed. */
size_t kbm_verdict_marks(const uint8_t *buf, size_t buf_len, const uint64_t *offsets,
                         uint8_t *verdicts, const uint8_t *cut, size_t n, uint32_t *look);
/* counts[v] += the packets 0..n-1 with verdict v, for every v < KBM_V_END. */
void kbm_verdict_counts(const uint8_t *verdicts, size_t n, uint64_t *counts);

/* ---- Live capture through libpcap (live.c): kbmfast serve's and verify -i's hot path ---- */

#define KBM_LIVE_ERRBUF 512
#define KBM_LIVE_LINK_MAX 32
enum kbm_live_status {
    KBM_LIVE_ENODEV = -30,  /* no such interface */
    KBM_LIVE_EPERM = -31,   /* no permission to capture (CAP_NET_RAW) */
    KBM_LIVE_EFILTER = -32, /* the BPF filter does not compile */
    KBM_LIVE_ELINK = -33,   /* kbm_live_send: a link type it cannot answer on */
    KBM_LIVE_EPCAP = -34,   /* any other libpcap or system error (errbuf says which) */
};

typedef struct kbm_live kbm_live;

/* Per captured mobility packet: its time and frame number, and the link-layer header before its IPv6 header
   (Ethernet: destination, source, VLAN tags, EtherType), for the answer. */
typedef struct {
    int64_t time_us;
    uint64_t frame;     /* the frame's number among those the filter passed (from 1) */
    uint8_t link_len;
    uint8_t link[KBM_LIVE_LINK_MAX];
} kbm_live_meta;

/* Counters one capture handle adds to (kbm_live_batch, kbm_live_send, kbm_live_pcap_stats). */
typedef struct {
    uint64_t frames;      /* frames the BPF filter passed */
    uint64_t other;       /* of which not mobility packets */
    uint64_t packets;     /* mobility packets handed on */
    uint64_t batches;
    uint64_t sent;        /* frames injected */
    uint64_t send_errors;
    uint32_t ps_recv, ps_drop, ps_ifdrop; /* pcap_stats */
} kbm_live_stats;

/* pcap_create + immediate mode + snaplen + buffer (0: libpcap's default) + the BPF filter,
   non-blocking; inbound_only: frames this host sent are not seen; fanout_group >= 0 joins a
   PACKET_FANOUT (hash) group. NULL with *status (kbm_live_status or KBM_E*) and a message in
   errbuf (KBM_LIVE_ERRBUF bytes) on failure. */
kbm_live *kbm_live_open(const char *device, const char *filter, int snaplen, int buffer_bytes,
                        int inbound_only, int fanout_group, char *errbuf, int *status);
int kbm_live_linktype(const kbm_live *l);
/* 1 when kbm_live_send can answer on this link type (Ethernet, raw IP). */
int kbm_live_can_send(const kbm_live *l);
void kbm_live_close(kbm_live *l);
/* Captures mobility packets into buf (IPv6 header on, back to back; offsets[0..n], meta[0..n))
   until there are max, buf has less than a snaplen left, max_delay_us passed since the first,
   or idle_ms passed without one; then, when v is not NULL, verifies them (kbm_verify: verdicts,
   and details when not NULL). Returns n >= 0, or a negative status with errbuf set. */
int kbm_live_batch(kbm_live *l, kbm_verifier *v, uint8_t *buf, size_t buf_len,
                   uint64_t *offsets, size_t max, kbm_live_meta *meta, uint8_t *verdicts,
                   kbm_detail *details, uint32_t max_delay_us, uint32_t idle_ms,
                   kbm_live_stats *st, char *errbuf);
/* Sends the IPv6 packet pkt back the way the frame described by m came (Ethernet: to its
   source, from the address it was sent to, the same tags). */
int kbm_live_send(kbm_live *l, const kbm_live_meta *m, const uint8_t *pkt, size_t len,
                  kbm_live_stats *st);
/* The Binding Acknowledgement kbmfast.build_binding_ack builds (byte for byte): from cn to
   dest, with a type 2 Routing header carrying home when dest is not home, the MAC with kbm over
   mac_care_of (the home address for a de-registration), units of 4 s. Returns its length
   (at most KBM_ACK_MAX), 0 on failure. */
#define KBM_ACK_MAX 96
size_t kbm_build_ack(const uint8_t kbm[KBM_SIZE], const uint8_t home[16],
                     const uint8_t mac_care_of[16], const uint8_t cn[16], const uint8_t dest[16],
                     uint8_t status, uint16_t sequence, uint16_t units, uint8_t out[KBM_ACK_MAX]);
/* kbm_build_ack, then kbm_live_send back the way the frame described by m came. */
int kbm_live_answer(kbm_live *l, const kbm_live_meta *m, const uint8_t kbm[KBM_SIZE],
                    const uint8_t home[16], const uint8_t mac_care_of[16], const uint8_t cn[16],
                    const uint8_t dest[16], uint8_t status, uint16_t sequence, uint16_t units,
                    kbm_live_stats *st);
/* One accepted Binding Update of a batch, as kbm_live_ack reports it for the binding cache. */
#define KBM_ACK_WITHDRAWN 3
typedef struct {
    uint8_t home[16];
    uint8_t care_of[16];
    uint32_t index;    /* the packet's index in the batch */
    uint32_t granted;  /* lifetime granted, seconds (its own, at most max_lifetime) */
    uint16_t sequence;
    uint8_t ack;       /* 0: none due (no A flag), 1: BA sent, 2: not sent (peer gone, send error),
                          KBM_ACK_WITHDRAWN: built, then withdrawn (the binding cache was full) */
    uint8_t pad;
} kbm_live_accept;
/* The common case of a batch kbm_live_batch verified with v, in C: for each ACCEPTED Binding
   Update of a configured peer (not one return routability judged, i.e. detail nonce >= 0, nor,
   under compat rfc3775, a registration whose care-of address is its home address), one record
   in out (in packet order) and handled[i] = 1; when it has the A flag, the frame of the Binding
   Acknowledgement Verifier.acknowledge builds (status 0, granted lifetime), signed with the key
   the peer has now (looked up under the verifier's read lock: a peer removed since the batch
   was verified gets nothing, ack = 2), addressed back the way its frame came, into frames
   (KBM_LIVE_FRAME_MAX bytes each, n of them at most) with its length in frame_lens; the
   number of frames in *n_frames. max_lifetime: UINT32_MAX for none. Other packets: handled[i]
   = 0. Returns the number of records. Nothing is sent: kbm_live_send_frames does that, once
   the caller has the binding cache updated. */
#define KBM_LIVE_FRAME_MAX 128
size_t kbm_live_ack(kbm_live *l, kbm_verifier *v, const uint8_t *buf, size_t buf_len,
                    const uint64_t *offsets, size_t n, const kbm_live_meta *meta,
                    const uint8_t *verdicts, const kbm_detail *details, uint32_t max_lifetime,
                    kbm_live_accept *out, uint8_t *handled, uint8_t *frames, uint32_t *frame_lens,
                    size_t *n_frames, kbm_live_stats *st);
/* Sends frames[0..n) (KBM_LIVE_FRAME_MAX bytes apart, lengths in frame_lens) on l with
   sendmmsg, 64 at a time, and pcap_inject for any sendmmsg refuses. Returns how many went. */
size_t kbm_live_send_frames(kbm_live *l, const uint8_t *frames, const uint32_t *frame_lens,
                            size_t n, kbm_live_stats *st);
/* After kbm_bcache_apply: drops the frames of the records it withdrew (a status-0 BA for a
   binding the cache refused would tell the mobile node it is registered when it is not), moving
   the others down; returns how many frames are left, to send. */
size_t kbm_live_withdraw(const kbm_live_accept *records, size_t m, uint8_t *frames,
                         uint32_t *frame_lens, size_t n_frames);
/* Copies pcap_stats into st->ps_*. */
int kbm_live_pcap_stats(kbm_live *l, kbm_live_stats *st);

/* ---- kbmfast serve's binding cache (live.c): home address -> binding, thread-safe ---- */

typedef struct kbm_bcache kbm_bcache;
/* One entry (and one slot of the table: used is 1 for an entry). Times are the caller's:
   expires on its monotonic clock (time.monotonic()), updated on the wall clock (time.time()). */
typedef struct {
    uint8_t home[16];
    uint8_t care_of[16];
    double expires;
    double updated;
    uint32_t lifetime; /* seconds granted */
    uint16_t sequence;
    uint8_t used;
    uint8_t pad;
} kbm_binding;
/* An empty cache holding at most max_entries bindings (memory grows with the entries, not with
   the cap), or NULL (out of memory, max_entries 0 or absurd). */
kbm_bcache *kbm_bcache_new(size_t max_entries);
void kbm_bcache_free(kbm_bcache *c);
/* One accepted Binding Update (RFC 6275 9.5.1-2): lifetime 0 or care_of == home deletes home's
   entry; anything else creates or replaces it, expiring at now + lifetime. Returns 1 stored,
   0 deleted (or nothing to delete), KBM_EFULL (a new entry past max_entries: refused and
   counted) or KBM_ENOMEM. */
int kbm_bcache_update(kbm_bcache *c, const uint8_t home[16], const uint8_t care_of[16],
                      uint16_t sequence, uint32_t lifetime, double now, double wall);
/* kbm_bcache_update for each of kbm_live_ack's records in order (granted as the lifetime),
   under one lock; acks[0] = records with ack 1 (BA built), acks[1] = with ack 2 (not built).
   A refused update (KBM_EFULL, KBM_ENOMEM) turns its record's ack 1 into KBM_ACK_WITHDRAWN
   (kbm_live_withdraw then drops its frame). Returns how many updates were refused. */
size_t kbm_bcache_apply(kbm_bcache *c, kbm_live_accept *records, size_t n, double now,
                        double wall, uint64_t acks[2]);
/* home's entry into out: 1, or 0 when there is none (expired ones stay until expire). */
int kbm_bcache_get(kbm_bcache *c, const uint8_t home[16], kbm_binding *out);
size_t kbm_bcache_count(kbm_bcache *c);
/* New entries refused because the cache held max_entries. */
uint64_t kbm_bcache_refused(kbm_bcache *c);
/* Removes the entries whose expiry is <= now; returns how many. */
size_t kbm_bcache_expire(kbm_bcache *c, double now);
/* Copies up to max entries (in no order) into out; returns how many. */
size_t kbm_bcache_dump(kbm_bcache *c, kbm_binding *out, size_t max);

/* The buffers of one capture handle, as kbm_live_batch and kbm_live_ack take them (max
   packets: meta, verdicts, details, accepts, handled, frame_lens have max entries, offsets
   max + 1, frames max * KBM_LIVE_FRAME_MAX bytes). */
typedef struct {
    uint8_t *buf;
    size_t buf_len;
    uint64_t *offsets;
    size_t max;
    kbm_live_meta *meta;
    uint8_t *verdicts;
    kbm_detail *details;
    kbm_live_accept *accepts;
    uint8_t *handled;
    uint8_t *frames;
    uint32_t *frame_lens;
} kbm_live_buffers;
#define KBM_LIVE_VERDICTS 64
/* What kbm_live_serve did with a batch. */
typedef struct {
    uint32_t n;        /* packets in the batch */
    uint32_t done;     /* 1: answered here; 0: the caller must act on it (nothing sent) */
    int64_t time_us;   /* the first packet's capture time (when done) */
    uint64_t built, no_key, sent, refused; /* kbm_bcache_apply's acks, frames sent, refusals */
    uint64_t counts[KBM_LIVE_VERDICTS];    /* packets by verdict (when done) */
} kbm_live_served;
/* serve's common case in one call: kbm_live_batch (verified with v); then, unless a
   verdict is in the python_verdicts bit mask (or >= KBM_LIVE_VERDICTS), kbm_live_ack,
   kbm_bcache_apply with the records (time.monotonic()/time.time() clocks: CLOCK_MONOTONIC,
   CLOCK_REALTIME) and kbm_live_send_frames. For a verifier without return routability or
   compat rfc3775 (every ACCEPTED packet is kbm_live_ack's then). Returns n (out->done 0: the
   batch is the caller's, exactly as kbm_live_batch left it) or a negative status. */
int kbm_live_serve(kbm_live *l, kbm_verifier *v, kbm_bcache *c, const kbm_live_buffers *b,
                   uint32_t max_delay_us, uint32_t idle_ms, uint32_t max_lifetime,
                   uint64_t python_verdicts, kbm_live_served *out, kbm_live_stats *st,
                   char *errbuf);

#endif /* KBM_H */
