// The dashboard's compact cells and filtered log: what a table cell or the job's log tail shows
// of a report, kept apart from app.js (the polling and the panels). Loaded before app.js.
"use strict";

// A verdict cell: one word in the cell, the whole report on hover. Reports often repeat their
// verdict in their text ("passed: gate passed: loss ..."), so the detail line drops any
// leading verdict words before it is shown beside the word.
const VERDICT_WORDS = /^(?:\s*(?:gate|shadow|canary|passed|failed|insufficient|promoted|rolled[_ ]back|rejected)\b[:,;]?)+\s*/i;

function verdictCell(verdict, detail, report) {
  const word = verdict || (report ? "see details" : "–");
  const text = (detail || "").replace(VERDICT_WORDS, "");
  const td = el("td", word, { class: `verdict verdict-${word.replace(/[^a-z]+/gi, "-")}`,
    title: [text, report ? JSON.stringify(report, null, 1) : ""].filter(Boolean).join("\n\n") });
  if (text) { td.append(el("span", ` ${text}`, { class: "detail" })); }
  return td;
}

// Shadow evaluation reports each source on its own ({status, examples|requests, needed, ...}):
// one short figure per source reads better in a cell than the sentence the reason makes.
const SOURCES = ["replay", "held_back", "golden"];

function sourcesDetail(report) {
  const parts = SOURCES.filter((name) => report[name] && typeof report[name] === "object").map((name) => {
    const r = report[name], have = r.requests ?? r.examples;
    if (r.status === "insufficient") { return `${name} ${fmt(have)}/${fmt(r.needed)}`; }
    if (typeof r.accuracy === "number") { return `${name} ${(r.accuracy * 100).toFixed(1)}%${r.status === "failed" ? " ✗" : ""}`; }
    if (typeof r.disagreement === "number") { return `${name} ${(r.disagreement * 100).toFixed(1)}% differ`; }
    return `${name} ${r.status ?? ""}`.trim();
  });
  return parts.join(" · ");
}

function decisionCell(report) {
  if (!report || typeof report !== "object") { return verdictCell(null, "", null); }
  const verdict = report.state ?? report.status ?? (report.passed === undefined ? "" : report.passed ? "passed" : "failed");
  const detail = sourcesDetail(report) || (report.reason || "").replace(/\s*\((?:passed|failed|insufficient)\)/gi, "");
  return verdictCell(String(verdict).replace("_", " "), detail, report);
}

function gateCell(metrics) {
  const gate = metrics?.gate;
  if (!gate) { return verdictCell(null, "", metrics || null); }
  const change = typeof gate.before === "number" && typeof gate.after === "number"
    ? `${gate.metric} ${fmt(gate.before)} → ${fmt(gate.after)}` : gate.message;
  return verdictCell(gate.passed ? "passed" : "failed", change, gate);
}

// TensorFlow's and absl's start-up chatter (glog-style "I0000 00:00:... file.cc:12]" lines, the
// absl and CPU-feature notices), under horovodrun's "[rank]<stderr>:" prefix or not, is not
// the trainer's: the log tail shows the job's own lines and says how many it hid.
const NOISE = new RegExp(String.raw`^(?:\[\d+\]<std(?:out|err)>:)?\s*(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.\-/]+:\d+\]`
  + String.raw`|WARNING: All log messages before absl|To enable the following instructions|oneDNN custom operations`
  + String.raw`|This TensorFlow binary is optimized)`);

function trainerLines(lines) {
  const kept = lines.filter((line) => line.trim());
  const own = kept.filter((line) => !NOISE.test(line));
  const hidden = kept.length - own.length;
  return hidden ? [...own, `(${hidden} lines of TensorFlow start-up output hidden)`] : own;
}
