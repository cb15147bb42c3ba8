#ifndef STORAGECTL_CSYSTEMD_SHIM_H
#define STORAGECTL_CSYSTEMD_SHIM_H
// Only the non-variadic parts of libsystemd that the agents use: socket activation
// (sd_listen_fds(3)) and service notification (sd_notify(3)).
#include <systemd/sd-daemon.h>
#endif
