// glibc declares posix_spawn_file_actions_addclosefrom_np only under _GNU_SOURCE, which
// Swift's Glibc module does not define: it is wrapped here.
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "cagentsupport.h"

int cagent_spawn_close_inherited(posix_spawn_file_actions_t *actions) {
    return posix_spawn_file_actions_addclosefrom_np(actions, 3);
}

// Through syscall(2): glibc only wraps these since 2.36, and Swift does not import
// variadic syscall().
int cagent_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int cagent_pidfd_send_signal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}
