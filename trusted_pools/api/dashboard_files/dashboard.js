// The trusted pools dashboard: reads trusted-pools-api's v1 API with the
// user's Keystone token, and polls it so changes show without a reload.
// Hand-written on purpose (see trusted_pools/api/dashboard.py): no build
// step, no library, nothing loaded from elsewhere. Everything from the API
// is put in the page as text (textContent), never as HTML.

const API_VERSION = "trusted-pools latest";
const POLL_MS = 3000;
const TOKEN_KEY = "trusted-pools-token";
const HISTORY_LIMIT = 200;
// Problems first: stale and unknown, then untrusted, no verdict, trusted.
const RANK = { stale: 0, unknown: 1, untrusted: 2, none: 3, trusted: 4 };
const SVG_NS = "http://www.w3.org/2000/svg";

// The API's root: the page lives at <root>/dashboard/.
const ROOT = new URL("../", location.href.split("#")[0]);

let serverNow = () => Date.now();
let busy = false;
let again = false;

class ApiError extends Error {
  constructor(status, code, detail) {
    super(`${status} ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

// --- the token -------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function takeTokenFromFragment() {
  // #token=... (e.g. from a script that opens the page) never reaches the
  // server or its logs; it is moved to this tab's storage at once.
  const match = location.hash.match(/^#token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }
}

// --- API -------------------------------------------------------------------

async function api(path) {
  const url = /^https?:/.test(path) ? new URL(path) : new URL(path.replace(/^\//, ""), ROOT);
  if (url.origin !== location.origin) throw new ApiError(0, "", "refused a link to another origin");
  const response = await fetch(url, {
    cache: "no-store",
    headers: { "X-Auth-Token": token() || "", "OpenStack-API-Version": API_VERSION,
               "Accept": "application/json" },
  });
  const date = Date.parse(response.headers.get("Date") || "");
  if (!Number.isNaN(date)) {
    const skew = date - Date.now();
    serverNow = () => Date.now() + skew;
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const err = body && body.errors && body.errors[0];
    throw new ApiError(response.status, err ? err.code : "",
                       err ? `${err.title}: ${err.detail}` : response.statusText);
  }
  return body;
}

async function allHosts() {
  const hosts = [];
  let next = "/v1/hosts?limit=1000";
  while (next) {
    const page = await api(next);
    hosts.push(...page.hosts);
    const link = (page.links || []).find((l) => l.rel === "next");
    next = link ? link.href : null;
  }
  return hosts;
}

// --- DOM helpers -----------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function badge(status) {
  return el("span", { class: `badge status-${status}`, "data-status": status }, status);
}

function when(iso) {
  if (!iso) return "-";
  const date = new Date(iso);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function statusOf(status, expiresAt) {
  if (!status) return "none";
  if (expiresAt && Date.parse(expiresAt) <= serverNow()) return "stale";
  return status;
}

function table(columns, rows, rowAttrs = () => ({})) {
  // Short cells (names, badges, times) stay on one line; long text wraps.
  const cellClass = (cell) => (cell instanceof Node || String(cell).length <= 24 ? "nowrap" : null);
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((row, i) => el("tr", rowAttrs(i),
      row.map((cell) => el("td", { class: cellClass(cell) }, cell))))));
}

function showError(error) {
  const box = document.getElementById("error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = error instanceof ApiError && error.status
    ? `${error.status} ${error.detail}` : `Error: ${error.message}`;
  box.dataset.status = error.status || "";
}

// --- views -----------------------------------------------------------------

async function poolView() {
  const [hosts, newest] = await Promise.all([allHosts(), api("/v1/verdicts")]);
  const reasons = {};
  for (const v of newest.verdicts) reasons[v.host] = v.reasons || [];
  const shown = hosts.map((h) => ({ ...h, shown: statusOf(h.status, h.expires_at) }));
  shown.sort((a, b) => RANK[a.shown] - RANK[b.shown] || a.name.localeCompare(b.name));

  const byStatus = {};
  const byLevel = {};
  for (const h of shown) {
    byStatus[h.shown] = (byStatus[h.shown] || 0) + 1;
    const level = h.level === null ? "-" : h.level;
    byLevel[level] = (byLevel[level] || 0) + 1;
  }
  const counts = el("div", { class: "counts", id: "counts" },
    el("div", { class: "count", "data-count": "total" }, el("b", {}, shown.length), "hosts"),
    Object.keys(RANK).map((s) => el("div", { class: "count", "data-count": s },
      el("b", {}, byStatus[s] || 0), s)),
    Object.keys(byLevel).sort().map((l) => el("div", { class: "count", "data-level": l },
      el("b", {}, byLevel[l]), `level ${l}`)));
  const rows = shown.map((h) => [
    el("a", { href: `#/hosts/${encodeURIComponent(h.name)}` }, h.name),
    badge(h.shown), h.level === null ? "-" : String(h.level), h.group, h.state,
    h.conductor || "-", when(h.issued_at), when(h.expires_at),
    h.shown === "trusted" ? "" : (reasons[h.name] || []).join("; "),
  ]);
  return [el("h2", {}, "Pool"), counts,
    table(["Host", "Status", "Level", "Group", "State", "Conductor", "Verdict issued",
           "Expires", "Reasons"], rows,
          (i) => ({ "data-host": shown[i].name, "data-status": shown[i].shown }))];
}

