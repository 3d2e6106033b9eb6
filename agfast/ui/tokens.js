// Token charts, drawn as SVG: input/output tokens over hours or days, and totals per model and per account.
import { api, missing, query } from "./api.js";
import { $, el, svg, replace, formatNumber } from "./dom.js";

const HOURS = 24;
const DAYS = 14;
let period = "hours";

function legend() {
  return el("div", { class: "legend" }, el("span", { class: "in" }, "input"), el("span", { class: "out" }, "output"));
}

// Stacked input/output columns over time, one per hour or day.
function timeChart(points, label) {
  const width = 720, height = 220, left = 48, bottom = 28, top = 10;
  const max = Math.max(1, ...points.map((p) => (p.input_tokens || 0) + (p.output_tokens || 0)));
  const step = (width - left - 8) / Math.max(1, points.length);
  const bars = (height - bottom - top);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Tokens per ${label}` });
  chart.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  chart.append(svg("text", { x: 4, y: top + 10 }, formatNumber(max)), svg("text", { x: 4, y: height - bottom }, "0"));
  points.forEach((p, i) => {
    const x = left + i * step + step * 0.15;
    const w = Math.max(1, step * 0.7);
    const hi = ((p.input_tokens || 0) / max) * bars;
    const ho = ((p.output_tokens || 0) / max) * bars;
    const base = height - bottom;
    if (hi + ho > 0) {
      const title = svg("title", {}, `${p.label}: ${p.input_tokens} in, ${p.output_tokens} out, ${p.requests} requests`);
      chart.append(svg("g", {}, title,
        svg("rect", { class: "in", x, y: base - hi, width: w, height: hi }),
        svg("rect", { class: "out", x, y: base - hi - ho, width: w, height: ho })));
    }
    if (points.length <= 16 || i % Math.ceil(points.length / 12) === 0) {
      chart.append(svg("text", { x, y: height - 10 }, p.short));
    }
  });
  return chart;
}

// One horizontal stacked bar per name (model or account), most tokens first.
function barChart(rows, key, what) {
  if (!rows.length) return el("p", { class: "muted" }, `No tokens counted per ${what} yet.`);
  const width = 720, row = 26, left = 220;
  const height = rows.length * row + 8;
  const max = Math.max(1, ...rows.map((r) => (r.input_tokens || 0) + (r.output_tokens || 0)));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Tokens per ${what}` });
  rows.forEach((r, i) => {
    const y = 4 + i * row;
    const span = width - left - 80;
    const wi = ((r.input_tokens || 0) / max) * span;
    const wo = ((r.output_tokens || 0) / max) * span;
    const name = r[key] || "(none)";
    chart.append(svg("g", {},
      svg("title", {}, `${name}: ${r.input_tokens} in, ${r.output_tokens} out, ${r.requests} requests`),
      svg("text", { x: 4, y: y + 15 }, name.length > 32 ? `${name.slice(0, 31)}…` : name),
      svg("rect", { class: "in", x: left, y: y + 3, width: wi, height: row - 8 }),
      svg("rect", { class: "out", x: left + wi, y: y + 3, width: wo, height: row - 8 }),
      svg("text", { x: left + wi + wo + 6, y: y + 15 }, formatNumber((r.input_tokens || 0) + (r.output_tokens || 0)))));
  });
  return chart;
}

async function fill(box, load, draw) {
  try {
    replace(box, draw(await load()));
  } catch (err) {
    replace(box, el("p", { class: "muted" }, missing(err) ? "Token statistics are not available on this agfast." : err.message));
  }
}

// One point per hour (or day) of the period, empty ones included, so the axis is time and not just the rows.
function slots(count, step, keyOf, rows, rowKey, short) {
  const byKey = new Map(rows.map((r) => [String(r[rowKey]), r]));
  const now = Math.floor(Date.now() / 1000 / step) * step;
  const points = [];
  for (let i = count - 1; i >= 0; i--) {
    const key = keyOf(now - i * step);
    const row = byKey.get(key) || { input_tokens: 0, output_tokens: 0, requests: 0 };
    points.push({ ...row, label: key, short: short(key) });
  }
  return points;
}

const hourPoints = (rows) => slots(HOURS, 3600, (t) => String(t), rows, "timestamp",
  (key) => `${new Date(Number(key) * 1000).getHours()}h`);
const dayPoints = (rows) => slots(DAYS, 86400, (t) => new Date(t * 1000).toISOString().slice(0, 10), rows, "day",
  (key) => key.slice(5));

async function draw() {
  const hours = period === "hours";
  $("#period-hours").setAttribute("aria-pressed", String(hours));
  $("#period-days").setAttribute("aria-pressed", String(!hours));
  const path = hours ? `/api/stats/hourly${query({ hours: HOURS })}` : `/api/stats/daily${query({ days: DAYS })}`;
  await Promise.all([
    fill($("#chart-time"), () => api("GET", path),
      (rows) => el("div", {}, legend(), timeChart(hours ? hourPoints(rows) : dayPoints(rows), hours ? "hour" : "day"))),
    fill($("#chart-models"), () => api("GET", "/api/stats/models"), (rows) => barChart(rows, "model", "model")),
    fill($("#chart-accounts"), () => api("GET", "/api/stats/accounts"), (rows) => barChart(rows, "account", "account")),
  ]);
}

export function setup() {
  $("#period-hours").addEventListener("click", () => { period = "hours"; draw(); });
  $("#period-days").addEventListener("click", () => { period = "days"; draw(); });
}

export const show = draw;
