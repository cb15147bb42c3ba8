# shellcheck shell=bash
# Lab suite: storagectl on the CephFS gateway cluster (LAB_STORAGE=ceph; issue 16). The
# inventory names the cluster ceph-nfs: gateway-a and gateway-b, each with nfs-ganesha
# (FSAL CEPH), a storage agent (--backend ganesha-ceph) and the share directory mounted
# with ceph-fuse; compute hosts attach through the floating address 198.18.0.9 that
# keepalived keeps on the gateway whose ganesha answers (Tests/Lab/lab-ceph.sh).
#   1. share wanderer1 onto the cluster (libnfs): the copy's digest, computed through
#      CephFS by the serving gateway's agent, matches the copy engine's, and gateway-b's
#      agent reads the same digest through its own CephFS mount; both gateways write the
#      same EXPORT block (Export_Id, Path: the same file handles);
#   2. wanderer1 starts from the share and live-migrates through the gate (check passes,
#      gateways included);
#   3. gateway-a's ganesha killed (SIGKILL, by its pid) while wanderer1 runs: the floating
#      address moves to gateway-b, status and check name gateway-a and share --repair,
#      which evicts gateway-a's CephFS sessions; then check passes and wanderer1
#      live-migrates back; after it is stopped, its disk is intact (qemu-img check through
#      the floating address, the digest through CephFS unchanged);
#   4. gateway-a's ganesha restarts and stands by (the address stays on gateway-b);
#      unshare brings wanderer1 back to local disks.
# Only in a lab brought up with the Ceph profile (make check does).

cs_profile=$(cat "$STATE/profile" 2>/dev/null || true)
CS_CONF=/run/lab/storagectl-ceph.conf
CS_ROOT=/var/lib/libvirt/shared-images-ceph
CS_VIP=198.18.0.9
CS_IMAGE=$CS_ROOT/wanderer1/wanderer1.qcow2
CS_DIGEST=""
cs_sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config "$CS_CONF" --timeout 30; }
cs_sctl_default() { on source-example "$(lab_bin)/storagectl" "$@" --config /run/lab/storagectl-default.conf --timeout 30; }

# cs_vip_holder: the gateway that holds the floating address now (empty: none or both)
cs_vip_holder() { "$LAB" ceph vip 2>/dev/null; }

# cs_state VM HOST: libvirt's state of VM on HOST
cs_state() { on "$2" "${VIRSH[@]}" domstate "$1" 2>/dev/null | head -n1; }

# cs_checksum GATEWAY: CHECKSUM of wanderer1's shared image through GATEWAY's agent
cs_checksum() {
    must_all "CHECKSUM through $1" cs_sctl call "$1" CHECKSUM "path=$CS_IMAGE" --json || return 1
    python3 -c 'import json,sys; r = json.loads(sys.argv[1]); print(r["ok"]["digest"])' "$OUT" 2>/dev/null
}

t_cs_setup() {
    [[ -f $STATE/storagectl-ceph.conf ]] || fail "the lab wrote no $STATE/storagectl-ceph.conf" || return 1
    must "ceph inventory on source-example" on source-example sh -c "cat > $CS_CONF" <"$STATE/storagectl-ceph.conf" || return 1
    must "default inventory on source-example" on source-example sh -c "cat > /run/lab/storagectl-default.conf" <"$STATE/storagectl.conf" || return 1
    must_all "storagectl hosts" cs_sctl hosts --json || return 1
    json_has "$OUT" '{h["name"]: h["state"] for h in r["hosts"]}.get("gateway-a") == "healthy" and {h["name"]: h["state"] for h in r["hosts"]}.get("gateway-b") == "healthy"' || return 1
    [[ $(cs_vip_holder) == gateway-a ]] || fail "$CS_VIP is on '$(cs_vip_holder)', want gateway-a" || return 1
    # wanderer1 back where earlier suites may have left it: shut off, defined only on
    # source-example, on local disks
    local h
    for h in source-example dest-example; do
        [[ $(cs_state wanderer1 $h) == running ]] && on $h "${VIRSH[@]}" destroy wanderer1 >/dev/null 2>&1
    done
    if [[ -n $(cs_state wanderer1 dest-example) ]]; then
        if [[ -z $(cs_state wanderer1 source-example) ]]; then
            must "wanderer1's definition back to source-example" cs_sctl_default migrate wanderer1 --to source-example --offline --persistent --undefine-source || return 1
        else
            must "undefine the stale wanderer1 on dest-example" on dest-example "${VIRSH[@]}" undefine wanderer1 || return 1
        fi
    fi
    must "domblklist" on source-example "${VIRSH[@]}" domblklist wanderer1 || return 1
    if ! grep -q 'vda */var/lib/libvirt/images/' <<<"$OUT"; then
        must_all "unshare wanderer1 (default inventory)" cs_sctl_default unshare wanderer1 || return 1
    fi
    must "no old copy on the cluster" on gateway-a rm -rf "$CS_ROOT/wanderer1" || return 1
}

