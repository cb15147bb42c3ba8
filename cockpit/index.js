// storagectl's Cockpit page (docs/web.md). Everything shown comes from `storagectl ...
// --json` or `--json-lines` run through Cockpit's bridge (cockpit.spawn, argument
// vectors, superuser); nothing here talks to an agent or invents a value.
import { run, stream } from "./storagectl.js";
import { renderHosts, renderVMs, vmRows } from "./render.js";
import { el, clear, showAlert, clearAlerts } from "./dom.js";

const cockpit = window.cockpit;
const _ = cockpit.gettext;

const REFRESH_SECONDS = 5;
const state = { refreshAlert: null, hosts: null, vms: [], busy: false, timer: null, refreshing: null, task: null };

// ---------------------------------------------------------------- inventory and VMs

async function refresh() {
    if (state.refreshing) return state.refreshing;
    state.refreshing = (async () => {
        try {
            const hostsDoc = await run(["hosts", "--json"], { okStatuses: [0, 1, 69, 75] });
            if (state.refreshAlert) { state.refreshAlert.remove(); state.refreshAlert = null; }
            state.hosts = hostsDoc.hosts;
            renderHosts(document.getElementById("hosts-body"), state.hosts);
            document.getElementById("hosts-updated").textContent =
                cockpit.format(_("Updated $0"), new Date().toLocaleTimeString());
            state.vms = await loadVMs(state.hosts);
            renderVMs(document.getElementById("vms-body"), state.vms, { onShare: openShare, onUnshare: openUnshare, onCheck: openCheck, busy: state.busy });
        } catch (ex) {
            // one alert for the refresh, replaced by the next failure, gone after a success
            if (state.refreshAlert) state.refreshAlert.remove();
            state.refreshAlert = showAlert("danger", cockpit.format(_("storagectl exited with status $0"), ex.exit_status ?? "?"), ex.message);
        } finally {
            state.refreshing = null;
        }
    })();
    return state.refreshing;
}

// Every VM with a disk on the share (status --json), and every VM a reachable compute
// agent defines (call HOST DOMAINS --json): those without a shared disk can be shared.
async function loadVMs(hosts) {
    const shared = await run(["status", "--json"], { okStatuses: [0, 1] });
    const computes = hosts.filter(h => h.role === "compute" && h.state !== "unreachable");
    const domains = await Promise.all(computes.map(h =>
        run(["call", h.name, "DOMAINS", "--json"], { okStatuses: [0] })
            .then(doc => ({ host: h.name, domains: doc.data || [] }))
            .catch(ex => ({ host: h.name, error: ex.message }))));
    return vmRows(shared.vms || [], domains);
}

function schedule() {
    if (state.timer) window.clearTimeout(state.timer);
    state.timer = null;
    if (document.visibilityState === "visible")
        state.timer = window.setTimeout(async () => { if (!state.busy) await refresh(); schedule(); }, REFRESH_SECONDS * 1000);
}

// ---------------------------------------------------------------- the task card

function taskCard(title) {
    const card = document.getElementById("task-card");
    card.hidden = false;
    document.getElementById("task-title").textContent = title;
    for (const id of ["task-options", "task-plan-title", "task-plan", "task-steps", "task-checks", "task-result", "task-buttons"])
        clear(document.getElementById(id));
    setProgress(null);
    card.scrollIntoView({ block: "nearest" });
    return card;
}

function closeTask() {
    document.getElementById("task-card").hidden = true;
    state.task = null;
}

function button(label, kind, onClick, id) {
    const b = el("button", { class: "pf-c-button pf-m-" + kind, type: "button", id }, label);
    b.addEventListener("click", onClick);
    document.getElementById("task-buttons").appendChild(b);
    return b;
}

function setBusy(busy) {
    state.busy = busy;
    for (const b of document.querySelectorAll("#vms-body button")) b.disabled = busy;
    delete document.getElementById("vms-body").dataset.key;
}

// null: hidden; else {label, done, total}
function setProgress(p) {
    const box = document.getElementById("task-progress");
    if (!p) { box.hidden = true; return; }
    box.hidden = false;
    const percent = p.total > 0 ? Math.min(100, Math.floor(100 * p.done / p.total)) : 0;
    document.getElementById("task-progress-label").textContent = p.label;
    document.getElementById("task-progress-measure").textContent = percent + "%";
    document.getElementById("task-bar").setAttribute("aria-valuenow", String(percent));
    document.getElementById("task-bar-fill").style.width = percent + "%";
}

function addStep(s) {
    document.getElementById("task-steps").appendChild(el("li", { class: "sc-step", "data-step": s.step },
        el("span", { class: "sc-step-name" }, s.step), " ", el("strong", {}, s.host), " ", s.detail));
}

function addNote(text) {
    document.getElementById("task-steps").appendChild(el("li", { class: "sc-note" }, text));
}

