/* libFuzzer harness for the C core alone (build: tests/fuzz/run.sh; CI runs it under ASan+UBSan).
   Every input goes through the parser with option capture, and through a verifier holding one
   draft peer and one RFC 4449 peer whose home addresses the seeds use, so the whole pipeline
   (parse, lookup, key derivation, MAC, sequence table) sees hostile bytes. The verdict must be
   in range; anything else (a crash, an out-of-bounds read, UB) is found by the sanitizers.
   The pipeline runs once per MAC kernel this CPU has, on 17 copies of the input (so the
   multi-buffer kernels get full lanes and a remainder), and every kernel's MAC of the input,
   read as key | care-of | correspondent | Mobility Header, must equal the portable one.
   A second verifier with return routability (fixed Kcn and nonces) answers the input as a
   Home / Care-of Test Init and verifies it as an RR Binding Update. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbm.h"
#include "mac.h"
#include "two_peers.h"

static kbm_verifier *verifier, *rr_verifier;

static void setup(void)
{
    verifier = fuzz_two_peers();
    int status;
    /* return routability: nonces with serials 0..2 (indices 0, 1, 2), a table of 4 RR peers */
    static const uint8_t nonces[24] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                       17, 18, 19, 20, 21, 22, 23, 24};
    rr_verifier = kbm_verifier_new(NULL, 32768, &status);
    if (!rr_verifier || kbm_rr_enable(rr_verifier, 4) != 0 ||
        kbm_rr_set(rr_verifier, fuzz_kcn, 20, 0, nonces, 3) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!verifier)
        setup();
    /* an exact-size heap copy, so ASan sees any read past the end */
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    memcpy(p, data, size);
    kbm_layout l;
    uint32_t where;
    if (kbm_scan(p, size, &l, &where) == 0) {
        kbm_option opts[KBM_MH_MAX];
        size_t n;
        (void)kbm_checksum_ok(p, size, &l);
        (void)kbm_parse_mh(p, size, &l, opts, KBM_MH_MAX, &n, &where);
    }
    enum { COPIES = 17 };
    uint64_t offsets[COPIES + 1];
    uint8_t verdicts[COPIES];
    kbm_detail details[COPIES];
    size_t bad;
    /* one exact-size buffer holding the input COPIES times */
    uint8_t *many = malloc(size * COPIES + 1);
    if (!many)
        abort();
    for (size_t i = 0; i < COPIES; i++) {
        memcpy(many + i * size, p, size);
        offsets[i] = i * size;
    }
    offsets[COPIES] = COPIES * size;
    for (int id = 0; id < KBM_KERNELS; id++) {
        if (kbm_kernel_force(id) != 0)
            continue;
        if (kbm_verify(verifier, many, COPIES * size, offsets, COPIES, verdicts, details, &bad) != 0)
            abort();
        for (size_t i = 0; i < COPIES; i++)
            if (verdicts[i] > KBM_KEY_EXHAUSTED)
                abort();
    }
    kbm_kernel_force(-1);
    free(many);
    if (size >= 20 + 32 + 14) {
        size_t mh_len = size - 52 > KBM_MH_MAX ? KBM_MH_MAX : size - 52;
        kbm_mac_key k;
        uint8_t want[12], got[COPIES][12];
        kbm_mac96_req r[COPIES];
        kbm_mac_key_init(&k, p, 20);
        kbm_mac96(&k, p + 20, p + 36, p + 52, mh_len, want);
        for (size_t i = 0; i < COPIES; i++)
            r[i] = (kbm_mac96_req){&k, p + 20, p + 36, p + 52, mh_len, got[i]};
        for (int id = 0; id < KBM_KERNELS; id++) {
            if (!kbm_kernel_supported(id))
                continue;
            memset(got, 0, sizeof got);
            kbm_mac96_batch_with(id, r, COPIES);
            for (size_t i = 0; i < COPIES; i++)
                if (memcmp(got[i], want, 12) != 0)
                    abort();
        }
    }
    /* return routability: the input as an init message and as an RR Binding Update */
    uint64_t one[2] = {0, size};
    uint8_t reply[KBM_RR_REPLY_SIZE];
    uint64_t reply_offsets[2];
    static const uint8_t rr_kcn[20] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    static const uint8_t rr_nonce[8] = {17, 18, 19, 20, 21, 22, 23, 24};
    if (kbm_rr_reply(rr_verifier, rr_kcn, 20, 1, 2, rr_nonce, p, size, one, 1, reply, reply_offsets, &bad) != 0 ||
        reply_offsets[1] % KBM_RR_REPLY_SIZE != 0)
        abort();
    if (kbm_verify(rr_verifier, p, size, one, 1, verdicts, details, &bad) != 0 ||
        verdicts[0] > KBM_RR_TABLE_FULL)
        abort();
    free(p);
    return 0;
}
