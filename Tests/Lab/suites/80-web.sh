# shellcheck shell=bash
# Lab suite: the Cockpit plugin (issue 15, docs/web.md) in a real browser. Sourced by
# run-tests with the lab up; uses its helpers (on, must, fail, note, run, lab_bin, $OUT,
# $STATE, $EXPORT_ROOT, $VIRSH).
#
# Inside source-example: Cockpit's web server on loopback (cockpit-ws --no-tls
# --local-session=cockpit-bridge: no login; the bridge runs as root, finds the plugin
# through XDG_DATA_HOME and storagectl on PATH, and storagectl reads the inventory at its
# default path, /etc/storagectl/storagectl.conf of the host's private /etc), chromedriver
# and headless Chromium, driven over WebDriver by Tests/Lab/webdriver (python3 stdlib).
# Nothing leaves the lab host: every address is 127.0.0.1 or a lab address.
#   1. the page lists the four lab hosts as healthy;
#   2. Share wanderer1 from the page: the plan, then the run with the progress bar and
#      each step's line as it arrives; wanderer1 is then ready on source-example and
#      dest-example, and the lab's own checks (suite 40's) confirm the export, the
#      identical copy and the domain on it;
#   3. dest-example's agent stopped (SIGSTOP, by its pid file): shown unreachable with
#      the remedy; SIGCONT: healthy again;
#   4. the page at a narrow width.
# Screenshots of each state: $WEB_OUT (LAB_OUTPUT_DIR, default .build/lab-output, /web).

WEB_OUT=${LAB_OUTPUT_DIR:-$(cd "$HERE/../.." && pwd)/.build/lab-output}/web
WEB_URL=http://127.0.0.1:9090/storagectl          # Cockpit's shell, our page in its frame
WEB_FRAME='iframe[name="cockpit1:localhost/storagectl"]'
WEB_VM=wanderer1
WEB_COPY=$EXPORT_ROOT/wanderer1/wanderer1.qcow2
WEB_DRIVER=("/usr/bin/python3" "$HERE/webdriver" /run/lab/webdriver.session)
WEB_LOCAL=""     # wanderer1's local image before the share (the lab checks compare it)

# wd COMMAND ARGS...: the WebDriver client inside source-example (output in OUT)
wd() { must "webdriver $1" on source-example "${WEB_DRIVER[@]}" "$@"; }
web_sctl() { on source-example "$(lab_bin)/storagectl" "$@"; }

# web_spawn NAME CMD...: a long-running process inside source-example, its pid recorded
# in the lab's pid files (lab down stops it too if this suite does not)
web_spawn() {
    local name=$1 f; shift
    f="$STATE/pids/source-example.$name.pid"
    setsid "$LAB" exec source-example sh -c 'echo $$ > "$1"; shift; exec "$@"' _ "/run/lab/$name.pid" "$@" \
        </dev/null >>"$STATE/logs/source-example.$name.log" 2>&1 &
    local i
    for i in $(seq 50); do [[ -s $STATE/hosts/source-example/run/lab/$name.pid ]] && break; sleep 0.1; done
    cp "$STATE/hosts/source-example/run/lab/$name.pid" "$f" 2>/dev/null || { fail "$name did not start"; return 1; }
    awk '{print $22}' "/proc/$(cat "$f")/stat" >"$f.start" 2>/dev/null
}

web_stop() {                                     # web_stop NAME: SIGTERM by its pid file
    local f="$STATE/pids/source-example.$1.pid" pid i
    [[ -f $f ]] || return 0
    pid=$(head -n1 "$f")
    if [[ -f $f.start && $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) == "$(cat "$f.start")" ]]; then
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f" "$f.start"
}

