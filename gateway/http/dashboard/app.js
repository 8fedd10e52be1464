// The dashboard: polls the gateway's JSON routes and draws what they say. Every field is
// optional: a panel whose data is absent says so instead of failing (drift, shadow, the
// sequential test and lineage fields appear only on gateways that have them).
"use strict";

const POLL_MS = Number(new URLSearchParams(location.search).get("interval_ms")) || 1000;
const KEEP = 120; // points per time series: two minutes at the default pace
const SIDE_KEYS = ["requests", "errors", "error_rate", "p99_ms", "labelled", "accuracy"];
const CANARY_KNOWN = new Set(["version", "stable_version", "state", "fraction", "reason", "elapsed_seconds",
  "processes", "canary", "stable", "name"]);

const page = {
  model: new URLSearchParams(location.search).get("model"),
  key: sessionStorage.getItem("tunegate-key") || "",
  header: "X-API-Key",
  keyRequired: true,
  overview: null,
  stats: [], // [{t, versions: {v: {count, ns}}}]
  series: {}, // model -> {name -> [[t, value]]}
  jobId: null,
  polls: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) { node.textContent = String(text); }
  for (const [k, v] of Object.entries(attrs)) { node.setAttribute(k, v); }
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) { return "–"; }
  if (typeof value === "number") { return Number.isInteger(value) ? String(value) : value.toPrecision(4); }
  if (typeof value === "object") { return JSON.stringify(value); }
  return String(value);
}

// Scalar leaves of a nested object as [path, value], a few levels deep.
function leaves(obj, prefix = "", depth = 3) {
  if (obj === null || typeof obj !== "object" || depth === 0) { return [[prefix, obj]]; }
  return Object.entries(obj).flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k, depth - 1));
}

function fillList(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", k), el("dd", fmt(v))]));
}

// One exchange; never throws on an HTTP status, only when the gateway cannot be reached.
async function call(path, { method = "GET", body, auth = false } = {}) {
  const headers = {};
  if (body !== undefined) { headers["Content-Type"] = "application/json"; }
  if (auth && page.key) { headers[page.header] = page.key; }
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  return { status: response.status, ok: response.ok, data };
}

// Protected reads are only tried when they can succeed: a refused one is an error in the console.
const canRead = () => !page.keyRequired || Boolean(page.key);

function record(name, t, value) {
  if (typeof value !== "number" || !Number.isFinite(value)) { return; }
  const byModel = (page.series[page.model] ||= {});
  const points = (byModel[name] ||= []);
  points.push([t, value]);
  if (points.length > KEEP) { points.splice(0, points.length - KEEP); }
}

function seriesMatching(prefix) {
  const byModel = page.series[page.model] || {};
  return Object.entries(byModel).filter(([k]) => k.startsWith(prefix))
    .map(([k, points]) => ({ name: k.slice(prefix.length), points }));
}

// ------------------------------------------------------------------------- models
function renderModels() {
  const nav = $("models");
  const names = (page.overview?.models || []).map((m) => m.name);
  if (!page.model || !names.includes(page.model)) { page.model = names[0] || null; }
  nav.replaceChildren(...names.map((name) => {
    const button = el("button", name, { type: "button", "data-model": name, "aria-current": String(name === page.model) });
    button.addEventListener("click", () => { page.model = name; page.jobId = null; page.stats = []; refresh(); });
    return button;
  }));
  $("model-name").textContent = page.model || "(no models)";
}

function roleOf(model, v, canary) {
  if (v.removed) { return "removed"; } // retention removed its files; the lineage log explains it
  if (v.status === "rejected") { return "rejected"; }
  if (canary && canary.version === v.version) { return canary.state === "shadow" ? "shadow" : "canary"; }
  if (model.canary === v.version) { return "canary"; }
  if (model.stable === v.version) { return "stable"; }
  return (model.serving || []).includes(v.version) ? "serving" : "retired";
}

function madeBy(v) {
  const t = v.extra?.training;
  if (t) { return `fine-tune${t.world_size ? ` ×${t.world_size}` : ""}${t.mode ? ` (${t.mode})` : ""}`; }
  return v.source_format ? `converted (${v.source_format})` : "published";
}

