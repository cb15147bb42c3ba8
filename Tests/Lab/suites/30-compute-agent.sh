# shellcheck shell=bash
# Lab suite: the compute agent's verbs for real (sourced by Tests/Lab/run-tests with the
# lab up; uses its helpers on, must, fail, note, lab_bin, set_exports, alive, $OUT).
# Requests go through `storagectl call` on source-example, over mutual TLS (port 7701),
# to the compute agents of both hosts, as the lab inventory says.

CA_POOL=shared-images
CA_TARGET=/var/lib/libvirt/shared-images                    # same path on both compute hosts
CA_COPY=$EXPORT_ROOT/wanderer1/wanderer1.qcow2              # on cargo-bay, and under the pool target
CA_BIG_MIB=${LAB_CA_BIG_MIB:-1536}  # data in the image of the kill test: the XXH3 engine copies 512 MiB in ~0.6 s, too quick to be caught mid-way
# The content digest by python3's xxhash alone (docs/protocol.md, "Content digest"; Debian's
# python3-xxhash, for /usr/bin/python3)
CA_PY_DIGEST='import xxhash,sys; f=open(sys.argv[1],"rb"); d=b"".join(xxhash.xxh3_128(b).digest() for b in iter(lambda: f.read(4<<20), b"")); print("xxh3-128:"+xxhash.xxh3_128(d).hexdigest())'

# ca HOST VERB key=value...: one request to HOST's compute agent; lines in OUT
ca_cmd() { echo "$(lab_bin)/storagectl" call --timeout 120 --config /run/lab/ca-inventory.conf "$@"; }
ca() { local h=$1; shift; must "$* on $h" on source-example $(ca_cmd "$h" "$@"); }
# ca_err HOST CODE VERB key=value...: the request must fail with ERR code=CODE
ca_err() {
    local h=$1 code=$2; shift 2
    OUT=$(on source-example $(ca_cmd "$h" "$@") 2>&1)
    grep -q "^ERR code=$code " <<<"$OUT" || fail "$* on $h: want ERR code=$code, got: $(tail -n1 <<<"$OUT")"
}
# field KEY: the value of KEY on the last line of OUT
field() { tail -n1 <<<"$OUT" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }
want() { local v; v=$(field "$1"); [[ $v == "$2" ]] || fail "$1=$v, want $2: $(tail -n1 <<<"$OUT")"; }

proc_start_time() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }

# ca_restart_agent: start source-example's compute agent again as the lab does
# (socket-activated, plain TCP 7700 + TLS 7701, both storage hosts' export roots as share
# roots), recording its pid in the lab's pid file.
ca_restart_agent() {
    local f=$STATE/pids/source-example.compute-agent.pid pid i
    setsid "$LAB" exec source-example systemd-socket-activate -l 198.18.0.2:7700 -l 198.18.0.2:7701 \
        --fdname=agent:tls "$(lab_bin)/compute-agent" --libvirt-uri qemu:///system --plain-tcp --allow-admin CN=admin \
        --share-root "$EXPORT_ROOT" --share-root /var/lib/libvirt/shared-images-b \
        </dev/null >>"$STATE/logs/source-example.compute-agent.log" 2>&1 &
    pid=$!
    echo "$pid" >"$f"
    proc_start_time "$pid" >"$f.start" 2>/dev/null || true
    for i in $(seq 1 100); do
        on source-example sh -c "ss -Hltn 'sport = :7701' | grep -q ." && return 0
        sleep 0.1
    done
    fail "the compute agent on source-example did not listen again"
}

t_ca_setup() {
    set_exports No_Root_Squash 198.18.0.2 198.18.0.3 || return 1
    cp "$STATE/storagectl.conf" "$STATE/hosts/source-example/run/lab/ca-inventory.conf" || { fail "inventory"; return 1; }
    ca source-example HEALTH || return 1
    want health ok || return 1
    # verbs that change the host are refused over plain TCP
    OUT=$(on source-example "$(lab_bin)/storagectl" call --endpoint tcp:198.18.0.2:7700 RESTORE domain=wanderer1 2>&1)
    grep -q "code=permission-denied" <<<"$OUT" || fail "RESTORE over plain TCP answered: $OUT"
}