function historyPlot(history) {
  // Level (0-4) over time; each verdict a point coloured by its status.
  const width = 900, height = 220, left = 40, right = 15, top = 15, bottom = 30;
  const plot = svg("svg", { class: "history", viewBox: `0 0 ${width} ${height}`,
                            role: "img", "aria-label": "trust level over time" });
  const points = history.map((v) => ({ t: Date.parse(v.issued_at), level: v.level, status: v.status }))
    .sort((a, b) => a.t - b.t);
  const t0 = points.length ? points[0].t : 0;
  const t1 = points.length ? points[points.length - 1].t : 1;
  const x = (t) => left + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (width - left - right);
  const y = (level) => top + (1 - level / 4) * (height - top - bottom);
  for (let level = 0; level <= 4; level++) {
    plot.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: y(level), y2: y(level) }));
    plot.append(svg("text", { x: 5, y: y(level) + 4 }, `L${level}`));
  }
  if (points.length) {
    plot.append(svg("text", { x: left, y: height - 8 }, when(new Date(t0).toISOString())));
    plot.append(svg("text", { x: width - right, y: height - 8, "text-anchor": "end" },
                    when(new Date(t1).toISOString())));
    plot.append(svg("polyline", { class: "line",
      points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.level).toFixed(1)}`).join(" ") }));
  }
  for (const p of points) {
    const dot = svg("circle", { class: `point status-${p.status}`, cx: x(p.t).toFixed(1),
                                cy: y(p.level).toFixed(1), r: 4 });
    dot.append(svg("title", {}, `${when(new Date(p.t).toISOString())}: ${p.status}, level ${p.level}`));
    plot.append(dot);
  }
  return plot;
}

function cellText(value) {
  return value === null || value === undefined ? "-"
    : typeof value === "object" ? JSON.stringify(value) : String(value);
}

function genericList(body) {
  // The list in an answer whose shape this page does not know in advance
  // (APIs added later): the first array at the top or one level down,
  // with the scalar fields next to it shown above the table.
  let holder = body || {};
  let key = Object.keys(holder).find((k) => Array.isArray(holder[k]));
  if (!key) {
    const inner = Object.keys(holder).find((k) => holder[k] && typeof holder[k] === "object");
    if (inner) {
      holder = holder[inner];
      key = Object.keys(holder).find((k) => Array.isArray(holder[k]));
    }
  }
  const facts = Object.entries(holder).filter(([, v]) => v === null || typeof v !== "object");
  const items = key ? holder[key] : [];
  const parts = [];
  if (facts.length) {
    parts.push(el("dl", {}, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, cellText(v))])));
  }
  if (!items.length) {
    parts.push(el("p", { class: "muted" }, "None."));
  } else if (items.every((item) => item && typeof item === "object" && !Array.isArray(item))) {
    const columns = [...new Set(items.flatMap((item) => Object.keys(item)))];
    parts.push(table(columns, items.map((item) => columns.map((c) => cellText(item[c])))));
  } else {
    parts.push(el("ul", {}, items.map((item) => el("li", {}, cellText(item)))));
  }
  return el("div", {}, parts);
}

async function optionalSection(title, path, id) {
  // Sections whose API may not exist in this deployment (yet): a 404 for
  // the path itself says so; never made-up data.
  const section = el("section", { id }, el("h3", {}, title));
  try {
    section.append(genericList(await api(path)));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && error.code === "trusted-pools.resource.not_found") {
      section.append(el("p", { class: "unavailable", "data-unavailable": "true" },
        `Not available: this API has no ${path.split("?")[0]} (404).`));
    } else if (error instanceof ApiError && error.status) {
      section.append(el("p", { class: "error" }, `${error.status} ${error.detail}`));
    } else {
      throw error;
    }
  }
  return section;
}

function nextMarker(links) {
  // The marker of the API's "next" link (same origin only), or null.
  const link = (links || []).find((l) => l.rel === "next");
  if (!link) return null;
  const url = new URL(link.href, ROOT);
  return url.origin === location.origin ? url.searchParams.get("marker") : null;
}

function pager(base, marker, older) {
  // "Newest" and "Older" links of a paged view (the marker in the hash,
  // so the page stays put while it refreshes).
  return el("p", { class: "pager" },
    marker ? el("a", { href: base, "data-page": "newest" }, "\u2190 Newest") : null,
    marker && older ? " \u00b7 " : null,
    older ? el("a", { href: `${base}?before=${encodeURIComponent(older)}`, "data-page": "older" },
               "Older \u2192") : null);
}

async function keyReleasesOf(host) {
  // This host's last key releases and refusals (microversion 1.4).
  const query = `/v1/key-releases?limit=10&host=${encodeURIComponent(host)}`;
  const section = el("section", { id: "host-key-releases" }, el("h3", {}, "Key releases and refusals"));
  try {
    section.append(keyReleaseTable((await api(query)).key_releases, false));
  } catch (error) {
    if (!(error instanceof ApiError && error.status)) throw error;
    section.append(el("p", { class: error.status === 404 ? "unavailable" : "error" },
      error.status === 404 ? "Not available: this API has no /v1/key-releases (404)."
                           : `${error.status} ${error.detail}`));
  }
  return section;
}

async function hostView(name, before) {
  const path = `/v1/hosts/${encodeURIComponent(name)}`;
  const history = `${path}/verdicts?limit=${HISTORY_LIMIT}` +
    (before ? `&marker=${encodeURIComponent(before)}` : "");
  const [{ host }, page] = await Promise.all([api(path), api(history)]);
  const verdicts = page.verdicts;
  const shown = statusOf(host.status, host.expires_at);
  const vector = Object.entries(host.vector || {});
  const versions = Object.entries(host.policy_versions || {}).map(([k, v]) => `${k} v${v}`).join(", ");
  return [
    el("h2", {}, "Host ", el("span", { id: "host-name" }, host.name), " ", badge(shown)),
    el("dl", { id: "host-facts" },
      el("dt", {}, "Status"), el("dd", { id: "host-status" }, shown),
      el("dt", {}, "Level"), el("dd", { id: "host-level" }, host.level === null ? "-" : String(host.level)),
      el("dt", {}, "Group"), el("dd", {}, host.group),
      el("dt", {}, "Enrollment"), el("dd", {}, host.state),
      el("dt", {}, "Conductor"), el("dd", {}, host.conductor || "-"),
      el("dt", {}, "Verdict issued"), el("dd", {}, when(host.issued_at)),
      el("dt", {}, "Expires"), el("dd", {}, when(host.expires_at)),
      el("dt", {}, "Policies"), el("dd", {}, versions || "none"),
      el("dt", {}, "EK (SHA-256)"), el("dd", {}, host.ek_sha256 || "-"),
      el("dt", {}, "AK name"), el("dd", {}, host.ak_name || "-")),
    el("h3", {}, "Reasons"),
    host.reasons.length
      ? el("ul", { class: "reasons", id: "host-reasons" }, host.reasons.map((r) => el("li", {}, String(r))))
      : el("p", { class: "muted", id: "host-reasons" }, "None."),
    el("h3", {}, "Trustworthiness vector (AR4SI)"),
    vector.length ? table(["Claim", "Value"], vector.map(([k, v]) => [k, String(v)]))
                  : el("p", { class: "muted" }, "None."),
    el("h3", {}, before ? `Level over time (${verdicts.length} older verdicts)`
                        : `Level over time (last ${verdicts.length} verdicts)`),
    historyPlot(verdicts),
    pager(`#/hosts/${encodeURIComponent(name)}`, before, nextMarker(page.links)),
    table(["Issued", "Status", "Level", "Reasons"],
          verdicts.slice(0, 20).map((v) => [when(v.issued_at), badge(v.status), String(v.level),
                                            (v.reasons || []).join("; ")])),
    await optionalSection("vTPMs", `${path}/vtpms`, "vtpms"),
    await keyReleasesOf(name),
    el("h3", {}, "Distrust actions"),
    await pagedSection("host-distrust-actions",
                       `/v1/distrust-actions?limit=10&host=${encodeURIComponent(name)}`,
                       "distrust_actions", (rows) => distrustTable(rows, false)),
  ];
}

