# Lab suite: the image copy engine (Sources/ImageCopy) through storagectl-copy-bench.
# Sourced by Tests/Lab/run-tests with the lab up; uses its helpers (on, must, fail, run,
# note, set_exports, lab_bin, $OUT, $STATE, $EXPORT_ROOT).

CE_IMG=/var/lib/libvirt/images/copytest.qcow2     # on source-example's own disk
CE_NAME=ce/copytest.qcow2                          # under the export
CE_SHA="" CE_SRC_SHA="" CE_SRC_STAT=""
# The content digest by the independent reference implementation (Python's xxhash).
CE_DIGEST="$HERE/content-digest"

ce_bin() {
    local b; b="$(lab_bin)/storagectl-copy-bench"
    [[ -x $b ]] || b="$LAB_BIN_DIR/storagectl-copy-bench"
    echo "$b"
}
ce_field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
# the original as cargo-bay sees it: through source-example's mount namespace
ce_original_on_cargo_bay() { echo "/proc/$(head -n1 "$STATE/pids/source-example.anchor.pid")/root$CE_IMG"; }

t_ce_copy_sparse_qcow2() {
    local bin; bin=$(ce_bin)
    [[ -x $bin ]] || fail "storagectl-copy-bench is not built in $LAB_BIN_DIR" || return 1
    set_exports No_Root_Squash 198.18.0.2 198.18.0.3 || return 1
    # 2 GiB virtual, 300 MiB of random data in three places; metadata preallocation
    # gives a qcow2 FILE with holes (apparent size > 2 GiB, ~300 MiB allocated).
    # Digests with the Python reference (python3-xxhash).
    must "make a sparse qcow2 on source-example" on source-example sh -ec '
        raw=/var/lib/libvirt/images/.copytest.raw
        truncate -s 2G "$raw"
        for at in 0 900 1900; do dd if=/dev/urandom of="$raw" bs=1M seek=$at count=100 conv=notrunc status=none; done
        qemu-img create -q -f qcow2 -o preallocation=metadata "$1" 2G
        qemu-img convert -n -f raw -O qcow2 "$raw" "$1"
        rm -f "$raw"
        "$2" "$1" | cut -d" " -f1; stat -c "%s %b %Y %i" "$1"' sh "$CE_IMG" "$CE_DIGEST" || return 1
    CE_SRC_SHA=$(sed -n 1p <<<"$OUT"); CE_SRC_STAT=$(sed -n 2p <<<"$OUT")
    local size blocks; read -r size blocks _ <<<"$CE_SRC_STAT"
    note "  source: $size bytes, $((blocks / 2048)) MiB allocated"
    ((size > 2 * 1024 * 1024 * 1024 && blocks * 512 < 400 * 1024 * 1024)) \
        || fail "source image is not sparse as intended: $CE_SRC_STAT" || return 1

    must "copy into the share" on source-example "$bin" copy "$CE_IMG" "$CE_NAME" || return 1
    local line=$OUT
    note "  $line"
    [[ $(ce_field already-present "$line") == false ]] || fail "first copy says already-present: $line" || return 1
    CE_SHA=$(ce_field digest "$line")
    [[ $CE_SHA == "$CE_SRC_SHA" ]] || fail "engine digest $CE_SHA != reference $CE_SRC_SHA" || return 1
    local data; data=$(ce_field data "$line")
    ((data >= 300 * 1024 * 1024 && data < 360 * 1024 * 1024)) || fail "sent $data data bytes, want ~300 MiB (holes must not be sent)" || return 1
    # progress at least twice a second
    local secs reports; secs=$(ce_field seconds "$line"); reports=$(ce_field progress-reports "$line")
    awk -v s="$secs" -v r="$reports" 'BEGIN { exit !(r >= int(s * 2)) }' || fail "$reports progress reports in $secs s" || return 1

    # on cargo-bay: same bytes (digest), same guest view (qemu-img compare), still sparse
    must "digest on cargo-bay" on cargo-bay "$CE_DIGEST" "$EXPORT_ROOT/$CE_NAME" || return 1
    [[ ${OUT%% *} == "$CE_SRC_SHA" ]] || fail "copy on cargo-bay has digest ${OUT%% *}" || return 1
    must "qemu-img compare on cargo-bay" on cargo-bay qemu-img compare -f qcow2 -F qcow2 \
        "$(ce_original_on_cargo_bay)" "$EXPORT_ROOT/$CE_NAME" || return 1
    grep -q "Images are identical" <<<"$OUT" || fail "qemu-img compare: $OUT" || return 1
    must "stat the copy" on cargo-bay stat -c "%s %b %u:%g" "$EXPORT_ROOT/$CE_NAME" || return 1
    local csize cblocks owner; read -r csize cblocks owner <<<"$OUT"
    note "  copy on cargo-bay: $csize bytes, $((cblocks / 2048)) MiB allocated (du), owner $owner"
    [[ $csize == "$size" ]] || fail "copy is $csize bytes, source $size" || return 1
    ((cblocks <= blocks + 2048)) || fail "copy is not sparse: $cblocks blocks allocated, source $blocks" || return 1
    [[ $owner == 0:0 ]] || fail "copy owned by $owner" || return 1
    must "list the share" on cargo-bay ls -A "$EXPORT_ROOT/ce" || return 1
    [[ $OUT == copytest.qcow2 ]] || fail "unexpected files next to the copy: $OUT" || return 1
    # the original is untouched
    must "re-hash the original" on source-example sh -c '"$2" "$1" | cut -d" " -f1; stat -c "%s %b %Y %i" "$1"' sh "$CE_IMG" "$CE_DIGEST" || return 1
    [[ $OUT == "$CE_SRC_SHA"$'\n'"$CE_SRC_STAT" ]] || fail "the original changed: $OUT" || return 1
}

