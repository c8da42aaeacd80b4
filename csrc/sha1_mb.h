/* Multi-buffer SHA-1: MB_L independent messages, one per vector lane (FIPS 180-4 §6.1.2 with
   every word a vector of MB_L words). Included by sha1_avx512.c (16 lanes) and sha1_avx2.c (8
   lanes) after they define:
     MB_L            lanes
     MB_V            the vector type
     MB_FN           the target attribute every function here carries
     MB_NAME(x)      the kernel's name for x
     MB_ADD, MB_XOR, MB_SET1, MB_ROL(x, n), MB_CH/MB_PAR/MB_MAJ(b, c, d), MB_XOR3(a, b, c)
     MB_LOAD(p), MB_STORE(p, v)   aligned loads and stores of MB_L words
     MB_ROWS(w, rows, off)        w[0..16) = the big-endian words of the 64-byte blocks at
                                  rows[i] + off, lane i (a transpose)
     MB_MIN_ROWS(w, co, cn, mh)   the same for the padded inner block of a minimal Binding
                                  Update (kbm_mac96_min), built from its three pieces
     MB_KEYS(s, o, keys)          s / o = the inner / outer midstates of keys[i], lane i
     MB_PICK_GT(a, b, x, y)       lane i: x where a > b (signed 32-bit), else y
   Nothing here runs unless sha1.c found the CPU features the including file was built for. */

#define MB_K1 MB_SET1(0x5A827999)
#define MB_K2 MB_SET1(0x6ED9EBA1)
#define MB_K3 MB_SET1((int)0x8F1BBCDCu)
#define MB_K4 MB_SET1((int)0xCA62C1D6u)

/* w[t] for t < 16; past that the schedule in a 16-word ring (t is a literal). The word being
   replaced goes first into the three-way XOR: it dies there, so AVX-512's ternary logic can
   overwrite it without a copy. */
#define MB_W(t)                                                                               \
    ((t) < 16 ? w[(t) & 15]                                                                   \
              : (w[(t) & 15] = MB_ROL(MB_XOR(MB_XOR3(w[(t) & 15], w[((t) + 13) & 15],         \
                                                     w[((t) + 8) & 15]),                      \
                                             w[((t) + 2) & 15]),                              \
                                      1)))
/* rol(b, 30) is taken first, so b is dead once F has read it: AVX-512's ternary logic, which
   overwrites its first operand, then needs no register copy. */
#define MB_R(a, b, c, d, e, F, k, t)                                                          \
    do {                                                                                      \
        MB_V b30_ = MB_ROL(b, 30);                                                            \
        e = MB_ADD(MB_ADD(e, MB_ADD(k, MB_W(t))), MB_ADD(MB_ROL(a, 5), F(b, c, d)));          \
        b = b30_;                                                                             \
    } while (0)
#define MB_R5(F, k, t)                                                                        \
    do {                                                                                      \
        MB_R(a, b, c, d, e, F, k, (t));                                                       \
        MB_R(e, a, b, c, d, F, k, (t) + 1);                                                   \
        MB_R(d, e, a, b, c, F, k, (t) + 2);                                                   \
        MB_R(c, d, e, a, b, F, k, (t) + 3);                                                   \
        MB_R(b, c, d, e, a, F, k, (t) + 4);                                                   \
    } while (0)

/* Advances the MB_L states s by one block each; consumes w (the ring is overwritten). */
MB_FN __attribute__((always_inline)) static inline void MB_NAME(compress)(MB_V s[5], MB_V w[16])
{
    MB_V a = s[0], b = s[1], c = s[2], d = s[3], e = s[4];
    const MB_V k1 = MB_K1, k2 = MB_K2, k3 = MB_K3, k4 = MB_K4;
    MB_R5(MB_CH, k1, 0);
    MB_R5(MB_CH, k1, 5);
    MB_R5(MB_CH, k1, 10);
    MB_R5(MB_CH, k1, 15);
    MB_R5(MB_PAR, k2, 20);
    MB_R5(MB_PAR, k2, 25);
    MB_R5(MB_PAR, k2, 30);
    MB_R5(MB_PAR, k2, 35);
    MB_R5(MB_MAJ, k3, 40);
    MB_R5(MB_MAJ, k3, 45);
    MB_R5(MB_MAJ, k3, 50);
    MB_R5(MB_MAJ, k3, 55);
    MB_R5(MB_PAR, k4, 60);
    MB_R5(MB_PAR, k4, 65);
    MB_R5(MB_PAR, k4, 70);
    MB_R5(MB_PAR, k4, 75);
    s[0] = MB_ADD(s[0], a);
    s[1] = MB_ADD(s[1], b);
    s[2] = MB_ADD(s[2], c);
    s[3] = MB_ADD(s[3], d);
    s[4] = MB_ADD(s[4], e);
}