async function policiesView() {
  // GET /v1/groups (microversion 1.2): every group with its host count and
  // its assignments, in one call.
  const [{ policies }, { groups }] = await Promise.all([
    api("/v1/policies?limit=1000"), api("/v1/groups")]);
  const rows = [];
  for (const group of groups) {
    if (!group.assignments.length) rows.push([group.name, String(group.hosts), "-", "-"]);
    for (const a of group.assignments) {
      rows.push([group.name, String(group.hosts), a.policy,
                 a.version === null ? "latest" : String(a.version)]);
    }
  }
  return [el("h2", {}, "Policies"),
    table(["Name", "Kind", "Version", "Created", "By"],
          policies.map((p) => [p.name, p.kind, String(p.version), when(p.created_at), p.created_by || "-"])),
    el("h3", {}, "Groups and their policies"),
    rows.length ? table(["Group", "Hosts", "Policy", "Version"], rows, (i) => ({ "data-group": rows[i][0] }))
                : el("p", { class: "muted" }, "None.")];
}

async function migrationsView() {
  return [el("h2", {}, "vTPM migrations"),
    await optionalSection("Migrations", "/v1/vtpm-migrations", "migrations")];
}

function keyReleaseTable(rows, withHost = true) {
  if (!rows.length) return el("p", { class: "muted" }, "None.");
  const columns = ["When", ...(withHost ? ["Host"] : []), "Outcome", "Standing", "Level",
                   "Reason", "Instance", "Secret", "Asked by"];
  return table(columns, rows.map((r) => [
    when(r.created_at),
    ...(withHost ? [el("a", { href: `#/hosts/${encodeURIComponent(r.host)}` }, r.host)] : []),
    el("span", { class: `badge outcome-${r.outcome}`, "data-outcome": r.outcome }, r.outcome),
    badge(r.status), String(r.level), `${r.reason_code}: ${r.reason}`,
    r.owner || "-", r.secret_id, r.requested_by || "-",
  ]), (i) => ({ "data-key-release": rows[i].id, "data-outcome": rows[i].outcome,
                "data-host": rows[i].host }));
}

