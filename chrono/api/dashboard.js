"use strict";
// Chrono's dashboard: /dashboard/state every 2 s, prices and consensus live over /stream.
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let key = params.get("key") || localStorage.getItem("chrono_key") || "";
const prices = {};     // symbol -> source -> {price, at}
const consensus = {};  // symbol -> the newest consensus_update's data
const history = {};    // symbol -> the last minute of consensus prices [[ms, price]]
let ws = null, wsSymbols = "", pending = false;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
  return tr;
}
function td(text, cls) { return el("td", text, cls); }
function stateClass(s) {
  return ["streaming", "up", "running", "ok"].includes(s) ? "ok"
    : ["connecting", "subscribing", "subscribed", "backoff", "replaying", "starting"].includes(s) ? "warn" : "bad";
}
function age(s) { return s === null || s === undefined ? "-" : s < 60 ? s.toFixed(1) + " s" : Math.round(s / 60) + " min"; }
function message(text) { $("message").textContent = text; }
function askKey(text) { $("keyform").classList.add("show"); message(text); }

async function api(path) {
  const r = await fetch(path, {headers: {Authorization: "Bearer " + key}});
  if (r.status === 401 || r.status === 403) { askKey("a public key is needed"); throw new Error("key"); }
  if (!r.ok) throw new Error(path + " answered " + r.status);
  return r.json();
}

function renderState(s) {
  $("service").textContent = "v" + s.version + " " + s.state + ", up " + age(s.uptime_s);
  const alerts = $("alerts");
  alerts.replaceChildren();
  if (!s.alerts.length) alerts.append(el("span", "none", "muted"));
  for (const a of s.alerts) {
    alerts.append(el("div", a.rule + (a.subject === "*" ? "" : " (" + a.subject + ")") + ": " + a.detail + ", since " + a.since));
  }
  $("collectors").replaceChildren(...s.collectors.map((c) => row([
    td(c.worker_id), td(c.exchange), td(c.state, stateClass(c.state)), td(String(c.reconnects), "num"),
    td(c.last_data_age_s === null ? "never" : age(c.last_data_age_s) + " ago", "num"),
    td(c.stale_symbols.join(", ") || "-", c.stale_symbols.length ? "warn" : "muted"),
  ])));
  $("freshness").replaceChildren(...s.symbols.map((sym) => row([
    td(sym.symbol),
    td(sym.sources.map((x) => x.source + " " + age(x.age_s)).join(" · ") || "no source yet",
       sym.sources.length ? "" : "bad"),
  ])));
  const st = s.store;
  $("store").textContent = st.kind + ": " + st.state + ", spool " + (st.spool_fill * 100).toFixed(1) + " % full (" + st.spool_batches + " batches)";
  $("store").className = stateClass(st.state);
  openStream(s.symbols.map((x) => x.symbol));
}

function openStream(symbols) {
  const wanted = symbols.join(",");
  if (ws && wsSymbols === wanted) return;
  if (ws) ws.close();
  wsSymbols = wanted;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/stream?key=" + encodeURIComponent(key));
  ws.onopen = () => {
    ws.send(JSON.stringify({action: "subscribe", id: "prices", symbols}));
    ws.send(JSON.stringify({action: "subscribe", id: "consensus", channel: "consensus", symbols}));
  };
  ws.onmessage = (e) => onMessage(JSON.parse(e.data));
  ws.onclose = () => { ws = null; wsSymbols = ""; };
}

function onMessage(m) {
  if (m.type === "price_update") {
    const d = m.data;
    (prices[d.symbol] = prices[d.symbol] || {})[d.source] = {price: Number(d.price), at: Date.now()};
  } else if (m.type === "consensus_update") {
    const d = m.data;
    consensus[d.symbol] = d;
    if (d.price !== null) {
      const h = history[d.symbol] = history[d.symbol] || [];
      h.push([Date.now(), Number(d.price)]);
      while (h.length && h[0][0] < Date.now() - 60000) h.shift();
    }
  } else if (m.type === "error") {
    message(m.error.message);
  } else return;
  if (!pending) { pending = true; requestAnimationFrame(renderPrices); }
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg", w = 120, h = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  if (points.length > 1) {
    const ys = points.map((p) => p[1]), lo = Math.min(...ys), hi = Math.max(...ys);
    const t0 = points[0][0], span = Math.max(points[points.length - 1][0] - t0, 1);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1a5fb4");
    line.setAttribute("points", points.map((p) =>
      ((p[0] - t0) / span * (w - 2) + 1).toFixed(1) + "," + (hi === lo ? h / 2 : h - 2 - (p[1] - lo) / (hi - lo) * (h - 4)).toFixed(1)).join(" "));
    svg.append(line);
  }
  return svg;
}

function renderPrices() {
  pending = false;
  const symbols = Object.keys({...prices, ...consensus}).sort();
  $("prices").replaceChildren(...symbols.map((symbol) => {
    const c = consensus[symbol] || {}, by = prices[symbol] || {};
    const spark = el("td"); spark.append(sparkline(history[symbol] || []));
    const sources = Object.keys(by).sort().map((s) => s + " " + by[s].price).join(" · ");
    return row([
      td(symbol), td(c.price === undefined || c.price === null ? "-" : c.price, "num price"),
      td(c.status || "-", c.status ? stateClass(c.status) : "muted"),
      td(c.spread_bps === undefined || c.spread_bps === null ? "-" : Number(c.spread_bps).toFixed(1) + " bps", "num"),
      spark, td(sources || "-", "sources"),
    ]);
  }));
}

async function refresh() {
  try { renderState(await api("/dashboard/state")); if (key) message(""); }
  catch (e) { if (e.message !== "key") message(e.message); }
}

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  localStorage.setItem("chrono_key", key);
  $("keyform").classList.remove("show");
  if (ws) ws.close();
  refresh();
});
if (!key) askKey("enter a public key");
refresh();
setInterval(refresh, 2000);
