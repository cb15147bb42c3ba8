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

/// pidfd_open(2): a descriptor that refers to exactly this process (readable once it
/// has exited), so a deadline can wait on it with poll(2) and signal it without ever
/// reaching a recycled pid. -1 with errno (ENOSYS before Linux 5.3).
int cagent_pidfd_open(pid_t pid);

/// pidfd_send_signal(2) without siginfo. 0, or -1 with errno.
int cagent_pidfd_send_signal(int pidfd, int sig);

#endif
