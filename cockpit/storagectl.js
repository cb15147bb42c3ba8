// Running storagectl through Cockpit's bridge: argument vectors only (no shell), as root
// (superuser "require": storagectl reads the inventory's TLS key), stderr as the message.
const cockpit = window.cockpit;

const SPAWN = { superuser: "require", err: "message" };

// A storagectl failure: its exit status, its stderr (message) and what it printed.
export class StoragectlError extends Error {
    constructor(argv, exitStatus, message, stdout) {
        super(message || cockpit.format(cockpit.gettext("storagectl $0 exited with status $1"), argv[0], exitStatus));
        this.exit_status = exitStatus;
        this.stdout = stdout;
        this.argv = argv;
    }
}

// run(ARGV, {okStatuses}): storagectl ARGV..., its stdout parsed as one JSON document.
// An exit status in okStatuses still returns the document (hosts exits 1 when a host is
// not healthy, status 1 when not ready); any other status throws StoragectlError.
export function run(argv, { okStatuses = [0] } = {}) {
    return new Promise((resolve, reject) => {
        let out = "";
        const proc = cockpit.spawn(["storagectl", ...argv], SPAWN);
        proc.stream(chunk => { out += chunk; });
        const parse = () => { try { return JSON.parse(out); } catch (e) { return undefined; } };
        proc.then(() => {
            const doc = parse();
            if (doc === undefined) reject(new StoragectlError(argv, 0, cockpit.gettext("storagectl printed no JSON"), out));
            else resolve(doc);
        }).catch(ex => {
            const status = ex.exit_status;
            const doc = parse();
            if (status !== undefined && status !== null && okStatuses.includes(status) && doc !== undefined) resolve(doc);
            else reject(new StoragectlError(argv, status, ex.message || ex.problem, out));
        });
    });
}

// stream(ARGV, onRecord): storagectl ARGV... printing JSON Lines; onRecord gets each
// record as its line completes. The promise (with .close(problem) to end the process)
// resolves at exit 0 and rejects with StoragectlError otherwise.
export function stream(argv, onRecord) {
    let buffer = "";
    const proc = cockpit.spawn(["storagectl", ...argv], SPAWN);
    proc.stream(chunk => {
        buffer += chunk;
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (!line) continue;
            let record;
            try { record = JSON.parse(line); } catch (e) { continue; }
            onRecord(record);
        }
    });
    const done = new Promise((resolve, reject) => {
        proc.then(() => resolve()).catch(ex => reject(new StoragectlError(argv, ex.exit_status, ex.message || ex.problem, buffer)));
    });
    done.close = problem => proc.close(problem);
    return done;
}
