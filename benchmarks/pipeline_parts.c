/* Where the verifier's time goes, stage by stage: stripped variants of kbm_verify (verify.c's
   verify_upto, the same code stopped after a stage) on minimal Binding Updates, ns per packet:
     - parse:   offsets copied, packet touched, minimal-layout match, checksum, address checks,
                hash, bucket prefetch;
     - probe:   + the bucket read (tag compare), peer and sequence-slot prefetches;
     - resolve: + the peer read and its home-address compare;
     - mac:     + the MACs (the chosen kernel, a chunk's MACs per call);
     - full:    + authenticator compare, slot read and compare-and-swap (kbm_verify itself);
   and "mac alone": kbm_mac96_batch on the same packets' requests, CHUNK at a time, nothing else.
   Each timed run verifies one batch stream (batch 4096) of fresh packets: the peers in random
   order, each one's sequence numbers rising (the full variant accepts every packet; checked).
   Runs of all variants interleave round-robin; per-thread CPU time; best and median.

   Build and run (from the repository root, after a build in build/crel):
     cmake -S . -B build/crel -DCMAKE_BUILD_TYPE=Release && cmake --build build/crel --target kbmcore
     gcc -O3 -std=c11 -Icsrc benchmarks/pipeline_parts.c build/crel/libkbmcore.a -lcrypto \
         -lpthread -o build/pipeline_parts
     taskset -c 1 build/pipeline_parts [PEERS [PACKETS [ROUNDS]]]     # 10000 40960 9
   Add -DCHUNK=64 (or another size) to try another chunk size. */
#define _GNU_SOURCE
#ifdef VERIFY_C
/* -DVERIFY_C='"/path/to/old/csrc/verify.c"' -I/path/to/old/csrc, linked with that tree's
   libkbmcore.a: another build's kbm_verify, for before/after figures in one run (the stripped
   variants need this tree's verify_upto, so only "full" and "mac alone" are timed) */
#include VERIFY_C
#define UPTO_PARSE 0
#define UPTO_PROBE 0
#define UPTO_RESOLVE 0
#define UPTO_MAC 0
#define verify_upto(v, buf, len, o, m, verdicts, details, where, upto)                         \
    ((void)(upto), kbm_verify(v, buf, len, o, m, verdicts, details, where))
#else
#include "../csrc/verify.c"
#endif

#include "min_bu.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCH 4096

static size_t npeers, npackets;
static uint8_t (*homes)[16], (*kbms)[KBM_SIZE];
static uint16_t *seqs;
static uint8_t *buf;
static uint64_t *offsets;
static uint32_t *order;
static kbm_mac_key *keys;
static kbm_mac96_req *reqs;
static uint8_t (*macs)[12];

/* Peer i's next minimal Binding Update (min_bu.h). */
static void build(uint8_t *p, size_t i)
{
    build_min_bu(p, homes[i], kbms[i], ++seqs[i]);
}

