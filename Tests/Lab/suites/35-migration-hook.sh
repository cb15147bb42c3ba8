# shellcheck shell=bash
# Lab suite: the migration hook (issue 12, "The hook"): installed by `lab up` through
# `compute-agent install-hook` on every compute host; here, the gate holds for a plain
# `virsh migrate --unsafe` of wanderer1 while its disk is still local. Runs after 30
# (which leaves wanderer1 shut off on its local disk) and before 40 (which shares it);
# it leaves wanderer1 shut off on source-example as it found it.

MH_VM=wanderer1
mh_call() { on source-example "$(lab_bin)/storagectl" call --timeout 60 --config /run/lab/mh-inventory.conf "$@"; }
mh_state() { on "$1" "${VIRSH[@]}" domstate "$MH_VM" 2>&1 | grep . | head -n1; }

t_mh_health() {
    must "inventory on source-example" on source-example sh -c 'cat > /run/lab/mh-inventory.conf' <"$STATE/storagectl.conf" || return 1
    local h
    for h in dest-example source-example; do
        must "HEALTH on $h" mh_call "$h" HEALTH || return 1
        grep -q '^DATA check=migration-hook state=ok .*installed=yes.*loaded=yes' <<<"$OUT" \
            || fail "$h: migration-hook not ok: $(grep 'check=migration-hook' <<<"$OUT")" || return 1
        tail -n1 <<<"$OUT" | grep -q ' health=ok' || fail "$h: HEALTH is not ok: $(tail -n1 <<<"$OUT")" || return 1
    done
    must "the hook on dest-example" on dest-example test -x /etc/libvirt/hooks/qemu.d/storagectl || return 1
    note "  $(grep 'check=migration-hook' <<<"$OUT" | sed 's/.*detail=//' | head -c 160)"
}