function showFailure(what, f, exitStatus) {
    const msg = cockpit.format(_("$0 failed at $1 on $2: $3"), what, f.failed_step, f.host, f.message) +
        (f.code ? " [" + f.code + "]" : "");
    const result = document.getElementById("task-result");
    clear(result);
    result.appendChild(el("p", { class: "sc-failed", id: "task-failure" }, msg));
    if (f.remedy) result.appendChild(el("p", { class: "sc-remedy", id: "task-remedy" }, f.remedy));
    showAlert("danger", cockpit.format(_("storagectl exited with status $0"), exitStatus), msg + (f.remedy ? "\n" + _("What to do: ") + f.remedy : ""));
}

// Runs a share/unshare with --json-lines: step and note lines, the progress bar, then the result.
async function runFlow(what, argv, onResult) {
    setBusy(true);
    let failure = null, result = null;
    try {
        await stream(argv, record => {
            switch (record.type) {
            case "step": addStep(record.step); break;
            case "note": addNote(record.note); break;
            case "progress": {
                const p = record.progress;
                setProgress({ label: cockpit.format(_("copy $0: $1 of $2"), p.disk, cockpit.format_bytes(p.done, 1024), cockpit.format_bytes(p.total, 1024)), done: p.done, total: p.total });
                break;
            }
            case "result": result = record.result; break;
            case "failure": failure = record.failure; break;
            }
        });
        if (result) onResult(result);
    } catch (ex) {
        if (failure) showFailure(what, failure, ex.exit_status);
        else showAlert("danger", cockpit.format(_("storagectl exited with status $0"), ex.exit_status ?? "?"), ex.message);
    } finally {
        setBusy(false);
        await refresh();
    }
}

// ---------------------------------------------------------------- share

function destinationChoices(vm, owner) {
    const box = document.getElementById("task-options");
    const computes = (state.hosts || []).filter(h => h.role === "compute" && h.name !== owner);
    const fieldset = el("fieldset", { class: "sc-options" }, el("legend", {}, _("Destinations")));
    for (const h of computes) {
        const id = "dest-" + h.name;
        const input = el("input", { type: "checkbox", id, value: h.name, class: "sc-dest" });
        input.checked = true;
        fieldset.appendChild(el("label", { for: id }, input, " ", h.name));
    }
    box.appendChild(fieldset);
    return () => Array.from(fieldset.querySelectorAll("input.sc-dest:checked")).map(i => i.value);
}

async function openShare(row) {
    clearAlerts();
    taskCard(cockpit.format(_("Share $0"), row.vm));
    state.task = "share";
    const chosen = destinationChoices(row.vm, row.owner);
    const args = () => ["share", row.vm, ...chosen().flatMap(d => ["--to", d])];
    const go = button(_("Share"), "primary", async () => {
        go.disabled = true;
        for (const i of document.querySelectorAll("#task-options input")) i.disabled = true;
        clear(document.getElementById("task-plan"));
        clear(document.getElementById("task-plan-title"));
        await runFlow(_("share"), [...args(), "--json-lines"], r => {
            const result = document.getElementById("task-result");
            result.appendChild(el("p", { class: "sc-ready", id: "task-done" },
                r.changed.length === 0 ? cockpit.format(_("$0 was already shared; nothing changed."), r.vm)
                    : cockpit.format(_("$0 is ready: its disks are on $1:$2, seen by $3."), r.vm, r.storage, r.export, [r.source, ...r.destinations].join(", "))));
        });
        close.disabled = false;
    }, "task-go");
    go.disabled = true;
    const close = button(_("Close"), "link", closeTask, "task-close");
    // another choice of destinations: the plan again before Share is possible
    document.getElementById("task-options").addEventListener("change", () => plan());
    async function plan() {
        go.disabled = true;
        const list = document.getElementById("task-plan");
        clear(list);
        list.removeAttribute("data-to");
        const title = document.getElementById("task-plan-title");
        title.textContent = chosen().length === 0 ? _("Choose at least one destination.") : _("Asking storagectl for the plan…");
        if (chosen().length === 0) return;
        try {
            const r = await run([...args(), "--dry-run", "--json"], { okStatuses: [0] });
            document.getElementById("task-plan-title").textContent = cockpit.format(_("The plan ($0 copy; nothing was changed yet):"), r.mode);
            for (const line of r.plan) list.appendChild(el("li", {}, line));
            list.setAttribute("data-mode", r.mode);
            list.setAttribute("data-to", r.destinations.join(","));
            go.disabled = false;
            go.focus();
        } catch (ex) {
            title.textContent = _("No plan: storagectl refused (see above).");
            showFlowError(_("share --dry-run"), ex);
        }
    }
    await plan();
}

function showFlowError(what, ex) {
    let f = null;
    try { f = JSON.parse(ex.stdout || ""); } catch (e) { f = null }
    if (f && f.failed_step) showFailure(what, f, ex.exit_status);
    else showAlert("danger", cockpit.format(_("storagectl exited with status $0"), ex.exit_status ?? "?"), ex.message);
}

// ---------------------------------------------------------------- unshare

