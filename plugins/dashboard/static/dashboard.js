"use strict";
// The modelbroker dashboard: GET usage (the ledger plugin) and GET health, drawn as SVG by hand.
// Everything is relative to the page's URL, so the page works behind a path prefix too.

const REFRESH_MS = 30000;
const DAY_MS = 86400000;
const PALETTE = ["#2e6fdb", "#e8772e", "#16a34a", "#a23bd6", "#d6336c", "#0e9aa7", "#8c6d1f", "#475467"];
const FAILURE_COLOR = "#c0262d";
const SVG_NS = "http://www.w3.org/2000/svg";
const H = 230; // chart height in pixels; the width is the card's
const PAD = { left: 58, right: 50, top: 12, bottom: 28 };
const NO_DATA = "No data yet: requests sent through the gateway appear here.";

const $ = (selector) => document.querySelector(selector);
const colors = new Map();
let timer = null;
let shown = null; // the usage last drawn, redrawn when the window is resized

// --- small helpers -----------------------------------------------------------------------

function el(tag, attrs = {}, parent = null, text = null) {
  const svg = tag.startsWith("svg:");
  const node = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

const fmt = {
  count: (v) => Math.round(v).toLocaleString("en"),
  cost: (v) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : String(+v.toPrecision(2))),
  ms: (v) => (v === null || v === undefined ? "–" : v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`),
  percent: (v) => `${+(v * 100).toFixed(1)}%`,
};

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function daysBetween(from, to) {
  const days = [];
  for (let time = Date.parse(`${from}T00:00:00Z`); days.length < 366; time += DAY_MS) {
    const day = isoDay(new Date(time));
    if (!(day <= to)) break;
    days.push(day);
  }
  return days;
}

function colorOf(name) {
  if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
  return colors.get(name);
}

// One value per day of ``days`` (``missing`` for a day without a group).
function perDay(groups, days, value, missing = 0) {
  const byDay = new Map(groups.map((g) => [g.key, value(g)]));
  return days.map((day) => (byDay.has(day) ? byDay.get(day) : missing));
}

// --- data --------------------------------------------------------------------------------

async function getJSON(path, params = {}) {
  const url = new URL(path, location.href);
  url.username = url.password = ""; // fetch refuses a URL with credentials in it
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  // With client keys, the browser sends the admin key it asked for when the page was opened
  // (HTTP Basic authentication): the page itself never holds it.
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => null);
  return { status: response.status, ok: response.ok, body };
}

function errorText(answer) {
  return answer.body?.error?.message ?? `HTTP ${answer.status}`;
}

async function loadUsage(from, to) {
  const ask = (groupBy) => getJSON("usage", { from, to, group_by: groupBy });
  const [byDay, byProvider, byBoth] = await Promise.all([ask("day"), ask("provider"), ask("day,provider")]);
  if (byDay.status === 404) return { off: true };
  if (byDay.status === 401 || byDay.status === 403) return { locked: errorText(byDay) };
  for (const answer of [byDay, byProvider]) if (!answer.ok) return { error: errorText(answer) };
  return {
    totals: byDay.body.totals,
    days: byDay.body.groups,
    providers: byProvider.body.groups,
    dayProvider: byBoth.ok ? byBoth.body.groups : null, // null: the ledger has no such breakdown
  };
}

// --- charts ------------------------------------------------------------------------------

// An empty <svg> as wide as the card, in pixels (so text keeps its size); ``svg.w`` is that width.
function chartIn(card, label, height = H) {
  const box = $(`${card} .chart`);
  box.replaceChildren();
  const w = Math.max(320, Math.round(box.clientWidth));
  const attrs = { viewBox: `0 0 ${w} ${height}`, role: "img", "aria-label": label, "data-chart": card.slice(1) };
  const svg = el("svg:svg", attrs, box);
  svg.w = w;
  return svg;
}

function empty(card, text) {
  const box = $(`${card} .chart`);
  box.replaceChildren();
  el("p", { class: "empty" }, box, text);
}

// The top of a 4-gridline axis reaching ``value``: 4 × a step of 1, 2 or 5 × 10^n.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value / 4));
  return 4 * [1, 2, 5, 10].map((m) => m * power).find((step) => 4 * step >= value);
}

const yAt = (value, max) => H - PAD.bottom - (value / max) * (H - PAD.top - PAD.bottom);

function axes(svg, days, max, format, xAt) {
  for (let t = 0; t <= 4; t++) {
    const y = yAt((max * t) / 4, max);
    el("svg:line", { x1: PAD.left, x2: svg.w - PAD.right, y1: y, y2: y, class: t ? "grid" : "axis" }, svg);
    el("svg:text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, svg, format((max * t) / 4));
  }
  const every = Math.ceil(days.length / 10);
  days.forEach((day, i) => {
    if ((days.length - 1 - i) % every === 0) {
      el("svg:text", { x: xAt(i), y: H - 8, "text-anchor": "middle" }, svg, day.slice(5));
    }
  });
}

function legend(card, items) {
  const box = $(`${card} .chart`);
  const row = el("div", { class: "legend" }, box);
  for (const item of items) el("span", {}, row, item.name).style.setProperty("--swatch", item.color);
}

function lineChart(card, days, series, format) {
  const svg = chartIn(card, "line chart");
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const span = svg.w - PAD.left - PAD.right;
  const xAt = (i) => PAD.left + (days.length === 1 ? span / 2 : (i * span) / (days.length - 1));
  axes(svg, days, max, format, xAt);
  for (const s of series) {
    const group = el("svg:g", { "data-series": s.name }, svg);
    const points = s.values.map((v, i) => `${xAt(i)},${yAt(v, max)}`).join(" ");
    el("svg:polyline", { points, class: "series", stroke: s.color }, group);
    s.values.forEach((v, i) => {
      const dot = el("svg:circle", { cx: xAt(i), cy: yAt(v, max), r: 3, fill: s.color, class: "point" }, group);
      el("svg:title", {}, dot, `${s.name}, ${days[i]}: ${format(v)}`);
    });
  }
  legend(card, series);
}

function volumeChart(card, days, requests, failureRates) {
  const svg = chartIn(card, "requests and failure rate per day");
  const max = niceMax(Math.max(...requests));
  const rateMax = Math.min(1, niceMax(Math.max(0, ...failureRates.filter((r) => r !== null))));
  const slot = (svg.w - PAD.left - PAD.right) / days.length;
  const xAt = (i) => PAD.left + slot * (i + 0.5);
  axes(svg, days, max, fmt.count, xAt);
  for (let t = 0; t <= 4; t++) {
    el("svg:text", { x: svg.w - PAD.right + 6, y: yAt((max * t) / 4, max) + 4 }, svg, fmt.percent((rateMax * t) / 4));
  }
  requests.forEach((n, i) => {
    const y = yAt(n, max);
    const bar = el("svg:rect", { x: xAt(i) - slot * 0.35, y, width: slot * 0.7, height: H - PAD.bottom - y,
                                 fill: PALETTE[0], class: "bar", "data-series": "requests" }, svg);
    const failed = failureRates[i] === null ? "no attempt" : `${fmt.percent(failureRates[i])} of attempts failed`;
    el("svg:title", {}, bar, `${days[i]}: ${fmt.count(n)} requests, ${failed}`);
  });
  // The failure rate of the days with attempts (a day without any has no rate).
  const rated = failureRates
    .map((rate, i) => [xAt(i), yAt((rate / rateMax) * max, max), rate])
    .filter(([, , rate]) => rate !== null);
  const group = el("svg:g", { "data-series": "failure rate" }, svg);
  const points = rated.map(([x, y]) => `${x},${y}`).join(" ");
  el("svg:polyline", { points, class: "series", stroke: FAILURE_COLOR }, group);
  rated.forEach(([x, y]) => el("svg:circle", { cx: x, cy: y, r: 3, fill: FAILURE_COLOR, class: "point" }, group));
  legend(card, [
    { name: "requests (left)", color: PALETTE[0] },
    { name: "failed attempts (right)", color: FAILURE_COLOR },
  ]);
}

function latencyChart(card, providers) {
  const rows = providers.filter((g) => g.p95_latency_ms != null);
  if (!rows.length) return empty(card, "No successful attempt in this range.");
  const rowHeight = 36, left = 130, right = 90;
  const svg = chartIn(card, "latency per provider", rows.length * rowHeight + 10);
  const max = Math.max(...rows.map((g) => g.p95_latency_ms));
  const width = (v) => Math.max(1, ((v ?? 0) / max) * (svg.w - left - right));
  rows.forEach((g, i) => {
    const y = 6 + i * rowHeight;
    el("svg:text", { x: left - 8, y: y + 17, "text-anchor": "end", class: "value" }, svg, g.key);
    [["p50", g.p50_latency_ms], ["p95", g.p95_latency_ms]].forEach(([name, value], j) => {
      const bar = el("svg:rect", {
        x: left, y: y + j * 14, width: width(value), height: 12, fill: colorOf(g.key), opacity: j ? 1 : 0.5,
        class: "bar", "data-series": g.key, "data-percentile": name,
      }, svg);
      el("svg:title", {}, bar, `${g.key} ${name}: ${fmt.ms(value)}`);
      el("svg:text", { x: left + width(value) + 5, y: y + j * 14 + 10 }, svg, `${name} ${fmt.ms(value)}`);
    });
  });
}

// --- tables and notices --------------------------------------------------------------------

function notice(text) {
  $("#notice").hidden = !text;
  $("#notice").textContent = text ?? "";
}

function cells(row, values, numeric = []) {
  values.forEach((value, i) => el("td", numeric.includes(i) ? { class: "num" } : {}, row, value));
}

const STATE_TEXT = {
  healthy: "healthy", half_open: "half-open (trial)", cooling_down: "cooling down", disabled: "disabled",
};

function renderHealth(answer) {
  const body = $("#health tbody");
  body.replaceChildren();
  if (!answer.ok) {
    cells(el("tr", {}, body), [`/health answered ${errorText(answer)}`]);
    return;
  }
  $("#strategy").textContent = `strategy: ${answer.body.strategy}`;
  for (const p of answer.body.providers) {
    const state = p.enabled ? p.state : "disabled";
    const row = el("tr", { "data-provider": p.id, "data-state": state }, body);
    cells(row, [p.name, p.model]);
    const badge = el("span", { class: `badge ${state}` }, el("td", {}, row), STATE_TEXT[state] ?? state);
    if (state === "cooling_down") badge.textContent += `, ${p.cooling_down_for_s} s left`;
    if (p.last_error || p.disabled_reason) badge.title = p.last_error ?? p.disabled_reason;
    const rate = p.recent_error_rate;
    const errors = rate === null || rate === undefined ? "–" : fmt.percent(rate);
    cells(row, [errors, fmt.ms(p.p95_ms), p.in_flight ?? "–"], [0, 1, 2]);
  }
}

function renderTotals(providers) {
  const body = $("#totals tbody");
  body.replaceChildren();
  if (!providers.length) el("td", { class: "empty", colspan: 10 }, el("tr", {}, body), NO_DATA);
  for (const g of providers) {
    const row = el("tr", { "data-provider": g.key ?? "" }, body);
    const failures = g.attempts ? ` (${fmt.percent(g.failures / g.attempts)})` : "";
    const tokens = g.prompt_tokens + g.completion_tokens;
    cells(row, [g.key ?? "(refused)", fmt.count(g.requests), fmt.count(g.attempts), fmt.count(g.failures) + failures,
                fmt.count(tokens), fmt.cost(g.cost), fmt.count(g.cache_hits ?? 0), fmt.cost(g.saved_cost ?? 0),
                fmt.ms(g.p50_latency_ms), fmt.ms(g.p95_latency_ms)],
          [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  }
}

// Spent and saved in the range, and the share of the requests the response cache answered
// (a ledger without the cache's columns counts no hit).
function renderCache(totals) {
  const hits = totals.cache_hits ?? 0;
  const answered = totals.requests - totals.rejected;
  $("#spent").textContent = fmt.cost(totals.cost);
  $("#saved").textContent = fmt.cost(totals.saved_cost ?? 0);
  $("#hit-rate").textContent = answered > 0
    ? `${fmt.percent(hits / answered)} (${fmt.count(hits)} of ${fmt.count(answered)})` : "–";
}

function renderUsage(usage, days) {
  const cards = ["#spend", "#cache", "#volume", "#latency", "#totals"];
  for (const card of cards) $(card).hidden = Boolean(usage.off || usage.error || usage.locked);
  if (usage.locked) {
    return notice(`The usage needs an admin key (${usage.locked}). Reload the page: the browser asks for one.`);
  }
  if (usage.off) {
    return notice("The ledger is off (the ledger plugin is disabled), so there is no usage to chart. "
                  + "Provider health is below.");
  }
  if (usage.error) return notice(`The ledger cannot be read: ${usage.error}`);
  notice(null);
  $("#spend .note").textContent = "";
  renderCache(usage.totals);
  if (!usage.totals.requests && !usage.totals.rejected) {
    for (const card of ["#spend", "#volume", "#latency"]) empty(card, NO_DATA);
    return renderTotals([]);
  }
  const named = usage.providers.filter((g) => g.key !== null);
  named.map((g) => g.key).sort().forEach(colorOf);
  lineChart("#spend", days, spendSeries(usage, days), fmt.cost);
  volumeChart("#volume", days, perDay(usage.days, days, (g) => g.requests),
              perDay(usage.days, days, (g) => (g.attempts ? g.failures / g.attempts : null), null));
  latencyChart("#latency", named);
  renderTotals([...named, ...usage.providers.filter((g) => g.key === null)]);
}

function spendSeries(usage, days) {
  if (!usage.dayProvider) {
    $("#spend .note").textContent = "This ledger has no per-provider daily breakdown "
                                    + "(/usage?group_by=day,provider): the total is shown.";
    return [{ name: "all providers", color: PALETTE[7], values: perDay(usage.days, days, (g) => g.cost) }];
  }
  // Each group of /usage?group_by=day,provider has the key [day, provider].
  const names = [...new Set(usage.dayProvider.map((g) => g.key[1]).filter((n) => n !== null))].sort();
  return names.map((name) => {
    const mine = usage.dayProvider.filter((g) => g.key[1] === name).map((g) => ({ key: g.key[0], cost: g.cost }));
    return { name, color: colorOf(name), values: perDay(mine, days, (g) => g.cost) };
  });
}

// --- the page --------------------------------------------------------------------------------

async function refresh() {
  const from = $("#from").value, to = $("#to").value;
  document.body.dataset.state = "loading";
  try {
    // Each part is drawn as soon as its answer comes; "ready" once both are drawn.
    await Promise.all([
      getJSON("health").then(renderHealth),
      loadUsage(from, to).then((usage) => {
        shown = [usage, daysBetween(from, to)];
        renderUsage(...shown);
      }),
    ]);
    $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    notice(`The dashboard could not be updated: ${error.message}`); // the gateway is down, most likely
    console.error(error);
  }
  document.body.dataset.state = "ready";
}

function schedule() {
  clearInterval(timer);
  timer = $("#auto").checked ? setInterval(refresh, REFRESH_MS) : null;
}

function start() {
  const query = new URLSearchParams(location.search);
  const today = new Date();
  $("#to").value = query.get("to") ?? isoDay(today);
  $("#from").value = query.get("from") ?? isoDay(new Date(today.getTime() - 6 * DAY_MS));
  $("#range").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  $("#auto").addEventListener("change", schedule);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => shown && renderUsage(...shown), 200);
  });
  refresh(); // at once: the first data is not left for the first refresh period
  schedule();
}

start();
