# Lab suite: storagectl unshare, end to end (issue 6), run on source-example against the
# lab inventory after 40-share.sh (wanderer1 is shared, adopted, has run from the share
# and is shut off). Sourced by run-tests after the earlier suites. The base tests leave
# the guest mig1 defined on both compute hosts with an NFS network disk on the share:
# while it is defined, both hosts stay export clients.

US_VM=wanderer1
US_LOCAL=/var/lib/libvirt/images/wanderer1/wanderer1.qcow2   # LOCALIZE: the domain's own directory
US_COPY=$EXPORT_ROOT/wanderer1/wanderer1.qcow2

us_sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config /run/lab/storagectl.conf; }

t_unshare_refuses_running() {
    must "virsh start" on source-example virsh -c qemu:///system start "$US_VM" || return 1
    OUT=$(us_sctl unshare "$US_VM" --offline 2>&1); local rc=$? said=$OUT
    must "virsh destroy" on source-example virsh -c qemu:///system destroy "$US_VM" || return 1
    ((rc == 65)) || fail "unshare --offline of a running VM: exit $rc, want 65 (refused by the current state): $said" || return 1
    grep -q "virsh shutdown $US_VM" <<<"$said" || fail "no remedy in: $said" || return 1
    must "domblklist" on source-example virsh -c qemu:///system domblklist "$US_VM" || return 1
    grep -q "vda *$US_COPY" <<<"$OUT" || fail "a refused unshare changed the disks: $OUT" || return 1
}

t_unshare_brings_back() {
    must "unshare" us_sctl unshare "$US_VM" || return 1
    local said=$OUT
    printf '%s\n' "$OUT" | sed 's/^/#   /'
    grep -q "^wanderer1 is on local disks of source-example again" <<<"$OUT" || fail "unshare said: $OUT" || return 1
    grep -q "cargo-bay:$US_COPY" <<<"$OUT" || fail "the kept copy is not named: $OUT" || return 1
    # the domain points at the local disk again
    must "domblklist" on source-example virsh -c qemu:///system domblklist "$US_VM" || return 1
    grep -q "vda *$US_LOCAL" <<<"$OUT" || fail "wanderer1 disks: $OUT" || return 1
    # the local image is the shared copy (which the VM wrote to while it ran from the share)
    local local_ copy
    local_="$(hd_of source-example)/var-lib/libvirt/images/wanderer1/wanderer1.qcow2"
    copy="$(hd_of cargo-bay)/var-lib/libvirt/shared-images/wanderer1/wanderer1.qcow2"
    must "qemu-img compare" qemu-img compare -q "$local_" "$copy" || return 1
    must "cmp" cmp "$local_" "$copy" || return 1
    # unshare names the local copy's content digest: storagectl digest prints it on
    # source-example, and the storage agent's CHECKSUM of the shared copy agrees
    must "storagectl digest on source-example" on source-example "$(lab_bin)/storagectl" digest "$US_LOCAL" || return 1
    local digest=${OUT%% *}
    [[ $digest =~ ^xxh3-128:[0-9a-f]{32}$ ]] || fail "storagectl digest printed: $OUT" || return 1
    grep -q "vda: $US_LOCAL (.*, digest ${digest:0:16}" <<<"$said" || fail "unshare did not report digest $digest: $said" || return 1
    must "CHECKSUM of the shared copy" us_sctl call cargo-bay CHECKSUM path="$US_COPY" || return 1
    grep -q "^OK .* digest=$digest " <<<"$OUT" || fail "CHECKSUM on cargo-bay: $(tail -n1 <<<"$OUT"), local copy $digest" || return 1
    # mig1 (an NFS network disk on the share) is still defined on both hosts: they stay clients
    grep -q "source-example stays an export client: shared VM(s) mig1" <<<"$said" || fail "no note about mig1: $said" || return 1
    must "exports" on cargo-bay cat /etc/exports || return 1
    local line; line=$(grep "^$EXPORT_ROOT " <<<"$OUT") || { fail "the export needed by mig1 was removed: $OUT"; return 1; }
    for h in source-example dest-example; do
        grep -q "$h(" <<<"$line" || fail "$h dropped while mig1 needs it: $line" || return 1
    done
    # nothing partial left behind
    must "list source-example's images" on source-example ls -AR /var/lib/libvirt/images || return 1
    grep -q "wanderer1.qcow2" <<<"$OUT" || fail "the images directory lacks wanderer1.qcow2: $OUT" || return 1
    if grep -q storagectl-partial <<<"$OUT"; then
        fail "a partial file is left in /var/lib/libvirt/images: $OUT"; return 1
    fi
}

t_unshare_drops_clients() {
    # once mig1 is gone, no shared VM is left: both clients go, and with them the managed block
    local h
    for h in source-example dest-example; do
        must "undefine mig1 on $h" on "$h" virsh -c qemu:///system undefine mig1 || return 1
    done
    must "unshare after mig1 is gone" us_sctl unshare "$US_VM" || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
    grep -q "^wanderer1 was already on local disks of source-example" <<<"$OUT" || fail "unshare said: $OUT" || return 1
    grep -q "no longer lists source-example, dest-example (no client left)" <<<"$OUT" || fail "unshare said: $OUT" || return 1
    must "exports" on cargo-bay cat /etc/exports || return 1
    if grep -q "^$EXPORT_ROOT " <<<"$OUT"; then fail "still exported: $OUT"; return 1; fi
    if grep -q "BEGIN storagectl managed block" <<<"$OUT"; then fail "the managed block is still there: $OUT"; return 1; fi
    must "EXPORTS" us_sctl call cargo-bay EXPORTS || return 1
    grep -q "managed=0" <<<"$OUT" || fail "EXPORTS: $OUT" || return 1
}

t_unshare_vm_starts_locally() {
    must "virsh start" on source-example virsh -c qemu:///system start "$US_VM" || return 1
    must "domstate" on source-example virsh -c qemu:///system domstate "$US_VM" || return 1
    local state; state=$(echo $OUT)
    must "virsh destroy" on source-example virsh -c qemu:///system destroy "$US_VM" || return 1
    [[ $state == running ]] || fail "wanderer1 is $state" || return 1
}

t_unshare_again_changes_nothing() {
    must "exports before" on cargo-bay cat /etc/exports || return 1
    local before=$OUT
    must "unshare again" us_sctl unshare "$US_VM" --json || return 1
    python3 - "$OUT" <<'PY' || { fail "second unshare: $OUT"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["done"] is True, r
assert r["changed"] == [], r["changed"]
assert r["host"] == "source-example" and r["disks"] == [], r
PY
    must "exports after" on cargo-bay cat /etc/exports || return 1
    [[ $OUT == "$before" ]] || fail "a second unshare changed /etc/exports" || return 1
    must "domblklist" on source-example virsh -c qemu:///system domblklist "$US_VM" || return 1
    grep -q "vda *$US_LOCAL" <<<"$OUT" || fail "wanderer1 disks: $OUT" || return 1
}

run "unshare --offline refuses a running VM and changes nothing" t_unshare_refuses_running
run "unshare copies wanderer1 back (identical to the share copy, which is kept; same content digest), domain on the local disk, mig1's clients kept" t_unshare_brings_back
run "unshare keeps clients a shared VM (mig1) needs; once mig1 is undefined it drops both and the managed block" t_unshare_drops_clients
run "wanderer1 starts on source-example from its local disk" t_unshare_vm_starts_locally
run "unshare again changes nothing (--json)" t_unshare_again_changes_nothing