t_ca_pool_ensure() {
    local h req=(POOL-ENSURE name=$CA_POOL server=198.18.0.1 export=$EXPORT_ROOT target=$CA_TARGET)
    for h in source-example dest-example; do
        ca "$h" "${req[@]}" || return 1
        want changed yes || return 1; want state active || return 1; want autostart yes || return 1
        ca "$h" "${req[@]}" || return 1
        want changed no || return 1
        must "mount.nfs log on $h" on "$h" cat /run/lab/mount.nfs.log || return 1
        grep -q "mounted 198.18.0.1:$EXPORT_ROOT at $CA_TARGET" <<<"$OUT" || fail "$h: the stand-in did not mount: $OUT" || return 1
        grep -q 'nolock' <<<"$OUT" && grep -qE '(nfs)?vers=3' <<<"$OUT" || fail "$h: mount options lack nolock or vers=3: $OUT" || return 1
        must "pool-info on $h" on "$h" "${VIRSH[@]}" pool-info "$CA_POOL" || return 1
        grep -qE 'Autostart: +yes' <<<"$OUT" && grep -qE 'Persistent: +yes' <<<"$OUT" || fail "$h: $OUT" || return 1
    done
    ca_err source-example conflict POOL-ENSURE name=other server=198.18.0.1 export=/srv/other target=$CA_TARGET || return 1
    grep -q "pool=$CA_POOL" <<<"$OUT" || fail "the conflict does not name the pool: $OUT"
}

# poll cargo-bay's directory during a copy: any file under its final name must already
# have its final size (the engine renames only complete, verified files)
# "$LAB" exec, not the function on: $! must be the poller itself (lab exec execs nsenter,
# which execs bash), not a subshell whose kill would leave the poller running and writing
# into the next poller's log. Returns once the poller has taken its first sample.
ca_poller_start() {            # ca_poller_start DIR NAME SIZE
    local log=$STATE/logs/ca-poller.log i
    "$LAB" exec cargo-bay bash -c 'while :; do s=$(stat -c %s "$1/$2" 2>/dev/null) && echo "$s"; ls -a "$1" 2>/dev/null | tr "\n" " "; echo; sleep 0.02; done' \
        _ "$1" "$2" "$3" >"$log" 2>&1 &
    CA_POLLER=$!
    for i in $(seq 1 250); do [[ -s $log ]] && return 0; sleep 0.02; done
    note "  the poller took no sample within 5 s"
}
# It also fails when the poller did not watch: it must have sampled before the copy
# started (ca_poller_start waits for that), still run when stopped, and have seen the
# final file at its final size.
ca_poller_check() {            # ca_poller_check SIZE
    local log=$STATE/logs/ca-poller.log i
    for i in $(seq 1 100); do grep -aqx "$1" "$log" && break; sleep 0.02; done   # the last samples
    kill "$CA_POLLER" 2>/dev/null || { wait "$CA_POLLER" 2>/dev/null; fail "the poller had stopped before the check: $(tail -n2 "$log")"; return 1; }
    wait "$CA_POLLER" 2>/dev/null
    local bad; bad=$(grep -aE '^[0-9]+$' "$log" | grep -avx "$1" | head -n3)
    [[ -z $bad ]] || fail "a file under the final name had size $bad (want $1)" || return 1
    grep -aqvE '^[0-9]+$' "$log" || fail "the poller never listed the directory" || return 1
    grep -aqx "$1" "$log" || fail "the poller never saw the final file at $1 bytes: $(tail -n2 "$log")" || return 1
    grep -aq 'storagectl-partial' "$log" || note "  (the poller never saw the temporary file)"
    return 0
}

