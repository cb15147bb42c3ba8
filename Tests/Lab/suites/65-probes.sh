# shellcheck shell=bash
# Lab suite: the migration gate's network probes (issue 12), between real lab hosts.
# Runs after 60-three-hosts.sh; needs nothing it leaves. Sourced by run-tests with the lab
# up; uses its helpers (on, must, fail, note, run, lab_bin, $OUT, $STATE). Under 10 s.
#   1. PORT-LISTEN on dest-example answers a port of libvirt's migration range at once;
#      PORT-PROBE from source-example reaches it and libvirtd's 16509, and measures the
#      bandwidth with the listener's confirmed count;
#   2. refusals: an unknown host is not-found, a host with a port is invalid-argument,
#      a closed port is a row with the system's error, PORT-LISTEN over plain TCP is refused.

PR_CONF=/run/lab/storagectl.conf
pr_call() { on source-example "$(lab_bin)/storagectl" call "$@" --config "$PR_CONF"; }

# pr_field KEY: the value of KEY= in the last line of OUT (unquoted values only)
pr_field() { tail -n1 <<<"$OUT" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

t_pr_listen_probe() {
    must "inventory on source-example" on source-example sh -c 'cat > /run/lab/storagectl.conf' <"$STATE/storagectl.conf" || return 1
    must "PORT-LISTEN on dest-example" pr_call dest-example PORT-LISTEN seconds=5 || return 1
    local port; port=$(pr_field port)
    [[ $port =~ ^[0-9]+$ ]] && ((port >= 49152 && port <= 49215)) || fail "PORT-LISTEN answered '$OUT'" || return 1
    must "listener seen on dest-example" on dest-example sh -c "ss -Hltn 'sport = :$port' | grep -q ." || return 1
    local t0; t0=$(now_ms)
    must "PORT-PROBE from source-example" pr_call source-example PORT-PROBE host=dest-example port=16509 port="$port" \
        bandwidth-port="$port" bytes=67108864 seconds=2 || return 1
    note "PORT-PROBE took $(($(now_ms) - t0)) ms: $(echo $OUT)"
    grep -q "^DATA port=16509 reachable=yes" <<<"$OUT" || fail "libvirtd's 16509 not reachable: $(echo $OUT)" || return 1
    grep -q "^DATA port=$port reachable=yes" <<<"$OUT" || fail "the listened port not reachable: $(echo $OUT)" || return 1
    [[ $(pr_field bandwidth-bytes) == 67108864 ]] || fail "the listener did not confirm 64 MiB: $(echo $OUT)" || return 1
    local ms; ms=$(pr_field bandwidth-ms)
    [[ $ms =~ ^[0-9]+$ ]] && ((ms <= 2500)) || fail "bandwidth-ms '$ms'" || return 1
    note "bandwidth source-example -> dest-example: $((67108864 * 1000 / (ms > 0 ? ms : 1) / 1048576)) MiB/s"
}

t_pr_refusals() {
    OUT=$(pr_call source-example PORT-PROBE host=nosuch-example port=16509 seconds=1 2>&1)
    grep -q "code=not-found" <<<"$OUT" || fail "unknown host: $(echo $OUT)" || return 1
    OUT=$(pr_call source-example PORT-PROBE host=dest-example:22 port=16509 2>&1)
    grep -q "code=invalid-argument" <<<"$OUT" || fail "host with a port: $(echo $OUT)" || return 1
    must "PORT-PROBE of a closed port" pr_call source-example PORT-PROBE host=dest-example port=1 seconds=1 || return 1
    grep -q '^DATA port=1 reachable=no .*error="connection refused"' <<<"$OUT" || fail "closed port: $(echo $OUT)" || return 1
    # plain TCP (the agent's 7700) serves HELLO, PING and a health summary only
    OUT=$(on source-example "$(lab_bin)/storagectl" call --endpoint tcp:198.18.0.3:7700 PORT-LISTEN 2>&1)
    grep -q "code=permission-denied" <<<"$OUT" || fail "PORT-LISTEN over plain TCP: $(echo $OUT)" || return 1
}

run "probes: PORT-LISTEN on dest-example, PORT-PROBE from source-example reaches it and 16509, bandwidth confirmed by the listener" t_pr_listen_probe
run "probes: unknown host not-found, host:port invalid, closed port a row with its error, PORT-LISTEN refused over plain TCP" t_pr_refusals
