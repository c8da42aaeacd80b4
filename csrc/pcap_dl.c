/* libpcap, loaded when live capture is first asked for, not linked.
 *
 * Linking libpcap made every install need it, and made auditwheel vendor it together with
 * everything Debian's build of it links (libdbus, libsystemd, libgcrypt, ...) into a wheel whose
 * library part only needs libcrypto. So the core defines the libpcap functions it calls under
 * their own names (hidden: CMAKE_C_VISIBILITY_PRESET), each forwarding to the system's libpcap,
 * opened on the first pcap_create(). live.c stays plain libpcap code. Only pcap_create() can run
 * before the library is loaded (every other call takes the pcap_t it returned), so it is the one
 * that reports a missing libpcap, in its errbuf, as libpcap reports its own errors. */
#define _DEFAULT_SOURCE /* the BSD types (u_int, u_char) pcap.h uses */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <pcap/pcap.h>

/* Debian/Ubuntu's soname, upstream's (Fedora, Arch, Alpine), then the unversioned -dev link. */
static const char *const sonames[] = {"libpcap.so.0.8", "libpcap.so.1", "libpcap.so"};

/* X(kind, return type, name, parameters, arguments) for every libpcap function the core calls.
 * kind: C for pcap_create (below), F for a forward returning a value, V for one returning nothing. */
#define KBM_PCAP_FUNCTIONS(X)                                                                          \
    X(C, pcap_t *, pcap_create, (const char *a, char *b), (a, b))                                     \
    X(F, int, pcap_set_snaplen, (pcap_t * p, int a), (p, a))                                           \
    X(F, int, pcap_set_promisc, (pcap_t * p, int a), (p, a))                                           \
    X(F, int, pcap_set_immediate_mode, (pcap_t * p, int a), (p, a))                                    \
    X(F, int, pcap_set_buffer_size, (pcap_t * p, int a), (p, a))                                       \
    X(F, int, pcap_activate, (pcap_t * p), (p))                                                        \
    X(F, const char *, pcap_statustostr, (int a), (a))                                                 \
    X(F, char *, pcap_geterr, (pcap_t * p), (p))                                                       \
    X(F, int, pcap_datalink, (pcap_t * p), (p))                                                        \
    X(F, int, pcap_compile, (pcap_t * p, struct bpf_program * a, const char *b, int c, bpf_u_int32 d), \
      (p, a, b, c, d))                                                                                 \
    X(F, int, pcap_setfilter, (pcap_t * p, struct bpf_program * a), (p, a))                            \
    X(V, void, pcap_freecode, (struct bpf_program * a), (a))                                           \
    X(F, int, pcap_setdirection, (pcap_t * p, pcap_direction_t a), (p, a))                             \
    X(F, int, pcap_setnonblock, (pcap_t * p, int a, char *b), (p, a, b))                               \
    X(F, int, pcap_get_selectable_fd, (pcap_t * p), (p))                                               \
    X(F, int, pcap_fileno, (pcap_t * p), (p))                                                          \
    X(V, void, pcap_close, (pcap_t * p), (p))                                                          \
    X(F, int, pcap_dispatch, (pcap_t * p, int a, pcap_handler b, u_char *c), (p, a, b, c))            \
    X(F, int, pcap_inject, (pcap_t * p, const void *a, size_t b), (p, a, b))                           \
    X(F, int, pcap_stats, (pcap_t * p, struct pcap_stat * a), (p, a))

#define FIELD(kind, ret, name, params, args) ret(*name) params;
static struct {
    KBM_PCAP_FUNCTIONS(FIELD)
} fn;
#undef FIELD

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int loaded;                        /* written once, under `once` */
static char load_error[PCAP_ERRBUF_SIZE]; /* why not, when !loaded */

static void load(void)
{
    void *h = NULL;
    for (size_t i = 0; i < sizeof sonames / sizeof *sonames && !h; i++)
        h = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error,
                 "libpcap is not installed (looked for libpcap.so.0.8, libpcap.so.1 and libpcap.so; "
                 "on Debian/Ubuntu 'apt-get install libpcap0.8', on Fedora 'dnf install libpcap')");
        return;
    }
    void *sym;
    _Static_assert(sizeof sym == sizeof fn.pcap_close, "POSIX: function and object pointers are alike");
    /* POSIX makes dlsym's object pointer usable as a function pointer; ISO C has no such
     * conversion, so the bytes are copied. */
#define RESOLVE(kind, ret, name, params, args)                                                         \
    if (!(sym = dlsym(h, #name))) {                                                                    \
        snprintf(load_error, sizeof load_error, "the system's libpcap has no %s (1.5 or later needed)", \
                 #name);                                                                               \
        dlclose(h);                                                                                    \
        return;                                                                                        \
    }                                                                                                  \
    memcpy(&fn.name, &sym, sizeof sym);
    KBM_PCAP_FUNCTIONS(RESOLVE)
#undef RESOLVE
    loaded = 1;
}

pcap_t *pcap_create(const char *device, char *errbuf)
{
    pthread_once(&once, load);
    if (!loaded) {
        snprintf(errbuf, PCAP_ERRBUF_SIZE, "%s", load_error);
        return NULL;
    }
    return fn.pcap_create(device, errbuf);
}

/* The rest are reached only with a pcap_t from pcap_create(), so after a successful load. */
#define FORWARD_C(ret, name, params, args)
#define FORWARD_F(ret, name, params, args)                                                             \
    ret name params { return fn.name args; }
#define FORWARD_V(ret, name, params, args)                                                             \
    ret name params { fn.name args; }
#define FORWARD(kind, ret, name, params, args) FORWARD_##kind(ret, name, params, args)
KBM_PCAP_FUNCTIONS(FORWARD)