t_ce_identical_again() {
    [[ -n $CE_SHA ]] || fail "no first copy (previous test failed)" || return 1
    must "copy again" on source-example "$(ce_bin)" copy "$CE_IMG" "$CE_NAME" || return 1
    [[ $(ce_field already-present "$OUT") == true && $(ce_field data "$OUT") == 0 ]] \
        || fail "second copy was not already-present: $OUT" || return 1
    [[ $(ce_field digest "$OUT") == "$CE_SHA" ]] || fail "second copy reports another digest: $OUT" || return 1
}

t_ce_different_refused() {
    [[ -n $CE_SHA ]] || fail "no first copy (previous test failed)" || return 1
    # same size, one byte different: only the checksum can tell
    must "make a different image" on source-example sh -ec '
        cp --sparse=always "$1" /var/lib/libvirt/images/other.qcow2
        printf x | dd of=/var/lib/libvirt/images/other.qcow2 bs=1 seek=$((1024 * 1024 * 1024 + 12345)) conv=notrunc status=none' sh "$CE_IMG" || return 1
    if OUT=$(on source-example "$(ce_bin)" copy /var/lib/libvirt/images/other.qcow2 "$CE_NAME" 2>&1); then
        fail "a different image replaced or matched the target: $OUT"; return 1
    fi
    grep -q '^ERR code=exists ' <<<"$OUT" || fail "expected ERR code=exists, got: $OUT" || return 1
    must "digest on cargo-bay" on cargo-bay "$CE_DIGEST" "$EXPORT_ROOT/$CE_NAME" || return 1
    [[ ${OUT%% *} == "$CE_SHA" ]] || fail "the existing target changed" || return 1
    must "list the share" on cargo-bay ls -A "$EXPORT_ROOT/ce" || return 1
    [[ $OUT == copytest.qcow2 ]] || fail "files left next to the target: $OUT" || return 1
}

t_ce_leftover_and_cancel() {
    local bin; bin=$(ce_bin)
    # a leftover temporary file of a "crashed" copy, written through NFS
    must "plant a leftover partial file" on source-example sh -ec '
        head -c 100000 /dev/urandom > /run/lab/junk
        nfs-cp /run/lab/junk "$1/ce/.w2.qcow2.storagectl-partial"' sh "$NFS" || return 1
    must "copy over the leftover" on source-example "$bin" copy /var/lib/libvirt/images/other.qcow2 ce/w2.qcow2 || return 1
    must "list the share" on cargo-bay ls -A "$EXPORT_ROOT/ce" || return 1
    [[ $(echo $OUT) == "copytest.qcow2 w2.qcow2" ]] || fail "after replacing a leftover: $OUT" || return 1
    # cancellation (SIGINT -> Task.cancel) in the middle: no final name, no temporary file.
    # Throttled (one 4 KiB WRITE in flight: minutes for 300 MiB), and SIGINT only once the
    # copy has reported written bytes, so it always lands mid-copy.
    must "cancel a copy" on source-example sh -c '
        "$1" copy --progress --in-flight 1 --chunk-kib 4 /var/lib/libvirt/images/other.qcow2 ce/w3.qcow2 2>/run/lab/cancel.progress & p=$!
        i=0
        until grep -q "^PROGRESS done=[1-9]" /run/lab/cancel.progress; do
            kill -0 $p 2>/dev/null || break; i=$((i + 1)); [ $i -lt 600 ] || break; sleep 0.05
        done
        kill -INT $p && echo sent=yes; wait $p; echo "exit=$?"' sh "$bin"
    local said=$OUT
    grep -qx 'sent=yes' <<<"$said" || fail "SIGINT was not sent to a running copy: $said" || return 1
    grep -q '^ERR code=unavailable message=the copy was cancelled' <<<"$said" || fail "the copy was not cancelled: $said" || return 1
    grep -qx 'exit=1' <<<"$said" || fail "a cancelled copy must exit 1: $said" || return 1
    must "list the share" on cargo-bay ls -A "$EXPORT_ROOT/ce" || return 1
    [[ $(echo $OUT) == "copytest.qcow2 w2.qcow2" ]] || fail "after a cancelled copy: $OUT" || return 1
}