async function keyReleasesView(before) {
  // Newest first, 100 a page; "Older" follows the API's next link.
  const heading = el("h2", {}, "Key releases and refusals");
  const section = el("section", { id: "key-releases" });
  try {
    const page = await api("/v1/key-releases?limit=100" +
                           (before ? `&marker=${encodeURIComponent(before)}` : ""));
    const rows = page.key_releases;
    const released = rows.filter((r) => r.outcome === "released").length;
    section.append(
      el("div", { class: "counts" },
        el("div", { class: "count", "data-count": "released" }, el("b", {}, released), "released"),
        el("div", { class: "count", "data-count": "refused" }, el("b", {}, rows.length - released),
           "refused")),
      keyReleaseTable(rows), pager("#/key-releases", before, nextMarker(page.links)));
  } catch (error) {
    if (!(error instanceof ApiError && error.status)) throw error;
    if (error.status === 404 && error.code === "trusted-pools.resource.not_found") {
      section.append(el("p", { class: "unavailable", "data-unavailable": "true" },
        "Not available: this API has no /v1/key-releases (404)."));
    } else {
      section.append(el("p", { class: "error" }, `${error.status} ${error.detail}`));
    }
  }
  return [heading, section];
}

function distrustTable(rows, withHost = true) {
  if (!rows.length) return el("p", { class: "muted" }, "None reported.");
  const columns = ["Reported", ...(withHost ? ["Host"] : []), "Action", "Outcome", "Detail",
                   "Acted on", "Verdict", "Reported by"];
  return table(columns, rows.map((r) => [
    when(r.created_at),
    ...(withHost ? [el("a", { href: `#/hosts/${encodeURIComponent(r.host)}` }, r.host)] : []),
    r.action,
    el("span", { class: `badge action-${r.outcome}`, "data-outcome": r.outcome }, r.outcome),
    r.detail, (r.items || []).map((item) => item.join(": ")).join("; ") || "-",
    r.status ? `${r.status} (${r.verdict || "-"})` : "-", r.reported_by,
  ]), (i) => ({ "data-distrust-action": rows[i].id, "data-host": rows[i].host }));
}

