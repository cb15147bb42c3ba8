#ifndef STORAGECTL_CXXHASH_SHIM_H
#define STORAGECTL_CXXHASH_SHIM_H
// libxxhash (Debian's libxxhash-dev, 0.8.1): only what the content digest uses
// (docs/protocol.md, "Content digest"): XXH3-128 one-shot and streaming, and
// XXH128_canonicalFromHash, the big-endian bytes of Python's xxhash.xxh3_128().digest().
// The streaming state stays opaque (no XXH_STATIC_LINKING_ONLY): only the library
// allocates it (XXH3_createState), whatever layout its version has.
#include <xxhash.h>

// On x86 the library also exports the run-time dispatching entry points of
// xxh_x86dispatch.c (SSE2, AVX2 or AVX-512, whatever the CPU has): Debian builds the
// plain XXH3 functions for the baseline (SSE2), and its plain streaming update ran at
// ~1 GB/s here against ~8 GB/s dispatched. The dispatched functions give the same
// values; XXH3_128bits_reset and XXH3_128bits_digest work on the same state.
// `cxxh3_` are the names Swift calls (the header's own renaming macros are not
// imported by Swift).
#if defined(__x86_64__) || defined(__i386__)
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>
static inline XXH128_hash_t cxxh3_128(const void *data, size_t length) {
    return XXH3_128bits_dispatch(data, length);
}
static inline XXH_errorcode cxxh3_128_update(XXH3_state_t *state, const void *data, size_t length) {
    return XXH3_128bits_update_dispatch(state, data, length);
}
#else
static inline XXH128_hash_t cxxh3_128(const void *data, size_t length) {
    return XXH3_128bits(data, length);
}
static inline XXH_errorcode cxxh3_128_update(XXH3_state_t *state, const void *data, size_t length) {
    return XXH3_128bits_update(state, data, length);
}
#endif
#endif
