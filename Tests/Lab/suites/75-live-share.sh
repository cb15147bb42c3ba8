# shellcheck shell=bash
# Lab suite: share and unshare of a RUNNING guest (issue 13): a live block copy into the
# share and a pivot, and back. Sourced by run-tests with the lab up (after 70-migration.sh,
# or alone: LAB_SUITES=75); uses its helpers (on, must, fail, note, run, lab_bin,
# runs_only_on, $OUT, $STATE, $EXPORT_ROOT, $VIRSH, $HERE).
#
# The guest scribe1 (96 MiB, TCG, a local qcow2 on source-example) boots the lab's scribe
# sector (Tests/Lab/lab, write_scribe_sector): it writes LBA 1, 2, 3, ... in order, ~17
# sectors a second, each holding "SCRIBE01", the run id of its boot and the LBA; the image
# also holds 16 MiB of random data from 17 MiB on (the guest never writes there); a
# mirror of its 40 MiB capped at 1 MiB/s takes ~40 s (QEMU copies the zeros too).
# Tests/Lab/scribe-check reads an image back: LBAs 1..M hold one run contiguously and no
# later sector holds that run (tested first on images made for it).
#   a. scribe1 runs and writes; b. a monitor inside source-example samples every 100 ms
#   virsh domstate and QEMU's pid (any state but running, or another pid, fails), and
#   virsh event --loop reports any lifecycle event (one but a redefinition fails);
#   c. Ctrl-C during a share capped at 1 MiB/s: exit 130, the guest on its local disk, no
#   block job, no partial copy on the share; d. share again: live, the disk on the share
#   (live and inactive definition), never stopped; the kept original gives P, the writes
#   before the pivot; e. storagectl migrate to dest-example and back, still writing;
#   f. destroyed, the shared image holds 1..M of the same run, M > P; started again;
#   g. unshare while it runs: a new local file, never stopped, the original and twin1's
#   disk of the same file name untouched, the new image contiguous; h. cleanup.

LS_VM=scribe1
LS_IMAGE=/var/lib/libvirt/images/scribe1.qcow2              # the original, kept after share
LS_COPY=$EXPORT_ROOT/scribe1/scribe1.qcow2                  # share's layout: VM/DISK
# another VM's disk with scribe1's file name, exactly where unshare would put scribe1's
# new local file first (DIR/scribe1/scribe1.qcow2): unshare must take another name
LS_TWIN_DISK=/var/lib/libvirt/images/scribe1/scribe1.qcow2
LS_CONF=/run/lab/storagectl-live.conf                       # pool lab-libnfs (as suite 70)
LS_MON_LOG=/run/lab/scribe1-monitor.log                     # inside source-example
LS_MON_PID=""             # the monitor (a child of run-tests), while it runs
LS_EVT_PID=""             # its virsh event --loop (a child of run-tests)
LS_RUN="" LS_P=""         # run id and writes before the share's pivot (test d)
LS_SHARED=""              # scribe1 runs on the share (test d passed)
LS_NEW=""                 # scribe1's new local image after unshare (test g)

ls_sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config "$LS_CONF"; }

# ls_check HOST IMAGE: scribe-check on HOST; sets LS_C_RUN, LS_C_M, LS_C_STRAY and OUT
ls_check() {
    must "scribe-check $2 on $1" on "$1" python3 - "$2" <"$HERE/scribe-check" || return 1
    LS_C_RUN=$(sed -n 's/.*run_id=\([^ ]*\).*/\1/p' <<<"$OUT")
    LS_C_M=$(sed -n 's/.*contiguous=\([0-9]*\).*/\1/p' <<<"$OUT")
    LS_C_STRAY=$(sed -n 's/.* stray=\([0-9]*\).*/\1/p' <<<"$OUT")     # (not first_stray=)
    [[ -n $LS_C_RUN && -n $LS_C_M && -n $LS_C_STRAY ]] || fail "scribe-check printed: $OUT" || return 1
}

