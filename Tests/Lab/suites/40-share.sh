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
# as it prints the line of STEP; its output is left in $OUT. It fails unless the SIGINT
# was sent and share died of it (status 130) before saying the VM is ready. When share
# finished between printing STEP and the signal (a race the test cannot rule out), it
# starts again from sh_reset, at most three times in all.
# (set -m: without job control bash starts background jobs with SIGINT ignored)
sh_share_ctrl_c() {
    local attempt rc
    for attempt in 1 2 3; do
        ((attempt == 1)) || { note "  share finished before Ctrl-C after $1 ($rc); again"; sh_reset || return 1; }
        on source-example timeout -s INT 60 bash -c '
            set -m
            # empty the file first: the job truncates it only once it runs, and the loop
            # below must not find the previous run'"'"'s lines in the meantime
            : > /run/lab/share.out
            "$1" share "$2" --to dest-example --config /run/lab/storagectl.conf > /run/lab/share.out 2>&1 &
            pid=$! sent=no
            while kill -0 $pid 2>/dev/null; do
                if grep -q "^ok $3 " /run/lab/share.out; then kill -INT $pid && sent=yes; break; fi
                sleep 0.005
            done
            wait $pid; echo "exit=$? sent=$sent"' _ "$(lab_bin)/storagectl" "$SH_VM" "$1" >"$STATE/logs/share-ctrl-c.rc" 2>&1
        rc=$(tail -n1 "$STATE/logs/share-ctrl-c.rc")
        must "read the interrupted output" on source-example cat /run/lab/share.out || return 1
        grep -q "^ok $1 " <<<"$OUT" || fail "share did not reach $1: $OUT" || return 1
        if [[ $rc == "exit=130 sent=yes" ]]; then
            ! grep -q "is ready" <<<"$OUT" || fail "interrupted share still said ready: $OUT" || return 1
            return 0
        fi
        # only "share completed before the signal" may be tried again
        [[ $rc == "exit=0 sent="* ]] || fail "Ctrl-C after $1: $rc (want exit=130 sent=yes): $OUT" || return 1
    done
    fail "Ctrl-C after $1 never interrupted share in 3 attempts ($rc)"
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
    # share --offline while it runs (from the share): refused at the copy step, as the
    # agent's COPY needs the VM shut off (exit 65, invalid-state, names virsh shutdown);
    # nothing is copied again and nothing changes
    must "exports before" on cargo-bay cat /etc/exports || return 1
    local before=$OUT copy; copy="$(hd_of cargo-bay)/var-lib/libvirt/shared-images/wanderer1/wanderer1.qcow2"
    local stat_before; stat_before=$(stat -c '%i %s %Y' "$copy") || { fail "no shared copy at $copy"; return 1; }
    OUT=$(sh_sctl share "$SH_VM" --to dest-example --offline --json 2>&1); local rc=$? said
    said=$OUT
    # without --offline (the default for a running VM: live) there is nothing to copy:
    # the disk is on the share already; the copies are verified again, nothing changes
    OUT=$(sh_sctl share "$SH_VM" --to dest-example --json 2>&1); local live_rc=$? live=$OUT
    must "virsh destroy" on source-example virsh -c qemu:///system destroy "$SH_VM" || return 1
    ((rc == 65)) || fail "share --offline of the running VM: exit $rc, want 65: $said" || return 1
    python3 - "$said" <<'PY' || { fail "share --offline of the running VM: $said"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["ready"] is False and r["failed_step"] == "copy" and r["code"] == "invalid-state", r
assert "virsh shutdown wanderer1" in r["message"], r
PY
    ((live_rc == 0)) || fail "share (live) of the running, shared VM: exit $live_rc: $live" || return 1
    python3 - "$live" <<'PY' || { fail "share (live) of the running, shared VM: $live"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["ready"] is True and r["mode"] == "live" and r["changed"] == [], r
assert [d["already_present"] for d in r["disks"]] == [True], r
PY
    must "exports after" on cargo-bay cat /etc/exports || return 1
    [[ $OUT == "$before" ]] || fail "share of the running VM changed /etc/exports" || return 1
    [[ $(stat -c '%i %s %Y' "$copy") == "$stat_before" ]] || fail "share of the running VM touched the shared copy" || return 1
    must "domblklist" on source-example virsh -c qemu:///system domblklist "$SH_VM" || return 1
    grep -q "vda *$SH_COPY" <<<"$OUT" || fail "wanderer1 disks after the refused share: $OUT" || return 1
}

t_share_refuses_running_local() {
    # with --offline, a running VM whose disk is still local is refused before anything is
    # exported or copied (exit 65, invalid-state at preflight), and share says how to go
    # on (shut it down, or drop --offline for a live copy)
    must "exports before" on cargo-bay cat /etc/exports || return 1
    local before=$OUT
    must "define and start runner1" on source-example sh -ec '
        qemu-img create -q -f qcow2 /var/lib/libvirt/images/runner1.qcow2 16M
        sed -e "s/<name>wanderer1</<name>runner1</" -e "s/wanderer1.qcow2/runner1.qcow2/" /run/lab/wanderer1.xml >/run/lab/runner1.xml
        virsh -c qemu:///system -q define /run/lab/runner1.xml >/dev/null
        virsh -c qemu:///system -q start runner1 >/dev/null' || return 1
    OUT=$(sh_sctl share runner1 --to dest-example --offline --json 2>&1); local rc=$? said
    said=$OUT
    on source-example virsh -c qemu:///system -q destroy runner1 >/dev/null 2>&1
    on source-example virsh -c qemu:///system -q undefine runner1 >/dev/null 2>&1
    on source-example rm -f /var/lib/libvirt/images/runner1.qcow2
    ((rc == 65)) || fail "share of a running VM with a local disk: exit $rc, want 65: $said" || return 1
    python3 - "$said" <<'PY' || { fail "refusal of a running VM: $said"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["ready"] is False and r["failed_step"] == "preflight" and r["code"] == "invalid-state", r
assert "shut off" in r["message"] and "virsh shutdown runner1" in r["remedy"] and "drop --offline" in r["remedy"], r
PY
    must "list the share" on cargo-bay ls -A "$EXPORT_ROOT" || return 1
    ! grep -qx runner1 <<<"$OUT" || fail "a refused share created $EXPORT_ROOT/runner1" || return 1
    must "exports after" on cargo-bay cat /etc/exports || return 1
    [[ $OUT == "$before" ]] || fail "a refused share changed /etc/exports" || return 1
}

t_share_refusals() {
    local rc
    OUT=$(sh_sctl share ghost-vm 2>&1); rc=$?
    ((rc == 66)) || fail "share of a VM that does not exist: exit $rc, want 66: $OUT" || return 1
    grep -q "not-found" <<<"$OUT" || fail "unexpected: $OUT" || return 1
    OUT=$(sh_sctl share "$SH_VM" --to elsewhere-example 2>&1); rc=$?
    ((rc == 64)) || fail "a destination outside the inventory: exit $rc, want 64: $OUT" || return 1
    grep -q "not a compute host of the inventory" <<<"$OUT" || fail "unexpected: $OUT" || return 1
}

run "share --dry-run prints the plan and changes nothing" t_share_dry_run
run "share stopped by Ctrl-C after export, then failing at the pool of a stopped dest-example agent; re-run finishes" t_share_interrupted_then_resumed
run "share interrupted by Ctrl-C after each step in turn, re-run: ready with an identical copy each time (content digest as storagectl digest prints it on both hosts)" t_share_interrupted_at_each_step
run "share result: exports with no_root_squash for both, pools active, identical copy, domain on it, status READY" t_share_state_is_real
run "share again changes nothing and says so (--json)" t_share_again_changes_nothing
run "wanderer1 starts on source-example from the shared copy; share --offline while it runs is refused (65, invalid-state at copy), share (live) changes nothing" t_share_vm_starts_from_share
run "share --offline refuses a running VM with a local disk (exit 65, invalid-state at preflight), exports and copies nothing" t_share_refuses_running_local
run "share refuses an unknown VM and a destination outside the inventory" t_share_refusals
