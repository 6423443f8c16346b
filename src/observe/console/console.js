// The operator console: reads the admin listener's JSON views every two seconds, follows the
// live exchange stream, and sends the operator's actions with the token the operator gives
// (kept in this tab's sessionStorage only). Every value is put in the page as text, never as
// markup: hosts, paths and reasons are chosen by agents.

const MAX_ROWS = 200;
const $ = (id) => document.getElementById(id);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : cell(c));
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const ago = (iso) => {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : when(iso);
};

function notice(text, bad) {
  const n = $("notice");
  n.textContent = text;
  n.className = bad ? "bad" : "";
  n.hidden = false;
}

async function json(path) {
  const res = await fetch(path, { headers: { accept: "application/json" } });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

async function act(path, what) {
  const token = sessionStorage.getItem("slapenir-token") ?? "";
  const res = await fetch(path, {
    method: "POST",
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401)
    notice(`${what}: needs the operator's token (SLAPENIR_HOME/admin-token)`, true);
  else if (!res.ok) notice(`${what}: ${body.error ?? res.status}`, true);
  return res.ok ? body : null;
}

function renderHealth(h) {
  const pill = $("health");
  pill.textContent = h.status;
  pill.className = `pill ${h.status === "ok" ? "ok" : "bad"}`;
  $("version").textContent = `${h.version} · up ${h.uptimeSeconds} s`;
  const facts = { ...h.summary, "server certificate expires": when(h.certificateExpiresAt) };
  fill(
    $("summary"),
    Object.entries(facts).map(([k, v]) => row([cell(k, "key"), v])),
  );
}

function renderAgents(list) {
  fill(
    $("agents"),
    list.map((a) => {
      const q = document.createElement("td");
      if (a.quarantined) {
        q.append(`${a.quarantinedFor ?? "yes"} `);
        const b = document.createElement("button");
        b.textContent = "Release";
        b.dataset.agent = a.agent;
        b.addEventListener("click", async () => {
          const done = await act(
            `/quarantine/${encodeURIComponent(a.agent)}/release`,
            `release ${a.agent}`,
          );
          if (done) notice(`${a.agent} released from quarantine`);
          refresh();
        });
        q.append(b);
      }
      return row([
        a.agent,
        a.connections,
        a.requests,
        a.denied,
        a.errors,
        a.swaps,
        a.redactions,
        a.violations,
        q,
        ago(a.lastSeen),
        when(a.certificateExpiresAt),
      ]);
    }),
  );
}

function renderCredentials(list) {
  fill(
    $("credentials"),
    list.map((c) =>
      row([
        c.name,
        c.kind,
        c.hosts.join(", "),
        c.in.join(", ") || "(signed)",
        c.agents === "any" ? "any" : c.agents.join(", "),
        c.from,
        c.available ? (c.expiresAt ? `until ${when(c.expiresAt)}` : "available") : "no value now",
        c.uses,
      ]),
    ),
  );
}

function renderReasons(list) {
  fill(
    $("reasons"),
    list.map((r) => row([r.code, r.count])),
  );
}

function exchangeRow(e, fresh) {
  const d = document.createElement("td");
  d.className = "decision";
  const s = document.createElement("span");
  s.className = `decision-${e.decision}`;
  s.textContent = e.decision;
  d.append(s);
  const tr = row([
    new Date(e.at).toLocaleTimeString(),
    e.agent,
    e.method,
    `${e.host}:${e.port}`,
    cell(e.path, "path"),
    d,
    e.code ?? "",
    e.status,
    e.swaps,
    e.redactions,
    e.durationMs,
  ]);
  tr.title = e.reason;
  if (fresh) tr.className = "fresh";
  return tr;
}

async function refresh() {
  try {
    const [h, a, c, r] = await Promise.all([
      json("/api/health"),
      json("/api/agents"),
      json("/api/credentials"),
      json("/api/reasons"),
    ]);
    renderHealth(h);
    renderAgents(a.agents);
    renderCredentials(c.credentials);
    renderReasons(r.reasons);
  } catch {
    const pill = $("health");
    pill.textContent = "unreachable";
    pill.className = "pill bad";
  }
}

let source = null;
function filterQuery() {
  const q = new URLSearchParams();
  for (const [k, id] of [
    ["agent", "f-agent"],
    ["decision", "f-decision"],
    ["host", "f-host"],
  ]) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  return q.toString();
}

async function follow() {
  source?.close();
  const q = filterQuery();
  const tbody = $("exchanges");
  const { exchanges } = await json(`/api/exchanges?${q}`);
  fill(
    tbody,
    exchanges.map((e) => exchangeRow(e, false)),
  );
  source = new EventSource(`/api/exchanges/stream?${q}`);
  const state = $("stream-state");
  let first = true;
  source.addEventListener("ready", async () => {
    state.textContent = "live";
    state.className = "pill ok";
    // After a reconnection, what happened while the page was away is read again.
    if (!first) {
      const again = await json(`/api/exchanges?${q}`);
      fill(
        tbody,
        again.exchanges.map((e) => exchangeRow(e, false)),
      );
    }
    first = false;
  });
  source.addEventListener("exchange", (m) => {
    tbody.prepend(exchangeRow(JSON.parse(m.data), true));
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
  });
  source.addEventListener("dropped", (m) => {
    notice(`${JSON.parse(m.data).count} exchange(s) not shown: the page fell behind`, true);
  });
  source.onerror = () => {
    state.textContent = "reconnecting";
    state.className = "pill bad";
  };
}

function showToken() {
  $("token-state").textContent = sessionStorage.getItem("slapenir-token") ? "set" : "not set";
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("slapenir-token", $("token").value.trim());
    $("token").value = "";
    showToken();
  });
  $("reload").addEventListener("click", async () => {
    const r = await act("/reload", "reload");
    if (!r) return;
    const names = (l) => (l.length ? l.join(", ") : "nothing");
    notice(
      `configuration reloaded: changed ${names(r.applied)}; credentials added ${names(r.credentials.added)}, removed ${names(r.credentials.removed)}, changed ${names(r.credentials.changed)}${r.restart.length ? `; at the next start: ${names(r.restart)}` : ""}`,
    );
    refresh();
  });
  $("filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void follow();
  });
  showToken();
  void refresh();
  void follow();
  setInterval(refresh, 2000);
});