t_ca_copy() {
    ca source-example DOMAIN name=wanderer1 || return 1
    want state shut-off || return 1
    local uuid; uuid=$(field uuid)
    local size; size=$(on source-example stat -c %s /var/lib/libvirt/images/wanderer1.qcow2) || { fail "stat"; return 1; }
    ca_poller_start "$EXPORT_ROOT/wanderer1" wanderer1.qcow2 "$size"
    ca source-example COPY domain=wanderer1 pool=$CA_POOL; local rc=$?
    ca_poller_check "$size" || return 1
    ((rc == 0)) || return 1
    want state done || return 1
    grep -q '^PROGRESS done=' <<<"$OUT" || fail "no PROGRESS line: $OUT" || return 1
    local digest; digest=$(grep '^DATA disk=vda' <<<"$OUT" | tr ' ' '\n' | sed -n 's/^digest=//p')
    [[ $digest =~ ^xxh3-128:[0-9a-f]{32}$ ]] || fail "COPY reported no content digest: $(grep '^DATA' <<<"$OUT")" || return 1
    # the same content digest of the copy on cargo-bay's disk, three more ways: the storage
    # agent (CHECKSUM), storagectl digest, python3's xxhash
    ca cargo-bay CHECKSUM path=$CA_COPY || return 1
    want digest "$digest" || return 1
    want size "$size" || return 1
    must "storagectl digest on cargo-bay" on cargo-bay "$(lab_bin)/storagectl" digest "$CA_COPY" || return 1
    [[ $OUT == "$digest  $CA_COPY" ]] || fail "storagectl digest on cargo-bay: $OUT, COPY said $digest" || return 1
    must "python3 digest on cargo-bay" on cargo-bay /usr/bin/python3 -c "$CA_PY_DIGEST" "$CA_COPY" || return 1
    [[ $OUT == "$digest" ]] || fail "python3 on cargo-bay: $OUT, COPY said $digest" || return 1
    # byte-identical where it matters: qemu-img compare through NFS from the source host
    must "qemu-img compare" on source-example qemu-img compare -f qcow2 -F qcow2 \
        /var/lib/libvirt/images/wanderer1.qcow2 "nfs://198.18.0.1$CA_COPY" || return 1
    must "qemu-img check on cargo-bay" on cargo-bay qemu-img check "$CA_COPY" || return 1
    # sparse: the copy allocates no more than the original (and far less than its virtual size)
    local src_alloc dst_alloc
    src_alloc=$(( $(on source-example stat -c '%b * %B' /var/lib/libvirt/images/wanderer1.qcow2) ))
    dst_alloc=$(( $(on cargo-bay stat -c '%b * %B' "$CA_COPY") ))
    note "  wanderer1: $size bytes, allocated $src_alloc on source-example, $dst_alloc on cargo-bay"
    ((dst_alloc <= src_alloc + 1048576)) || fail "the copy allocates $dst_alloc bytes, the original $src_alloc" || return 1
    # again: the finished job answers at once
    ca source-example COPY domain=wanderer1 pool=$CA_POOL || return 1
    want state done || return 1
    want attached yes || return 1
    # a job record in the format of agents from before the content digest (sha256) counts
    # as none: COPY checks the share again, finds the identical copy, and answers digest=
    local record; record="$(hd_of source-example)/var-lib/storagectl/jobs/$uuid.json"
    [[ -n $uuid ]] && grep -q '"digest"' "$record" 2>/dev/null || fail "no job record with a digest at $record" || return 1
    sed -i 's/"digest"/"sha256"/' "$record" || { fail "rewrite $record"; return 1; }
    ca source-example COPY domain=wanderer1 pool=$CA_POOL || return 1
    want state done || return 1
    want attached no || return 1
    grep -q "^DATA disk=vda .* digest=$digest already-present=yes" <<<"$OUT" || fail "after an old-format record: $OUT" || return 1
    grep -q '"digest"' "$record" || fail "the old record was not replaced: $(cat "$record")" || return 1
    # so does a finished record whose digests are SHA-256 ones (agents from before XXH3-128):
    # never answered where storagectl compares xxh3-128 digests
    sed -i 's/"digest" *: *"xxh3-128:[0-9a-f]*"/"digest" : "'"$(printf 'ab%.0s' {1..32})"'"/' "$record" || { fail "rewrite $record"; return 1; }
    grep -q '"digest" : "abab' "$record" || fail "no SHA-256 digest planted in $record: $(cat "$record")" || return 1
    ca source-example COPY domain=wanderer1 pool=$CA_POOL || return 1
    want attached no || return 1
    grep -q "^DATA disk=vda .* digest=$digest already-present=yes" <<<"$OUT" || fail "after a SHA-256 record: $OUT" || return 1
    grep -q "\"digest\" : \"$digest\"" "$record" || fail "the SHA-256 record was not replaced: $(cat "$record")"
}

