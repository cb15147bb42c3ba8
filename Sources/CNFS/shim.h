// C shim for libnfs: includes what <nfsc/libnfs.h> needs but does not include itself
// (its pkg-config cflags are empty), and hides the API differences between libnfs 4/5
// and libnfs 6 (LIBNFS_API_V2) behind `cnfs_` helpers with ONE argument order:
// (context, file handle, buffer, count, offset).
#ifndef CNFS_SHIM_H
#define CNFS_SHIM_H

#include <sys/time.h>
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <malloc.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-mount.h>
#include <nfsc/libnfs-raw-nfs.h>

/// 1 when built against libnfs >= 6 (LIBNFS_API_V2), else 0.
static inline int cnfs_api_v2(void) {
#ifdef LIBNFS_API_V2
    return 1;
#else
    return 0;
#endif
}

/// Sync pread: >= 0 bytes read, -errno on failure.
static inline int cnfs_pread(struct nfs_context *nfs, struct nfsfh *fh,
                             void *buf, size_t count, uint64_t offset) {
#ifdef LIBNFS_API_V2
    return nfs_pread(nfs, fh, buf, count, offset);
#else
    return nfs_pread(nfs, fh, offset, (uint64_t)count, buf);
#endif
}

/// Sync pwrite: >= 0 bytes written, -errno on failure.
static inline int cnfs_pwrite(struct nfs_context *nfs, struct nfsfh *fh,
                              const void *buf, size_t count, uint64_t offset) {
#ifdef LIBNFS_API_V2
    return nfs_pwrite(nfs, fh, buf, count, offset);
#else
    return nfs_pwrite(nfs, fh, offset, (uint64_t)count, buf);
#endif
}

/// 1 when the async read callback delivers the bytes in its `data` argument and the
/// caller must copy them into `buf` inside the callback (libnfs 4/5); 0 when libnfs
/// has already filled `buf` (libnfs 6).
static inline int cnfs_async_read_copies_from_callback_data(void) {
#ifdef LIBNFS_API_V2
    return 0;
#else
    return 1;
#endif
}

/// Async pread. Returns 0 when queued (the callback runs later from nfs_service), < 0
/// when not queued (the callback never runs). `buf` must stay valid until the callback.
static inline int cnfs_pread_async(struct nfs_context *nfs, struct nfsfh *fh,
                                   void *buf, size_t count, uint64_t offset,
                                   nfs_cb cb, void *private_data) {
#ifdef LIBNFS_API_V2
    return nfs_pread_async(nfs, fh, buf, count, offset, cb, private_data);
#else
    (void)buf;
    return nfs_pread_async(nfs, fh, offset, (uint64_t)count, cb, private_data);
#endif
}

/// The server named by a URL parsed with nfs_parse_url_* (NULL-safe accessors keep
/// Swift away from the struct layout, which gained a `port` field in libnfs 6).
static inline const char *cnfs_url_server(const struct nfs_url *url) { return url ? url->server : NULL; }
static inline const char *cnfs_url_path(const struct nfs_url *url) { return url ? url->path : NULL; }
static inline const char *cnfs_url_file(const struct nfs_url *url) { return url ? url->file : NULL; }

/// MOUNT protocol constants as plain ints (macros in the raw mount header).
static inline int cnfs_mount_program(void) { return MOUNT_PROGRAM; }
static inline int cnfs_mount_v3(void) { return MOUNT_V3; }

/// RPC callback status values (macros in libnfs-raw.h).
static inline int cnfs_rpc_status_success(void) { return RPC_STATUS_SUCCESS; }

/// The export list a MOUNT3 EXPORT callback delivers in `data` (`exports *`), or NULL.
static inline struct exportnode *cnfs_exports_from_callback_data(void *data) {
    return data ? *(exports *)data : NULL;
}


/* ---- Raw NFSv3 WRITE and COMMIT (the high-level API hides the write verifier) ---- */

/// libnfs keeps `struct nfs_fh` private; in libnfs 4, 5 and 6 it is `{ int len; char *val; }`.
struct cnfs_fh_layout { int len; char *val; };

/// The NFSv3 handle of an open file, or data_len 0 when it does not look like one
/// (an NFSv3 handle is 1..64 bytes).
static inline struct nfs_fh3 cnfs_fh3(struct nfsfh *fh) {
    struct nfs_fh3 out;
    const struct cnfs_fh_layout *raw = (const struct cnfs_fh_layout *)nfs_get_fh(fh);
    out.data.data_len = 0;
    out.data.data_val = NULL;
    if (raw != NULL && raw->len > 0 && raw->len <= 64 && raw->val != NULL) {
        out.data.data_len = (u_int)raw->len;
        out.data.data_val = raw->val;
    }
    return out;
}

/// An UNSTABLE WRITE of `count` bytes at `offset`. 0 when queued, < 0 when not. The
/// callback gets RPC status and `WRITE3res *` (see cnfs_write_result).
static inline int cnfs_write3_async(struct rpc_context *rpc, struct nfs_fh3 *fh, const void *buf,
                                    uint32_t count, uint64_t offset, rpc_cb cb, void *private_data) {
    WRITE3args args;
    args.file = *fh;
    args.offset = offset;
    args.count = count;
    args.stable = UNSTABLE;
    args.data.data_len = count;
    args.data.data_val = (char *)buf;
    return rpc_nfs3_write_async(rpc, cb, &args, private_data);
}

/// COMMIT of the whole file. 0 when queued, < 0 when not.
static inline int cnfs_commit3_async(struct rpc_context *rpc, struct nfs_fh3 *fh, rpc_cb cb, void *private_data) {
    COMMIT3args args;
    args.file = *fh;
    args.offset = 0;
    args.count = 0;
    return rpc_nfs3_commit_async(rpc, cb, &args, private_data);
}

/// A WRITE reply: the NFS status, the bytes written, and the 8-byte write verifier
/// (copied into `verifier`).
static inline int cnfs_write_result(void *data, uint32_t *count, unsigned char *verifier) {
    WRITE3res *res = (WRITE3res *)data;
    if (res->status != NFS3_OK) return (int)res->status;
    *count = res->WRITE3res_u.resok.count;
    for (int i = 0; i < NFS3_WRITEVERFSIZE; i++) verifier[i] = (unsigned char)res->WRITE3res_u.resok.verf[i];
    return 0;
}

/// A COMMIT reply: the NFS status and the write verifier.
static inline int cnfs_commit_result(void *data, unsigned char *verifier) {
    COMMIT3res *res = (COMMIT3res *)data;
    if (res->status != NFS3_OK) return (int)res->status;
    for (int i = 0; i < NFS3_WRITEVERFSIZE; i++) verifier[i] = (unsigned char)res->COMMIT3res_u.resok.verf[i];
    return 0;
}

/// libnfs mallocs and frees a buffer per WRITE (request + data): keep such blocks (up to
/// `mmap_threshold` bytes) in the heap and do not trim freed memory below `trim_threshold`,
/// instead of glibc's default of returning it to the kernel at once. Process-wide.
static inline void cnfs_keep_request_buffers(int mmap_threshold, int trim_threshold) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
#else
    (void)mmap_threshold; (void)trim_threshold;
#endif
}

#endif /* CNFS_SHIM_H */
