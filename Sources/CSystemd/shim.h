#ifndef STORAGECTL_CSYSTEMD_SHIM_H
#define STORAGECTL_CSYSTEMD_SHIM_H
// Only the non-variadic parts of libsystemd that storagectl uses: socket activation
// (sd_listen_fds(3)), service notification (sd_notify(3)) and the journal
// (sd_journal_sendv(3), for the migration hook).
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#endif