t_ca_verify() {
    ca dest-example VERIFY path=$CA_TARGET/wanderer1/wanderer1.qcow2 || return 1
    want format qcow2 || return 1; want virtual-size 1073741824 || return 1; want via mount || return 1
    ca dest-example VERIFY server=198.18.0.1 export=$EXPORT_ROOT path=wanderer1/wanderer1.qcow2 || return 1
    want via libnfs || return 1; want virtual-size 1073741824 || return 1
    # the shared-storage test: written through source-example, read through dest-example
    ca source-example VERIFY path=$CA_TARGET/wanderer1/wanderer1.qcow2 nonce-write=lab1 || return 1
    local value; value=$(field nonce-value)
    ca dest-example VERIFY path=$CA_TARGET/wanderer1/wanderer1.qcow2 nonce-read=lab1 value=$value || return 1
    want nonce-match yes || return 1
    ca_err dest-example not-found VERIFY path=$CA_TARGET/wanderer1/wanderer1.qcow2 nonce-read=lab1 value=$value
}

t_ca_adopt_start() {
    ca source-example ADOPT domain=wanderer1 pool=$CA_POOL || return 1
    want changed yes || return 1
    ca source-example ADOPT domain=wanderer1 pool=$CA_POOL || return 1
    want changed no || return 1
    must "domblklist" on source-example "${VIRSH[@]}" domblklist wanderer1 || return 1
    grep -q "$CA_TARGET/wanderer1/wanderer1.qcow2" <<<"$OUT" || fail "wanderer1 does not use the shared copy: $OUT" || return 1
    must "virsh start wanderer1 (from the shared copy)" on source-example "${VIRSH[@]}" start wanderer1 || return 1
    must "domstate" on source-example "${VIRSH[@]}" domstate wanderer1 || return 1
    [[ $(echo $OUT) == running ]] || fail "wanderer1 is $OUT" || return 1
    ca_err source-example invalid-state RESTORE domain=wanderer1 || return 1
    must "destroy wanderer1" on source-example "${VIRSH[@]}" destroy wanderer1 || return 1
    ca source-example RESTORE domain=wanderer1 || return 1
    want changed yes || return 1
    must "domblklist after RESTORE" on source-example "${VIRSH[@]}" domblklist wanderer1 || return 1
    grep -q /var/lib/libvirt/images/wanderer1.qcow2 <<<"$OUT" || fail "RESTORE did not bring the local disk back: $OUT" || return 1
    # libnfs mode: the disk becomes an NFS network disk that QEMU opens itself
    ca source-example ADOPT domain=wanderer1 attach=libnfs server=198.18.0.1 export=$EXPORT_ROOT || return 1
    want changed yes || return 1
    must "dumpxml" on source-example "${VIRSH[@]}" dumpxml --inactive wanderer1 || return 1
    grep -q "protocol='nfs' name='$CA_COPY'" <<<"$OUT" || fail "no NFS network disk: $OUT" || return 1
    must "virsh start wanderer1 (NFS network disk)" on source-example "${VIRSH[@]}" start wanderer1 || return 1
    must "destroy wanderer1" on source-example "${VIRSH[@]}" destroy wanderer1 || return 1
    ca source-example RESTORE domain=wanderer1 || return 1
    want changed yes
}

