/* libFuzzer harness for the key file reader (csrc/keyfile.c), built and run by tests/fuzz/run.sh
   under ASan + UBSan. Every input is a key file's text, given to kbm_keyfile_parse with arrays
   sized as kbmfast/_keys.py sizes them (cap = the count of "[[peer]]", material = half the text
   + 1), each a malloc of its exact size so ASan sees any write past it. When the reader takes the
   file, its promises are checked (every peer's key and nonces inside the material it reported,
   lengths in range), and the peers go into a verifier as kbmfast's C Verifier puts them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbm.h"

static size_t count_peers(const uint8_t *d, size_t n)
{
    static const char tag[] = "[[peer]]";
    size_t c = 0;
    for (size_t i = 0; i + sizeof tag - 1 <= n; i++)
        c += memcmp(d + i, tag, sizeof tag - 1) == 0;
    return c;
}

static void *alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = count_peers(data, size), material_cap = size / 2 + 1;
    uint8_t *homes = alloc(16 * cap), *kinds = alloc(cap), *hn = alloc(cap), *cn = alloc(cap);
    uint16_t *key_lens = alloc(2 * cap), *epochs = alloc(2 * cap);
    uint64_t *key_at = alloc(8 * cap);
    uint8_t *material = alloc(material_cap);
    size_t n = 0, used = 0;
    int rc = kbm_keyfile_parse(data, size, cap, homes, kinds, key_lens, hn, cn, epochs, key_at,
                               material, material_cap, &n, &used);
    if (rc == 0) {
        if (n > cap || used > material_cap)
            abort();
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            if (kinds[i] != KBM_KIND_KBM && kinds[i] != KBM_KIND_KCN)
                abort();
            if (key_at[i] != at || key_lens[i] == 0 || key_lens[i] > KBM_KEY_MAX ||
                hn[i] > KBM_NONCE_MAX || cn[i] > KBM_NONCE_MAX)
                abort();
            if (kinds[i] == KBM_KIND_KBM && (key_lens[i] != KBM_SIZE || hn[i] || cn[i]))
                abort();
            at += (size_t)key_lens[i] + hn[i] + cn[i];
        }
        if (at != used)
            abort();
        kbm_peer_spec *specs = alloc(sizeof *specs * (n ? n : 1));
        kbm_peer_specs(n, homes, kinds, key_lens, hn, cn, material, specs);
        int status = 0;
        kbm_verifier *v = kbm_verifier_new(NULL, 32768, &status);
        if (v) {
            size_t failed = 0;
            kbm_verifier_set_peers(v, specs, n, &failed);
            kbm_verifier_free(v);
        }
        free(specs);
    } else if (rc != 1 && rc != KBM_ENOMEM && rc != KBM_EIO) {
        abort();
    }
    memset(material, 0, material_cap);
    free(homes), free(kinds), free(hn), free(cn), free(key_lens), free(epochs), free(key_at);
    free(material);
    return 0;
}