#ifndef MB_COMPRESS_ONLY /* rr.c takes compress alone */
/* The inner block(s) are in w (rows[] by MB_ROWS, or built by the caller) and the inner
   midstates in s; finishes HMAC-SHA1-96 and writes the first 12 bytes of lane i to out[i]. */
/* One out-of-line copy of compress for the return-routability kernels: an RR chunk runs three
   kernels in turn (tokens, Kbm, MACs), and with compress inlined into each, their code outgrew
   the instruction cache (the preconfigured path runs one kernel and keeps it inlined). */
MB_FN __attribute__((noinline)) static void MB_NAME(compress_call)(MB_V s[5], MB_V w[16])
{
    MB_NAME(compress)(s, w);
}

MB_FN __attribute__((always_inline)) static inline void MB_NAME(outer)(MB_V s[5], MB_V w[16],
                                                                       const MB_V o[5],
                                                                       uint8_t *const out[],
                                                                       size_t n, int call)
{
    _Alignas(64) uint32_t t[3][MB_L];
    for (int j = 0; j < 5; j++)
        w[j] = s[j];
    w[5] = MB_SET1((int)0x80000000u);
    for (int j = 6; j < 15; j++)
        w[j] = MB_SET1(0);
    w[15] = MB_SET1((64 + 20) * 8);
    for (int j = 0; j < 5; j++)
        s[j] = o[j];
    if (call)
        MB_NAME(compress_call)(s, w);
    else
        MB_NAME(compress)(s, w);
    for (int j = 0; j < 3; j++)
        MB_STORE(t[j], s[j]);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 3; j++) {
            uint32_t x = __builtin_bswap32(t[j][i]);
            memcpy(out[i] + 4 * j, &x, 4);
        }
}

MB_FN void MB_NAME(kbm_mac96_mb)(const kbm_mac_key *const key[], const uint8_t *const blk[],
                                 size_t nblocks, uint8_t *const out[], size_t n)
{
    const uint8_t *rows[MB_L];
    const kbm_mac_key *keys[MB_L];
    MB_V s[5], o[5], w[16];
    for (size_t i = 0; i < MB_L; i++) { /* lanes past n repeat lane 0; never stored */
        rows[i] = blk[i < n ? i : 0];
        keys[i] = key[i < n ? i : 0];
    }
    MB_KEYS(s, o, keys);
    for (size_t b = 0; b < nblocks; b++) {
        MB_ROWS(w, rows, 64 * b);
        MB_NAME(compress)(s, w);
    }
    MB_NAME(outer)(s, w, o, out, n, 0);
}

/* kbm_mac96_mb with a block count per lane: lane i hashes nblocks[i] >= 1 blocks at blk[i],
   and once those are done its state is held (the compressions still run on every lane, and a
   held lane's result is thrown away) while the longer lanes go on. A held lane's rows stay on
   its last block, so no lane reads past its own blocks. Lanes past n repeat lane 0. */
MB_FN void MB_NAME(kbm_mac96_mbv)(const kbm_mac_key *const key[], const uint8_t *const blk[],
                                  const size_t nblocks[], uint8_t *const out[], size_t n)
{
    const uint8_t *rows[MB_L];
    const kbm_mac_key *keys[MB_L];
    size_t nb[MB_L], most = 0;
    _Alignas(64) uint32_t count[MB_L];
    MB_V s[5], o[5], w[16], held[5];
    for (size_t i = 0; i < MB_L; i++) {
        size_t j = i < n ? i : 0;
        rows[i] = blk[j];
        keys[i] = key[j];
        nb[i] = nblocks[j];
        count[i] = (uint32_t)nb[i];
        most = nb[i] > most ? nb[i] : most;
    }
    const MB_V left = MB_LOAD(count);
    MB_KEYS(s, o, keys);
    for (size_t b = 0; b < most; b++) {
        const uint8_t *at[MB_L];
        for (size_t i = 0; i < MB_L; i++)
            at[i] = rows[i] + 64 * (b < nb[i] ? b : nb[i] - 1);
        MB_ROWS(w, at, 0);
        for (int j = 0; j < 5; j++)
            held[j] = s[j];
        MB_NAME(compress)(s, w);
        const MB_V bv = MB_SET1((int)b);
        for (int j = 0; j < 5; j++)
            s[j] = MB_PICK_GT(left, bv, s[j], held[j]);
    }
    MB_NAME(outer)(s, w, o, out, n, 0);
}