t_ca_kill_mid_copy() {
    # a bigger image so that the copy takes long enough to be interrupted
    must "make ca-big.qcow2" on source-example sh -ec '
        raw=/var/lib/libvirt/images/.ca-big.raw
        truncate -s 2G "$raw"
        dd if=/dev/urandom of="$raw" bs=1M seek=16 count="$1" conv=notrunc status=none
        qemu-img convert -f raw -O qcow2 "$raw" /var/lib/libvirt/images/ca-big.qcow2
        rm -f "$raw"
        sed -e "s/<name>wanderer1</<name>ca-big</" -e "s/wanderer1.qcow2/ca-big.qcow2/" /run/lab/wanderer1.xml >/run/lab/ca-big.xml
        virsh -c qemu:///system -q define /run/lab/ca-big.xml >/dev/null' sh "$CA_BIG_MIB" || return 1
    local size pid cpid i line done_ total log=$STATE/logs/ca-copy.log
    size=$(on source-example stat -c %s /var/lib/libvirt/images/ca-big.qcow2)
    pid=$(head -n1 "$STATE/pids/source-example.compute-agent.pid")
    ca_poller_start "$EXPORT_ROOT/ca-big" ca-big.qcow2 "$size"
    # COPY in the background; SIGKILL the agent (by its pid file) once PROGRESS is mid-way
    # stdbuf: storagectl call writes its lines through stdio, block-buffered into a file
    "$LAB" exec source-example stdbuf -oL $(ca_cmd source-example COPY domain=ca-big pool=$CA_POOL) >"$log" 2>&1 &
    cpid=$!
    for i in $(seq 1 1000); do
        line=$(grep '^PROGRESS' "$log" | tail -n1)
        done_=$(tr ' ' '\n' <<<"$line" | sed -n 's/^done=//p'); total=$(tr ' ' '\n' <<<"$line" | sed -n 's/^total=//p')
        if [[ -n $done_ && $done_ -gt 0 && $done_ -lt $total ]]; then kill -KILL "$pid"; break; fi
        grep -q '^OK\|^ERR' "$log" && break
        sleep 0.01
    done
    wait "$cpid" 2>/dev/null
    alive "$pid" && { sleep 0.2; alive "$pid"; } && { ca_poller_check "$size"; fail "agent $pid was not killed mid-copy: $(tail -n1 "$log")"; return 1; }
    grep -q '^OK' "$log" && { ca_poller_check "$size"; fail "the copy finished before the kill (raise LAB_CA_BIG_MIB)"; return 1; }
    note "  killed the agent (pid $pid) at $line"
    note "  after the kill: $(on cargo-bay ls -a "$EXPORT_ROOT/ca-big" 2>&1 | tr '\n' ' ')"
    ca_restart_agent || { ca_poller_check "$size"; return 1; }
    # a client that goes away does not stop the restarted job ...
    # stdbuf: storagectl call writes its lines through stdio, block-buffered into a file.
    # Empty the log first, so the wait below does not see the first COPY's lines.
    : >"$log"
    "$LAB" exec source-example stdbuf -oL $(ca_cmd source-example COPY domain=ca-big pool=$CA_POOL) >"$log" 2>&1 &
    cpid=$!
    for i in $(seq 1 500); do grep -q '^PROGRESS\|^OK\|^ERR' "$log" && break; sleep 0.01; done
    kill -TERM "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
    note "  client left after: $(tail -n1 "$log")"
    # ... and asking again attaches to it (or returns its result)
    ca source-example COPY domain=ca-big pool=$CA_POOL; local rc=$?
    ca_poller_check "$size" || return 1
    ((rc == 0)) || return 1
    want state done || return 1
    # attached to the still-running restarted job, or (when that job finished first) its
    # finished result, which says it was restarted
    grep -Eq ' attached=yes| restarted=yes' <<<"$OUT" || fail "neither attached nor the restarted job's result: $OUT" || return 1
    must "qemu-img compare ca-big" on source-example qemu-img compare -f qcow2 -F qcow2 \
        /var/lib/libvirt/images/ca-big.qcow2 "nfs://198.18.0.1$EXPORT_ROOT/ca-big/ca-big.qcow2" || return 1
    must "ls on cargo-bay" on cargo-bay ls -a "$EXPORT_ROOT/ca-big" || return 1
    ! grep -q 'storagectl-partial' <<<"$OUT" || fail "a temporary file was left: $OUT" || return 1
    on source-example "${VIRSH[@]}" -q undefine ca-big >/dev/null 2>&1
    on source-example rm -f /var/lib/libvirt/images/ca-big.qcow2
    on cargo-bay rm -rf "$EXPORT_ROOT/ca-big"
    return 0
}

run "compute agent: HEALTH over TLS; changes refused over plain TCP" t_ca_setup
run "compute agent: POOL-ENSURE on both hosts (netfs, nolock, vers=3, autostart; idempotent; conflict)" t_ca_pool_ensure
run "compute agent: COPY wanderer1 into the share (content digest = CHECKSUM = storagectl digest = python3, qemu-img compare, sparse, no partial under the final name; an old-format job record and one with SHA-256 digests are ignored)" t_ca_copy
run "compute agent: VERIFY from dest-example (mount + libnfs) and the nonce test across hosts" t_ca_verify
run "compute agent: ADOPT, virsh start from the shared copy, RESTORE; libnfs network disk" t_ca_adopt_start
run "compute agent: killed mid-COPY, asked again: correct copy, nothing partial under the final name" t_ca_kill_mid_copy
