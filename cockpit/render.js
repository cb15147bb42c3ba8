// Renders storagectl's documents into the page's tables (text nodes only).
import { el, clear } from "./dom.js";

const cockpit = window.cockpit;
const _ = cockpit.gettext;

// hosts --json: {"hosts": [{name, role, agent, state, agent_version, rtt_ms, checks, error, error_code, remedy}]}
export function renderHosts(tbody, hosts) {
    clear(tbody);
    for (const h of hosts) {
        const problems = el("td", { "data-label": _("Problems"), class: "sc-problems" });
        if (h.error) {
            problems.appendChild(el("span", { class: "sc-error" }, h.error + (h.error_code ? " [" + h.error_code + "]" : "")));
            if (h.remedy) problems.appendChild(el("span", { class: "sc-remedy" }, h.remedy));
        }
        for (const c of h.checks || []) {
            if (!c.ok) problems.appendChild(el("span", { class: "sc-remedy sc-check-failed" }, c.name + ": " + c.detail));
        }
        tbody.appendChild(el("tr", { "data-host": h.name, "data-state": h.state },
            el("th", { scope: "row", "data-label": _("Host") }, h.name),
            el("td", { "data-label": _("Role") }, h.role),
            el("td", { "data-label": _("State"), class: "sc-state sc-state-" + h.state }, h.state),
            el("td", { "data-label": _("Version") }, h.agent_version || "–"),
            el("td", { "data-label": _("Round trip") }, h.rtt_ms !== undefined && h.rtt_ms !== null ? cockpit.format(_("$0 ms"), h.rtt_ms.toFixed(1)) : "–"),
            problems));
    }
}

// The VM rows: every VM of status --json (a disk on the share), then every persistent
// VM a compute agent reports (DOMAINS) without a shared disk: those can be shared.
export function vmRows(sharedVMs, domainsByHost) {
    const rows = [];
    const seen = new Set();
    for (const s of sharedVMs) {
        seen.add(s.vm);
        rows.push({
            vm: s.vm, owner: s.owner, shared: true, ready: s.ready, problem: s.problem,
            state: s.state, storage: s.storage, export: s.export,
            sharedDisks: (s.shared_disks || []).length, localDisks: (s.local_disks || []).length,
            canRun: (s.hosts || []).filter(h => h.can_run).map(h => h.host),
            hostProblems: (s.hosts || []).filter(h => h.problem).map(h => h.host + ": " + h.problem),
        });
    }
    for (const d of domainsByHost) {
        if (d.error) continue;
        for (const dom of d.domains) {
            if (seen.has(dom.name) || dom.persistent !== "yes" || dom.shared === "yes") continue;
            seen.add(dom.name);
            rows.push({ vm: dom.name, owner: d.host, shared: false, state: dom.state, canRun: [d.host] });
        }
    }
    rows.sort((a, b) => a.vm.localeCompare(b.vm));
    return rows;
}

export function renderVMs(tbody, rows, { onShare, onUnshare, onCheck, busy }) {
    // unchanged rows stay as they are (a keyboard user's focus stays where it was)
    const key = JSON.stringify([rows, !!busy]);
    if (tbody.dataset.key === key) return;
    tbody.dataset.key = key;
    clear(tbody);
    if (rows.length === 0) {
        tbody.appendChild(el("tr", {}, el("td", { colspan: "5" }, _("No virtual machine on the inventory's compute hosts"))));
        return;
    }
    for (const r of rows) {
        let storage, status;
        if (r.shared) {
            status = r.ready ? el("span", { class: "sc-ready sc-status" }, _("ready"))
                : el("span", { class: "sc-not-ready sc-status" }, _("not ready"));
            storage = el("td", { "data-label": _("Storage"), class: "sc-storage" }, status, " ",
                cockpit.format(_("$0 disk(s) on $1:$2, $3 local"), r.sharedDisks, r.storage, r.export, r.localDisks));
            for (const p of [r.problem, ...(r.hostProblems || [])].filter(Boolean))
                storage.appendChild(el("span", { class: "sc-remedy" }, p));
        } else {
            storage = el("td", { "data-label": _("Storage"), class: "sc-storage" },
                el("span", { class: "sc-status" }, _("local disks")));
        }
        const actions = el("td", { "data-label": _("Actions"), class: "sc-actions" });
        const add = (label, kind, fn, name) => {
            const b = el("button", { class: "pf-c-button pf-m-" + kind, type: "button", "data-action": name,
                "aria-label": label + " " + r.vm }, label);
            b.disabled = !!busy;
            b.addEventListener("click", () => fn(r));
            actions.appendChild(b);
        };
        if (!r.shared) add(_("Share"), "secondary", onShare, "share");
        if (r.shared) add(_("Check / Migrate"), "secondary", onCheck, "check");
        if (r.shared) add(_("Unshare"), "link", onUnshare, "unshare");
        tbody.appendChild(el("tr", { "data-vm": r.vm, "data-shared": String(r.shared), "data-ready": String(!!r.ready) },
            el("th", { scope: "row", "data-label": _("VM") }, r.vm),
            el("td", { "data-label": _("Defined on") }, (r.owner || "–") + (r.state ? " (" + r.state + ")" : "")),
            storage,
            el("td", { "data-label": _("Can run on"), class: "sc-canrun" }, r.canRun.join(", ") || "–"),
            actions));
    }
}
