/* The canonical minimal Binding Update (verify.c's minimal layout, 96 bytes) of the benchmark
   harnesses (pipeline_parts.c, big_table.c): from home, care-of = home with byte 3 flipped (another
   network), to 2001:db8::1, sequence seq, lifetime 100, its authenticator under kbm; and the
   harnesses' thread-CPU clock and xorshift generator. */
#ifndef KBM_BENCH_MIN_BU_H
#define KBM_BENCH_MIN_BU_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kbm.h"

#define PKT 96

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return 1e9 * (double)ts.tv_sec + (double)ts.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const uint8_t cn[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};

static void build_min_bu(uint8_t *p, const uint8_t home[16], const uint8_t kbm[KBM_SIZE],
                         uint16_t seq)
{
    memset(p, 0, PKT);
    p[0] = 0x60;
    p[5] = 56;
    p[6] = 60;
    p[7] = 64;
    uint8_t *coa = p + 8;
    memcpy(coa, home, 16);
    coa[3] ^= 1;
    memcpy(p + 24, cn, 16);
    p[40] = 135;
    p[41] = 2;
    p[42] = 1;
    p[43] = 2;
    p[46] = 0xC9;
    p[47] = 16;
    memcpy(p + 48, home, 16);
    uint8_t *mh = p + 64;
    mh[0] = 59;
    mh[1] = 3;
    mh[2] = 5;
    mh[6] = (uint8_t)(seq >> 8);
    mh[7] = (uint8_t)seq;
    mh[8] = 0x80; /* A */
    mh[11] = 100; /* lifetime */
    mh[12] = 1;   /* PadN, 4 bytes */
    mh[13] = 4;
    mh[18] = 5; /* Binding Authorization Data */
    mh[19] = 12;
    kbm_authenticator(kbm, coa, cn, mh, 32, mh + 20);
    uint16_t c = kbm_mh_checksum(p + 48, cn, mh, 32);
    mh[4] = (uint8_t)(c >> 8);
    mh[5] = (uint8_t)c;
}

#endif
