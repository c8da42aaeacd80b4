/* 1 M peers against 10 k, in one process: kbm_verify (minimal Binding Updates, batch 4096) on
   verifiers of both sizes, with the large tables on huge pages and on 4 KiB pages
   (KBMFAST_HUGEPAGES=0 while that verifier is built), and with a state file or in memory. Each
   round builds fresh packets (peers in random order, each one's sequence numbers rising; every
   verdict must be "accepted") and runs every verifier once, in a rotating order; per-thread CPU
   time. Printed per verifier: median and best ns per packet, and the median over rounds of its
   rate / the same round's rate of the 10 k verifier of the same kind (the ratio issue 14 sets a
   target for: >= 0.75). Also each verifier's AnonHugePages growth while it was built.

   Build and run (from the repository root, after a build in build/crel or build/dev):
     cmake --build build/dev --target kbmcore
     gcc -O3 -std=c11 -Icsrc benchmarks/big_table.c build/dev/libkbmcore.a -lcrypto \
         -lpthread -o build/big_table
     taskset -c 1 build/big_table [BIG [PACKETS [ROUNDS [STATE_DIR [SMALL_PACKETS [huge]]]]]]
         # defaults 1000000 262144 7 (no state file) 100000: the packets of kbmfast bench's 10 k
         # row (10 rounds of 10 000)
   With STATE_DIR, a state-file verifier of each size is added (files made there, removed). */
#define _GNU_SOURCE
#include "kbm.h"
#include "min_bu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH 4096
#define SMALL 10000

static uint8_t (*homes)[16], (*kbms)[KBM_SIZE];
static uint16_t *seqs;
static uint32_t *order;

static void build(uint8_t *p, size_t i)
{
    build_min_bu(p, homes[i], kbms[i], ++seqs[i]);
}

typedef struct {
    uint8_t *buf;
    uint64_t *offsets;
    size_t peers, packets;
} stream;

/* Fresh packets: peers 0..s->peers-1 in random order, cycling. */
static void fill(stream *s)
{
    for (size_t i = 0; i < s->peers; i++)
        order[i] = (uint32_t)i;
    for (size_t k = 0; k < s->packets; k++) {
        if (k % s->peers == 0)
            for (size_t i = s->peers - 1; i > 0; i--) {
                size_t j = next() % (i + 1);
                uint32_t t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        build(s->buf + PKT * k, order[k % s->peers]);
    }
}

static long anon_huge_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

typedef struct {
    char name[48];
    size_t peers;
    int huge;
    char path[512];
    kbm_verifier *v;
    stream *s;
    long huge_kb;
    double *t;
} config;

static uint32_t crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    return ~crc;
}

/* An empty state file (docs/state-format.md), mode 0600. */
static void new_state_file(const char *path)
{
    uint8_t h[64] = {'K', 'B', 'M', 'S', 'T', 'A', 'T', 'E', 2, 0, 0, 0, 64, 0, 0, 0, 64};
    for (int i = 32; i < 48; i++)
        h[i] = (uint8_t)next();
    uint8_t zero[4] = {0};
    uint32_t crc = crc32(crc32(crc32(0, h, 24), h + 32, 16), zero, 4);
    memcpy(h + 28, &crc, 4);
    FILE *f = fopen(path, "wbx");
    if (!f || fwrite(h, 1, sizeof h, f) != sizeof h || fclose(f) != 0) {
        fprintf(stderr, "%s: cannot create\n", path);
        exit(1);
    }
}

static kbm_verifier *make(config *c, kbm_peer_spec *specs)
{
    if (c->path[0]) {
        unlink(c->path);
        new_state_file(c->path);
    }
    int st;
    setenv("KBMFAST_HUGEPAGES", c->huge ? "1" : "0", 1);
    long before = anon_huge_kb();
    kbm_verifier *v = kbm_verifier_new(c->path[0] ? c->path : NULL, 32768, &st);
    size_t failed;
    if (!v || kbm_verifier_set_peers(v, specs, c->peers, &failed)) {
        fprintf(stderr, "%s: verifier not built\n", c->name);
        exit(1);
    }
    c->huge_kb = anon_huge_kb() - before;
    return v;
}

static double run(kbm_verifier *v, const stream *s)
{
    static uint8_t verdicts[BATCH];
    size_t where;
    double t = cpu_ns();
    for (size_t b = 0; b < s->packets; b += BATCH) {
        size_t m = s->packets - b < BATCH ? s->packets - b : BATCH;
        int rc = kbm_verify(v, s->buf, PKT * s->packets, s->offsets + b, m, verdicts, NULL, &where);
        if (rc) {
            fprintf(stderr, "kbm_verify: %d\n", rc);
            exit(1);
        }
        for (size_t i = 0; i < m; i++)
            if (verdicts[i] != KBM_ACCEPTED) {
                fprintf(stderr, "packet %zu: verdict %d\n", b + i, verdicts[i]);
                exit(1);
            }
    }
    return (cpu_ns() - t) / (double)s->packets;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static stream *new_stream(size_t peers, size_t packets)
{
    stream *s = calloc(1, sizeof *s);
    s->peers = peers;
    s->packets = packets;
    s->buf = malloc(PKT * packets);
    s->offsets = malloc((packets + 1) * sizeof *s->offsets);
    if (!s->buf || !s->offsets) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t k = 0; k <= packets; k++)
        s->offsets[k] = PKT * k;
    return s;
}