MB_FN void MB_NAME(kbm_mac96_min_mb)(const kbm_mac_key *const key[], const uint8_t *const co[],
                                     const uint8_t *const cn[], const uint8_t *const mh[],
                                     uint8_t *const out[], size_t n)
{
    const uint8_t *c0[MB_L], *c1[MB_L], *m[MB_L];
    const kbm_mac_key *keys[MB_L];
    MB_V s[5], o[5], w[16];
    for (size_t i = 0; i < MB_L; i++) {
        size_t j = i < n ? i : 0;
        c0[i] = co[j];
        c1[i] = cn[j];
        m[i] = mh[j];
        keys[i] = key[j];
    }
    MB_KEYS(s, o, keys);
    MB_MIN_ROWS(w, c0, c1, m);
    MB_NAME(compress)(s, w);
    MB_NAME(outer)(s, w, o, out, n, 0);
}

/* Lane i: First(96, HMAC_SHA1(key, m_i)) of the one-block message padded at blk[i] into out[i],
   one key for every lane (its midstates broadcast, no transpose): the keygen tokens. Lanes past
   n repeat lane 0 and are never stored. */
MB_FN void MB_NAME(kbm_hmac1_mb)(const kbm_mac_key *key, const uint8_t *const blk[],
                                 uint8_t *const out[], size_t n)
{
    const uint8_t *rows[MB_L];
    MB_V s[5], o[5], w[16];
    for (size_t i = 0; i < MB_L; i++)
        rows[i] = blk[i < n ? i : 0];
    for (int j = 0; j < 5; j++) {
        s[j] = MB_SET1((int)key->inner[j]);
        o[j] = MB_SET1((int)key->outer[j]);
    }
    MB_ROWS(w, rows, 0);
    MB_NAME(compress_call)(s, w);
    MB_NAME(outer)(s, w, o, out, n, 1);
}

MB_FN uint32_t MB_NAME(kbm_sha1_mb_bench)(const uint8_t *blocks, uint64_t rounds)
{
    const uint8_t *rows[MB_L];
    MB_V s[5], w[16];
    _Alignas(64) uint32_t t[MB_L];
    for (size_t i = 0; i < MB_L; i++)
        rows[i] = blocks + 64 * i;
    for (int j = 0; j < 5; j++)
        s[j] = MB_SET1(j + 1);
    for (uint64_t r = 0; r < rounds; r++) {
        MB_ROWS(w, rows, 0);
        MB_NAME(compress)(s, w);
    }
    MB_STORE(t, s[0]);
    return t[0];
}

/* Lane i: SHA-1 of the one padded block at blk[i], then that 20-byte digest as an HMAC key
   reduced to its midstates (kbm_mac_key_init) in out[i]: three compressions, the last two
   on blocks built in registers. Lanes past n repeat lane 0 and are never stored. */
MB_FN void MB_NAME(kbm_sha1_key_mb)(const uint8_t *const blk[], kbm_mac_key *const out[],
                                    size_t n)
{
    const uint8_t *rows[MB_L];
    MB_V s[5], d[5], w[16];
    _Alignas(64) uint32_t t[10][MB_L];
    uint32_t iv[5];
    kbm_sha1_init(iv);
    for (size_t i = 0; i < MB_L; i++)
        rows[i] = blk[i < n ? i : 0];
    for (int j = 0; j < 5; j++)
        s[j] = MB_SET1((int)iv[j]);
    MB_ROWS(w, rows, 0);
    MB_NAME(compress_call)(s, w);
    for (int j = 0; j < 5; j++)
        d[j] = s[j];
    /* the key padded to 64 bytes (zeros) XOR ipad, then XOR opad */
    for (int pad = 0; pad < 2; pad++) {
        const MB_V x = MB_SET1(pad ? 0x5C5C5C5C : 0x36363636);
        for (int j = 0; j < 5; j++) {
            w[j] = MB_XOR(d[j], x);
            s[j] = MB_SET1((int)iv[j]);
        }
        for (int j = 5; j < 16; j++)
            w[j] = x;
        MB_NAME(compress_call)(s, w);
        for (int j = 0; j < 5; j++)
            MB_STORE(t[5 * pad + j], s[j]);
    }
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 5; j++) {
            out[i]->inner[j] = t[j][i];
            out[i]->outer[j] = t[5 + j][i];
        }
    kbm_wipe(t, sizeof t);
}
#endif /* MB_COMPRESS_ONLY */