# web_wait SECONDS JS DESC: until the page's expression is truthy (its value in OUT)
web_wait() { must "$3" on source-example "${WEB_DRIVER[@]}" wait "$1" "$2"; }
web_card() { on source-example "${WEB_DRIVER[@]}" eval '(document.getElementById("task-card").scrollIntoView({ block: "end" }), true)' >/dev/null; }
web_shot() { must "screenshot $1" on source-example "${WEB_DRIVER[@]}" screenshot "$WEB_OUT/$1" || return 1; note "  screenshot: $WEB_OUT/$1"; }

t_web_page_lists_hosts() {
    mkdir -p "$WEB_OUT" && rm -f "$WEB_OUT"/*.png
    must "inventory at storagectl's default path" on source-example sh -c \
        'mkdir -p /etc/storagectl && cat > /etc/storagectl/storagectl.conf && cat /etc/storagectl/storagectl.conf > /run/lab/storagectl.conf' \
        <"$STATE/storagectl.conf" || return 1
    must "the plugin where the bridge looks" on source-example sh -c \
        'mkdir -p /run/lab/xdg/cockpit /run/lab/chromium-home && ln -sfn "$1" /run/lab/xdg/cockpit/storagectl' _ "$HERE/../../cockpit" || return 1
    must "cockpit-bridge --packages" on source-example env XDG_DATA_HOME=/run/lab/xdg cockpit-bridge --packages || return 1
    grep -Eq '^storagectl +Shared storage ' <<<"$OUT" || fail "the bridge does not list the plugin: $OUT" || return 1
    web_spawn cockpit-ws env XDG_DATA_HOME=/run/lab/xdg PATH="$(lab_bin):/usr/sbin:/usr/bin:/sbin:/bin" \
        /usr/lib/cockpit/cockpit-ws --no-tls --local-session=cockpit-bridge --address 127.0.0.1 --port 9090 || return 1
    web_spawn chromedriver env HOME=/run/lab/chromium-home chromedriver --port=9515 || return 1
    local i
    for i in $(seq 100); do
        on source-example /usr/bin/python3 -c 'import sys, urllib.request as u
for url in sys.argv[1:]: u.urlopen(url, timeout=2).read()' http://127.0.0.1:9090/cockpit/@localhost/storagectl/index.html http://127.0.0.1:9515/status >/dev/null 2>&1 && break
        sleep 0.1
    done
    wd start http://127.0.0.1:9515 --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --user-data-dir=/run/lab/chromium-profile --window-size=1280,900 --lang=en-US \
        --no-first-run --disable-extensions --disable-sync --disable-background-networking --disable-component-update || return 1
    wd open "$WEB_URL" || return 1
    # "Shared storage" in Cockpit's menu, current; then everything in the page's frame
    web_wait 60 'Array.from(document.querySelectorAll("nav a")).some(a => a.textContent.trim() == "Shared storage")' \
        "Shared storage in Cockpit's menu" || return 1
    web_wait 60 "document.querySelector('$WEB_FRAME')" "the page's frame" || return 1
    wd frame "$WEB_FRAME" || return 1
    # each host a row with its state, from storagectl hosts --json
    web_wait 60 'document.querySelectorAll("#hosts-body tr[data-state=healthy]").length == 4 && document.querySelector("#vms-body tr[data-vm=wanderer1]")' \
        "four healthy hosts and wanderer1 on the page" || {
        on source-example "${WEB_DRIVER[@]}" eval 'document.body.innerText' >&2; return 1; }
    wd eval 'Array.from(document.querySelectorAll("#hosts-body tr")).map(r => r.dataset.host + "=" + r.dataset.state).join(" ")' || return 1
    [[ $OUT == '"cargo-bay=healthy source-example=healthy dest-example=healthy third-example=healthy"' ]] \
        || fail "hosts on the page: $OUT" || return 1
    note "  hosts on the page: $OUT"
    web_shot 1-hosts.png
}

# wanderer1 on local disks with no copy on the share, whatever the suites before left
web_reset_vm() {
    on source-example "${VIRSH[@]}" destroy "$WEB_VM" >/dev/null 2>&1
    OUT=$(web_sctl status "$WEB_VM" --json --config /run/lab/storagectl.conf 2>&1)
    if python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["shared_disks"] else 1)' "$OUT" 2>/dev/null; then
        must "unshare before the web share" web_sctl unshare "$WEB_VM" --config /run/lab/storagectl.conf || return 1
    fi
    on cargo-bay rm -rf "$EXPORT_ROOT/$WEB_VM"
    # the storage agent owns the ganesha include: when nothing is exported yet, the base
    # tests' hand-written blocks go (as in 40-share.sh)
    must "exports" on cargo-bay cat /etc/exports || return 1
    if ! grep -q "^$EXPORT_ROOT " <<<"$OUT"; then
        must "clear the ganesha include" on cargo-bay sh -c ': > /etc/ganesha/storagectl-exports.conf' || return 1
        must "lab ganesha-reload" "$LAB" ganesha-reload || return 1
    fi
    must "domblklist before" on source-example "${VIRSH[@]}" domblklist "$WEB_VM" || return 1
    WEB_LOCAL=$(awk '$1 == "vda" {print $2}' <<<"$OUT")
    [[ $WEB_LOCAL == /var/lib/libvirt/images/* ]] || fail "wanderer1 is not on a local disk: $OUT" || return 1
}

t_web_share() {
    web_reset_vm || return 1
    wd click '#refresh' || return 1
    web_wait 60 'document.querySelector("#vms-body tr[data-vm=wanderer1][data-shared=false] button[data-action=share]")' \
        "wanderer1 with a Share button" || return 1
    wd click '#vms-body tr[data-vm=wanderer1] button[data-action=share]' || return 1
    # the plan (share --dry-run) to every other compute host first; then only dest-example
    web_wait 60 'document.querySelectorAll("#task-plan li").length > 0 && !document.getElementById("task-go").disabled' "the plan" || return 1
    wd click '#dest-third-example' || return 1
    web_wait 60 'document.querySelectorAll("#task-plan li").length > 0 && !document.getElementById("task-go").disabled && document.getElementById("task-plan").dataset.to == "dest-example"' \
        "the plan for dest-example" || return 1
    wd eval 'Array.from(document.querySelectorAll("#task-plan li")).map(l => l.textContent).join(" | ")' || return 1
    note "  plan: $(cut -c1-300 <<<"$OUT")"
    web_shot 2-share-plan.png || return 1
    # watch the bar and the step list while share runs (times in ms from the click)
    wd eval '(() => { const t0 = performance.now(); window.webTest = { bar: [], steps: [] };
        new MutationObserver(() => webTest.bar.push([Math.round(performance.now() - t0), document.getElementById("task-bar").getAttribute("aria-valuenow")]))
            .observe(document.getElementById("task-bar"), { attributes: true });
        new MutationObserver(() => webTest.steps.push([Math.round(performance.now() - t0), document.querySelectorAll("#task-steps li.sc-step").length]))
            .observe(document.getElementById("task-steps"), { childList: true });
        return true; })()' || return 1
    wd click '#task-go' || return 1
    # a screenshot while it runs: once the first step line is there
    web_wait 60 'document.querySelectorAll("#task-steps li.sc-step").length >= 1 || document.getElementById("task-done") || document.getElementById("task-failure")' "the first step" || return 1
    web_card; web_shot 3-share-running.png || return 1
    web_wait 120 'document.getElementById("task-done") || document.getElementById("task-failure")' "share's end" || return 1
    wd eval 'JSON.stringify({ done: document.getElementById("task-done")?.textContent, failure: document.getElementById("task-failure")?.textContent,
        steps: Array.from(document.querySelectorAll("#task-steps li.sc-step")).map(l => l.dataset.step), bar: webTest.bar, stepTimes: webTest.steps })' || return 1
    local seen=$OUT
    note "  seen: $(cut -c1-600 <<<"$seen")"
    python3 - "$seen" <<'PY' || { fail "share from the page: $seen"; return 1; }
import json, sys
s = json.loads(json.loads(sys.argv[1]))
assert s.get("failure") is None and s.get("done") and "wanderer1 is ready" in s["done"], s
assert s["steps"] == ["locate", "preflight", "export", "pool", "pool", "copy", "checksum", "verify", "adopt"], s["steps"]
# the bar moved: it showed the copy's progress, up to 100 %
values = [int(v) for _, v in s["bar"]]
assert len(set(values)) >= 2 and values == sorted(values) and values[-1] == 100, values
# the steps arrived one after another while share ran, not all at the end
counts = [n for _, n in s["stepTimes"]]
assert len(counts) >= 5 and counts == sorted(counts) and counts[-1] == 9, s["stepTimes"]
PY
    web_card; web_shot 4-share-done.png || return 1
    # the VM row: ready, can run on source-example and dest-example (status --json)
    web_wait 60 'document.querySelector("#vms-body tr[data-vm=wanderer1][data-ready=true]")' "wanderer1 ready on the page" || return 1
    wd eval 'document.querySelector("#vms-body tr[data-vm=wanderer1] .sc-canrun").textContent' || return 1
    [[ $OUT == '"source-example, dest-example"' ]] || fail "wanderer1 can run on: $OUT" || return 1
    on source-example "${WEB_DRIVER[@]}" eval '(document.getElementById("hosts-card").scrollIntoView(), true)' >/dev/null
    web_shot 5-vm-ready.png || return 1
    web_lab_checks
}

# The lab's own checks of a finished share (40-share.sh, t_share_state_is_real)
web_lab_checks() {
    must "exports" on cargo-bay cat /etc/exports || return 1
    local line h; line=$(grep "^$EXPORT_ROOT " <<<"$OUT") || { fail "no managed entry for $EXPORT_ROOT: $OUT"; return 1; }
    for h in source-example dest-example; do
        grep -q "$h(rw,sync,no_subtree_check,no_root_squash" <<<"$line" || fail "$h missing in: $line" || return 1
    done
    for h in source-example dest-example; do
        must "pool-info on $h" on "$h" "${VIRSH[@]}" pool-info shared-images || return 1
        grep -q "^State: *running" <<<"$OUT" || fail "pool on $h: $OUT" || return 1
    done
    local orig copy
    orig="$(hd_of source-example)/var-lib/${WEB_LOCAL#/var/lib/}"
    copy="$(hd_of cargo-bay)/var-lib/libvirt/shared-images/wanderer1/wanderer1.qcow2"
    must "cmp original and copy" cmp "$orig" "$copy" || return 1
    must "domblklist" on source-example "${VIRSH[@]}" domblklist "$WEB_VM" || return 1
    grep -q "vda *$WEB_COPY" <<<"$OUT" || fail "wanderer1 disks: $OUT" || return 1
    note "  lab checks: export to source-example and dest-example, copy identical to $WEB_LOCAL, vda on $WEB_COPY"
}

t_web_check() {
    # Check / Migrate on the shared wanderer1: check --json's lines as a list, Migrate
    # enabled only when no check failed (the migration itself is suite 70's)
    wd click '#vms-body tr[data-vm=wanderer1] button[data-action=check]' || return 1
    web_wait 30 'document.getElementById("migrate-to")' "the check card" || return 1
    wd eval '(() => { const s = document.getElementById("migrate-to"); s.value = "dest-example"; s.dispatchEvent(new Event("change")); return s.value; })()' || return 1
    wd click '#task-check' || return 1
    web_wait 90 'document.querySelectorAll("#task-checks li.sc-check").length > 0 && !document.getElementById("task-check").disabled' "the check's lines" || return 1
    wd eval 'JSON.stringify({ checks: Array.from(document.querySelectorAll("#task-checks li.sc-check")).map(l => [l.dataset.name, l.dataset.result]),
        migrateDisabled: document.getElementById("task-migrate").disabled })' || return 1
    local seen=$OUT
    note "  check on the page: $(cut -c1-400 <<<"$seen")"
    # the same question asked on the command line gives the same lines
    local cli; cli=$(web_sctl check "$WEB_VM" --to dest-example --json --config /run/lab/storagectl.conf 2>/dev/null)
    python3 - "$seen" "$cli" <<'PY' || { fail "check on the page: $seen; storagectl check: $(cut -c1-400 <<<"$cli")"; return 1; }
import json, sys
page, cli = json.loads(json.loads(sys.argv[1])), json.loads(sys.argv[2])
results = dict(page["checks"])
assert results and set(results.values()) <= {"pass", "warn", "fail", "skip"}, results
assert set(results) == {c["name"] for c in cli["checks"]}, (results, cli["checks"])
assert page["migrateDisabled"] == ("fail" in results.values()), page
PY
    web_card; web_shot 6-check.png || return 1
    wd click '#task-close' || return 1
}

t_web_agent_stopped() {
    local dpid; dpid=$(head -n1 "$STATE/pids/dest-example.compute-agent.pid")
    [[ $dpid =~ ^[0-9]+$ ]] || fail "no pid for dest-example's agent" || return 1
    kill -STOP "$dpid" || { fail "cannot stop dest-example's agent"; return 1; }
    wd click '#refresh'
    web_wait 60 'document.querySelector("#hosts-body tr[data-host=dest-example][data-state=unreachable] .sc-remedy")' \
        "dest-example unreachable with a remedy"; local rc=$?
    if ((rc == 0)); then
        wd eval 'document.querySelector("#hosts-body tr[data-host=dest-example] .sc-problems").innerText' && note "  dest-example: $(tr '\n' ' ' <<<"$OUT")"
        grep -q "did not answer" <<<"$OUT" && grep -q "is not stopped" <<<"$OUT" || { fail "dest-example's problem: $OUT"; rc=1; }
        ((rc == 0)) && web_shot 7-agent-stopped.png || rc=1
    fi
    kill -CONT "$dpid"
    ((rc == 0)) || return 1
    wd click '#refresh' || return 1
    web_wait 60 'document.querySelectorAll("#hosts-body tr[data-state=healthy]").length == 4' "four healthy hosts again" || return 1
}

t_web_narrow() {
    wd size 420 1000 || return 1
    web_wait 30 'document.querySelector("#hosts-table thead").offsetParent === null' "the tables stacked" || return 1
    web_shot 8-narrow.png || return 1
    # usable with the keyboard: Enter on wanderer1's Unshare button (WebDriver's key
    # U+E007) opens the confirmation with the focus on its Unshare button; Cancel closes it
    wd keys '#vms-body tr[data-vm=wanderer1] button[data-action=unshare]' $'\ue007' || return 1
    web_wait 30 '!document.getElementById("task-card").hidden && document.activeElement.id == "task-go" && document.getElementById("task-title").textContent' \
        "the unshare confirmation, focused" || return 1
    [[ $OUT == '"Unshare wanderer1"' ]] || fail "Enter on Unshare opened: $OUT" || return 1
    web_shot 9-narrow-unshare-confirm.png || return 1
    wd click '#task-close' || return 1
    web_wait 10 'document.getElementById("task-card").hidden' "the confirmation closed" || return 1
}

# The session services cockpit-bridge started for itself (a D-Bus session bus and an
# ssh-agent, both daemonised): in source-example's network namespace, started after
# cockpit-ws; printed as pids
web_bridge_services() {
    local since=$1 ns p st
    ns=$(readlink "/proc/$(head -n1 "$STATE/pids/source-example.anchor.pid")/ns/net") || return 0
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        case $(cat "/proc/$p/comm" 2>/dev/null) in dbus-daemon|ssh-agent) ;; *) continue ;; esac
        [[ $(readlink "/proc/$p/ns/net" 2>/dev/null) == "$ns" ]] || continue
        st=$(awk '{print $22}' "/proc/$p/stat" 2>/dev/null) || continue
        ((st >= since)) && echo "$p"
    done
}

t_web_unshare() {
    # Unshare from the page, after its confirmation: the steps, then wanderer1 on a local
    # disk of source-example again (virsh says so)
    wd size 1280 900 || return 1
    wd click '#vms-body tr[data-vm=wanderer1] button[data-action=unshare]' || return 1
    web_wait 30 '!document.getElementById("task-card").hidden && document.getElementById("task-title").textContent == "Unshare wanderer1"' "the confirmation" || return 1
    wd click '#task-go' || return 1
    web_wait 120 'document.getElementById("task-done") || document.getElementById("task-failure")' "unshare's end" || return 1
    wd eval 'JSON.stringify({ done: document.getElementById("task-done")?.textContent, failure: document.getElementById("task-failure")?.textContent,
        steps: Array.from(document.querySelectorAll("#task-steps li.sc-step")).map(l => l.dataset.step) })' || return 1
    local seen=$OUT
    note "  seen: $(cut -c1-300 <<<"$seen")"
    python3 - "$seen" <<'PY' || { fail "unshare from the page: $seen"; return 1; }
import json, sys
s = json.loads(json.loads(sys.argv[1]))
assert s.get("failure") is None and "wanderer1 is on local disks of source-example again" in (s.get("done") or ""), s
assert s["steps"][0] == "locate" and "localize" in s["steps"] and "verify" in s["steps"], s["steps"]
PY
    web_card; web_shot 10-unshare-done.png || return 1
    must "domblklist after unshare" on source-example "${VIRSH[@]}" domblklist "$WEB_VM" || return 1
    grep -Eq "vda +/var/lib/libvirt/images/" <<<"$OUT" || fail "wanderer1 after unshare from the page: $OUT" || return 1
}

t_web_stop() {
    local since; since=$(cat "$STATE/pids/source-example.cockpit-ws.pid.start" 2>/dev/null) || since=""
    on source-example "${WEB_DRIVER[@]}" stop >/dev/null 2>&1
    web_stop chromedriver
    web_stop cockpit-ws
    if [[ -n $since ]]; then
        local pids; mapfile -t pids < <(web_bridge_services "$since")
        ((${#pids[@]} == 0)) || kill -TERM "${pids[@]}" 2>/dev/null
    fi
    on source-example rm -rf /run/lab/chromium-profile /run/lab/chromium-home
    # nothing of the browser or of Cockpit is left in source-example
    local p left=()
    sleep 0.5
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        case $(cat "/proc/$p/comm" 2>/dev/null) in cockpit-ws|cockpit-bridge|chromedriver|chromium|chrome*|dbus-daemon|ssh-agent) ;; *) continue ;; esac
        [[ $(readlink "/proc/$p/ns/net" 2>/dev/null) == "$(readlink "/proc/$(head -n1 "$STATE/pids/source-example.anchor.pid")/ns/net")" ]] && left+=("$p($(cat "/proc/$p/comm"))")
    done
    ((${#left[@]} == 0)) || fail "left in source-example: ${left[*]}"
}

run "web: Cockpit's page lists the lab hosts as healthy (hosts --json)" t_web_page_lists_hosts
run "web: share wanderer1 from the page (plan, progress, steps, ready; lab checks)" t_web_share
run "web: Check on the page: the check's lines, Migrate enabled only without a fail" t_web_check
run "web: a stopped agent is shown unreachable with the remedy" t_web_agent_stopped
run "web: the page at a narrow width" t_web_narrow
run "web: unshare wanderer1 from the page (confirmation, steps, local disk again)" t_web_unshare
run "web: browser and Cockpit stopped by pid" t_web_stop