t_cs_share() {
    must_all "share wanderer1 onto ceph-nfs" cs_sctl share wanderer1 --storage ceph-nfs --attach libnfs --to dest-example --json || return 1
    json_has "$OUT" 'r["ready"] and r["storage"] == "ceph-nfs" and r["attach"] == "libnfs" and r["mode"] == "offline" and len(r["disks"]) == 1' || return 1
    local engine; engine=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["disks"][0]["digest"])' "$OUT")
    # the serving gateway's agent compared its CHECKSUM (through CephFS) before adopt;
    # gateway-b reads the file A's ganesha wrote through its own CephFS mount
    local a b; a=$(cs_checksum gateway-a) || return 1; b=$(cs_checksum gateway-b) || return 1
    [[ -n $engine && $a == "$engine" && $b == "$engine" ]] || fail "digests: copy engine $engine, through gateway-a $a, through gateway-b $b" || return 1
    CS_DIGEST=$engine
    # the same EXPORT block on both gateways: the same Export_Id and Path
    local ea eb
    ea=$(on gateway-a cat /etc/ganesha/storagectl-exports.conf) && eb=$(on gateway-b cat /etc/ganesha/storagectl-exports.conf) \
        || { fail "read the include files"; return 1; }
    grep -q "Path = \"$CS_ROOT\";" <<<"$ea" && grep -q 'Name = CEPH;' <<<"$ea" || fail "gateway-a's include: $ea" || return 1
    [[ $ea == "$eb" ]] || fail "the gateways' EXPORT blocks differ: $(diff <(echo "$ea") <(echo "$eb") | tr '\n' ' ')" || return 1
    # the domain's disk is the network disk through the floating address
    must "domblklist" on source-example "${VIRSH[@]}" dumpxml wanderer1 || return 1
    grep -q "<host name=['\"]$CS_VIP['\"]" <<<"$OUT" || fail "wanderer1's disk is not through $CS_VIP: $(grep -A3 '<source' <<<"$OUT" | tr '\n' ' ')" || return 1
    # a re-run changes nothing
    must_all "share again" cs_sctl share wanderer1 --storage ceph-nfs --attach libnfs --to dest-example --json || return 1
    json_has "$OUT" 'r["ready"] and r["changed"] == []' || return 1
}

t_cs_run_and_migrate() {
    must "start wanderer1" on source-example "${VIRSH[@]}" start wanderer1 || return 1
    must_all "check" cs_sctl check wanderer1 --to dest-example --json || return 1
    json_has "$OUT" 'r["ok"] and {c["name"]: c["result"] for c in r["checks"]}["gateways"] == "pass"' || return 1
    must_all "status" cs_sctl status wanderer1 --json || return 1
    json_has "$OUT" 'r["ready"] and r["storage"] == "ceph-nfs" and {g["name"]: g["state"] for g in r["gateways"]} == {"gateway-a": "serving", "gateway-b": "standby"}' || return 1
    must_all "migrate --live" cs_sctl migrate wanderer1 --to dest-example --live --persistent --undefine-source || return 1
    [[ $(cs_state wanderer1 dest-example) == running ]] || fail "wanderer1 on dest-example: '$(cs_state wanderer1 dest-example)'" || return 1
}