t_mh_plain_virsh_refused() {
    local state rc
    state=$(mh_state source-example)
    [[ $state == "shut off" || $state == running ]] || fail "wanderer1 on source-example is '$state'" || return 1
    must "domblklist" on source-example "${VIRSH[@]}" domblklist "$MH_VM" || return 1
    grep -q "vda *$SH_IMAGE_LOCAL" <<<"$OUT" || fail "wanderer1 is not on its local disk: $OUT" || return 1
    [[ $state == running ]] || must "start wanderer1" on source-example "${VIRSH[@]}" start "$MH_VM" || return 1
    local t0; t0=$(now_ms)
    OUT=$(on source-example timeout 60 "${VIRSH[@]}" migrate --live --unsafe --p2p "$MH_VM" qemu+tcp://dest-example/system 2>&1); rc=$?
    local took=$(( $(now_ms) - t0 )) said=$OUT
    note "  virsh: $(grep . <<<"$said" | head -n1)"
    note "  refused in $took ms"
    ((rc != 0)) || fail "virsh migrate --unsafe of a VM on a local disk succeeded" || return 1
    grep -q 'Hook script execution failed' <<<"$said" || fail "virsh failed, but not through the hook: $said" || return 1
    grep -q 'storagectl refuses to migrate wanderer1' <<<"$said" || fail "the hook's sentence is missing: $said" || return 1
    grep -q 'storagectl share wanderer1' <<<"$said" || fail "the sentence does not name storagectl share: $said" || return 1
    [[ $(mh_state source-example) == running ]] || fail "wanderer1 no longer runs on source-example: $(mh_state source-example)" || return 1
    must "domain list on dest-example" on dest-example "${VIRSH[@]}" list --all --name || return 1
    ! grep -qx "$MH_VM" <<<"$OUT" || fail "dest-example has a domain wanderer1: $OUT" || return 1
    # storagectl migrate refuses before anything starts, naming the failed checks (65)
    OUT=$(on source-example "$(lab_bin)/storagectl" migrate "$MH_VM" --to dest-example --live --persistent \
        --config /run/lab/mh-inventory.conf 2>&1); rc=$?
    ((rc == 65)) || fail "storagectl migrate of wanderer1 on its local disk: exit $rc, want 65: $OUT" || return 1
    grep -Eq "^fail +storage-ready" <<<"$OUT" && grep -Eq "^fail +disks" <<<"$OUT" \
        || fail "storagectl migrate does not name the failed checks: $OUT" || return 1
    grep -q "storagectl share wanderer1" <<<"$OUT" || fail "no remedy naming storagectl share: $OUT" || return 1
    [[ $(mh_state source-example) == running ]] || fail "wanderer1 no longer runs on source-example" || return 1
    # leave it as suite 40 expects: shut off on its local disk
    must "destroy wanderer1" on source-example "${VIRSH[@]}" destroy "$MH_VM" || return 1
}

t_mh_hook_speed() {
    # the hook itself, as libvirtd runs it on dest-example: 20 calls with wanderer1's
    # migratable XML, timed inside the host (lab exec's own cost is not the hook's)
    must "wanderer1's XML" on source-example "${VIRSH[@]}" dumpxml --migratable "$MH_VM" || return 1
    must "copy the XML to dest-example" on dest-example sh -c 'cat > /run/lab/mh-wanderer1.xml' <<<"$OUT" || return 1
    must "time 20 hook calls" on dest-example sh -c '
        t0=$(date +%s%N); i=0; refused=0
        while [ $i -lt 20 ]; do
            /etc/libvirt/hooks/qemu.d/storagectl wanderer1 migrate begin - </run/lab/mh-wanderer1.xml >/dev/null 2>&1 || refused=$((refused + 1))
            i=$((i + 1))
        done
        echo "$(( ($(date +%s%N) - t0) / 20000000 )) $refused"' || return 1
    local ms refused
    read -r ms refused <<<"$OUT"
    note "  hook on dest-example: $ms ms per call (20 calls, wanderer1 refused $refused times)"
    ((refused == 20)) || fail "the hook let wanderer1 through $((20 - refused)) times" || return 1
    ((ms < 100)) || fail "the hook took $ms ms per call (want < 100)" || return 1
}

# mh_hook_on_dest DISK-PATH: run dest-example's hook as libvirtd would, on wanderer1's
# migratable XML with its disk at DISK-PATH; OUT holds its stderr, returns its status
mh_hook_on_dest() {
    local xml
    xml=$(on source-example "${VIRSH[@]}" dumpxml --migratable "$MH_VM" | sed "s#file='$SH_IMAGE_LOCAL'#file='$1'#") || return 2
    grep -q "file='$1'" <<<"$xml" || { OUT="no disk path to replace in wanderer1's XML"; return 2; }
    OUT=$(on dest-example sh -c '/etc/libvirt/hooks/qemu.d/storagectl wanderer1 migrate begin - 2>&1 >/run/lab/mh-stdout; rc=$?; if [ -s /run/lab/mh-stdout ]; then echo "STDOUT WRITTEN"; fi; exit $rc' <<<"$xml")
}

t_mh_ready_share() {
    # dest-example gets the share ready through its agent (the same pool suite 30 makes);
    # the agent records the target, the stand-in mounts it: a disk inside passes, paths
    # that only look like the share do not
    local target=/var/lib/libvirt/shared-images rc
    set_exports No_Root_Squash 198.18.0.2 198.18.0.3 || return 1
    must "POOL-ENSURE on dest-example" mh_call dest-example POOL-ENSURE name=shared-images server=198.18.0.1 \
        export="$EXPORT_ROOT" target=$target || return 1
    must "the record on dest-example" on dest-example cat /var/lib/storagectl/ready-shares || return 1
    grep -qx "$target" <<<"$OUT" || fail "the agent did not record $target as ready: $OUT" || return 1
    must "make files on cargo-bay" on cargo-bay sh -ec "mkdir -p $EXPORT_ROOT/mh-probe; : > $EXPORT_ROOT/mh-probe/mh.qcow2
        ln -sfn /etc/hostname $EXPORT_ROOT/mh-probe/escape.qcow2" || return 1
    must "a lookalike on dest-example" on dest-example sh -ec "mkdir -p $target-x; : > $target-x/mh.qcow2" || return 1
    mh_hook_on_dest "$target/mh-probe/mh.qcow2"; rc=$?
    if ((rc != 0)) || [[ -n $OUT ]]; then
        local said=$OUT
        on dest-example sh -c "ls -la $target/mh-probe; grep ' $target ' /proc/self/mountinfo" >&2
        fail "a disk inside the ready share was refused (exit $rc): $said"; return 1
    fi
    local path
    for path in "$target-x/mh.qcow2" "$target/mh-probe/escape.qcow2" "$target/mh-probe/../../shared-images-x/mh.qcow2"; do
        mh_hook_on_dest "$path"; rc=$?
        ((rc == 1)) && grep -q "storagectl refuses to migrate wanderer1.*storagectl share wanderer1" <<<"$OUT" && ! grep -q "STDOUT WRITTEN" <<<"$OUT" \
            || fail "$path: exit $rc: $OUT" || return 1
        note "  $path: ${OUT#*ready (}"
    done
    on cargo-bay rm -rf "$EXPORT_ROOT/mh-probe"
    on dest-example rm -rf "$target-x"
    return 0
}

SH_IMAGE_LOCAL=/var/lib/libvirt/images/wanderer1.qcow2
run "migration hook: installed and loaded on the compute hosts (HEALTH migration-hook ok)" t_mh_health
run "migration hook: a plain virsh migrate --live --unsafe --p2p of wanderer1 on its local disk fails with storagectl's sentence; it still runs on source-example only; storagectl migrate refuses (65) naming the failed checks" t_mh_plain_virsh_refused
run "migration hook: answers within 100 ms on dest-example" t_mh_hook_speed
run "migration hook: a disk inside the share dest-example's agent made ready passes; a lookalike, a symlink out and .. are refused" t_mh_ready_share
