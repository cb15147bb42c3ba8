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

SH_IMAGE_LOCAL=/var/lib/libvirt/images/wanderer1.qcow2
run "migration hook: installed and loaded on the compute hosts (HEALTH migration-hook ok)" t_mh_health
run "migration hook: a plain virsh migrate --live --unsafe --p2p of wanderer1 on its local disk fails with storagectl's sentence; it still runs on source-example only" t_mh_plain_virsh_refused
run "migration hook: answers within 100 ms on dest-example" t_mh_hook_speed
