// The smsrent dashboard: asks for the owner's token once (kept in sessionStorage), then polls
// /dashboard/data with it in the Authorization header. Every value from the server - SMS text above all,
// which strangers write - is put on the page with textContent or as an SVG attribute, never parsed as HTML.
"use strict";

const TOKEN_KEY = "smsrent.token";
const DATA_URL = "/dashboard/data";
const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";

const shown = new Set(); // codes the owner clicked to reveal (by message), kept across refreshes
let clockSkew = 0; // server time minus this browser's time, in seconds
let deadlines = []; // [element, ends_at] of the active rentals' countdowns
let timer = null;

function $(id) {
  return document.getElementById(id);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function now() {
  return Date.now() / 1000 + clockSkew;
}

function clock(epoch) {
  return epoch === null ? "-" : new Date(epoch * 1000).toLocaleTimeString();
}

function seconds(value) {
  return value === null ? "-" : `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

function left(endsAt) {
  if (endsAt === null) return "-";
  const total = Math.floor(endsAt - now());
  if (total <= 0) return "ended";
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}h ${pad(m)}m ${pad(s)}s` : `${m}m ${pad(s)}s`;
}

// -- Token -----------------------------------------------------------------------------------------

function showLogin(message) {
  stop();
  $("board").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("status").textContent = "";
  $("token").focus();
}

function start() {
  $("login").hidden = true;
  $("forget").hidden = false;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

// -- Data ------------------------------------------------------------------------------------------

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin();
  let answer;
  try {
    answer = await fetch(DATA_URL, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    $("status").textContent = "server unreachable; retrying";
    return;
  }
  if (answer.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    return showLogin("That token was refused.");
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    stop();
    return showLogin(body.detail || `The server answered ${answer.status}.`);
  }
  render(body);
  $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function render(data) {
  clockSkew = data.now - Date.now() / 1000;
  $("board").hidden = false;
  $("mode").hidden = !data.sandbox;
  renderSpend(data);
  renderAgents(data.agents);
  renderDelivery(data);
  renderActive(data.active);
  renderMessages(data.messages);
}

function renderSpend(data) {
  const budget = data.budget;
  $("spend-net").textContent = data.spend.net;
  const note = $("spend-budget");
  if (budget.daily === null) {
    note.textContent = `· ${budget.committed} USD committed (no daily budget set)`;
    note.className = "muted";
  } else {
    note.textContent = `· ${budget.committed} of ${budget.daily} USD daily budget committed, ${budget.remaining} left`;
    note.className = Number(budget.remaining) <= 0 ? "over" : "muted";
  }
  drawChart($("spend-chart"), data);
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(chart, data) {
  const width = 640, height = 160, left = 44, right = 10, top = 10, bottom = 22;
  const since = data.spend.since, until = data.now;
  const points = data.spend.points.map((p) => [p.at, Number(p.net)]);
  points.push([until, points[points.length - 1][1]]);
  const budget = data.budget.daily === null ? null : Number(data.budget.daily);
  const most = Math.max(0.01, budget || 0, ...points.map((p) => p[1])) * 1.1;
  const x = (t) => left + ((t - since) / (until - since)) * (width - left - right);
  const y = (v) => top + (1 - v / most) * (height - top - bottom);

  let line = `M ${x(points[0][0]).toFixed(1)} ${y(points[0][1]).toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    line += ` H ${x(points[i][0]).toFixed(1)} V ${y(points[i][1]).toFixed(1)}`; // a step: spend moves at purchases
  }
  const base = y(0).toFixed(1);
  const area = `${line} V ${base} H ${x(points[0][0]).toFixed(1)} Z`;

  const parts = [
    svg("line", { class: "axis", x1: left, y1: base, x2: width - right, y2: base }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: base }),
    svg("path", { class: "area", d: area }),
    svg("path", { class: "spend", d: line }),
    svg("text", { x: left - 6, y: Number(base) + 4, "text-anchor": "end" }, "0"),
    svg("text", { x: left - 6, y: top + 8, "text-anchor": "end" }, most.toFixed(2)),
    svg("text", { x: left, y: height - 6 }, "24 h ago"),
    svg("text", { x: width - right, y: height - 6, "text-anchor": "end" }, "now"),
  ];
  if (budget !== null) {
    parts.push(svg("line", { class: "budget", x1: left, y1: y(budget), x2: width - right, y2: y(budget) }));
    parts.push(svg("text", { x: width - right, y: y(budget) - 4, "text-anchor": "end" }, `budget ${budget.toFixed(2)}`));
  }
  chart.replaceChildren(...parts);
}

function renderAgents(agents) {
  $("agents").tBodies[0].replaceChildren(...agents.map((a) => row([a.agent, a.spent, a.refunded, a.net])));
}

function renderDelivery(data) {
  $("p50").textContent = seconds(data.delivery.p50);
  $("p95").textContent = seconds(data.delivery.p95);
  $("delivered").textContent = data.delivery.count;
  $("waiters").textContent = data.waiters;
  const counts = Object.entries(data.rentals).map(([outcome, n]) => `${outcome.replaceAll("_", " ")} ${n}`);
  $("outcomes").textContent = `Rentals in 24 h: ${counts.join(" · ")}`;
}

function renderActive(rentals) {
  deadlines = [];
  const rows = rentals.map((r) => {
    const countdown = el("td", left(r.ends_at), "countdown");
    deadlines.push([countdown, r.ends_at]);
    return row([r.rental_id, r.agent, r.service || "-", el("td", r.phone || "-", "phone"), countdown]);
  });
  $("active").tBodies[0].replaceChildren(...rows);
  $("active-empty").hidden = rentals.length > 0;
}

function renderMessages(messages) {
  const rows = messages.map((m) => {
    const key = `${m.rental_id}@${m.received_at}`;
    const masked = m.code === null ? "show" : "••••••";
    const button = el("button", null, "reveal");
    button.type = "button";
    button.title = "Click to show or hide the code and the SMS";
    const sms = el("td", null, "sms");
    const show = () => {
      const open = shown.has(key);
      button.textContent = open ? m.code || "hide" : masked;
      sms.textContent = open ? m.text || "" : "hidden until shown";
      sms.className = open ? "sms" : "sms muted";
    };
    button.addEventListener("click", () => {
      if (shown.has(key)) shown.delete(key);
      else shown.add(key);
      show();
    });
    show();
    const code = el("td", null, "code");
    code.append(button);
    return row([clock(m.received_at), m.rental_id, code, sms]);
  });
  $("messages").tBodies[0].replaceChildren(...rows);
  $("messages-empty").hidden = messages.length > 0;
}

function tick() {
  for (const [cell, endsAt] of deadlines) cell.textContent = left(endsAt);
}

// -- Start -----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Token forgotten.");
  });
  setInterval(tick, 1000);
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else showLogin();
});
