# shellcheck shell=bash
# Lab suite: the Ceph profile (LAB_STORAGE=ceph, Tests/Lab/lab-ceph.sh; issue 16). Runs
# only in a lab brought up with that profile (make check does): elsewhere there is no
# Ceph host to test, and the suite says so instead of passing.
#   1. the cluster is healthy enough to serve: one OSD up, the MDS active, CephFS "cephfs";
#   2. 4 MiB written through gateway-a read back identical through gateway-b, and the
#      reverse (one export, the same file handles on both gateways);
#   3. each gateway holds a CephFS session under its own host name (two with one name
#      would evict each other).

cg_profile=$(cat "$STATE/profile" 2>/dev/null || true)

cg_ceph() { on ceph-store timeout 30 ceph --connect-timeout 10 "$@"; }

t_cg_cluster() {
    must "ceph osd stat" cg_ceph osd stat || return 1
    grep -q "1 osds: 1 up.*1 in" <<<"$OUT" || fail "osd stat: $OUT" || return 1
    must "ceph mds stat" cg_ceph mds stat || return 1
    grep -q "cephfs:1 {0=a=up:active}" <<<"$OUT" || fail "mds stat: $OUT" || return 1
}

# cg_through FROM TO: a fresh 4 MiB file written through gateway FROM (libnfs, from
# source-example) reads back with the same digest through gateway TO
cg_through() {
    local from=$1 to=$2 name want got
    name=cg-$from-$RANDOM.bin
    must "random file" on source-example sh -c "head -c 4194304 /dev/urandom > /run/lab/$name && sha256sum < /run/lab/$name" || return 1
    want=${OUT%% *}
    must "nfs-cp through $from" on source-example timeout 60 nfs-cp "/run/lab/$name" "nfs://${from}//$name" || return 1
    must "nfs-cat through $to" on source-example sh -c "timeout 60 nfs-cat 'nfs://${to}//$name' | sha256sum" || return 1
    got=${OUT%% *}
    [[ $got == "$want" ]] || fail "$name written through $from reads as $got through $to, want $want" || return 1
    on source-example rm -f "/run/lab/$name"
}

t_cg_gateways() {
    cg_through 198.18.0.7 198.18.0.8 || return 1
    cg_through 198.18.0.8 198.18.0.7
}

t_cg_sessions() {
    must "client ls" cg_ceph tell mds.a client ls || return 1
    local h
    for h in gateway-a gateway-b; do
        grep -q "\"hostname\": \"$h\"" <<<"$OUT" || fail "no CephFS session from $h: $(tr -d '\n' <<<"$OUT" | cut -c1-600)" || return 1
    done
}

if [[ $cg_profile == ceph ]]; then
    run "ceph: one OSD up, the MDS active on CephFS cephfs" t_cg_cluster
    run "ceph: 4 MiB through gateway-a reads back identical through gateway-b, and the reverse" t_cg_gateways
    run "ceph: each gateway holds its own CephFS session (distinct host names)" t_cg_sessions
else
    note "ceph suites not run: the lab was brought up without LAB_STORAGE=ceph (make check sets it)"
fi
