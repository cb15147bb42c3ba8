// glibc declares posix_spawn_file_actions_addclosefrom_np only under _GNU_SOURCE, which
// Swift's Glibc module does not define: it is wrapped here.
#define _GNU_SOURCE
#include <spawn.h>
#include "cagentsupport.h"

int cagent_spawn_close_inherited(posix_spawn_file_actions_t *actions) {
    return posix_spawn_file_actions_addclosefrom_np(actions, 3);
}