t_ce_verify_modes() {
    local bin mode name digest small=/var/lib/libvirt/images/small.raw; bin=$(ce_bin)
    # a small sparse image: --verify full reads the holes back too
    must "make a small sparse image" on source-example sh -ec '
        truncate -s 96M "$1"
        for at in 0 40 90; do dd if=/dev/urandom of="$1" bs=1M seek=$at count=4 conv=notrunc status=none; done
        "$2" "$1"' sh "$small" "$CE_DIGEST" || return 1
    digest=${OUT%% *}
    for mode in read-back full; do
        name=ce/verify-$mode.raw
        must "copy with --verify $mode" on source-example "$bin" copy --verify "$mode" "$small" "$name" || return 1
        [[ $(ce_field digest "$OUT") == "$digest" ]] || fail "--verify $mode reports $OUT, want digest $digest" || return 1
        must "digest on cargo-bay" on cargo-bay "$CE_DIGEST" "$EXPORT_ROOT/$name" || return 1
        [[ ${OUT%% *} == "$digest" ]] || fail "--verify $mode: the copy on cargo-bay has digest ${OUT%% *}" || return 1
    done
    must "clean up" on source-example rm -f "$small" || return 1
}

# A server "reboot" in the middle of a copy: ganesha is stopped and started again, so
# unstable writes it had acknowledged may be gone. libnfs reconnects; the new instance
# answers with a new write verifier; the engine must notice and write everything again.
# The copy is throttled (one 4 KiB WRITE in flight: seconds for 128 MiB) and the restart
# starts once the copy has reported written bytes, so it lands mid-copy.
t_ce_server_restart() {
    local bin digest out img=/var/lib/libvirt/images/restart.raw; bin=$(ce_bin)
    must "make a 128 MiB image" on source-example sh -ec 'head -c 128M /dev/urandom > "$1"; "$2" "$1"' sh "$img" "$CE_DIGEST" || return 1
    digest=${OUT%% *}
    must "copy while ganesha restarts" sh -c '
        "$1" exec source-example "$2" copy --progress --in-flight 1 --chunk-kib 4 "$3" ce/restart.raw 2>"$4" & p=$!
        until grep -q "^PROGRESS done=[1-9]" "$4"; do kill -0 $p 2>/dev/null || break; sleep 0.05; done
        "$1" ganesha-restart >&2; wait $p' sh "$LAB" "$bin" "$img" "$STATE/restart-progress" || return 1
    out=$OUT
    note "  $(grep '^OK' <<<"$out")"
    [[ $(ce_field server-restarts "$out") == 1 ]] || fail "the restart was not detected (or landed after the copy): $out" || return 1
    [[ $(ce_field digest "$out") == "$digest" ]] || fail "digest after a restart: $out, want $digest" || return 1
    must "digest on cargo-bay" on cargo-bay "$CE_DIGEST" "$EXPORT_ROOT/ce/restart.raw" || return 1
    [[ ${OUT%% *} == "$digest" ]] || fail "the copy on cargo-bay has digest ${OUT%% *}, want $digest" || return 1
    must "list the share" on cargo-bay ls -A "$EXPORT_ROOT/ce" || return 1
    grep -q storagectl-partial <<<"$OUT" && { fail "a temporary file was left: $OUT"; return 1; }
    must "clean up" on cargo-bay rm -rf "$EXPORT_ROOT/ce" || return 1
    must "clean up" on source-example rm -f "$CE_IMG" /var/lib/libvirt/images/other.qcow2 "$img" || return 1
}

