/* Yardsticks for `kbmfast bench`: what an existing daemon does, and what the CPU can do. */
#include "internal.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

int kbm_bench_oneshot(const uint8_t *buf, const uint64_t *offsets, size_t n,
                      const uint8_t *kbms, uint8_t *ok)
{
    uint8_t data[32 + KBM_MH_MAX], md[EVP_MAX_MD_SIZE];
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = buf + offsets[i];
        size_t len = (size_t)(offsets[i + 1] - offsets[i]);
        kbm_layout l;
        uint32_t where;
        ok[i] = 0;
        if (kbm_scan(p, len, &l, &where) || !kbm_checksum_ok(p, len, &l) ||
            kbm_parse_mh(p, len, &l, NULL, 0, NULL, &where) || l.bad < 0)
            continue;
        size_t mh_len = len - (size_t)l.mh;
        const uint8_t *home = l.hao >= 0 ? p + l.hao : p + 8;
        int dereg = p[l.mh + 10] == 0 && p[l.mh + 11] == 0;
        memcpy(data, dereg ? home : l.alt >= 0 ? p + l.alt : p + 8, 16);
        memcpy(data + 16, p + 24, 16);
        memcpy(data + 32, p + l.mh, mh_len - KBM_AUTH_SIZE);
        data[36] = data[37] = 0;
        unsigned int md_len = 0;
        /* a fresh HMAC per message, as daemons built on OpenSSL's one-shot API do */
        if (!HMAC(EVP_sha1(), kbms + 20 * i, KBM_SIZE, data, 32 + mh_len - KBM_AUTH_SIZE, md,
                  &md_len))
            return KBM_EINVAL;
        ok[i] = (uint8_t)(memcmp(md, p + l.bad, KBM_AUTH_SIZE) == 0);
    }
    return KBM_OK;
}

uint32_t kbm_bench_compress(uint64_t blocks, int streams)
{
    uint8_t b0[64], b1[64];
    uint32_t s0[5] = {1, 2, 3, 4, 5}, s1[5] = {6, 7, 8, 9, 10};
    memset(b0, 0x5a, sizeof b0);
    memset(b1, 0xa5, sizeof b1);
    if (streams == 2) {
        for (uint64_t i = 0; i < blocks / 2; i++)
            kbm_sha1_compress2(s0, b0, 1, s1, b1, 1);
    } else {
        for (uint64_t i = 0; i < blocks; i++)
            kbm_sha1_compress(s0, b0);
    }
    return s0[0] ^ s1[0];
}

uint32_t kbm_bench_kernel(int i, uint64_t blocks)
{
    return kbm_sha1_kernel_bench(i, blocks);
}

int kbm_test_wait(const int *flag, uint64_t max_spins)
{
    const volatile int *f = flag;
    for (uint64_t i = 0; i < max_spins; i++)
        if (*f)
            return 1;
    return 0;
}
