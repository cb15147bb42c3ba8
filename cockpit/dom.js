// Small DOM helpers: text only through text nodes (nothing storagectl prints is parsed as HTML).
const cockpit = window.cockpit;
const _ = cockpit.gettext;

export function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
    for (const c of children) {
        if (c === null || c === undefined) continue;
        e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

const ICONS = { danger: "✖", warning: "⚠", success: "✔", info: "ℹ" };

// A Cockpit (PatternFly) inline alert at the top of the page; the newest first.
export function showAlert(kind, title, description) {
    const box = document.getElementById("alerts");
    const close = el("button", { class: "pf-c-button pf-m-plain", type: "button", "aria-label": _("Close") }, "×");
    const alert = el("div", { class: "pf-c-alert pf-m-inline pf-m-" + kind, role: "alert" },
        el("div", { class: "pf-c-alert__icon", "aria-hidden": "true" }, ICONS[kind] || ""),
        el("p", { class: "pf-c-alert__title" }, title),
        el("div", { class: "pf-c-alert__action" }, close),
        description ? el("div", { class: "pf-c-alert__description" }, description) : null);
    close.addEventListener("click", () => alert.remove());
    box.insertBefore(alert, box.firstChild);
    return alert;
}

export function clearAlerts() { clear(document.getElementById("alerts")); }
