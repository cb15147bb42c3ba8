# Lab suite: the storage agent on cargo-bay (ganesha backend), driven by storagectl over
# mutual TLS from source-example. Issue 4: EXPORT makes the share writable from the
# client through libnfs, as root with root ownership kept; a host not exported to stays
# refused until added; UNEXPORT takes access away again. Sourced by run-tests.

SA_SHARE=$EXPORT_ROOT/lab-storage-agent
SA_NFS=nfs://198.18.0.1$SA_SHARE

# sctl ARGS...: storagectl on source-example with the lab inventory
sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config /dev/stdin <"$STATE/storagectl.conf"; }

t_sa_export_gives_access() {
    must "EXPORT to source-example" sctl call cargo-bay EXPORT "path=$SA_SHARE" client=source-example || return 1
    grep -q "^OK path=$SA_SHARE clients=source-example changed=yes" <<<"$OUT" || fail "EXPORT answered: $OUT" || return 1
    grep -q "backend=ganesha" <<<"$OUT" || fail "not the ganesha backend: $OUT" || return 1
    # the managed block landed in cargo-bay's /etc/exports, foreign entries intact
    must "read /etc/exports" on cargo-bay cat /etc/exports || return 1
    grep -q "^$SA_SHARE source-example(rw,sync,no_subtree_check,no_root_squash,fsid=" <<<"$OUT" \
        || fail "/etc/exports lacks our entry: $OUT" || return 1
    grep -q '^/srv/backup 198.18.0.9(ro,sync' <<<"$OUT" || fail "a foreign entry was lost: $OUT" || return 1
    # root on source-example writes through libnfs; ownership stays 0:0 on the server's disk
    must "note" on source-example sh -c 'echo storage-agent > /run/lab/sa-note.txt' || return 1
    must "nfs-cp as root" on source-example nfs-cp /run/lab/sa-note.txt "$SA_NFS/sa-note.txt" || return 1
    must "stat on cargo-bay" on cargo-bay stat -c %u:%g "$SA_SHARE/sa-note.txt" || return 1
    [[ $OUT == 0:0 ]] || fail "owned by $OUT on cargo-bay, want 0:0 (no_root_squash)" || return 1
    # a second identical EXPORT changes nothing
    must "EXPORT again" sctl call cargo-bay EXPORT "path=$SA_SHARE" client=source-example || return 1
    grep -q "changed=no" <<<"$OUT" || fail "second EXPORT: $OUT" || return 1
}

t_sa_other_host_refused_until_added() {
    if OUT=$(on dest-example nfs-ls "$SA_NFS" 2>&1); then fail "dest-example could list an export not made for it"; return 1; fi
    grep -q 'MNT3ERR_ACCES' <<<"$OUT" || fail "expected MNT3ERR_ACCES, got: $OUT" || return 1
    must "EXPORT adds dest-example" sctl call cargo-bay EXPORT "path=$SA_SHARE" client=dest-example || return 1
    grep -q "clients=dest-example,source-example changed=yes\|clients=source-example,dest-example changed=yes" <<<"$OUT" \
        || fail "EXPORT answered: $OUT" || return 1
    must "nfs-cat from dest-example" on dest-example nfs-cat "$SA_NFS/sa-note.txt" || return 1
    [[ $OUT == storage-agent ]] || fail "dest-example read '$OUT'" || return 1
}

t_sa_refusals() {
    # a client outside the inventory, a path outside the export root: refused, nothing written
    must "exports before" on cargo-bay cat /etc/exports || return 1
    local before=$OUT
    if OUT=$(sctl call cargo-bay EXPORT "path=$SA_SHARE" client=198.18.0.66 2>&1); then fail "accepted a client outside --allow-client"; return 1; fi
    grep -q "code=invalid-argument" <<<"$OUT" || fail "unexpected: $OUT" || return 1
    if OUT=$(sctl call cargo-bay EXPORT path=/etc client=source-example 2>&1); then fail "exported /etc"; return 1; fi
    grep -q "code=invalid-argument" <<<"$OUT" || fail "unexpected: $OUT" || return 1
    # plain TCP (port 7700) serves read-only verbs only
    if OUT=$(on source-example "$(lab_bin)/storagectl" call --endpoint tcp:198.18.0.1:7700 EXPORT "path=$SA_SHARE" client=source-example 2>&1); then
        fail "EXPORT over plain TCP was served"; return 1
    fi
    grep -q "code=permission-denied" <<<"$OUT" || fail "unexpected: $OUT" || return 1
    must "exports after" on cargo-bay cat /etc/exports || return 1
    [[ $OUT == "$before" ]] || fail "a refused request changed /etc/exports" || return 1
    # ... and reads nothing either (the exports name paths and hosts): HELLO, PING, a health summary
    if OUT=$(on source-example "$(lab_bin)/storagectl" call --endpoint tcp:198.18.0.1:7700 EXPORTS 2>&1); then
        fail "EXPORTS over plain TCP was served: $OUT"; return 1
    fi
    grep -q "code=permission-denied" <<<"$OUT" || fail "EXPORTS over plain TCP: $OUT" || return 1
    must "HEALTH over plain TCP" on source-example "$(lab_bin)/storagectl" call --endpoint tcp:198.18.0.1:7700 HEALTH || return 1
    grep -q "^OK .*health=ok" <<<"$OUT" || fail "HEALTH summary: $OUT" || return 1
    ! grep -q "^DATA" <<<"$OUT" || fail "HEALTH over plain TCP told details: $OUT" || return 1
    must "EXPORTS over TLS" sctl call cargo-bay EXPORTS || return 1
    grep -q "owner=foreign" <<<"$OUT" || fail "EXPORTS: $OUT" || return 1
}

t_sa_unexport_takes_access_away() {
    must "UNEXPORT" sctl call cargo-bay UNEXPORT "path=$SA_SHARE" || return 1
    grep -q "^OK path=$SA_SHARE clients= changed=yes" <<<"$OUT" || fail "UNEXPORT answered: $OUT" || return 1
    local h
    for h in source-example dest-example; do
        if OUT=$(on "$h" nfs-ls "$SA_NFS" 2>&1); then fail "$h can still list after UNEXPORT"; return 1; fi
        grep -q 'MNT3ERR_ACCES' <<<"$OUT" || fail "$h after UNEXPORT: want MNT3ERR_ACCES, got: $OUT" || return 1
    done
    must "read /etc/exports" on cargo-bay cat /etc/exports || return 1
    if grep -q "storagectl managed block" <<<"$OUT"; then fail "the empty managed block was left behind: $OUT"; return 1; fi
}

run "storage agent: EXPORT over TLS makes the share writable as root from source-example (0:0 kept)" t_sa_export_gives_access
run "storage agent: dest-example is refused until EXPORT adds it" t_sa_other_host_refused_until_added
run "storage agent: hostile EXPORTs and plain-TCP EXPORT are refused and change nothing" t_sa_refusals
run "storage agent: UNEXPORT takes access away from both hosts" t_sa_unexport_takes_access_away
