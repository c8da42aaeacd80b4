/* The MAC stage of generated traffic alone: the chunks' RFC 4449 key derivations
   (kbm_derive_batch_with) and MACs (kbm_mac96_batch_with), as verify.c asks for them, chunk by
   chunk, from a file benchmarks/mix_chunks.py writes (per chunk of 32 packets: derivations
   needed, then the Mobility Header length of each MACed packet). Keys and bytes are synthetic
   (8-byte care-of nonces, 20-byte keys); what is measured is the kernels' work and how the
   lanes are filled. Rows: MACs + derivations, MACs only, derivations only, ns per packet
   (all 32 of a chunk counted), per-thread CPU time, runs of all variants interleaved.

   With -DOLD_KERNELS, also another tree's kernels.c (its kbm_mac96_batch_with renamed
   old_mac96_batch_with) and that tree's derivation (one at a time, as peers.c's kbm_kcn_key
   did: HMAC, SHA-1, key set-up, a 4 KiB stack wipe), for before/after in one run:

     cmake --build build/dev --target kbmcore       # or any Release build of kbmcore
     python -P benchmarks/mix_chunks.py shapes > build/chunks_shapes.txt
     gcc -O2 -std=c11 -Icsrc -c OLD/csrc/kernels.c -o build/old_kernels.o
     objcopy --redefine-sym kbm_mac96_batch_with=old_mac96_batch_with build/old_kernels.o
     objcopy -w --localize-symbol='kbm_*' build/old_kernels.o
     gcc -O2 -std=c11 -Icsrc -DOLD_KERNELS benchmarks/mix_parts.c build/old_kernels.o \
         build/dev/libkbmcore.a -lcrypto -lpthread -o build/mix_parts
     taskset -c 1 build/mix_parts build/chunks_shapes.txt [KERNEL]    # 3: avx512 (default)

   Without OLD_KERNELS, drop the two objcopy steps and old_kernels.o. */
#define _POSIX_C_SOURCE 200809L
#include "mac.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXC 4096 /* chunks */
#define RUNS 15

static int nder[MAXC], nmac[MAXC], nchunks;
static size_t lens[MAXC][32];
static kbm_mac_key keys[32], kcn[32], derived[32];
static uint8_t data[32][KBM_MH_MAX + 32], macs[32][12], hkt[8], nonce[8];

#ifdef OLD_KERNELS
void old_mac96_batch_with(int id, const kbm_mac96_req *r, size_t n);

__attribute__((noinline)) static void burn_old(void)
{
    uint8_t s[4096];
    kbm_wipe(s, sizeof s);
}

static void derive_old(const kbm_derive_req *r)
{
    uint8_t msg[16 + 64 + 1], digest[20], tokens[16];
    memcpy(msg, r->care_of, 16);
    memcpy(msg + 16, r->nonce, r->nonce_len);
    msg[16 + r->nonce_len] = 1;
    kbm_hmac_sha1_mid(r->kcn, msg, 17 + r->nonce_len, digest);
    memcpy(tokens, r->hkt, 8);
    memcpy(tokens + 8, digest, 8);
    kbm_sha1(tokens, 16, digest);
    kbm_mac_key_init(r->out, digest, 20);
    kbm_wipe(digest, sizeof digest);
    kbm_wipe(tokens, sizeof tokens);
    kbm_wipe(msg, sizeof msg);
    burn_old();
}
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return 1e9 * (double)t.tv_sec + (double)t.tv_nsec;
}

/* what: 1 derivations, 2 MACs, 3 both; old: the other tree's */
static double run(int id, int what, int old)
{
    kbm_mac96_req r[32];
    kbm_derive_req d[32];
    double t = now();
    for (int c = 0; c < nchunks; c++) {
        size_t nd = (size_t)nder[c], nm = (size_t)nmac[c];
        for (size_t i = 0; i < nd; i++)
            d[i] = (kbm_derive_req){&kcn[i], hkt, data[i], nonce, sizeof nonce, &derived[i]};
        if (what & 1) {
#ifdef OLD_KERNELS
            if (old)
                for (size_t i = 0; i < nd; i++)
                    derive_old(&d[i]);
            else
#endif
                kbm_derive_batch_with(id, d, nd);
        }
        for (size_t i = 0; i < nm; i++)
            r[i] = (kbm_mac96_req){i < nd ? &derived[i] : &keys[i], data[i], data[i] + 16,
                                   data[i] + 32, lens[c][i], macs[i]};
        if (what & 2) {
#ifdef OLD_KERNELS
            if (old)
                old_mac96_batch_with(id, r, nm);
            else
#endif
                kbm_mac96_batch_with(id, r, nm);
        }
    }
    (void)old;
    return now() - t;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mix_parts CHUNKS_FILE [KERNEL_ID]\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    char line[8192];
    while (nchunks < MAXC && fgets(line, sizeof line, f)) {
        char *p = line, *e;
        nder[nchunks] = (int)strtol(p, &p, 10);
        int k = 0;
        for (long v; k < 32 && (v = strtol(p, &e, 10), e != p); p = e)
            if (v >= 14 && v <= KBM_MH_MAX)
                lens[nchunks][k++] = (size_t)v;
        nmac[nchunks] = k;
        nder[nchunks] = nder[nchunks] < k ? nder[nchunks] : k;
        nchunks++;
    }
    fclose(f);
    int id = argc > 2 ? atoi(argv[2]) : KBM_KERNEL_AVX512;
    if (!kbm_kernel_supported(id)) {
        fprintf(stderr, "kernel %d: not supported here\n", id);
        return 1;
    }
    for (int i = 0; i < 32; i++) {
        uint8_t k[20];
        for (int j = 0; j < 20; j++)
            k[j] = (uint8_t)(i * 31 + j);
        kbm_mac_key_init(&keys[i], k, sizeof k);
        k[0] ^= 1;
        kbm_mac_key_init(&kcn[i], k, sizeof k);
        for (size_t j = 0; j < sizeof data[i]; j++)
            data[i][j] = (uint8_t)(i * 7 + (int)j * 13);
    }
    static const char *const what[] = {"", "derivations only", "MACs only", "MACs + derivations"};
#ifdef OLD_KERNELS
    enum { TREES = 2 };
#else
    enum { TREES = 1 };
#endif
    static double t[4][2][RUNS];
    for (int r = 0; r < RUNS; r++)
        for (int w = 1; w <= 3; w++)
            for (int old = 0; old < TREES; old++)
                t[w][old][r] = run(id, w, old);
    double packets = 32.0 * nchunks;
    printf("%d chunks of 32 packets, kernel %s, %d interleaved runs: ns per packet, median (best)\n",
           nchunks, kbm_kernel_name(id), RUNS);
    for (int w = 3; w >= 1; w--) {
        printf("%-20s", what[w]);
        for (int old = 0; old < TREES; old++) {
            qsort(t[w][old], RUNS, sizeof(double), cmp);
            printf("  %s %6.1f (%5.1f)", old ? "old" : "new", t[w][old][RUNS / 2] / packets,
                   t[w][old][0] / packets);
        }
        if (TREES == 2)
            printf("  old/new %.2f", t[w][1][RUNS / 2] / t[w][0][RUNS / 2]);
        printf("\n");
    }
    return 0;
}
