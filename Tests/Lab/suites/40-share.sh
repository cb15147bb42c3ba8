# Lab suite: storagectl share, end to end (issue 6), run on source-example against the
# lab inventory (agents over mutual TLS). Sourced by run-tests after the feature suites.

SH_VM=wanderer1
SH_IMAGE=/var/lib/libvirt/images/wanderer1.qcow2
SH_COPY=$EXPORT_ROOT/wanderer1/wanderer1.qcow2

sh_sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config /run/lab/storagectl.conf; }

# sh_digest_is JSON HOST FILE: share's --json result reports for its one disk the content
# digest that `storagectl digest FILE` prints on HOST
sh_digest_is() {
    local json=$1 host=$2 file=$3 digest
    digest=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1])["disks"]; assert len(d) == 1 and "sha256" not in d[0], d; print(d[0]["digest"])' "$json") \
        || { fail "no digest in share's result: $json"; return 1; }
    must "storagectl digest on $host" on "$host" "$(lab_bin)/storagectl" digest "$file" || return 1
    [[ $OUT == "$digest  $file" ]] || fail "storagectl digest on $host: $OUT; share reported $digest" || return 1
}

# The storage agent owns the ganesha include file from here on: drop the blocks the
# earlier lab tests wrote there by hand, then let the agent write its own.
sh_reset_exports() {
    must "clear the ganesha include" on cargo-bay sh -c ': > /etc/ganesha/storagectl-exports.conf' || return 1
    must "lab ganesha-reload" "$LAB" ganesha-reload || return 1
}

t_share_dry_run() {
    must "inventory on source-example" on source-example sh -c 'cat > /run/lab/storagectl.conf' <"$STATE/storagectl.conf" || return 1
    sh_reset_exports || return 1
    must "share --dry-run" sh_sctl share "$SH_VM" --to dest-example --dry-run || return 1
    grep -q "nothing was changed" <<<"$OUT" || fail "dry run said: $OUT" || return 1
    must "exports after dry run" on cargo-bay cat /etc/exports || return 1
    if grep -q "$EXPORT_ROOT " <<<"$OUT"; then fail "--dry-run exported: $OUT"; return 1; fi
}

# sh_reset: wanderer1 back on its local disk, no copy on the share (as before any share)
sh_reset() {
    sh_sctl call source-example RESTORE domain="$SH_VM" >/dev/null 2>&1
    on cargo-bay rm -rf "$EXPORT_ROOT/$SH_VM"
    must "wanderer1 on its local disk" on source-example virsh -c qemu:///system domblklist "$SH_VM" || return 1
    grep -q "vda *$SH_IMAGE" <<<"$OUT" || fail "reset left wanderer1 on: $OUT" || return 1
}

# sh_share_ctrl_c STEP: run share on source-example and send it SIGINT (Ctrl-C) as soon
# as it prints the line of STEP; its output is left in $OUT.
# (set -m: without job control bash starts background jobs with SIGINT ignored)
sh_share_ctrl_c() {
    on source-example timeout -s INT 60 bash -c '
        set -m
        # empty the file first: the job truncates it only once it runs, and the loop
        # below must not find the previous run'"'"'s lines in the meantime
        : > /run/lab/share.out
        "$1" share "$2" --to dest-example --config /run/lab/storagectl.conf > /run/lab/share.out 2>&1 &
        pid=$!
        while kill -0 $pid 2>/dev/null; do
            grep -q "^ok $3 " /run/lab/share.out && { kill -INT $pid; break; }
            sleep 0.005
        done
        wait $pid; true' _ "$(lab_bin)/storagectl" "$SH_VM" "$1" >/dev/null 2>&1
    must "read the interrupted output" on source-example cat /run/lab/share.out || return 1
    grep -q "^ok $1 " <<<"$OUT" || fail "share did not reach $1: $OUT" || return 1
}

