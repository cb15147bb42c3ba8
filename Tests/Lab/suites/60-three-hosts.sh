# shellcheck shell=bash
# Lab suite: three compute hosts (issue 18). Runs after 50-unshare.sh, which leaves
# wanderer1 on its local disk and nothing exported. Sourced by run-tests with the lab up;
# uses its helpers (on, must, fail, note, run, lab_bin, $OUT, $STATE, $EXPORT_ROOT, $VIRSH).
#   1. storagectl share wanderer1 --to dest-example --to third-example: both destinations
#      see the copy (share's own verify lines, status --json, VERIFY through each host's
#      pool and through libnfs, virsh on each), the export lists all three hosts;
#   2. --attach libnfs end to end: share roamer1 (NFS network disks), status READY with
#      every compute host seeing the disks, virsh migrate --live --persistent --p2p to
#      dest-example and back.

MH_VM=wanderer1
MH_COPY=$EXPORT_ROOT/wanderer1/wanderer1.qcow2
MH_LN_VM=roamer1
MH_LN_IMAGE=/var/lib/libvirt/images/roamer1.qcow2
MH_LN_COPY=$EXPORT_ROOT/roamer1/roamer1.qcow2

# mh_has WORD...: the last line of OUT has every WORD (e.g. OK, format=qcow2) as a field
mh_has() { local w; for w; do tail -n1 <<<"$OUT" | tr ' ' '\n' | grep -qxF -- "$w" || return 1; done; }

# MH_CONF: the inventory inside source-example (the libnfs test uses one with a pool name
# of its own: a libnfs-mode share refuses the mount-mode pool shared-images of test 1)
MH_CONF=/run/lab/storagectl.conf
mh_sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config "$MH_CONF"; }

# mh_status_ready VM HOST...: storagectl status VM --json says READY, and each HOST is an
# export client that sees every shared disk and can run the VM
mh_status_ready() {
    local vm=$1; shift
    local rc
    OUT=$(mh_sctl status "$vm" --json 2>&1); rc=$?
    ((rc == 0)) || fail "status $vm --json: exit $rc: $(tr '\n' ' ' <<<"$OUT" | cut -c1-600)" || return 1
    python3 - "$OUT" "$vm" "$@" <<'PY' || { fail "status $vm: $(tr '\n' ' ' <<<"$OUT" | cut -c1-600)"; return 1; }
import json, sys
s, vm, want = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
assert s["vm"] == vm and s["ready"] is True and s.get("problem") is None, s
assert s["owner"] == "source-example" and s["local_disks"] == [] and len(s["shared_disks"]) == 1, s
hosts = {h["host"]: h for h in s["hosts"]}
assert set(hosts) == {"source-example", "dest-example", "third-example"}, hosts.keys()
assert hosts["source-example"]["defines_vm"] is True, hosts["source-example"]
for name in want:
    h = hosts[name]
    assert h["exported"] and h["sees_disks"] and h["can_run"] and not h.get("problem"), h
PY
}

