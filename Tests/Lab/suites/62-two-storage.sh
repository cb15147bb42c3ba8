# shellcheck shell=bash
# Lab suite: two storage hosts in one inventory (issue 16). cargo-bay (its share on the
# lab's disk) and cargo-hold (its share on a tmpfs whose size the tests set, so its free
# space is whatever they want). Sourced by run-tests with the lab up; independent of the
# other suites (its own guests nomad1 and nomad2, shut off, on source-example).
#   1. share places each VM by free space: nomad1 on cargo-hold (made the larger),
#      nomad2 on cargo-bay (cargo-hold shrunk); a re-run stays where the disks are,
#      --storage naming the other host is refused;
#   2. status (each VM, and all) names each VM's storage host; check finds it;
#   3. unshare of each brings it back from its own storage host.

TS_CONF=/run/lab/storagectl-two.conf
TS_HOLD_ROOT=/var/lib/libvirt/shared-images-b
# --timeout 30: share asks both storage agents and every compute agent at once before it
# places a VM (new TLS sessions to each); on the 2-core CI machine under load a handshake
# was seen to take more than the default 5 s
ts_sctl() { on source-example "$(lab_bin)/storagectl" "$@" --config "$TS_CONF" --timeout 30; }

# ts_hold_mib MIB: cargo-hold's share (a tmpfs) gets MIB MiB in all
ts_hold_mib() { must "resize cargo-hold's tmpfs" on cargo-hold mount -o "remount,size=${1}m" "$TS_HOLD_ROOT"; }

t_ts_setup() {
    { cat "$STATE/storagectl.conf"; printf '\n[storage cargo-hold]\nagent = tls:198.18.0.5:7701\nexport-root = %s\nnfs-server = 198.18.0.5\npool = shared-images-b\n' "$TS_HOLD_ROOT"; } \
        >"$STATE/storagectl-two.conf"
    must "two-storage inventory on source-example" on source-example sh -c "cat > $TS_CONF" <"$STATE/storagectl-two.conf" || return 1
    # two small guests that are never started (an offline share needs them shut off); no
    # copy of an earlier run on either share (share never overwrites one)
    must "no old copies on cargo-hold" on cargo-hold rm -rf "$TS_HOLD_ROOT/nomad1" "$TS_HOLD_ROOT/nomad2" || return 1
    must "no old copies on cargo-bay" on cargo-bay rm -rf "$EXPORT_ROOT/nomad1" "$EXPORT_ROOT/nomad2" || return 1
    must "no old local copies" on source-example rm -rf /var/lib/libvirt/images/nomad1 /var/lib/libvirt/images/nomad2 || return 1
    local vm
    for vm in nomad1 nomad2; do
        must "image of $vm" on source-example sh -ec '
            raw=/var/lib/libvirt/images/.$1.raw
            truncate -s 64M "$raw"
            dd if=/dev/urandom of="$raw" bs=1M count=2 conv=notrunc status=none
            qemu-img convert -f raw -O qcow2 "$raw" /var/lib/libvirt/images/$1.qcow2
            rm -f "$raw"' sh "$vm" || return 1
        on source-example sh -c "cat > /run/lab/$vm.xml" <<EOF || { fail "write $vm.xml"; return 1; }
<domain type='qemu'>
  <name>$vm</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/$vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
        must "define $vm" on source-example "${VIRSH[@]}" define "/run/lab/$vm.xml" || return 1
    done
    # the inventory with both storage hosts is accepted, and both agents answer
    must_all "storagectl hosts" ts_sctl hosts || return 1
    grep -q cargo-hold <<<"$OUT" || fail "hosts does not list cargo-hold: $OUT" || return 1
}

