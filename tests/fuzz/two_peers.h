/* The peers of the libFuzzer harnesses (fuzz_core.c, fuzz_live.c): an RFC 4449 peer (Kcn and
   two nonces) at fuzz_homes[0] and a draft peer (Kbm) at fuzz_homes[1], the home addresses the
   seeds use. */
#ifndef KBM_FUZZ_TWO_PEERS_H
#define KBM_FUZZ_TWO_PEERS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbm.h"

static const uint8_t fuzz_homes[2][16] = {
    {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
    {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
};
static const uint8_t fuzz_kcn[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

/* A new verifier holding the two peers; aborts on failure. */
static kbm_verifier *fuzz_two_peers(void)
{
    static const uint8_t kbm[20] = {0x06, 0xfe, 0x12, 0x94, 0xde, 0xdb, 0xb6, 0xb0, 0x85, 0x22,
                                    0x7e, 0x37, 0xea, 0x4f, 0x9a, 0x19, 0x87, 0x00, 0xc9, 0xf4};
    static const uint8_t hn[8] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7};
    static const uint8_t cn[8] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7};
    int status;
    kbm_verifier *v = kbm_verifier_new(NULL, 32768, &status);
    if (!v)
        abort();
    kbm_peer_spec specs[2] = {
        {.kind = KBM_KIND_KCN, .key = fuzz_kcn, .key_len = 20, .home_nonce = hn, .home_nonce_len = 8,
         .care_of_nonce = cn, .care_of_nonce_len = 8},
        {.kind = KBM_KIND_KBM, .key = kbm, .key_len = 20},
    };
    memcpy(specs[0].home, fuzz_homes[0], 16);
    memcpy(specs[1].home, fuzz_homes[1], 16);
    size_t failed;
    if (kbm_verifier_set_peers(v, specs, 2, &failed) != 0)
        abort();
    return v;
}

#endif