t_mh_share_two_destinations() {
    must "inventory on source-example" on source-example sh -c 'cat > /run/lab/storagectl.conf' <"$STATE/storagectl.conf" || return 1
    # the storage agent owns the ganesha include (as in 40-share.sh; run alone, the base
    # tests' hand-written blocks would still be there)
    must "clear the ganesha include" on cargo-bay sh -c ': > /etc/ganesha/storagectl-exports.conf' || return 1
    must "lab ganesha-reload" "$LAB" ganesha-reload || return 1
    must "wanderer1 on its local disk" on source-example "${VIRSH[@]}" domblklist "$MH_VM" || return 1
    # (after suite 50's unshare it is in its per-VM directory, images/wanderer1/)
    grep -Eq "vda +/var/lib/libvirt/images/(wanderer1/)?wanderer1.qcow2" <<<"$OUT" || fail "wanderer1 is not on its local disk before the share: $OUT" || return 1
    must "share to two destinations" mh_sctl share "$MH_VM" --to dest-example --to third-example || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
    local said=$OUT h
    grep -q "^wanderer1 is ready" <<<"$said" || fail "share said: $said" || return 1
    # share's own proof: each destination saw the copy and its own nonce from the source
    for h in dest-example third-example; do
        grep -Eq "^ok verify +$h +sees 1 copy\(ies\) and source-example's nonce" <<<"$said" \
            || fail "no verify line for $h: $said" || return 1
    done
    # the export lists all three compute hosts (rw, no_root_squash), in /etc/exports and
    # in what ganesha serves
    must "exports" on cargo-bay cat /etc/exports || return 1
    local line; line=$(grep "^$EXPORT_ROOT " <<<"$OUT") || { fail "no managed entry for $EXPORT_ROOT: $OUT"; return 1; }
    for h in source-example dest-example third-example; do
        grep -q "$h(rw,sync,no_subtree_check,no_root_squash" <<<"$line" || fail "$h missing in: $line" || return 1
    done
    must "showmount -e on cargo-bay" on cargo-bay showmount -e 127.0.0.1 || return 1
    line=$(grep "^$EXPORT_ROOT " <<<"$OUT") || { fail "ganesha does not serve $EXPORT_ROOT: $OUT"; return 1; }
    for h in 198.18.0.2 198.18.0.3 198.18.0.4; do
        grep -qw "$h" <<<"$line" || fail "ganesha's export lacks $h: $line" || return 1
    done
    # status: READY, both destinations export clients that see the disk and can run it
    mh_status_ready "$MH_VM" dest-example third-example || return 1
    # each destination, asked directly: through its pool (mount) and through libnfs
    for h in dest-example third-example; do
        must "VERIFY (pool) on $h" mh_sctl call "$h" VERIFY "path=$MH_COPY" || return 1
        mh_has OK format=qcow2 via=mount || fail "VERIFY on $h: $(tail -n1 <<<"$OUT")" || return 1
        must "VERIFY (libnfs) on $h" mh_sctl call "$h" VERIFY server=198.18.0.1 "export=$EXPORT_ROOT" path=wanderer1/wanderer1.qcow2 || return 1
        mh_has OK format=qcow2 via=libnfs || fail "VERIFY via libnfs on $h: $(tail -n1 <<<"$OUT")" || return 1
        must "pool-info on $h" on "$h" "${VIRSH[@]}" pool-info shared-images || return 1
        grep -q "^State: *running" <<<"$OUT" || fail "pool on $h: $OUT" || return 1
        must "pool-refresh on $h" on "$h" "${VIRSH[@]}" pool-refresh shared-images || return 1
        must "vol-list on $h" on "$h" "${VIRSH[@]}" vol-list shared-images || return 1
        grep -q "^ *wanderer1 *$EXPORT_ROOT/wanderer1\$" <<<"$OUT" || fail "$h's pool does not list wanderer1's directory: $OUT" || return 1
    done
    # third-example really runs it from the share (defined there from source-example's
    # definition; wanderer1 is shut off on source-example)
    must "dumpxml on source-example" on source-example sh -c 'virsh -c qemu:///system dumpxml --inactive wanderer1 > /run/lab/mh-wanderer1.xml' || return 1
    cp "$(hd_of source-example)/run/lab/mh-wanderer1.xml" "$(hd_of third-example)/run/lab/mh-wanderer1.xml" || { fail "copy the XML"; return 1; }
    must "define on third-example" on third-example "${VIRSH[@]}" define /run/lab/mh-wanderer1.xml || return 1
    must "start on third-example" on third-example "${VIRSH[@]}" start "$MH_VM" || return 1
    runs_only_on "$MH_VM" third-example || return 1
    must "destroy on third-example" on third-example "${VIRSH[@]}" destroy "$MH_VM" || return 1
    must "undefine on third-example" on third-example "${VIRSH[@]}" undefine "$MH_VM" || return 1
}

