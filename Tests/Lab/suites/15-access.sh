# Lab suite: who may do what (docs/security.md). The agents list the lab's admin
# certificate (CN=admin) in allow-admin; a certificate from the same CA that is on no
# list (CN=intruder: a compromised host's own libvirt client certificate, say) gets
# permission-denied on every changing verb of both agents, naming itself and the key,
# and changes nothing. Sourced by run-tests.

# ac_sctl ARGS...: storagectl on source-example presenting the intruder's certificate
ac_sctl() {
    { cat "$STATE/storagectl.conf"; printf '\n[tls]\ncert = /run/lab/intrudercert.pem\nkey = /run/lab/intruderkey.pem\n'; } \
        >"$STATE/hosts/source-example/run/lab/intruder.conf"
    on source-example "$(lab_bin)/storagectl" "$@" --config /run/lab/intruder.conf
}

# ac_refused HOST VERB KEY=VALUE...: the request is refused as permission-denied, naming
# the certificate and allow-admin
ac_refused() {
    if OUT=$(ac_sctl call "$@" 2>&1); then fail "$2 on $1 was served to the intruder: $OUT"; return 1; fi
    grep -q "code=permission-denied" <<<"$OUT" || { fail "$2 on $1: not permission-denied: $OUT"; return 1; }
    grep -q "CN=intruder" <<<"$OUT" && grep -q "allow-admin" <<<"$OUT" \
        || { fail "$2 on $1: the refusal does not name the certificate and allow-admin: $OUT"; return 1; }
}

t_ac_changing_verbs_refused() {
    must "exports before" on cargo-bay cat /etc/exports || return 1
    local before=$OUT
    ac_refused cargo-bay EXPORT "path=$EXPORT_ROOT/intruder" client=source-example || return 1
    ac_refused cargo-bay UNEXPORT "path=$EXPORT_ROOT" || return 1
    local h
    for h in source-example dest-example third-example; do
        ac_refused "$h" POOL-ENSURE name=intruder server=198.18.0.1 "export=$EXPORT_ROOT" target=/etc/cron.d || return 1
        ac_refused "$h" COPY domain=wanderer1 pool=shared-images || return 1
        ac_refused "$h" ADOPT domain=wanderer1 pool=shared-images || return 1
        ac_refused "$h" RESTORE domain=wanderer1 || return 1
        ac_refused "$h" LOCALIZE domain=wanderer1 pool=shared-images dir=/etc || return 1
        ac_refused "$h" VERIFY "path=$EXPORT_ROOT/x" nonce-write=intruder || return 1
    done
    must "exports after" on cargo-bay cat /etc/exports || return 1
    [[ $OUT == "$before" ]] || fail "a refused request changed /etc/exports" || return 1
    if on source-example virsh -c qemu:///system pool-info intruder >/dev/null 2>&1; then fail "a pool 'intruder' exists"; return 1; fi
    # The intruder still gets HELLO, PING and the health summary: storagectl hosts works, no details.
    must "hosts as the intruder" ac_sctl hosts --json || return 1
    grep -q '"state" : "healthy"' <<<"$OUT" || fail "hosts: $OUT" || return 1
    if ac_sctl call cargo-bay EXPORTS >/dev/null 2>&1; then fail "EXPORTS was served to a certificate on no list"; return 1; fi
}

t_ac_admin_allowed() {
    # The admin certificate is on allow-admin: the same storagectl call is served.
    must "EXPORTS as admin" on source-example "$(lab_bin)/storagectl" call cargo-bay EXPORTS --config /dev/stdin <"$STATE/storagectl.conf" || return 1
    grep -q "^OK exports=" <<<"$OUT" || fail "EXPORTS as admin: $OUT" || return 1
}

run "access: a certificate from the CA on no allow-list is refused every changing verb of both agents" t_ac_changing_verbs_refused
run "access: the admin certificate (allow-admin CN=admin) is served" t_ac_admin_allowed