int main(int argc, char **argv)
{
    size_t big = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    size_t packets = argc > 2 ? strtoul(argv[2], NULL, 10) : 262144;
    int rounds = argc > 3 ? atoi(argv[3]) : 7;
    const char *dir = argc > 4 && argv[4][0] ? argv[4] : NULL;
    size_t small_packets = argc > 5 ? strtoul(argv[5], NULL, 10) : 100000;
    int only_huge = argc > 6 && strcmp(argv[6], "huge") == 0; /* for profiles */
    umask(077);
    homes = calloc(big, 16);
    kbms = calloc(big, KBM_SIZE);
    seqs = calloc(big, sizeof *seqs);
    order = calloc(big, sizeof *order);
    kbm_peer_spec *specs = calloc(big, sizeof *specs);
    if (!homes || !kbms || !seqs || !order || !specs || big < SMALL || rounds < 1) {
        fprintf(stderr, "out of memory, or BIG < %d\n", SMALL);
        return 1;
    }
    for (size_t i = 0; i < big; i++) {
        homes[i][0] = 0x20;
        homes[i][1] = 0x01;
        homes[i][2] = 0x0d;
        homes[i][3] = 0xb8;
        uint64_t r = next();
        memcpy(homes[i] + 8, &r, 8);
        memcpy(homes[i] + 4, &i, 4);
        for (int j = 0; j < KBM_SIZE; j++)
            kbms[i][j] = (uint8_t)next();
        specs[i] = (kbm_peer_spec){.kind = KBM_KIND_KBM, .key = kbms[i], .key_len = KBM_SIZE};
        memcpy(specs[i].home, homes[i], 16);
    }
    stream *small = new_stream(SMALL, small_packets), *large = new_stream(big, packets);
    config cs[8];
    int nc = 0;
    for (int file = 0; file < (dir ? 2 : 1); file++)
        for (int huge = 1; huge >= (only_huge ? 1 : 0); huge--)
            for (int size = 0; size < 2; size++) {
                config *c = &cs[nc++];
                memset(c, 0, sizeof *c);
                c->peers = size ? big : SMALL;
                c->huge = huge;
                c->s = size ? large : small;
                snprintf(c->name, sizeof c->name, "%zu peers, %s, %s", c->peers,
                         huge ? "huge" : "4k", file ? "state file" : "memory");
                if (file)
                    snprintf(c->path, sizeof c->path, "%s/big_table.%d.%d.state", dir, huge,
                             size);
            }
    for (int i = 0; i < nc; i++) {
        cs[i].v = make(&cs[i], specs);
        cs[i].t = calloc((size_t)rounds, sizeof(double));
    }
    printf("kernel %s, %zu and %d peers, %zu and %zu packets a run, batch %d, %d rounds\n",
           kbm_kernel(), big, SMALL, packets, small_packets, BATCH, rounds);
    double *ratio = calloc((size_t)(nc * rounds), sizeof(double));
    for (int r = 0; r < rounds; r++) {
        fill(small);
        fill(large);
        for (int i = 0; i < nc; i++) {
            int which = (i + r) % nc;
            cs[which].t[r] = run(cs[which].v, cs[which].s);
        }
        for (int i = 0; i < nc; i += 2) /* configs come in pairs: 10 k, then big */
            ratio[(i + 1) * rounds + r] = cs[i].t[r] / cs[i + 1].t[r];
    }
    printf("%-40s %9s %9s %9s %9s %12s\n", "verifier", "median", "best", "M/s med", "vs 10 k",
           "huge pages");
    for (int i = 0; i < nc; i++) {
        qsort(cs[i].t, (size_t)rounds, sizeof(double), cmp);
        double med = cs[i].t[rounds / 2];
        printf("%-40s %9.1f %9.1f %9.2f", cs[i].name, med, cs[i].t[0], 1e3 / med);
        if (i & 1) {
            qsort(ratio + i * rounds, (size_t)rounds, sizeof(double), cmp);
            printf(" %9.2f", ratio[i * rounds + rounds / 2]);
        } else {
            printf(" %9s", "");
        }
        printf(" %9ld kB\n", cs[i].huge_kb);
    }
    for (int i = 0; i < nc; i++) {
        kbm_verifier_free(cs[i].v);
        if (cs[i].path[0])
            unlink(cs[i].path);
    }
    return 0;
}
