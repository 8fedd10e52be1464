// A line chart on a <canvas>, enough for the dashboard's time series and training curves
// (a charting library would be most of the page's weight for this).
"use strict";

const COLORS = ["#2457c5", "#d9480f", "#1a7f37", "#9c36b5", "#b26a00", "#0b7285", "#c2255c", "#5c940d"];

// ``range``: values the y axis always spans (e.g. [0, 1] for proportions), data beyond widens it.
function drawLines(canvas, series, { title = "", xLabel = "", range = null, format = (v) => v.toPrecision(3) } = {}) {
  // Drawn at the canvas's own size; CSS scales it (width 100%, height auto).
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  const shown = series.filter((s) => s.points.length > 0);
  const left = 48, right = 8, top = 16, bottom = 30;
  ctx.fillStyle = "#1d2330";
  ctx.fillText(title, left, 11);
  if (!shown.length) {
    ctx.fillStyle = "#6b7280";
    ctx.fillText("no data yet", left, h / 2);
    return;
  }
  const xs = shown.flatMap((s) => s.points.map((p) => p[0]));
  const ys = shown.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (range) { y0 = Math.min(y0, range[0]); y1 = Math.max(y1, range[1]); }
  // Counts, rates, latencies and losses are never negative: their axis starts at 0, and a flat
  // zero line (no traffic) spans 0 to 1 rather than -1 to 1.
  if (y0 >= 0) { y0 = 0; }
  if (x1 === x0) { x1 = x0 + 1; }
  if (y1 === y0) { y1 = y0 === 0 ? 1 : y1 + Math.abs(y1) * 0.1; y0 = y0 === 0 ? 0 : y0 - Math.abs(y0) * 0.1; }
  const px = (x) => left + ((x - x0) / (x1 - x0)) * (w - left - right);
  const py = (y) => h - bottom - ((y - y0) / (y1 - y0)) * (h - top - bottom);
  ctx.strokeStyle = "#d8dce3";
  ctx.beginPath();
  ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - right, h - bottom);
  ctx.stroke();
  ctx.fillStyle = "#6b7280";
  ctx.fillText(format(y1), 2, top + 4);
  ctx.fillText(format(y0), 2, h - bottom);
  ctx.fillText(xLabel, w - right - ctx.measureText(xLabel).width, h - bottom + 12);
  shown.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach(([x, y], j) => (j ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.stroke();
    if (s.points.length === 1) { ctx.fillRect(px(s.points[0][0]) - 2, py(s.points[0][1]) - 2, 4, 4); }
    const slot = (w - left - right) / shown.length; // legend entries share the bottom row
    const legendX = left + i * slot;
    ctx.fillRect(legendX, h - 9, 10, 3);
    ctx.fillText(s.name.slice(0, Math.max(4, Math.floor((slot - 16) / 6))), legendX + 13, h - 4);
  });
}

window.drawLines = drawLines;