/* A new stream: the peers in random order (cycling when there are more packets than peers). */
static void fill(void)
{
    for (size_t k = 0; k < npackets; k++) {
        if (k % npeers == 0)
            for (size_t i = npeers - 1; i > 0; i--) {
                size_t j = next() % (i + 1);
                uint32_t t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        uint8_t *p = buf + PKT * k;
        build(p, order[k % npeers]);
        reqs[k] = (kbm_mac96_req){&keys[order[k % npeers]], p + 8, p + 24, p + 64, 32, macs[k]};
    }
}

enum { V_PARSE, V_PROBE, V_RESOLVE, V_MAC, V_FULL, V_MAC_ALONE, NV };
static const char *names[NV] = {"parse", "+ probe", "+ resolve", "+ mac", "full (kbm_verify)",
                                "mac alone"};


static double run(kbm_verifier *v, int variant)
{
    static uint8_t verdicts[BATCH];
    size_t where, bad = 0;
    double t = cpu_ns();
    for (size_t b = 0; b < npackets; b += BATCH) {
        size_t m = npackets - b < BATCH ? npackets - b : BATCH;
        const uint64_t *o = offsets + b;
        int rc = 0;
        switch (variant) {
        case V_PARSE:
        case V_PROBE:
        case V_RESOLVE:
        case V_MAC: {
            static const int upto[] = {UPTO_PARSE, UPTO_PROBE, UPTO_RESOLVE, UPTO_MAC};
            rc = verify_upto(v, buf, PKT * npackets, o, m, verdicts, NULL, &where, upto[variant]);
            break;
        }
        case V_FULL:
            rc = kbm_verify(v, buf, PKT * npackets, o, m, verdicts, NULL, &where);
            for (size_t i = 0; i < m; i++)
                if (verdicts[i] != KBM_ACCEPTED && bad++ < 5)
                    fprintf(stderr, "packet %zu: verdict %d\n", b + i, verdicts[i]);
            break;
        default:
            for (size_t i = 0; i < m; i += CHUNK)
                kbm_mac96_batch(reqs + b + i, m - i < CHUNK ? m - i : CHUNK);
        }
        if (rc) {
            fprintf(stderr, "kbm_verify: %d\n", rc);
            exit(1);
        }
    }
    t = cpu_ns() - t;
    if (bad) {
        fprintf(stderr, "%zu packets not accepted\n", bad);
        exit(1);
    }
    return t / (double)npackets;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    npeers = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
    npackets = argc > 2 ? strtoul(argv[2], NULL, 10) : 40960;
    int rounds = argc > 3 ? atoi(argv[3]) : 9;
    homes = calloc(npeers, 16);
    kbms = calloc(npeers, KBM_SIZE);
    seqs = calloc(npeers, sizeof *seqs);
    order = calloc(npeers, sizeof *order);
    buf = malloc(PKT * npackets);
    offsets = malloc((npackets + 1) * sizeof *offsets);
    keys = calloc(npeers, sizeof *keys);
    reqs = calloc(npackets, sizeof *reqs);
    macs = calloc(npackets, 12);
    kbm_peer_spec *specs = calloc(npeers, sizeof *specs);
    int st;
    kbm_verifier *v = kbm_verifier_new(NULL, 32768, &st);
    if (!homes || !kbms || !seqs || !order || !buf || !offsets || !keys || !reqs || !macs ||
        !specs || !v) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < npeers; i++) {
        homes[i][0] = 0x20;
        homes[i][1] = 0x01;
        homes[i][2] = 0x0d;
        homes[i][3] = 0xb8;
        uint64_t r = next();
        memcpy(homes[i] + 8, &r, 8);
        memcpy(homes[i] + 4, &i, 4);
        for (int j = 0; j < KBM_SIZE; j++)
            kbms[i][j] = (uint8_t)next();
        kbm_mac_key_init(&keys[i], kbms[i], KBM_SIZE);
        specs[i] = (kbm_peer_spec){.kind = KBM_KIND_KBM, .key = kbms[i], .key_len = KBM_SIZE};
        memcpy(specs[i].home, homes[i], 16);
        order[i] = (uint32_t)i;
    }
    size_t failed;
    if (kbm_verifier_set_peers(v, specs, npeers, &failed)) {
        fprintf(stderr, "set_peers failed\n");
        return 1;
    }
    for (size_t k = 0; k <= npackets; k++)
        offsets[k] = PKT * k;
    double *t[NV];
    for (int i = 0; i < NV; i++)
        t[i] = calloc((size_t)rounds, sizeof(double));
    printf("kernel %s, %zu peers, %zu packets a run, batch %d, chunk %d\n", kbm_kernel(), npeers,
           npackets, BATCH, CHUNK);
    for (int r = 0; r < rounds; r++) {
        fill(); /* fresh sequence numbers for the full variant; the others leave state alone */
        for (int i = 0; i < NV; i++) { /* a rotating order: no variant always runs first */
            int which = (i + r) % NV;
#ifdef VERIFY_C
            if (which < V_FULL)
                continue;
#endif
            t[which][r] = run(v, which);
        }
    }
    printf("%-20s %8s %8s %8s %8s  (ns per packet; stage: this variant minus the one above)\n",
           "variant", "best", "median", "stage", "(median)");
    double prev = 0, prev_med = 0;
    for (int i = 0; i < NV; i++) {
        qsort(t[i], (size_t)rounds, sizeof(double), cmp);
        double med = t[i][rounds / 2];
        printf("%-20s %8.1f %8.1f", names[i], t[i][0], med);
        if (i < V_MAC_ALONE)
            printf(" %8.1f %8.1f", t[i][0] - prev, med - prev_med);
        printf("\n");
        prev = t[i][0];
        prev_med = med;
    }
    printf("full: %.2f M/s (best), %.2f M/s (median)\n", 1e3 / t[V_FULL][0],
           1e3 / t[V_FULL][rounds / 2]);
    return 0;
}