# The cheap CI subset of the copy benchmark (docs/benchmarks.md, Tests/Lab/bench-copy):
# a 128 MiB random raw image copied by the engine (as built, --verify commit) and by
# `qemu-img convert -W` into the share, CE_RATIO_ROUNDS times interleaved; fails when the
# engine's median time exceeds CE_RATIO_MARGIN x qemu-img's median time of the same run.
# Never an absolute time: a loaded machine slows both. Each command runs through nsenter
# into the host's anchor (as bench-copy does), not `lab exec`, whose ~160 ms start-up
# would weigh on a 0.3 s copy. The margin comes from measurements (docs/benchmarks.md):
# the debug engine `make check` runs took 0.78-1.22 x qemu-img's time on this image
# (a loaded machine, load 6-8), and 2.29 x with one 64 KiB WRITE in flight.
# CE_RATIO_ENGINE_ARGS adds engine options (e.g. "--in-flight 1 --chunk-kib 64" to see it fail).
CE_RATIO_MARGIN=${CE_RATIO_MARGIN:-1.5}
CE_RATIO_ROUNDS=${CE_RATIO_ROUNDS:-3}
ce_fast() {
    local h=$1; shift
    nsenter -t "$(head -n1 "$STATE/pids/$h.anchor.pid")" -m -n -u -- "$@"
}
ce_secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1 || return 1; t1=$(date +%s%N); echo $((t1 - t0)); }
ce_median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
t_ce_ratio_vs_qemu_img() {
    local bin img=/var/lib/libvirt/images/ratio.raw e="" q="" i t em qm ratio; bin=$(ce_bin)
    local -a extra; read -r -a extra <<<"${CE_RATIO_ENGINE_ARGS:-}"
    set_exports No_Root_Squash 198.18.0.2 198.18.0.3 || return 1
    must "make a 128 MiB image" on source-example sh -ec 'head -c 128M /dev/urandom > "$1"; sync' sh "$img" || return 1
    must "make the directory" on cargo-bay mkdir -p "$EXPORT_ROOT/ce-ratio" || return 1
    # one warm-up of each, not counted (cold caches, first mount of the export)
    for i in $(seq 0 "$CE_RATIO_ROUNDS"); do
        ce_fast cargo-bay sh -c 'rm -f "$1"/*; sync' sh "$EXPORT_ROOT/ce-ratio"
        t=$(ce_secs ce_fast source-example "$bin" copy "${extra[@]}" "$img" "ce-ratio/e.raw") || fail "the engine's copy failed" || return 1
        ((i > 0)) && e="$e $t"
        ce_fast cargo-bay sh -c 'rm -f "$1"/*; sync' sh "$EXPORT_ROOT/ce-ratio"
        t=$(ce_secs ce_fast source-example qemu-img convert -W -f raw -O raw "$img" "$NFS/ce-ratio/q.raw") || fail "qemu-img convert failed" || return 1
        ((i > 0)) && q="$q $t"
    done
    em=$(ce_median "$e"); qm=$(ce_median "$q")
    ratio=$(awk -v e="$em" -v q="$qm" 'BEGIN { printf "%.2f", e / q }')
    note "  engine ${extra[*]:-as built}:$(awk '{ for (i = 1; i <= NF; i++) printf " %.3f", $i / 1e9 }' <<<"$e") s; qemu-img convert -W:$(awk '{ for (i = 1; i <= NF; i++) printf " %.3f", $i / 1e9 }' <<<"$q") s; engine time / qemu-img time $ratio (margin $CE_RATIO_MARGIN)"
    must "clean up" on cargo-bay rm -rf "$EXPORT_ROOT/ce-ratio" || return 1
    must "clean up" on source-example rm -f "$img" || return 1
    awk -v r="$ratio" -v m="$CE_RATIO_MARGIN" 'BEGIN { exit !(r <= m) }' \
        || fail "the engine took $ratio x qemu-img convert -W's time, margin $CE_RATIO_MARGIN" || return 1
}

run "copy engine: sparse qcow2 (2 GiB virtual, 300 MiB data) into the share; identical, sparse, original kept" t_ce_copy_sparse_qcow2
run "copy engine: an identical second copy is already-present" t_ce_identical_again
run "copy engine: a target with other content is refused (exists), left untouched" t_ce_different_refused
run "copy engine: a leftover temporary file is replaced; a cancelled copy leaves nothing" t_ce_leftover_and_cancel
run "copy engine: --verify read-back and --verify full give the same, correct copy" t_ce_verify_modes
run "copy engine: the NFS server restarts mid-copy: new write verifier seen, data written again, copy correct" t_ce_server_restart
run "copy engine: time within a margin of qemu-img convert -W in the same run (128 MiB, the CI subset of bench-copy)" t_ce_ratio_vs_qemu_img