t_share_interrupted_then_resumed() {
    # start from a VM on local disks with no copy on the share (earlier suites adopted it)
    sh_reset || return 1
    # 1. Ctrl-C while share runs: whatever step it reached, the next run continues
    sh_share_ctrl_c export || return 1
    if grep -q "^ok adopt " <<<"$OUT"; then fail "Ctrl-C did not stop share: $OUT"; return 1; fi
    note "  Ctrl-C after: $(grep '^ok ' <<<"$OUT" | tail -n1 | cut -c1-60)"
    # 2. the destination's agent stops answering (SIGSTOP): share fails at the pool step
    #    on dest-example, names the host and says what to do; nothing is copied yet or is
    #    copied again later
    local dpid; dpid=$(head -n1 "$STATE/pids/dest-example.compute-agent.pid")
    kill -STOP "$dpid" || { fail "cannot stop dest-example's agent"; return 1; }
    OUT=$(sh_sctl share "$SH_VM" --to dest-example --timeout 2 2>&1); local rc=$?
    kill -CONT "$dpid"
    ((rc != 0)) || fail "share succeeded with dest-example's agent stopped: $OUT" || return 1
    grep -q "pool on dest-example failed" <<<"$OUT" || fail "share failed elsewhere: $OUT" || return 1
    grep -q "what to do:" <<<"$OUT" || fail "no remedy in: $OUT" || return 1
    note "  with dest-example's agent stopped: $(grep 'failed' <<<"$OUT" | head -n1 | cut -c1-110)"
    # 3. run again: it finishes, copying and adopting now
    must "share after interruptions" sh_sctl share "$SH_VM" --to dest-example || return 1
    grep -q "^wanderer1 is ready" <<<"$OUT" || fail "share said: $OUT" || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
}

t_share_interrupted_at_each_step() {
    # Ctrl-C right after each step in turn, then share again: it always finishes, and the
    # result is the same (identical copy, domain on it)
    local step reached
    for step in locate preflight export pool copy checksum verify; do
        sh_reset || return 1
        sh_share_ctrl_c "$step" || return 1
        reached=$(grep '^ok ' <<<"$OUT" | tail -n1 | awk '{print $2}')
        must "share after Ctrl-C at $step" sh_sctl share "$SH_VM" --to dest-example --json || return 1
        python3 - "$OUT" <<'PY' || { fail "share after Ctrl-C at $step: $OUT"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["ready"] is True, r
PY
        # the content digest share reports: the original's on source-example, the copy's
        # on cargo-bay's own disk (no disk is reported when the interrupted run had
        # already adopted: nothing was copied then)
        local json=$OUT
        if python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["disks"] else 1)' "$json"; then
            sh_digest_is "$json" source-example "$SH_IMAGE" || return 1
            sh_digest_is "$json" cargo-bay "$SH_COPY" || return 1
        else
            note "  (the interrupted run had adopted already: no copy reported)"
        fi
        must "domblklist" on source-example virsh -c qemu:///system domblklist "$SH_VM" || return 1
        grep -q "vda *$SH_COPY" <<<"$OUT" || fail "after Ctrl-C at $step wanderer1 is on: $OUT" || return 1
        must "cmp" cmp "$(hd_of source-example)/var-lib/libvirt/images/wanderer1.qcow2" \
            "$(hd_of cargo-bay)/var-lib/libvirt/shared-images/wanderer1/wanderer1.qcow2" || return 1
        note "  Ctrl-C after $step (last step printed: $reached): re-run ready, copy identical"
    done
}

