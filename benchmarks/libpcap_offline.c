/* Issue 11 item 7: libpcap's offline reader, the way kbmfast would use it to read a capture
 * file into a batch buffer (pcap_open_offline + pcap_next_ex, IPv6 packets of Ethernet frames
 * whose first header after IPv6 is a Destination Options header or a Mobility Header, copied
 * back to back with their offsets, frame numbers and times, 65536 a batch as kbmfast.capture).
 *
 *   cc -O2 -o libpcap_offline benchmarks/libpcap_offline.c -lpcap
 *   ./libpcap_offline CAPTURE [REPEAT]    -> best wall time over REPEAT runs, packets, ns/frame
 *
 * docs/tools.md gives the figures against kbmfast's own reader (csrc/capture.c). */
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 65536u
#define BATCH_BYTES (1u << 26)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CAPTURE [REPEAT]\n", argv[0]);
        return 2;
    }
    int repeat = argc > 2 ? atoi(argv[2]) : 5;
    uint8_t *data = malloc(BATCH_BYTES + 65536);
    uint64_t *offsets = malloc(sizeof(uint64_t) * (BATCH + 1));
    uint64_t *frames = malloc(sizeof(uint64_t) * BATCH);
    int64_t *times = malloc(sizeof(int64_t) * BATCH);
    if (!data || !offsets || !frames || !times) return 1;
    double best = 1e30;
    uint64_t packets = 0, total = 0, batches = 0, sink = 0;
    for (int r = 0; r < repeat; r++) {
        char err[PCAP_ERRBUF_SIZE];
        double t0 = now();
        pcap_t *p = pcap_open_offline(argv[1], err);
        if (!p) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        if (pcap_datalink(p) != DLT_EN10MB) {
            fprintf(stderr, "not Ethernet\n");
            return 1;
        }
        struct pcap_pkthdr *h;
        const u_char *b;
        uint64_t frame = 0, n = 0;
        packets = total = batches = 0;
        offsets[0] = 0;
        int rc;
        while ((rc = pcap_next_ex(p, &h, &b)) == 1) {
            frame++;
            total++;
            uint32_t cap = h->caplen;
            if (cap < 14 + 40 || b[12] != 0x86 || b[13] != 0xdd || (b[14 + 6] != 60 && b[14 + 6] != 135)) continue;
            uint32_t len = cap - 14;
            if (n == BATCH || offsets[n] + len > BATCH_BYTES) {
                sink += offsets[n];
                batches++;
                n = 0;
            }
            memcpy(data + offsets[n], b + 14, len);
            offsets[n + 1] = offsets[n] + len;
            frames[n] = frame;
            times[n] = (int64_t)h->ts.tv_sec * 1000000 + h->ts.tv_usec;
            n++;
            packets++;
        }
        if (rc == -1) {
            fprintf(stderr, "%s\n", pcap_geterr(p));
            return 1;
        }
        if (n) batches++;
        pcap_close(p);
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("libpcap %s: %llu frames, %llu packets, %llu batches, best of %d: %.3f s, %.1f ns/frame, %.2f Mframes/s (%llu)\n",
           pcap_lib_version(), (unsigned long long)total, (unsigned long long)packets, (unsigned long long)batches, repeat,
           best, best * 1e9 / (double)total, (double)total / best / 1e6, (unsigned long long)(sink & 1));
    free(data);
    free(offsets);
    free(frames);
    free(times);
    return 0;
}