function openUnshare(row) {
    clearAlerts();
    taskCard(cockpit.format(_("Unshare $0"), row.vm));
    state.task = "unshare";
    document.getElementById("task-options").appendChild(el("p", {},
        cockpit.format(_("$0 will run from local disks of $1 again. The copies on the share are kept. Continue?"), row.vm, row.owner || "?")));
    const go = button(_("Unshare"), "danger", async () => {
        go.disabled = true;
        await runFlow(_("unshare"), ["unshare", row.vm, "--json-lines"], r => {
            document.getElementById("task-result").appendChild(el("p", { class: "sc-ready", id: "task-done" },
                cockpit.format(_("$0 is on local disks of $1 again."), r.vm, r.host)));
        });
    }, "task-go");
    button(_("Cancel"), "link", closeTask, "task-close");
    go.focus();
}

// ---------------------------------------------------------------- check and migrate

function openCheck(row) {
    clearAlerts();
    taskCard(cockpit.format(_("Check and migrate $0"), row.vm));
    state.task = "migrate";
    const box = document.getElementById("task-options");
    const select = el("select", { id: "migrate-to", class: "pf-c-form-control" });
    for (const h of (state.hosts || []).filter(h => h.role === "compute" && h.name !== row.owner))
        select.appendChild(el("option", { value: h.name }, h.name));
    box.appendChild(el("label", { for: "migrate-to" }, _("Destination"), " ", select));
    let checked = false, proc = null;
    const checkButton = button(_("Check"), "secondary", () => check(), "task-check");
    const migrate = button(_("Migrate"), "primary", () => doMigrate(), "task-migrate");
    migrate.disabled = true;
    const abort = button(_("Abort"), "danger", () => { if (proc) proc.close("terminated") }, "task-abort");
    abort.hidden = true;
    button(_("Close"), "link", closeTask, "task-close");
    select.addEventListener("change", () => { migrate.disabled = true; checked = false; });

    function showChecks(checks) {
        const list = document.getElementById("task-checks");
        clear(list);
        for (const c of checks) {
            const li = el("li", { class: "sc-check", "data-result": c.result, "data-name": c.name },
                el("span", { class: "sc-result-" + c.result }, c.result), " ", el("strong", {}, c.name), " ", c.sentence);
            if (c.remedy && c.result !== "pass") li.appendChild(el("span", { class: "sc-remedy" }, c.remedy));
            list.appendChild(li);
        }
    }

    async function check() {
        checkButton.disabled = true; migrate.disabled = true;
        try {
            const r = await run(["check", row.vm, "--to", select.value, "--json"], { okStatuses: [0, 65, 69, 75, 77] });
            showChecks(r.checks || []);
            checked = r.ok === true && !(r.checks || []).some(c => c.result === "fail");
            migrate.disabled = !checked;
        } catch (ex) {
            showAlert("danger", cockpit.format(_("storagectl exited with status $0"), ex.exit_status ?? "?"), ex.message);
        } finally {
            checkButton.disabled = false;
        }
    }

    async function doMigrate() {
        if (!checked) return;
        migrate.disabled = true; checkButton.disabled = true; abort.hidden = false;
        setBusy(true);
        let result = null, refused = null, failure = null;
        const checks = [];
        try {
            // Abort closes the channel: the bridge ends storagectl (SIGTERM), its MIGRATE
            // connection closes, and the source agent aborts the libvirt job
            // (docs/storagectl.md, "storagectl migrate").
            const p = stream(["migrate", row.vm, "--to", select.value, "--persistent", "--json"], r => {
                switch (r.type) {
                case "check": checks.push(r.check); showChecks(checks); break;
                case "started": addNote(cockpit.format(_("migration started to $0"), r.started)); break;
                case "progress": {
                    const q = r.progress;
                    setProgress({ label: cockpit.format(_("migrate: $0 of $1"), cockpit.format_bytes(q.done, 1024), cockpit.format_bytes(q.total, 1024)), done: q.done, total: q.total });
                    break;
                }
                case "aborting": addNote(cockpit.format(_("aborting ($0)"), r.aborting)); break;
                case "result": result = r.result; break;
                case "refused": refused = r.refused; break;
                case "failure": failure = r.failure; break;
                }
            });
            proc = p;
            await p;
        } catch (ex) {
            if (refused) showChecks(refused);
            if (failure) showFailure(_("migrate"), failure, ex.exit_status);
            else if (!result) showAlert("danger", cockpit.format(_("storagectl exited with status $0"), ex.exit_status ?? "?"), ex.message);
        } finally {
            proc = null;
            abort.hidden = true; checkButton.disabled = false;
            setBusy(false);
        }
        if (result) {
            document.getElementById("task-result").appendChild(el("p", { class: result.aborted ? "sc-failed" : "sc-ready", id: "task-done" },
                result.aborted ? cockpit.format(_("aborted: $0 still runs on $1"), result.vm, result.runs_on || result.source)
                    : cockpit.format(_("$0 runs on $1 now (paused $2 ms)"), result.vm, result.runs_on, result.downtime_ms)));
        }
        await refresh();
    }
}

// ---------------------------------------------------------------- start

document.getElementById("refresh").addEventListener("click", () => refresh());
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(); schedule(); });
cockpit.translate();
refresh().then(schedule);