t_share_state_is_real() {
    # /etc/exports of cargo-bay: our entry for both compute hosts with no_root_squash
    must "exports" on cargo-bay cat /etc/exports || return 1
    local line; line=$(grep "^$EXPORT_ROOT " <<<"$OUT") || { fail "no managed entry for $EXPORT_ROOT: $OUT"; return 1; }
    for h in source-example dest-example; do
        grep -q "$h(rw,sync,no_subtree_check,no_root_squash" <<<"$line" || fail "$h missing in: $line" || return 1
    done
    # the pool is active and autostarted on both compute hosts
    for h in source-example dest-example; do
        must "pool-info on $h" on "$h" virsh -c qemu:///system pool-info shared-images || return 1
        grep -q "^State: *running" <<<"$OUT" || fail "pool on $h: $OUT" || return 1
        grep -q "^Autostart: *yes" <<<"$OUT" || fail "pool on $h not autostarted: $OUT" || return 1
    done
    # the copy on cargo-bay's disk is identical to the original on source-example's disk
    local orig; orig="$(hd_of source-example)/var-lib/libvirt/images/wanderer1.qcow2"
    local copy; copy="$(hd_of cargo-bay)/var-lib/libvirt/shared-images/wanderer1/wanderer1.qcow2"
    must "qemu-img compare" qemu-img compare -q "$orig" "$copy" || return 1
    must "cmp" cmp "$orig" "$copy" || return 1
    # the domain on source-example points at it
    must "domblklist" on source-example virsh -c qemu:///system domblklist "$SH_VM" || return 1
    grep -q "vda *$SH_COPY" <<<"$OUT" || fail "wanderer1 disks: $OUT" || return 1
    # status says ready
    must "status" sh_sctl status "$SH_VM" || return 1
    grep -q "^wanderer1: READY" <<<"$OUT" || fail "status: $OUT" || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
    # without a VM name: every VM with a disk on the share (the base tests' mig1, defined
    # on both hosts after its migration, is listed too, as not ready)
    OUT=$(sh_sctl status 2>&1) || true
    grep -q "^wanderer1: READY" <<<"$OUT" || fail "status (all): $OUT" || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
}

t_share_again_changes_nothing() {
    must "exports before" on cargo-bay cat /etc/exports || return 1
    local before=$OUT
    must "share again" sh_sctl share "$SH_VM" --to dest-example --json || return 1
    python3 - "$OUT" <<'PY' || { fail "second share: $OUT"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["ready"] is True, r
assert r["changed"] == [], r["changed"]
assert r["ready"] and r["source"] == "source-example" and r["destinations"] == ["dest-example"], r
assert r["disks"] == [], r["disks"]  # already on the share: nothing copied, nothing to digest
PY
    must "exports after" on cargo-bay cat /etc/exports || return 1
    [[ $OUT == "$before" ]] || fail "a second share changed /etc/exports" || return 1
}

t_share_vm_starts_from_share() {
    must "virsh start" on source-example virsh -c qemu:///system start "$SH_VM" || return 1
    must "domstate" on source-example virsh -c qemu:///system domstate "$SH_VM" || return 1
    [[ $(echo $OUT) == running ]] || fail "wanderer1 is $OUT" || return 1
    # a running VM is not copied again, and share says what to do
    if OUT=$(sh_sctl share "$SH_VM" --to dest-example 2>&1); then :; fi
    must "virsh destroy" on source-example virsh -c qemu:///system destroy "$SH_VM" || return 1
}

t_share_refusals() {
    if OUT=$(sh_sctl share ghost-vm 2>&1); then fail "shared a VM that does not exist"; return 1; fi
    grep -q "not-found" <<<"$OUT" || fail "unexpected: $OUT" || return 1
    if OUT=$(sh_sctl share "$SH_VM" --to elsewhere-example 2>&1); then fail "accepted a destination outside the inventory"; return 1; fi
    grep -q "not a compute host of the inventory" <<<"$OUT" || fail "unexpected: $OUT" || return 1
}

run "share --dry-run prints the plan and changes nothing" t_share_dry_run
run "share stopped by Ctrl-C after export, then failing at the pool of a stopped dest-example agent; re-run finishes" t_share_interrupted_then_resumed
run "share interrupted by Ctrl-C after each step in turn, re-run: ready with an identical copy each time (content digest as storagectl digest prints it on both hosts)" t_share_interrupted_at_each_step
run "share result: exports with no_root_squash for both, pools active, identical copy, domain on it, status READY" t_share_state_is_real
run "share again changes nothing and says so (--json)" t_share_again_changes_nothing
run "wanderer1 starts on source-example from the shared copy" t_share_vm_starts_from_share
run "share refuses an unknown VM and a destination outside the inventory" t_share_refusals