t_ts_place_by_free_space() {
    # cargo-hold larger than cargo-bay's free space: nomad1 goes there
    must "cargo-bay's free space" on cargo-bay df -B1M --output=avail "$EXPORT_ROOT" || return 1
    local bay_mib; bay_mib=$(tail -n1 <<<"$OUT" | tr -d ' ')
    [[ $bay_mib =~ ^[0-9]+$ ]] || fail "df said: $OUT" || return 1
    ts_hold_mib $((bay_mib + 1024)) || return 1
    must_all "share nomad1" ts_sctl share nomad1 --to dest-example --json || return 1
    json_has "$OUT" 'r["storage"] == "cargo-hold" and r["ready"] and r["export"] == "/var/lib/libvirt/shared-images-b" and r["pool"] == "shared-images-b"' || return 1
    must "nomad1's copy on cargo-hold" on cargo-hold test -s "$TS_HOLD_ROOT/nomad1/nomad1.qcow2" || return 1
    # cargo-hold shrunk below cargo-bay's free space: nomad2 goes to cargo-bay
    ts_hold_mib 64 || return 1
    must_all "share nomad2 (with progress lines)" ts_sctl share nomad2 --to dest-example || return 1
    printf '%s\n' "$OUT" | sed 's/^/#   /'
    grep -q "storage host for nomad2: cargo-bay (most free space" <<<"$OUT" || fail "share did not say why cargo-bay: $OUT" || return 1
    grep -Eq "cargo-hold 6[0-9](\.[0-9])? MiB free" <<<"$OUT" || fail "share did not name cargo-hold's free space: $OUT" || return 1
    grep -q "^nomad2 is ready: its disks are on cargo-bay:$EXPORT_ROOT" <<<"$OUT" || fail "share said: $OUT" || return 1
    must "nomad2's copy on cargo-bay" on cargo-bay test -s "$EXPORT_ROOT/nomad2/nomad2.qcow2" || return 1
    # the VMs' definitions name their own storage host's share
    must "domblklist nomad1" on source-example "${VIRSH[@]}" domblklist nomad1 || return 1
    grep -q "vda *$TS_HOLD_ROOT/nomad1/nomad1.qcow2" <<<"$OUT" || fail "nomad1 disks: $OUT" || return 1
    # a re-run continues where the disks are (cargo-bay has more room now): nothing changes
    must_all "share nomad1 again" ts_sctl share nomad1 --to dest-example --json || return 1
    json_has "$OUT" 'r["storage"] == "cargo-hold" and r["ready"] and r["changed"] == []' || return 1
    # --storage naming the other host is refused: a VM's storage is one host's
    OUT=$(ts_sctl share nomad1 --to dest-example --storage cargo-bay 2>&1); local rc=$?
    ((rc != 0)) || fail "share --storage cargo-bay of a VM on cargo-hold succeeded: $OUT" || return 1
    grep -q "nomad1's shared disks are on cargo-hold, not cargo-bay" <<<"$OUT" || fail "refusal said: $OUT" || return 1
}

t_ts_status_and_check() {
    must_all "status nomad1" ts_sctl status nomad1 --json || return 1
    json_has "$OUT" 'r["storage"] == "cargo-hold" and r["export"] == "/var/lib/libvirt/shared-images-b" and r["ready"]' || return 1
    must_all "status nomad2" ts_sctl status nomad2 --json || return 1
    json_has "$OUT" 'r["storage"] == "cargo-bay" and r["ready"]' || return 1
    # status of all: both, each with its storage host (other suites' VMs may be listed too,
    # and make the exit status 1 when not ready)
    OUT=$(ts_sctl status --json 2>&1)
    json_has "$OUT" '{v["vm"]: v["storage"] for v in r["vms"] if v["ready"]}.items() >= {"nomad1": "cargo-hold", "nomad2": "cargo-bay"}.items()' || return 1
    # check finds nomad1's storage host: the storage test passes through cargo-hold's share
    OUT=$(ts_sctl check nomad1 --to dest-example --json 2>&1)
    json_has "$OUT" '{c["name"]: c["result"] for c in r["checks"]}.items() >= {"storage-ready": "pass", "disks": "pass", "destination-pool": "pass"}.items()' || return 1
    json_has "$OUT" '[c for c in r["checks"] if c["name"] == "destination-pool"][0]["measured"].get("shared-images-b") == "active, autostart"' || return 1
}

t_ts_unshare_each() {
    local vm host
    for vm in nomad1 nomad2; do
        [[ $vm == nomad1 ]] && host=cargo-hold || host=cargo-bay
        must_all "unshare $vm" ts_sctl unshare "$vm" --json || return 1
        json_has "$OUT" "r[\"storage\"] == \"$host\" and r[\"done\"] and len(r[\"disks\"]) == 1" || return 1
        must "domblklist $vm" on source-example "${VIRSH[@]}" domblklist "$vm" || return 1
        grep -Eq "vda +/var/lib/libvirt/images/($vm/)?$vm.qcow2" <<<"$OUT" || fail "$vm is not on its local disk: $OUT" || return 1
    done
    # nomad1 was unshared while nomad2 (on cargo-bay) was still shared on source-example:
    # no VM has a disk on cargo-hold any more, so its export lists no compute host
    must "cargo-hold's exports" on cargo-hold cat /etc/exports || return 1
    if grep -q "^$TS_HOLD_ROOT .*example" <<<"$OUT"; then fail "cargo-hold still exports to: $OUT"; return 1; fi
    # nothing of this suite left for the next ones (unshare keeps the shared copies)
    for vm in nomad1 nomad2; do
        must "undefine $vm" on source-example "${VIRSH[@]}" undefine "$vm" || return 1
        on source-example rm -rf "/var/lib/libvirt/images/$vm" "/var/lib/libvirt/images/$vm.qcow2" "/run/lab/$vm.xml"
    done
    on cargo-hold rm -rf "$TS_HOLD_ROOT/nomad1" "$TS_HOLD_ROOT/nomad2"
    on cargo-bay rm -rf "$EXPORT_ROOT/nomad1" "$EXPORT_ROOT/nomad2"
}

run "two storage hosts: inventory with cargo-bay and cargo-hold, guests nomad1 and nomad2" t_ts_setup
run "two storage hosts: share places nomad1 on cargo-hold and nomad2 on cargo-bay by free space; a re-run stays, --storage elsewhere is refused" t_ts_place_by_free_space
run "two storage hosts: status (each VM and all) names each VM's storage host; check passes its storage test" t_ts_status_and_check
run "two storage hosts: unshare of each brings it back from its own storage host" t_ts_unshare_each