t_cs_gateway_lost() {
    [[ $(cs_state wanderer1 dest-example) == running ]] || fail "wanderer1 does not run on dest-example" || return 1
    local t0; t0=$(now_ms)
    must "kill gateway-a's ganesha (SIGKILL, by its pid)" "$LAB" ceph kill-ganesha gateway-a || return 1
    # The killed ganesha's pid file stays behind, and ganesha 4.3 writes its pid over it
    # without truncating: a shorter new pid leaves the end of the old one on a second line.
    # CI met it after a pid wrap (25153, then 849: "849\n3\n") and the agent saw no pid.
    # The old pid made as long as a pid gets, every run has that case at the restart below.
    must "a long pid in gateway-a's stale pid file" on gateway-a sh -c 'printf "4194303\n" >/run/ganesha/ganesha.pid' || return 1
    must "$CS_VIP moves to gateway-b" "$LAB" ceph wait-vip gateway-b 30 || return 1
    note "  $CS_VIP on gateway-b $(secs $(( $(now_ms) - t0 ))) s after gateway-a's ganesha was killed"
    # status: not ready, gateway-a down with its CephFS sessions left, the repair named
    OUT=$(cs_sctl status wanderer1 --json 2>&1)
    json_has "$OUT" 'not r["ready"] and {g["name"]: g["state"] for g in r["gateways"]} == {"gateway-a": "down", "gateway-b": "serving"} and "share --repair wanderer1" in r["remedy"]' || return 1
    # check refuses, naming the repair
    OUT=$(cs_sctl check wanderer1 --to source-example --json 2>&1)
    json_has "$OUT" 'not r["ok"] and [c for c in r["checks"] if c["name"] == "gateways"][0]["result"] == "fail" and "share --repair wanderer1" in [c for c in r["checks"] if c["name"] == "gateways"][0]["remedy"]' || return 1
    # the repair: gateway-a's sessions evicted through gateway-b
    t0=$(now_ms)
    must_all "share --repair" cs_sctl share wanderer1 --repair --json || return 1
    json_has "$OUT" 'r["ready"] and r["serving"] == "gateway-b" and r["evicted"].get("gateway-a", 0) >= 1 and sorted(r["reachable"]) == ["dest-example", "source-example"]' || return 1
    note "  share --repair took $(secs $(( $(now_ms) - t0 ))) s"
    must "gateway-a's ganesha sessions" "$LAB" ceph sessions gateway-a ganesha || return 1
    [[ -z $(echo $OUT) ]] || fail "gateway-a still has ganesha sessions: $OUT" || return 1
    must_all "repair again (nothing left to evict)" cs_sctl share wanderer1 --repair --json || return 1
    json_has "$OUT" 'r["ready"] and r["evicted"].get("gateway-a") == 0' || return 1
}

t_cs_migrate_after_repair() {
    must_all "check after the repair" cs_sctl check wanderer1 --to source-example --json || return 1
    json_has "$OUT" 'r["ok"] and {c["name"]: c["result"] for c in r["checks"]}["gateways"] == "warn"' || return 1
    must_all "migrate --live back" cs_sctl migrate wanderer1 --to source-example --live --persistent --undefine-source || return 1
    [[ $(cs_state wanderer1 source-example) == running ]] || fail "wanderer1 on source-example: '$(cs_state wanderer1 source-example)'" || return 1
    must "stop wanderer1" on source-example "${VIRSH[@]}" destroy wanderer1 || return 1
    must "qemu-img check through $CS_VIP" on source-example timeout 120 qemu-img check "nfs://$CS_VIP$CS_IMAGE" || return 1
    local b; b=$(cs_checksum gateway-b) || return 1
    [[ $b == "$CS_DIGEST" ]] || fail "wanderer1's disk changed: $b, shared as $CS_DIGEST" || return 1
}

t_cs_gateway_back() {
    must "restart gateway-a's ganesha" "$LAB" ceph restart-ganesha gateway-a || return 1
    must "gateway-a's pid file" on gateway-a cat /run/ganesha/ganesha.pid || return 1
    note "  gateway-a's pid file after the restart: $(printf '%s' "$OUT" | tr '\n' ' ')"
    local i ok=""
    for i in $(seq 1 50); do
        OUT=$(cs_sctl status wanderer1 --json 2>&1)
        json_is "$OUT" '{g["name"]: g["state"] for g in r["gateways"]} == {"gateway-a": "standby", "gateway-b": "serving"}' && { ok=1; break; }
        sleep 0.5
    done
    [[ -n $ok ]] || fail "gateway-a did not stand by again: $(tr '\n' ' ' <<<"$OUT" | cut -c1-800)" || return 1
    [[ $(cs_vip_holder) == gateway-b ]] || fail "$CS_VIP moved back to '$(cs_vip_holder)'" || return 1
    must_all "unshare wanderer1" cs_sctl unshare wanderer1 --json || return 1
    json_has "$OUT" 'r["storage"] == "ceph-nfs"' || return 1
    must "domblklist" on source-example "${VIRSH[@]}" domblklist wanderer1 || return 1
    grep -q 'vda */var/lib/libvirt/images/' <<<"$OUT" || fail "wanderer1 is not back on local disks: $OUT" || return 1
}

if [[ $cs_profile == ceph ]]; then
    run "ceph share: setup (inventory with the gateway cluster, wanderer1 local)" t_cs_setup
    run "ceph share: share wanderer1 onto the cluster; the digest through CephFS on both gateways matches the copy" t_cs_share
    run "ceph share: wanderer1 starts from the share and live-migrates through the gate" t_cs_run_and_migrate
    run "ceph share: gateway-a killed: the address moves, status and check name the repair, share --repair evicts" t_cs_gateway_lost
    run "ceph share: after the repair wanderer1 live-migrates back; its disk is intact" t_cs_migrate_after_repair
    run "ceph share: gateway-a back as standby; unshare brings wanderer1 back" t_cs_gateway_back
else
    note "ceph share suite not run: the lab was brought up without LAB_STORAGE=ceph (make check sets it)"
fi