function renderVersions(model, canary, states) {
  const rows = [...(model?.versions || [])].reverse().map((v) => {
    const role = roleOf(model, v, canary);
    const decision = v.extra?.canary;
    const tr = el("tr", undefined, { "data-version": v.version, "data-role": role });
    tr.append(el("td", v.version), el("td", role, { class: `role-${role}` }),
      el("td", states[v.version] || "–"), el("td", (v.created_at || "").replace("T", " ").slice(0, 19)),
      el("td", v.parent_version ?? "–"), el("td", v.data_digest ? v.data_digest.slice(0, 12) : "–", { title: v.data_digest || "" }),
      gateCell(v.metrics), decisionCell(v.extra?.shadow), decisionCell(decision),
      el("td", v.error || madeBy(v), { title: JSON.stringify(v.extra?.training || {}) }));
    return tr;
  });
  $("versions").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------------- canary
function renderCanary(params, t) {
  const live = params.canary;
  const panel = $("canary-panel");
  panel.dataset.version = live ? live.version : "";
  if (!live) {
    $("canary-state").textContent = "no canary on trial";
    $("canary-numbers").replaceChildren(el("thead"), el("tbody"));
    fillList($("canary-test"), []);
  } else {
    $("canary-state").textContent = `version ${live.version} (${live.state}) vs stable ${live.stable_version}: `
      + `${Math.round((live.fraction ?? 0) * 100)}% of traffic, ${fmt(live.elapsed_seconds)} s, ${fmt(live.processes)} process(es)`
      + (live.reason ? ` — ${live.reason}` : "");
    const head = el("tr");
    head.append(el("th", ""), ...SIDE_KEYS.map((k) => el("th", k)));
    const body = ["canary", "stable"].map((side) => {
      const tr = el("tr", undefined, { "data-side": side });
      tr.append(el("th", `${side} v${side === "canary" ? live.version : live.stable_version}`),
        ...SIDE_KEYS.map((k) => el("td", fmt(live[side]?.[k]), { "data-key": k })));
      return tr;
    });
    const thead = el("thead"); thead.append(head);
    const tbody = el("tbody"); tbody.append(...body);
    $("canary-numbers").replaceChildren(thead, tbody);
    // The sequential test's numbers (estimate, interval, labels still needed...), whatever they are called.
    const test = Object.entries(live).filter(([k]) => !CANARY_KNOWN.has(k)).flatMap(([k, v]) => leaves(v, k));
    fillList($("canary-test"), test);
    record(`canary.v${live.version} accuracy`, t, live.canary?.accuracy);
    record(`canary.v${live.stable_version} accuracy`, t, live.stable?.accuracy);
    record(`canary.v${live.version} error rate`, t, live.canary?.error_rate);
    // One scale per chart: proportions (estimate, interval) beside the accuracies; counts and
    // log-likelihood ratios stay in the list above.
    for (const [k, v] of test) { if (/estimate|interval/.test(k)) { record(`canary.${k}`, t, v); } }
  }
  drawLines($("canary-chart"), seriesMatching("canary."), { title: "canary test over time", xLabel: "time (s)", range: [0, 1] });
  const last = params.last_canary;
  const why = (last?.reason || "").replace(VERDICT_WORDS, "");
  $("last-canary").textContent = last ? `last decision: version ${last.version} ${last.state}${why ? " — " + why : ""}` : "";
  fillList($("shadow"), params.shadow ? leaves(params.shadow, "shadow") : []);
}

// -------------------------------------------------------------------------- drift
function renderDrift(drift, t) {
  if (!drift) {
    $("drift-note").textContent = "no drift reported for this model";
  } else {
    const { top, ...rest } = drift;
    $("drift-note").textContent = drift.error ? `drift: ${drift.error}`
      : `score ${drift.score ?? "not yet (too few rows)"} (threshold ${fmt(drift.threshold)}) over ${fmt(drift.rows)} sampled rows`;
    fillList($("drift-now"), [...leaves(rest), ...(Array.isArray(top) ? top : []).map((f) =>
      [`feature ${f.feature}`, `PSI ${fmt(f.psi)} · KS ${fmt(f.ks)}`])]);
    record("drift.score", t, drift.score);
    // Per feature by its name, not its rank: the most-moved features change places.
    for (const f of Array.isArray(top) ? top.slice(0, 6) : []) { record(`drift.feature ${f.feature} PSI`, t, f.psi); }
  }
  drawLines($("drift-chart"), seriesMatching("drift."), { title: "drift per feature", xLabel: "time (s)" });
}

// ------------------------------------------------------------------------ traffic
function renderTraffic(stats, t) {
  const versions = {};
  for (const s of stats?.model_stats || []) {
    if (s.name !== page.model) { continue; }
    const ok = s.inference_stats?.success || {}, failed = s.inference_stats?.fail || {};
    versions[s.version] = { count: (ok.count || 0) + (failed.count || 0), ns: ok.ns || 0, ok: ok.count || 0 };
  }
  const prev = page.stats[page.stats.length - 1];
  page.stats.push({ t, versions });
  if (page.stats.length > KEEP) { page.stats.shift(); }
  if (prev) {
    // Cumulative counters differenced between polls: requests/s and mean ms per request.
    const dt = t - prev.t;
    for (const [v, now] of Object.entries(versions)) {
      const before = prev.versions[v];
      if (!before || dt <= 0) { continue; }
      record(`rps.v${v}`, t, (now.count - before.count) / dt);
      const done = now.ok - before.ok;
      if (done > 0) { record(`ms.v${v}`, t, (now.ns - before.ns) / done / 1e6); }
    }
  }
  drawLines($("throughput-chart"), seriesMatching("rps."), { title: "throughput (requests/s)", xLabel: "time (s)" });
  drawLines($("latency-chart"), seriesMatching("ms."), { title: "latency (mean ms per request)", xLabel: "time (s)" });
}

// ------------------------------------------------------------- feedback and jobs
function feedbackCounts(metricsText) {
  const counts = {};
  const pattern = /^tunegate_feedback_([a-z_]+?)(?:_total)?\{([^}]*)\} (\S+)$/gm;
  for (const [, name, labels, value] of metricsText.matchAll(pattern)) {
    if (!labels.includes(`model="${page.model}"`)) { continue; }
    const kind = labels.match(/kind="([^"]*)"/); // tunegate_feedback_rows: recent, and the replay reservoir
    counts[`feedback ${name.replaceAll("_", " ")}${kind ? ` (${kind[1]})` : ""}`] = Number(value);
  }
  return counts;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i += 1) { n /= 1024; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// The model's disk use by part, as the retention duty last measured it (tunegate_repository_bytes).
function diskUse(metricsText) {
  const parts = {};
  for (const [, labels, value] of metricsText.matchAll(/^tunegate_repository_bytes\{([^}]*)\} (\S+)$/gm)) {
    const part = labels.match(/part="([^"]*)"/);
    if (labels.includes(`model="${page.model}"`) && part) { parts[part[1]] = Number(value); }
  }
  const total = Object.values(parts).reduce((a, b) => a + b, 0);
  if (!Object.keys(parts).length) { return []; }
  return [["disk", `${bytes(total)} (${Object.entries(parts).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${bytes(v)}`).join(", ")})`]];
}

function trainingCurve(history, title) {
  const pick = (key) => ({ name: key, points: (history || []).filter((h) => typeof h[key] === "number").map((h) => [h.epoch, h[key]]) });
  drawLines($("training-chart"), ["loss", "val_loss", "accuracy", "val_accuracy"].map(pick), { title, xLabel: "epoch" });
}

async function renderLoop(params, model) {
  const metrics = await fetch("/metrics").then((r) => (r.ok ? r.text() : "")).catch(() => "");
  const last = params.last_finetune_job;
  fillList($("feedback"), [["trigger", params.finetune_trigger], ["samples since last job", params.feedback_samples_since_job],
    ...Object.entries(feedbackCounts(metrics)), ...diskUse(metrics), ["running job", params.finetune_job],
    ["last job", last ? `${last.job_id}: ${last.state}${last.message ? " — " + last.message : ""}` : null]]);
  page.jobId = params.finetune_job || last?.job_id || null;
  let job = null;
  if (page.jobId && canRead()) {
    const r = await call(`/v2/models/${encodeURIComponent(page.model)}/finetune/${encodeURIComponent(page.jobId)}`, { auth: true });
    job = r.ok ? r.data : null;
  }
  if (job) {
    fillList($("job"), [["job", job.job_id], ["state", job.state], ["started", job.started_at], ["finished", job.finished_at],
      ["exit code", job.exit_code], ["message", job.message]]);
    $("job-log").textContent = trainerLines(job.log_tail || []).join("\n");
  } else {
    fillList($("job"), page.jobId && !canRead() ? [["job", `${page.jobId} (details need the API key)`]] : []);
    $("job-log").textContent = "";
  }
  const summary = job?.result?.summary || job?.result?.details?.summary;
  if (summary?.history) {
    trainingCurve(summary.history, `training curve of job ${job.job_id}`);
  } else {
    const trained = [...(model?.versions || [])].reverse().find((v) => v.history && v.history.length);
    trainingCurve(trained?.history, trained ? `training curve of version ${trained.version}` : "training curve");
  }
}

async function renderLeader() {
  const pill = $("leader");
  if (!canRead()) { pill.textContent = "leader: (API key needed)"; return; }
  const r = await call("/v2/loop/leader", { auth: true });
  if (!r.ok) { pill.textContent = `leader: ${r.data?.error || r.status}`; return; }
  const d = r.data;
  pill.textContent = `leader: ${d.holder || "none"}${d.leader ? " (this process)" : ""} · term ${fmt(d.terms)}`;
  pill.title = `this process: ${d.identity}; elected at ${d.elected_at ? new Date(d.elected_at * 1000).toISOString() : "–"}`;
}

// --------------------------------------------------------------------- the poll
async function refresh() {
  if (page.busy) { return; } // an action's refresh and the poll's never interleave their samples
  page.busy = true;
  const t = performance.now() / 1000;
  try {
    const overview = await call("/dashboard/api/models");
    if (!overview.ok) { throw new Error(overview.data?.error || `overview: ${overview.status}`); }
    page.overview = overview.data;
    page.keyRequired = overview.data.api_key_required;
    page.header = overview.data.api_key_header || page.header;
    renderModels();
    const model = page.overview.models.find((m) => m.name === page.model);
    if (!model) { $("updated").textContent = "no models in the repository"; return; }
    const m = encodeURIComponent(page.model);
    const [meta, index, stats] = await Promise.all([
      call(`/v2/models/${m}`), call("/v2/repository/index", { method: "POST", body: {} }), call(`/v2/models/${m}/stats`)]);
    const params = meta.ok ? meta.data.parameters || {} : {};
    if (canRead()) {
      const canary = await call(`/v2/models/${m}/canary`, { auth: true });
      if (canary.ok) { Object.assign(params, canary.data); }
    }
    const states = Object.fromEntries((index.data || []).filter((e) => e.name === page.model).map((e) => [e.version, e.state]));
    renderVersions(model, params.canary, states);
    renderCanary(params, t);
    renderDrift(params.drift, t);
    renderTraffic(stats.ok ? stats.data : null, t);
    await Promise.all([renderLoop(params, model), renderLeader()]);
    page.polls += 1;
    $("updated").dataset.polls = page.polls;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}${meta.ok ? "" : ` · model: ${meta.data?.error || meta.status}`}`;
    $("error").textContent = "";
  } catch (exc) {
    $("error").textContent = `cannot reach the gateway: ${exc.message}`;
  } finally {
    page.busy = false;
  }
}