LN_READY=""
t_mh_libnfs_share() {
    must "libnfs inventory" on source-example sh -c 'sed "/^nfs-server = /a pool = lab-libnfs" /run/lab/storagectl.conf > /run/lab/storagectl-libnfs.conf' || return 1
    MH_CONF=/run/lab/storagectl-libnfs.conf
    # roamer1: a copy of wanderer1's local image (boot sector that dirties memory), own name
    must "define roamer1 on source-example" on source-example sh -ec '
        cp --sparse=always /var/lib/libvirt/images/wanderer1.qcow2 "$1"
        sed -e "s/<name>wanderer1</<name>roamer1</" -e "s|/var/lib/libvirt/images/wanderer1.qcow2|$1|" \
            /run/lab/wanderer1.xml > /run/lab/roamer1.xml
        virsh -c qemu:///system -q define /run/lab/roamer1.xml >/dev/null' sh "$MH_LN_IMAGE" || return 1
    local rc
    OUT=$(mh_sctl share "$MH_LN_VM" --to dest-example --to third-example --attach libnfs --json 2>&1); rc=$?
    ((rc == 0)) || fail "share --attach libnfs: exit $rc: $(tr '\n' ' ' <<<"$OUT" | cut -c1-600)" || return 1
    python3 - "$OUT" <<'PY' || { fail "share --attach libnfs: $(tr '\n' ' ' <<<"$OUT" | cut -c1-600)"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["ready"] is True and r["attach"] == "libnfs", r
assert r["destinations"] == ["dest-example", "third-example"], r["destinations"]
assert len(r["disks"]) == 1, r["disks"]
PY
    # the domain now has an NFS network disk on cargo-bay
    must "dumpxml roamer1" on source-example "${VIRSH[@]}" dumpxml --inactive "$MH_LN_VM" || return 1
    grep -q "<disk type='network' device='disk'>" <<<"$OUT" && grep -q "protocol='nfs' name='$MH_LN_COPY'" <<<"$OUT" \
        && grep -q "<host name='198.18.0.1'" <<<"$OUT" || fail "roamer1 has no NFS network disk: $OUT" || return 1
    must "cmp with the original" cmp "$(hd_of source-example)/var-lib/libvirt/images/roamer1.qcow2" \
        "$(hd_of cargo-bay)/var-lib/libvirt/shared-images/roamer1/roamer1.qcow2" || return 1
    # status: READY, every compute host sees the disk (libnfs VERIFY of the right path)
    mh_status_ready "$MH_LN_VM" source-example dest-example third-example || return 1
    must "status (table)" mh_sctl status "$MH_LN_VM" || return 1
    grep -q "^roamer1: READY" <<<"$OUT" || fail "status: $OUT" || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
    LN_READY=1
    MH_CONF=/run/lab/storagectl.conf
}

t_mh_libnfs_migrate() {
    [[ -n $LN_READY ]] || fail "roamer1 was not shared (previous test failed)" || return 1
    must "start roamer1" on source-example "${VIRSH[@]}" start "$MH_LN_VM" || return 1
    runs_only_on "$MH_LN_VM" source-example || return 1
    local t0; t0=$(now_ms)
    must "virsh migrate to dest-example" on source-example timeout 120 "${VIRSH[@]}" migrate --live --persistent --p2p \
        "$MH_LN_VM" qemu+tcp://dest-example/system || return 1
    note "  to dest-example: $(secs $(( $(now_ms) - t0 ))) s"
    runs_only_on "$MH_LN_VM" dest-example || return 1
    must "domblklist on dest-example" on dest-example "${VIRSH[@]}" domblklist "$MH_LN_VM" || return 1
    grep -q "vda *$MH_LN_COPY" <<<"$OUT" || fail "roamer1 on dest-example uses: $OUT" || return 1
    must "domstate on source-example" on source-example "${VIRSH[@]}" domstate "$MH_LN_VM" || return 1
    [[ $(echo $OUT) == "shut off" ]] || fail "roamer1 on source-example is '$OUT', want shut off" || return 1
    # and back, started from dest-example
    t0=$(now_ms)
    must "virsh migrate back to source-example" on dest-example timeout 120 "${VIRSH[@]}" migrate --live --persistent --p2p \
        "$MH_LN_VM" qemu+tcp://source-example/system || return 1
    note "  back to source-example: $(secs $(( $(now_ms) - t0 ))) s"
    runs_only_on "$MH_LN_VM" source-example || return 1
    must "domstate on dest-example" on dest-example "${VIRSH[@]}" domstate "$MH_LN_VM" || return 1
    [[ $(echo $OUT) == "shut off" ]] || fail "roamer1 on dest-example is '$OUT', want shut off" || return 1
    # clean up: no roamer1 left anywhere
    must "destroy roamer1" on source-example "${VIRSH[@]}" destroy "$MH_LN_VM" || return 1
    local h
    for h in source-example dest-example; do
        must "undefine roamer1 on $h" on "$h" "${VIRSH[@]}" undefine "$MH_LN_VM" || return 1
    done
    must "remove roamer1's images" on source-example rm -f "$MH_LN_IMAGE" || return 1
    must "remove roamer1's copy" on cargo-bay rm -rf "$EXPORT_ROOT/roamer1" || return 1
}

run "three hosts: share wanderer1 to dest-example and third-example; both see the copy (verify, status, VERIFY, virsh), the export lists all three" t_mh_share_two_destinations
run "three hosts: share --attach libnfs gives an NFS network disk; status READY, every compute host sees it" t_mh_libnfs_share
run "three hosts: live-migrate the libnfs VM to dest-example (runs only there) and back (virsh migrate --p2p)" t_mh_libnfs_migrate
