#ifndef STORAGECTL_CAGENTSUPPORT_H
#define STORAGECTL_CAGENTSUPPORT_H
#include <sys/types.h>
#include <spawn.h>

/// The layout of Linux's `struct ucred` (socket(7), SO_PEERCRED), declared here because
/// glibc only exposes it under _GNU_SOURCE, which Swift's Glibc module does not define.
typedef struct cagent_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} cagent_ucred;

/// Adds "close every descriptor from 3 up" to a posix_spawn file-action list, so a child
/// gets only stdin, stdout and stderr. Needed because not every descriptor of a process
/// is O_CLOEXEC (SwiftNIO accepts connections without it on Linux): a child holding a copy
/// keeps a connection open after the server closed it. 0, or an errno value.
int cagent_spawn_close_inherited(posix_spawn_file_actions_t *actions);

/// pidfd_open(2): a descriptor that refers to the process `pid` is now, whatever later
/// gets that pid; -1 with errno (ENOSYS on kernels before 5.3, ESRCH when it is gone).
int cagent_pidfd_open(pid_t pid);

/// pidfd_send_signal(2): `sig` to the process `pidfd` refers to; ESRCH when it has
/// exited, even if its pid was given to another process since. 0 or -1 with errno.
int cagent_pidfd_send_signal(int pidfd, int sig);

#endif
