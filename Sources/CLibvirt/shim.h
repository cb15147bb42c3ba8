// C shim for libvirt: the headers Swift imports, plus small static inline helpers
// (all prefixed `clibvirt_`) for things Swift cannot express or should not repeat.
#ifndef CLIBVIRT_SHIM_H
#define CLIBVIRT_SHIM_H

#include <stdlib.h>
#include <string.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/// A copy of libvirt's thread-local last error that outlives the next libvirt call.
/// `message` is heap-allocated (or NULL) and owned by the caller: release it with
/// `clibvirt_error_dispose`.
typedef struct {
    int code;      /* virErrorNumber; VIR_ERR_OK (0) when no error was set */
    int domain;    /* virErrorDomain */
    int level;     /* virErrorLevel */
    char *message; /* strdup'ed copy of virError.message, may be NULL */
} clibvirt_error;

/// Copies the calling thread's last libvirt error into `out` (virCopyLastError) and
/// resets the thread's error. Must be called on the thread that made the failing call,
/// before any other libvirt call on that thread (libvirt errors are thread-local).
static inline void clibvirt_copy_last_error(clibvirt_error *out) {
    virError err;
    memset(&err, 0, sizeof(err));
    memset(out, 0, sizeof(*out));
    (void)virCopyLastError(&err);
    out->code = err.code;
    out->domain = err.domain;
    out->level = (int)err.level;
    out->message = err.message ? strdup(err.message) : NULL;
    virResetError(&err);
    virResetLastError();
}

/// Frees what `clibvirt_copy_last_error` allocated.
static inline void clibvirt_error_dispose(clibvirt_error *e) {
    free(e->message);
    e->message = NULL;
}

static void clibvirt_discard_error(void *userData, virErrorPtr error) {
    (void)userData;
    (void)error;
}

/// Replaces libvirt's default error handler (which prints every error to stderr)
/// with one that does nothing. Errors stay available through virCopyLastError.
static inline void clibvirt_silence_default_error_handler(void) {
    virSetErrorFunc(NULL, clibvirt_discard_error);
}

/// Frees an array returned by virConnectListAll* / virStoragePoolListAllVolumes
/// (the elements must already have been taken over or freed).
static inline void clibvirt_free_array(void *array) {
    free(array);
}

/// Frees a `char *` that libvirt returned and documents as caller-owned.
static inline void clibvirt_free_string(char *s) {
    free(s);
}

#endif /* CLIBVIRT_SHIM_H */