async function pagedSection(id, path, key, render, base, before) {
  // A paged list of the 1.4 API (newest first), or what the API said.
  const section = el("section", { id });
  try {
    const page = await api(path + (before ? `&marker=${encodeURIComponent(before)}` : ""));
    section.append(render(page[key]));
    if (base) section.append(pager(base, before, nextMarker(page.links)));
  } catch (error) {
    if (!(error instanceof ApiError && error.status)) throw error;
    if (error.status === 404 && error.code === "trusted-pools.resource.not_found") {
      section.append(el("p", { class: "unavailable", "data-unavailable": "true" },
        `Not available: this API has no ${path.split("?")[0]} (404).`));
    } else {
      section.append(el("p", { class: "error" }, `${error.status} ${error.detail}`));
    }
  }
  return section;
}

async function distrustView(before) {
  return [el("h2", {}, "Distrust actions"),
    el("p", { class: "muted" },
       "What trusted-pools-placement-sync reported doing when a host stopped being trusted " +
       "(notify, disable its nova-compute service, live-migrate its trust-requiring instances), " +
       "with the user that reported it. A report, not evidence."),
    await pagedSection("distrust-actions", "/v1/distrust-actions?limit=100", "distrust_actions",
                       (rows) => distrustTable(rows), "#/distrust", before)];
}

function route() {
  // #/path?before=<marker>: the marker of a paged view.
  const [raw, query] = location.hash.replace(/^#/, "").split("?");
  const hash = decodeURIComponent(raw) || "/";
  const before = new URLSearchParams(query || "").get("before");
  if (hash.startsWith("/hosts/")) return () => hostView(hash.slice("/hosts/".length), before);
  if (hash === "/policies") return policiesView;
  if (hash === "/migrations") return migrationsView;
  if (hash === "/key-releases") return () => keyReleasesView(before);
  if (hash === "/distrust") return () => distrustView(before);
  return poolView;
}

// --- refresh loop ----------------------------------------------------------

async function refresh() {
  if (busy) { again = true; return; }
  const login = document.getElementById("login");
  const view = document.getElementById("view");
  if (!token()) {
    login.hidden = false;
    document.getElementById("sign-out").hidden = true;
    view.replaceChildren();
    return;
  }
  login.hidden = true;
  document.getElementById("sign-out").hidden = false;
  busy = true;
  try {
    const nodes = await route()();
    view.replaceChildren(...nodes);
    showError(null);
    document.getElementById("updated").textContent =
      `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      login.hidden = false;
    }
    if (error instanceof ApiError && error.status === 403) {
      view.replaceChildren(el("p", { id: "forbidden" },
        "This token's roles may not read the pool: ask for the reader role on a system-scoped token."));
    }
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

function start() {
  takeTokenFromFragment();
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const field = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, field.value.trim());
    field.value = "";
    refresh();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showError(null);
    refresh();
  });
  window.addEventListener("hashchange", refresh);
  refresh();
  setInterval(refresh, POLL_MS);
}

start();