# ls_writes HOST: the guest's write requests so far (virsh domblkstat wr_req of vda)
ls_writes() {
    local out
    out=$(on "$1" "${VIRSH[@]}" domblkstat "$LS_VM" vda 2>&1) || { echo "domblkstat failed: $out"; return 1; }
    sed -n 's/^vda wr_req //p' <<<"$out"
}

# ls_writing HOST: the guest on HOST writes: wr_req grows within 3 s
ls_writing() {
    local a b t0 end
    a=$(ls_writes "$1") && [[ $a =~ ^[0-9]+$ ]] || { fail "writes on $1: $a"; return 1; }
    t0=$(now_ms) end=$(( $(now_ms) + 3000 ))
    while (( $(now_ms) < end )); do
        sleep 0.1
        b=$(ls_writes "$1") && [[ $b =~ ^[0-9]+$ ]] || { fail "writes on $1: $b"; return 1; }
        ((b > a)) && { note "  $LS_VM writes on $1 (wr_req $a -> $b in $(( $(now_ms) - t0 )) ms)"; return 0; }
    done
    fail "$LS_VM on $1 does not write (wr_req stays $a for 3 s)"
}

# ls_blk HOST [--inactive]: the source of vda (domblklist; dumpxml --inactive)
ls_blk() {
    if [[ ${2:-} == --inactive ]]; then
        must "dumpxml --inactive on $1" on "$1" "${VIRSH[@]}" dumpxml --inactive "$LS_VM" || return 1
        OUT=$(python3 -c '
import sys, xml.etree.ElementTree as E
for d in E.fromstring(sys.stdin.read()).iter("disk"):
    if d.find("target").get("dev") == "vda":
        s = d.find("source"); print(s.get("file") or s.get("name"))' <<<"$OUT")
    else
        must "domblklist on $1" on "$1" "${VIRSH[@]}" domblklist "$LS_VM" || return 1
        OUT=$(awk '$1 == "vda" {print $2}' <<<"$OUT")
    fi
}

# The monitor: inside source-example, every 100 ms, one line "MS PID STATE" (the QEMU
# pid from libvirt's pid file, the first line virsh domstate printed). Beside it
# `virsh event --loop` prints every lifecycle event of the domain (suspended, resumed,
# stopped, started...): a pause shorter than the sampling interval is seen there.
ls_monitor_start() {
    must "empty the monitor log" on source-example sh -c ": > $LS_MON_LOG" || return 1
    : >"$STATE/logs/ls-events.log"
    # stdbuf: each event line reaches the file at once (virsh's stdout is a file here)
    "$LAB" exec source-example stdbuf -oL virsh -c qemu:///system event "$LS_VM" --event lifecycle --loop --timestamp \
        </dev/null >"$STATE/logs/ls-events.log" 2>&1 &
    LS_EVT_PID=$!
    # "$LAB" exec directly (not the on function): $! is then the loop's own bash (lab exec
    # and nsenter exec, they do not fork), so it is stopped by its pid
    "$LAB" exec source-example bash -c '
        while :; do
            s=$(virsh -c qemu:///system domstate "$1" 2>&1 | head -n1)
            p=$(cat "/run/libvirt/qemu/$1.pid" 2>/dev/null)
            echo "$(date +%s%3N) ${p:-none} ${s:-none}" >> "$2"
            sleep 0.1
        done' _ "$LS_VM" "$LS_MON_LOG" </dev/null >/dev/null 2>&1 &
    LS_MON_PID=$!
    # the first samples, before the test relies on it
    local i
    for i in $(seq 1 50); do
        OUT=$(on source-example cat "$LS_MON_LOG" 2>&1) || true
        (( $(grep -c . <<<"$OUT") >= 3 )) && return 0
        sleep 0.1
    done
    fail "the monitor wrote no samples: $OUT"
}

ls_monitor_stop() {
    local p
    for p in $LS_MON_PID $LS_EVT_PID; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    LS_MON_PID="" LS_EVT_PID=""
}

# ls_monitor_ok: every sample so far says running, with one QEMU pid; notes how many
# samples and the longest gap between two
ls_monitor_ok() {
    must "read the monitor log" on source-example cat "$LS_MON_LOG" || return 1
    local verdict
    verdict=$(awk '
        NF < 3 { next }
        { n++; st = $3; for (i = 4; i <= NF; i++) st = st " " $i
          if (n == 1) pid = $2
          if ($2 != pid && !badpid) badpid = $1 ": pid " $2 " (was " pid ")"
          if (st != "running" && !badst) badst = $1 ": " st
          if (n > 1 && $1 - last > gap) gap = $1 - last
          last = $1 }
        END {
          if (n < 3) { print "FAIL only " n " samples"; exit }
          if (badst) { print "FAIL not running at " badst; exit }
          if (badpid) { print "FAIL QEMU changed at " badpid; exit }
          print "OK " n " samples, pid " pid ", longest gap " gap + 0 " ms" }' <<<"$OUT")
    note "  monitor: ${verdict#* }"
    [[ $verdict == OK* ]] || fail "monitor: ${verdict#FAIL }" || return 1
    # a blind stretch is no proof: ~10 samples a second are expected, 3 s without one fails
    local gap; gap=$(sed -n 's/.*longest gap \([0-9]*\) ms/\1/p' <<<"$verdict")
    ((${gap:-0} <= 3000)) || fail "monitor: no sample for $gap ms" || return 1
    # "Defined Updated" is a redefinition (unshare defines the domain onto its local files),
    # not a stop: any other lifecycle event (Suspended, Stopped, Started, ...) fails
    local events; events=$(grep . "$STATE/logs/ls-events.log" | grep -v ": Defined [A-Za-z]*$")
    [[ -z $events ]] || fail "lifecycle events while watched: $(tr '\n' ' ' <<<"$events")" || return 1
    events=$(grep -c ": Defined " "$STATE/logs/ls-events.log")
    ((events == 0)) || note "  virsh event: $events redefinition(s), no other lifecycle event"
    kill -0 "$LS_EVT_PID" 2>/dev/null || fail "virsh event stopped watching: $(cat "$STATE/logs/ls-events.log")" || return 1
}

# ls_guest NAME: the scribe disk image (qcow2, 40 MiB: the scribe sector, 16 MiB random
# from 17 MiB) and NAME defined on source-example from wanderer1's definition (not started)
ls_guest() {
    on source-example sh -ec '
        name=$1 raw=/var/lib/libvirt/images/.$1.raw
        rm -f "$raw"; truncate -s 40M "$raw"
        dd if=/run/lab/scribe.bin of="$raw" conv=notrunc status=none
        dd if=/dev/urandom of="$raw" bs=1M seek=17 count=16 conv=notrunc status=none
        qemu-img convert -f raw -O qcow2 "$raw" "/var/lib/libvirt/images/$name.qcow2"
        rm -f "$raw"
        sed -e "s/<name>wanderer1</<name>$name</" \
            -e "s|/var/lib/libvirt/images/wanderer1.qcow2|/var/lib/libvirt/images/$name.qcow2|" \
            /run/lab/wanderer1.xml > "/run/lab/$name.xml"
        virsh -c qemu:///system -q define "/run/lab/$name.xml" >/dev/null' sh "$1"
}

# scribe-check itself, on raw images made here (a checker that always passes would make the
# tests below vacuous): in order, a hole, a sector of the run after the others, LBA 1 empty
t_ls_checker() {
    must "test images" on source-example python3 -c '
import struct, sys
def image(name, sectors):
    data = bytearray(512 * 64)
    for lba, run in sectors.items():
        data[lba * 512:lba * 512 + 24] = b"SCRIBE01" + struct.pack("<QQ", run, lba)
    open("/run/lab/ls-check-%s.raw" % name, "wb").write(data)
older = {lba: 5 for lba in range(1, 40)}
image("ordered", {**older, **{lba: 7 for lba in range(1, 21)}})
image("hole", {lba: 7 for lba in range(1, 21) if lba != 9})
image("late", {**{lba: 7 for lba in range(1, 21)}, 30: 7})
image("empty", {})' || return 1
    local case name rc want got
    for case in ordered:0:contiguous=20 hole:1:contiguous=8 late:1:first_stray=30 empty:1:run_id=none; do
        IFS=: read -r name rc want <<<"$case"
        OUT=$(on source-example python3 - "/run/lab/ls-check-$name.raw" <"$HERE/scribe-check" 2>&1); got=$?
        [[ $got == "$rc" && " $OUT " == *" $want "* ]] || fail "scribe-check of the '$name' image: $OUT (exit $got), want exit $rc and $want" || return 1
    done
    on source-example sh -c 'rm -f /run/lab/ls-check-*.raw'
}

t_ls_scribe_writes() {
    must "inventory on source-example" on source-example sh -c 'cat > /run/lab/storagectl.conf' <"$STATE/storagectl.conf" || return 1
    must "live inventory" on source-example sh -c "sed '/^nfs-server = /a pool = lab-libnfs' /run/lab/storagectl.conf > $LS_CONF" || return 1
    # Run alone (LAB_SUITES=75) the ganesha include still holds the base tests' blocks
    # written by hand: the storage agent owns it once it manages an export (40, 60 do the same)
    must "exports on cargo-bay" on cargo-bay cat /etc/exports || return 1
    if ! grep -q "BEGIN storagectl managed block" <<<"$OUT"; then
        must "clear the ganesha include" on cargo-bay sh -c ': > /etc/ganesha/storagectl-exports.conf' || return 1
        must "lab ganesha-reload" "$LAB" ganesha-reload || return 1
    fi
    on cargo-bay test -e "$LS_COPY" && { fail "$LS_COPY exists before the suite"; return 1; }
    ls_guest "$LS_VM" || { fail "make and define $LS_VM"; return 1; }
    must "start $LS_VM" on source-example "${VIRSH[@]}" start "$LS_VM" || return 1
    ls_blk source-example || return 1
    [[ $OUT == "$LS_IMAGE" ]] || fail "$LS_VM runs on '$OUT', want $LS_IMAGE" || return 1
    ls_writing source-example
}

t_ls_monitor() {
    ls_monitor_start || return 1
    sleep 1
    ls_monitor_ok
}

t_ls_ctrl_c_during_mirror() {
    [[ -n $LS_MON_PID ]] || fail "the monitor does not run (previous test failed)" || return 1
    # share capped at 1 MiB/s (~16 MiB to mirror): SIGINT once libvirt has the block job
    # and share printed its first progress line (or 3 s later)
    # (set -m: without job control bash starts background jobs with SIGINT ignored)
    OUT=$(on source-example timeout -s KILL 180 bash -c '
        set -m
        : > /run/lab/ls-share.out
        "$1" share "$3" --to dest-example --attach libnfs --bandwidth 1 --config "$2" > /run/lab/ls-share.out 2>&1 &
        pid=$! sent=no job=no
        set +m    # (the job keeps SIGINT; no job notice in the output)
        for _ in $(seq 1 600); do
            if virsh -c qemu:///system blockjob "$3" vda --info 2>&1 | grep -q "Block Copy"; then
                job=yes
                for _ in $(seq 1 30); do grep -q "^  copy " /run/lab/ls-share.out && break; sleep 0.1; done
                kill -0 "$pid" 2>/dev/null && kill -INT "$pid" && sent=yes
                break
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        wait "$pid"; rc=$?
        cat /run/lab/ls-share.out
        echo "job=$job sent=$sent rc=$rc"' sh "$(lab_bin)/storagectl" "$LS_CONF" "$LS_VM" 2>&1)
    printf '%s\n' "$OUT" | tail -n 6 | sed 's/^/#   /'
    grep -q "^job=yes sent=yes rc=130$" <<<"$OUT" || fail "Ctrl-C during the mirror: $(tail -n 3 <<<"$OUT" | tr '\n' ' ')" || return 1
    grep -qi "original disk" <<<"$OUT" || fail "share does not say the VM runs on its original disks: $(tail -n 4 <<<"$OUT" | tr '\n' ' ')" || return 1
    must "domstate" on source-example "${VIRSH[@]}" domstate "$LS_VM" || return 1
    [[ $(echo $OUT) == running ]] || fail "$LS_VM is '$OUT'" || return 1
    ls_blk source-example || return 1
    [[ $OUT == "$LS_IMAGE" ]] || fail "after Ctrl-C $LS_VM runs on '$OUT', want $LS_IMAGE" || return 1
    must "blockjob --info" on source-example "${VIRSH[@]}" blockjob "$LS_VM" vda --info || return 1
    grep -q "No current block job for vda" <<<"$OUT" || fail "a block job is left: $OUT" || return 1
    # no partial copy on the share (whatever the copy was called)
    must "files on the share" on cargo-bay sh -c "find '$EXPORT_ROOT' -path '*scribe1*' -type f" || return 1
    [[ -z $OUT ]] || fail "a partial copy is left on the share: $OUT" || return 1
    ls_writing source-example || return 1
    ls_monitor_ok
}

t_ls_share_live() {
    [[ -n $LS_MON_PID ]] || fail "the monitor does not run (previous test failed)" || return 1
    ls_share_live; local rc=$?
    ls_monitor_stop          # the migration (next test) stops the QEMU on source-example
    return $rc
}
ls_share_live() {
    local rc t0; t0=$(now_ms)
    # the JSON document on stdout; stderr (warnings) apart
    OUT=$(ls_sctl share "$LS_VM" --to dest-example --attach libnfs --json 2>"$STATE/logs/ls-share.err"); rc=$?
    note "  share (live): $(secs $(( $(now_ms) - t0 ))) s"
    ((rc == 0)) || fail "share of the running $LS_VM: exit $rc: $(tail -n 5 <<<"$OUT" | tr '\n' ' ') $(tail -n 3 "$STATE/logs/ls-share.err")" || return 1
    python3 - "$OUT" <<'PY' || { fail "share --json: $(tr '\n' ' ' <<<"$OUT" | cut -c1-800)"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r.get("mode") == "live", r.get("mode")
assert r.get("ready") is True, r
PY
    ls_blk source-example || return 1
    [[ $OUT == "$LS_COPY" ]] || fail "after share $LS_VM runs on '$OUT', want $LS_COPY" || return 1
    LS_SHARED=1              # the later tests can run, whatever fails below
    ls_blk source-example --inactive || return 1
    [[ $OUT == "$LS_COPY" ]] || fail "the inactive definition has '$OUT', want $LS_COPY" || return 1
    # the kept original: what the guest wrote before the pivot, in order
    ls_check source-example "$LS_IMAGE" || return 1
    note "  original after the pivot: $OUT"
    ((LS_C_STRAY == 0 && LS_C_M > 0)) || fail "the original after the pivot: $OUT" || return 1
    LS_RUN=$LS_C_RUN LS_P=$LS_C_M
    ls_writing source-example || return 1
    ls_monitor_ok
}

t_ls_migrate() {
    [[ -n $LS_SHARED ]] || fail "$LS_VM is not shared (previous test failed)" || return 1
    local rc t0; t0=$(now_ms)
    OUT=$(ls_sctl migrate "$LS_VM" --to dest-example --live --persistent 2>&1); rc=$?
    note "  storagectl migrate to dest-example: $(secs $(( $(now_ms) - t0 ))) s"
    ((rc == 0)) || fail "migrate to dest-example: exit $rc: $(tail -n 5 <<<"$OUT" | tr '\n' ' ')" || return 1
    runs_only_on "$LS_VM" dest-example || return 1
    ls_writing dest-example || return 1
    t0=$(now_ms)
    OUT=$(ls_sctl migrate "$LS_VM" --to source-example --live --persistent 2>&1); rc=$?
    note "  storagectl migrate back: $(secs $(( $(now_ms) - t0 ))) s"
    ((rc == 0)) || fail "migrate back: exit $rc: $(tail -n 5 <<<"$OUT" | tr '\n' ' ')" || return 1
    runs_only_on "$LS_VM" source-example || return 1
    ls_writing source-example
}

t_ls_shared_image_in_order() {
    [[ -n $LS_SHARED ]] || fail "$LS_VM is not shared (previous test failed)" || return 1
    [[ -n $LS_P ]] || fail "no count of the writes before the pivot (the share test failed)" || return 1
    # virsh destroy: QEMU gets SIGTERM and flushes its qcow2 metadata before it exits
    must "destroy $LS_VM" on source-example "${VIRSH[@]}" destroy "$LS_VM" || return 1
    ls_check cargo-bay "$LS_COPY" || return 1
    note "  shared image: $OUT (before the pivot: $LS_P)"
    [[ $LS_C_RUN == "$LS_RUN" ]] || fail "the shared image's LBA 1 is of run $LS_C_RUN, the original's of $LS_RUN" || return 1
    ((LS_C_STRAY == 0)) || fail "the shared image has a hole: $OUT" || return 1
    ((LS_C_M > LS_P)) || fail "the shared image holds 1..$LS_C_M, not more than the $LS_P written before the pivot" || return 1
    must "qemu-img check on cargo-bay" on cargo-bay qemu-img check "$LS_COPY" || return 1
    must "start $LS_VM again" on source-example "${VIRSH[@]}" start "$LS_VM" || return 1
    ls_writing source-example
}

# ls_unshare_live: unshare --json of the running scribe1, while the monitor runs
ls_unshare_live() {
    local rc t0; t0=$(now_ms)
    OUT=$(ls_sctl unshare "$LS_VM" --json 2>"$STATE/logs/ls-unshare.err"); rc=$?
    note "  unshare (live): $(secs $(( $(now_ms) - t0 ))) s"
    ((rc == 0)) || fail "unshare of the running $LS_VM: exit $rc: $(tail -n 5 <<<"$OUT" | tr '\n' ' ') $(tail -n 3 "$STATE/logs/ls-unshare.err")" || return 1
    python3 - "$OUT" <<'PY' || { fail "unshare --json: $(tr '\n' ' ' <<<"$OUT" | cut -c1-800)"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r.get("mode") == "live", r.get("mode")
assert r.get("done") is True, r
# the migration there and back left a definition of scribe1 on dest-example that names
# the shared image: unshare names it as stale
assert r.get("stale_definitions") == ["dest-example"], r.get("stale_definitions")
PY
    ls_monitor_ok
}

t_ls_unshare_live() {
    [[ -n $LS_SHARED ]] || fail "$LS_VM is not shared (previous test failed)" || return 1
    # twin1: another VM whose disk has scribe1's file name, at the path unshare tries first
    must "twin1's disk" on source-example sh -ec "mkdir -p ${LS_TWIN_DISK%/*}
        qemu-img create -q -f qcow2 $LS_TWIN_DISK 64M
        qemu-io -c 'write -P 0x77 0 1M' $LS_TWIN_DISK >/dev/null
        sed -e 's/<name>wanderer1</<name>twin1</' -e 's|/var/lib/libvirt/images/wanderer1.qcow2|$LS_TWIN_DISK|' \
            /run/lab/wanderer1.xml > /run/lab/twin1.xml
        virsh -c qemu:///system -q define /run/lab/twin1.xml >/dev/null" || return 1
    must "sha256 before" on source-example sha256sum "$LS_IMAGE" "$LS_TWIN_DISK" || return 1
    local before=$OUT rc
    ls_monitor_start || { ls_monitor_stop; return 1; }
    ls_unshare_live; rc=$?
    ls_monitor_stop
    ((rc == 0)) || return 1
    ls_blk source-example || return 1
    LS_NEW=$OUT
    note "  $LS_VM now on $LS_NEW"
    [[ $LS_NEW == /var/lib/libvirt/images/* ]] || fail "after unshare $LS_VM runs on '$LS_NEW', not a local file" || return 1
    [[ $LS_NEW != "$LS_IMAGE" ]] || fail "unshare put $LS_VM back on its original image $LS_IMAGE (kept since share)" || return 1
    [[ $LS_NEW != "$LS_TWIN_DISK" ]] || fail "unshare put $LS_VM on twin1's disk" || return 1
    [[ $LS_NEW == /var/lib/libvirt/images/scribe1/scribe1-2.qcow2 ]] \
        || fail "unshare put $LS_VM on '$LS_NEW', want the next free name /var/lib/libvirt/images/scribe1/scribe1-2.qcow2" || return 1
    ls_blk source-example --inactive || return 1
    [[ $OUT == "$LS_NEW" ]] || fail "the inactive definition has '$OUT', want $LS_NEW" || return 1
    must "sha256 after" on source-example sha256sum "$LS_IMAGE" "$LS_TWIN_DISK" || return 1
    [[ $OUT == "$before" ]] || fail "unshare changed other files: before $before, after $OUT" || return 1
    ls_writing source-example || return 1
    # what it wrote on the share before this pivot, then all of it in the new local file
    ls_check cargo-bay "$LS_COPY" || return 1
    local run=$LS_C_RUN p=$LS_C_M
    ((LS_C_STRAY == 0 && p > 0)) || fail "the shared image after unshare: $OUT" || return 1
    must "destroy $LS_VM" on source-example "${VIRSH[@]}" destroy "$LS_VM" || return 1
    ls_check source-example "$LS_NEW" || return 1
    note "  new local image: $OUT (on the share before the pivot: $p)"
    [[ $LS_C_RUN == "$run" ]] || fail "the new image's LBA 1 is of run $LS_C_RUN, the share's of $run" || return 1
    ((LS_C_STRAY == 0 && LS_C_M > p)) || fail "the new local image: $OUT, want 1..M with M > $p" || return 1
}

t_ls_cleanup() {
    ls_monitor_stop
    local vm h
    for vm in "$LS_VM" twin1; do
        for h in source-example dest-example third-example; do
            on "$h" "${VIRSH[@]}" destroy "$vm" >/dev/null 2>&1
            on "$h" "${VIRSH[@]}" undefine "$vm" >/dev/null 2>&1
        done
    done
    on source-example rm -rf "$LS_IMAGE" /var/lib/libvirt/images/scribe1 /var/lib/libvirt/images/twin1 \
        /run/lab/scribe1.xml /run/lab/twin1.xml "$LS_MON_LOG" /run/lab/ls-share.out
    [[ $LS_NEW == /var/lib/libvirt/images/* ]] && on source-example rm -f "$LS_NEW"
    on cargo-bay rm -rf "$EXPORT_ROOT/$LS_VM"
    for h in source-example dest-example third-example; do
        must "list on $h" on "$h" "${VIRSH[@]}" list --all --name || return 1
        ! grep -Eqx "$LS_VM|twin1" <<<"$OUT" || fail "left on $h: $OUT" || return 1
    done
}

run "live share: scribe-check finds the run in order, a hole, a later sector of the run, an empty LBA 1" t_ls_checker
run "live share: scribe1 runs on its local disk and keeps writing" t_ls_scribe_writes
run "live share: a monitor in source-example samples scribe1's state and QEMU pid every 100 ms" t_ls_monitor
run "live share: Ctrl-C during the mirror (--bandwidth 1) exits 130; scribe1 runs on its local disk, no block job, no partial copy" t_ls_ctrl_c_during_mirror
run "live share: share again is live (mode live); scribe1 on the share, definition too, never stopped, same QEMU" t_ls_share_live
run "live share: storagectl migrate --live --persistent to dest-example and back; scribe1 keeps writing" t_ls_migrate
run "live share: the shared image holds every sector scribe1 wrote, before and after the pivot, in order" t_ls_shared_image_in_order
run "live share: unshare of the running scribe1 moves it to a new local file, never stopped; twin1's disk and the original untouched" t_ls_unshare_live
run "live share: cleanup (no scribe1 or twin1 left)" t_ls_cleanup
