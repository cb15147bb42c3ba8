#ifndef STORAGECTL_CAGENTSUPPORT_H
#define STORAGECTL_CAGENTSUPPORT_H
#include <sys/types.h>

/// The layout of Linux's `struct ucred` (socket(7), SO_PEERCRED), declared here because
/// glibc only exposes it under _GNU_SOURCE, which Swift's Glibc module does not define.
typedef struct cagent_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} cagent_ucred;

#endif