// ------------------------------------------------------------------- actions
function summary(data) {
  if (data?.job_id) { return `job ${data.job_id} ${data.state || ""}`; }
  if (data?.state) { return `version ${data.version} ${data.state}${data.reason ? " — " + data.reason : ""}`; }
  return JSON.stringify(data).slice(0, 160);
}

async function act(label, path) {
  const out = $("action-result");
  out.className = "";
  try {
    const r = await call(path, { method: "POST", auth: true });
    out.textContent = r.ok ? `${label}: done — ${summary(r.data)}` : `${label}: refused (${r.status}) — ${r.data?.error || ""}`;
    out.className = r.ok ? "ok" : "error";
    out.dataset.status = r.status;
  } catch (exc) {
    out.textContent = `${label}: ${exc.message}`;
    out.className = "error";
  }
  refresh();
}

function wire() {
  const model = () => encodeURIComponent(page.model || "");
  $("promote").addEventListener("click", () => act("promote", `/v2/models/${model()}/canary/promote`));
  $("rollback").addEventListener("click", () => act("rollback", `/v2/models/${model()}/canary/rollback`));
  $("finetune-start").addEventListener("click", () => act("start fine-tune", `/v2/models/${model()}/finetune`));
  $("finetune-cancel").addEventListener("click", () => {
    if (page.jobId) { act("cancel", `/v2/models/${model()}/finetune/${encodeURIComponent(page.jobId)}/cancel`); }
  });
  $("key").value = page.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    page.key = $("key").value.trim();
    // The tab's session only: the key never outlives it, and is never put in a URL.
    if (page.key) { sessionStorage.setItem("tunegate-key", page.key); } else { sessionStorage.removeItem("tunegate-key"); }
    refresh();
  });
  call("/v2").then((r) => { if (r.ok) { $("server").textContent = `${r.data.name} ${r.data.version}`; } }).catch(() => {});
}

// One poll at a time: a slow gateway slows the page instead of piling up requests.
async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}

wire();
loop();
