// edge-inspect line console: the pages' behaviour. Plain JS, no build step, nothing from the internet.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#ff3838", "#ff9d97", "#ff701f", "#ffb21d", "#cfd231", "#48f90a", "#92cc17", "#3ddb86",
  "#1a9334", "#00d4bb"];
const DECISION_TEXT = {
  confirmed_ng: "confirmed NG", false_reject: "false reject (part was good)",
  escape: "escape (NG part judged OK)", confirmed_ok: "confirmed OK",
};

function $(sel, root = document) { return root.querySelector(sel); }
function $$(sel, root = document) { return Array.from(root.querySelectorAll(sel)); }
function csrf() { return $('meta[name="csrf-token"]').content; }
function colour(classId) { return PALETTE[classId % PALETTE.length]; }
function jsonData(el, key) { const v = el && el.dataset[key]; return v ? JSON.parse(v) : null; }

function el(tag, attrs = {}, text = null) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

async function api(method, url, body) {
  const res = await fetch(url, {
    method, credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "Accept": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: `HTTP ${res.status}` }; }
  return { ok: res.ok, status: res.status, data };
}

function say(node, text, good) {
  node.textContent = text;
  node.classList.toggle("good", good === true);
  node.classList.toggle("bad", good === false);
}

function errorText(data) {
  return (data.error || "failed") + (data.details ? ": " + data.details.join("; ") : "");
}

// -- drawing on an image overlay (SVG in image pixel coordinates) ------------------------------------------
function fitOverlay(svg, width, height) {
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.dataset.w = width;
  svg.dataset.h = height;
}

function strokeFor(svg) { return Math.max(1.5, Number(svg.dataset.w || 640) / 320); }

function drawBox(svg, box, opts = {}) {
  const [x1, y1, x2, y2] = box.xyxy;
  const s = strokeFor(svg);
  const g = el("svg:g", { class: "box" + (opts.ignored ? " ignored" : "") });
  const c = colour(box.class_id || 0);
  g.appendChild(el("svg:rect", {
    x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: c, "stroke-width": s * 1.5,
    "stroke-dasharray": opts.ignored ? `${s * 3} ${s * 2}` : "none",
  }));
  const label = `${box.class}${box.confidence !== undefined ? " " + box.confidence.toFixed(2) : ""}`;
  const fs = s * 7;
  const ty = y1 - fs * 0.3 > fs ? y1 - fs * 0.3 : y2 + fs;
  g.appendChild(el("svg:text", {
    x: x1, y: ty, fill: c, "font-size": fs, "font-weight": "700", stroke: "#000", "stroke-width": s * 0.6,
    "paint-order": "stroke",
  }, label));
  svg.appendChild(g);
  return g;
}

function roiFor(rules, camera) {
  if (!rules) return { include: [], exclude: [] };
  return (rules.camera_roi && rules.camera_roi[camera]) || rules.roi || { include: [], exclude: [] };
}

function drawRoi(svg, roi) {
  const s = strokeFor(svg);
  for (const [kind, polys] of [["include", roi.include || []], ["exclude", roi.exclude || []]]) {
    for (const poly of polys) {
      svg.appendChild(el("svg:polygon", {
        points: poly.map(p => p.join(",")).join(" "), class: `roi roi-${kind}`, "stroke-width": s * 1.5,
      }));
    }
  }
}

// -- charts (SVG, plain) ----------------------------------------------------------------------------------------
function barChart(node, values) {
  node.textContent = "";
  const entries = Object.entries(values || {});
  if (!entries.length) { node.appendChild(el("p", { class: "muted" }, "no NG this shift")); return; }
  const max = Math.max(...entries.map(e => e[1]));
  const rowH = 34, w = 420, labelW = 150;
  // room for the longest number at 18 px (about 11 px a digit): 5 and more digits are never cut off
  const valueW = 16 + 11 * Math.max(...entries.map(e => String(e[1]).length));
  const svg = el("svg:svg", { viewBox: `0 0 ${w} ${entries.length * rowH}`, class: "bars", role: "img" });
  entries.forEach(([name, n], i) => {
    const bw = Math.max(2, (w - labelW - valueW) * n / max);
    svg.appendChild(el("svg:text", { x: 0, y: i * rowH + 23, class: "bar-label" }, name));
    svg.appendChild(el("svg:rect", { x: labelW, y: i * rowH + 5, width: bw, height: rowH - 10, class: "bar" }));
    svg.appendChild(el("svg:text", { x: labelW + bw + 8, y: i * rowH + 23, class: "bar-value" }, String(n)));
  });
  node.appendChild(svg);
}

function yieldChart(node, buckets) {
  node.textContent = "";
  if (!buckets || !buckets.length) { node.appendChild(el("p", { class: "muted" }, "no parts this shift yet")); return; }
  const w = 420, h = 170, pad = 34;
  const svg = el("svg:svg", { viewBox: `0 0 ${w} ${h}`, class: "yield", role: "img" });
  const maxParts = Math.max(...buckets.map(b => b.ok + b.ng));
  const step = (w - pad - 6) / buckets.length;
  for (const y of [0, 50, 100]) {
    const yy = h - pad - (h - pad - 8) * y / 100;
    svg.appendChild(el("svg:line", { x1: pad, x2: w, y1: yy, y2: yy, class: "gridline" }));
    svg.appendChild(el("svg:text", { x: 0, y: yy + 5, class: "axis" }, `${y}%`));
  }
  const pts = [];
  buckets.forEach((b, i) => {
    const n = b.ok + b.ng;
    const x = pad + i * step;
    const bh = (h - pad - 8) * n / maxParts * 0.35;
    svg.appendChild(el("svg:rect", { x: x + 1, y: h - pad - bh, width: Math.max(1, step - 2), height: bh, class: "vol" }));
    const yv = n ? b.ok / n : 0;
    pts.push(`${x + step / 2},${h - pad - (h - pad - 8) * yv}`);
    if (i === 0 || i === buckets.length - 1 || buckets.length < 8)
      svg.appendChild(el("svg:text", { x: x, y: h - 10, class: "axis" }, b.t));
  });
  svg.appendChild(el("svg:polyline", { points: pts.join(" "), class: "yield-line" }));
  node.appendChild(svg);
}

function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %"; }

function reviewText(r) {
  if (!r) return "–";
  const c = r.counts || {};
  const n = Object.values(c).reduce((a, b) => a + b, 0);
  if (!n) return "none yet";
  return `${n} reviewed · false rejects ${pct(r.false_reject_rate)} of reviewed NG · escapes ${r.escape_rate === null ? "–" : (r.escape_rate * 100).toFixed(3) + " %"} of OK`;
}

function setField(root, name, value) {
  for (const node of $$(`[data-f="${name}"]`, root)) node.textContent = value;
}

// -- overview --------------------------------------------------------------------------------------------------
function updateLineCard(card, l) {
  setField(card, "fps", l.fps.toFixed(1));
  setField(card, "parts", l.shift ? l.shift.parts : 0);
  setField(card, "yield", l.shift ? pct(l.shift.yield) : "–");
  setField(card, "ng", l.shift ? l.shift.ng : 0);
  setField(card, "model", `${l.model.name || "–"} ${l.model.version || ""}`);
  setField(card, "recipe", l.recipe);
  setField(card, "last_error", l.last_error || "–");
  setField(card, "reviews", reviewText(l.reviews));
  const state = $('[data-f="state"]', card);
  if (state) { state.textContent = l.state; state.className = `state state-${l.state}`; }
  const cams = $('[data-f="cameras"]', card);
  if (cams) {
    cams.textContent = "";
    for (const c of l.cameras) cams.appendChild(el("span", { class: `cam cam-${c.state}`, title: c.last_error || "" }, `${c.name}: ${c.state} `));
  }
  const chart = $('[data-f="ng_by_class"]', card);
  if (chart) barChart(chart, l.shift ? l.shift.ng_by_class : {});
}

function updatePublishers(pubs) {
  const body = $("#publishers tbody");
  if (!body) return;
  body.textContent = "";
  const names = Object.keys(pubs);
  if (!names.length) { body.appendChild(el("tr")).appendChild(el("td", { colspan: 4 }, "no publishers")); return; }
  for (const name of names) {
    const p = pubs[name];
    const tr = el("tr");
    tr.appendChild(el("td", {}, name));
    tr.appendChild(el("td", {}, String((p.backlog || 0) + (p.feed_backlog || 0))));
    tr.appendChild(el("td", {}, String(p.dropped || p.feed_dropped || 0)));
    tr.appendChild(el("td", {}, String(p.sent || p.delivered || "–")));
    body.appendChild(tr);
  }
}

function overviewPage() {
  const src = new EventSource("/api/events");
  src.addEventListener("overview", ev => {
    const o = JSON.parse(ev.data);
    setField(document, "clock", o.time);
    $("#clock").textContent = o.time;
    for (const card of $$(".line-card")) {
      const l = o.lines[card.dataset.line];
      if (l) updateLineCard(card, l);
    }
    updatePublishers(o.publishers);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  });
}

// -- anomaly heat: a translucent PNG laid over the frame, and the camera's score in its caption --------------
function showHeat(fig, r, cam, url) {
  const heat = $("img.heat", fig), label = $(".anomaly-score", fig);
  const a = (r.anomaly || []).find(s => s.camera === cam);
  if (label) {
    label.textContent = a ? `anomaly ${a.score.toPrecision(3)} (NG from ${a.image_threshold.toPrecision(3)})` : "";
    label.classList.toggle("bad", Boolean(a && a.anomalous));
  }
  if (!heat) return;
  if (!a) { heat.hidden = true; heat.removeAttribute("src"); return; }
  heat.onload = () => { heat.hidden = false; };
  heat.onerror = () => { heat.hidden = true; };
  heat.src = url;
}

// -- live view of a line (the line page, and each line of the operator view) -----------------------------------
// A frozen screen must look frozen: the age of the newest result ticks on in the page itself, and after
// `staleAfter` seconds without a result (at once when the line or the connection says why) the view greys
// out under an overlay naming the reason from the line's real state. Banner and pictures change together:
// the banner waits until every camera's picture of the same part has loaded.
function silenceReason(l, conn) {
  if (conn === "bye") return "AGENT STOPPED";
  if (conn === "lost") return "NO CONNECTION TO THE AGENT";
  if (!l) return null;
  if (l.state === "stopped") return "LINE STOPPED";
  if (l.state === "paused") return "LINE STOPPED BY OPERATOR";
  if (l.state === "error") return "LINE ERROR";
  if ((l.cameras || []).some(c => c.state === "reconnecting" || c.state === "connecting")) return "CAMERA LOST";
  return null;
}

function ageText(s) {
  if (s === null || s === undefined) return "no part yet";
  if (s < 1.5) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

class LiveView {
  constructor(root, line, rules, staleAfter) {
    Object.assign(this, { root, line, rules: rules || {}, staleAfter });
    this.busy = false;          // one set of pictures at a time: never a backlog
    this.pending = null;        // the newest result that arrived while busy
    this.overview = null;
    this.conn = "ok";
    this.age = null;            // seconds, from the agent's clock, at `ageAt` (this page's clock)
    this.ageAt = performance.now();
  }

  url(kind, cam, seq) {
    return `/api/lines/${encodeURIComponent(this.line)}/${kind}/${encodeURIComponent(cam)}.${kind === "heat" ? "png" : "jpg"}?seq=${seq}`;
  }

  onResult(r) {
    if (this.busy) { this.pending = r; return; }
    this.busy = true;
    const figs = $$(".view", this.root).filter(f => r.frames.some(fr => fr.camera === f.dataset.camera));
    const loads = figs.map(fig => new Promise(done => {
      const next = new Image();
      next.onload = () => done([fig, next]);
      next.onerror = () => done([fig, null]);
      next.src = this.url("frame", fig.dataset.camera, r.seq);
    }));
    Promise.all(loads).then(loaded => {
      // every picture of this part is decoded: now banner and pictures change in the same frame
      this.showBanner(r);
      for (const [fig, next] of loaded) if (next) this.showFrame(fig, r, next);
      this.age = Math.max(0, (Date.now() - Date.parse(r.timestamp)) / 1000);
      this.ageAt = performance.now();
      this.root.dataset.seq = r.seq;
      this.busy = false;
      this.tick();
      if (this.pending) { const p = this.pending; this.pending = null; this.onResult(p); }
    });
  }

  showBanner(r) {
    const banner = $(".banner", this.root);
    banner.className = `banner banner-${r.verdict}`;
    banner.dataset.seq = r.seq;
    $(".verdict", banner).textContent = r.verdict;
    $(".reason", banner).textContent = r.reasons.length ? r.reasons.join("; ") : "no defect counts";
  }

  showFrame(fig, r, next) {
    const cam = fig.dataset.camera, info = r.frames.find(f => f.camera === cam);
    const img = $("img.frame", fig), svg = $("svg", fig);
    img.src = next.src;
    showHeat(fig, r, cam, this.url("heat", cam, r.seq));
    fitOverlay(svg, info.width, info.height);
    svg.textContent = "";
    drawRoi(svg, roiFor(this.rules[r.recipe], cam));
    for (const d of r.defects.filter(d => d.camera === cam)) drawBox(svg, d, { ignored: !d.counts_for_verdict });
    setField(fig, "part", r.part_id);
    setField(fig, "seq", `#${r.seq}`);
    fig.dataset.seq = r.seq;
  }

  onOverview(l) {
    this.overview = l;
    this.conn = "ok";
    if (l.last_result_age_s !== null && l.last_result_age_s !== undefined) {
      this.age = l.last_result_age_s;
      this.ageAt = performance.now();
    }
    this.tick();
  }

  setConnection(state) { if (this.conn !== "bye" || state === "ok") this.conn = state; this.tick(); }

  currentAge() { return this.age === null ? null : this.age + (performance.now() - this.ageAt) / 1000; }

  tick() {
    const age = this.currentAge();
    let reason = silenceReason(this.overview, this.conn);
    if (!reason && age !== null && age > this.staleAfter) reason = "NO NEW PARTS";
    if (!reason && age === null && this.overview) reason = "NO PART YET";
    this.root.classList.toggle("stale", Boolean(reason));
    this.root.dataset.silence = reason || "";
    for (const o of $$(".silence", this.root)) {
      o.hidden = !reason;
      $(".silence-what", o).textContent = reason || "";
      $(".silence-since", o).textContent = age === null ? "" : `last part ${ageText(age)}`;
    }
    setField(this.root, "age", ageText(age));
    // a rate nobody is measuring any more is not shown as if it were
    if (reason && this.overview) setField(this.fieldsRoot || this.root, "fps", this.conn === "ok" ? this.overview.fps.toFixed(1) : "–");
  }
}

function liveStream(lines, views, onOverview) {
  const query = lines.map(l => `line=${encodeURIComponent(l)}`).join("&");
  const src = new EventSource(`/api/events?${query}`);
  src.addEventListener("result", ev => {
    const r = JSON.parse(ev.data);
    if (views[r.line]) views[r.line].onResult(r);
  });
  src.addEventListener("overview", ev => {
    const o = JSON.parse(ev.data);
    document.body.dataset.connection = "ok";
    for (const [name, v] of Object.entries(views)) if (o.lines[name]) v.onOverview(o.lines[name]);
    onOverview(o);
  });
  src.addEventListener("bye", () => {
    document.body.dataset.connection = "bye";
    for (const v of Object.values(views)) v.setConnection("bye");
  });
  src.addEventListener("error", () => {
    if (document.body.dataset.connection === "bye") return;
    document.body.dataset.connection = "lost";
    for (const v of Object.values(views)) v.setConnection("lost");
  });
  setInterval(() => { for (const v of Object.values(views)) v.tick(); }, 1000);
  return src;
}

function recentList(list, recent) {
  list.textContent = "";
  for (const r of recent) {
    const li = el("li", { class: `verdict-${r.verdict}` });
    const a = el("a", { href: `/results/${r.seq}` });
    a.appendChild(el("b", { class: "v" }, r.verdict));
    a.appendChild(document.createTextNode(` ${r.time} #${r.seq} ${r.part_id} ${r.classes.join(", ") || r.reason}`));
    li.appendChild(a);
    list.appendChild(li);
  }
}

function linePage() {
  const line = document.body.dataset.line;
  const rules = jsonData($("#rules"), "json") || {};
  const view = new LiveView($("#live"), line, rules, Number(document.body.dataset.staleAfter || 10));
  view.fieldsRoot = document;  // the line page's counters sit beside the live view
  liveStream([line], { [line]: view }, o => {
    const l = o.lines[line];
    if (!l) return;
    setField(document, "fps", l.fps.toFixed(1));
    setField(document, "yield", l.shift ? pct(l.shift.yield) : "–");
    setField(document, "ng", l.shift ? l.shift.ng : 0);
    setField(document, "since", l.shift ? `since ${l.shift.since}` : "");
    setField(document, "recipe", l.recipe);
    setField(document, "state", l.state);
    setField(document, "model", `${l.model.name || "–"} ${l.model.version || ""}`);
    yieldChart($("#yield-chart"), l.shift ? l.shift.yield_over_time : []);
    barChart($("#ng-chart"), l.shift ? l.shift.ng_by_class : {});
    recentList($("#recent"), l.recent);
    view.tick();
  });
}

// -- operator mode: every line on one screen ------------------------------------------------------------------
function operatorPage() {
  const allRules = jsonData($("#rules"), "json") || {};
  const staleAfter = Number(document.body.dataset.staleAfter || 10);
  const views = {};
  for (const cell of $$(".op-line")) views[cell.dataset.line] = new LiveView(cell, cell.dataset.line, allRules[cell.dataset.line], staleAfter);
  const strip = $("#ng-strip");
  liveStream(Object.keys(views), views, o => {
    const ngs = [];
    for (const [name, v] of Object.entries(views)) {
      const l = o.lines[name];
      if (!l) continue;
      const cell = v.root, s = l.shift || {};
      setField(cell, "parts", s.parts || 0);
      setField(cell, "ok", s.ok || 0);
      setField(cell, "ng", s.ng || 0);
      setField(cell, "yield", pct(s.yield));
      setField(cell, "since", s.since ? `since ${s.since}` : "");
      setField(cell, "state", l.state);
      setField(cell, "trigger", `${l.io.trigger === "triggered" ? "triggered" : "free run"} · ${l.io.triggers} triggers · ${l.io.waiting} waiting · ${l.io.trigger_failures} failed`);
      setField(cell, "verdict_out", l.io.last_verdict ? `${l.io.last_verdict === "NG" ? "REJECT" : "pass"} (#${l.last_seq})` : "–");
      const st = $('[data-f="state"]', cell);
      if (st) st.className = `state state-${l.state}`;
      const toggle = $("button.line-toggle", cell);
      if (toggle) {
        const stopped = l.state === "paused";
        toggle.dataset.action = stopped ? "start" : "stop";
        toggle.textContent = stopped ? "Start line" : "Stop line";
        toggle.disabled = l.state === "error" || l.state === "stopped";
      }
      const cam = $(".view", cell).dataset.camera;
      for (const r of l.recent) if (r.verdict === "NG") ngs.push({ ...r, line: name, camera: cam });
    }
    ngs.sort((a, b) => b.seq - a.seq);
    const want = ngs.slice(0, 8).map(r => String(r.seq)).join(",");
    if (strip.dataset.seqs !== want) {
      strip.dataset.seqs = want;
      strip.textContent = "";
      if (!ngs.length) strip.appendChild(el("span", { class: "muted" }, "no NG part yet"));
      for (const r of ngs.slice(0, 8)) {
        const a = el("a", { href: `/results/${r.seq}`, class: "ng-thumb", title: `${r.line} #${r.seq} ${r.classes.join(", ") || r.reason}` });
        const img = el("img", { alt: `NG #${r.seq}`, src: `/results/${r.seq}/thumb/${encodeURIComponent(r.camera)}` });
        // the archive writes an NG image just after the result is journaled: ask once more before giving up
        img.onerror = () => {
          if (img.dataset.retried) { img.replaceWith(el("span", { class: "noimg" }, `#${r.seq}`)); return; }
          img.dataset.retried = "1";
          setTimeout(() => { img.src += "?again=1"; }, 1500);
        };
        a.appendChild(img);
        a.appendChild(el("span", {}, `${r.time} ${r.classes.join(", ") || r.reason}`));
        strip.appendChild(a);
      }
    }
    setField(document, "clock", o.time);
  });
  for (const b of $$("button.line-toggle")) b.addEventListener("click", async () => {
    const line = b.closest(".op-line").dataset.line, action = b.dataset.action;
    if (action === "stop" && !confirm(`Stop line ${line}? No part is inspected until it is started again.`)) return;
    const res = await api("POST", `/api/lines/${encodeURIComponent(line)}/control`, { action });
    say($(".op-msg", b.closest(".op-line")), res.ok ? `line ${res.data.state}` : errorText(res.data), res.ok);
  });
  for (const b of $$("button.handover")) b.addEventListener("click", async () => {
    const line = b.closest(".op-line").dataset.line;
    if (!confirm(`Hand the shift over on line ${line}? Its counters start again from zero.`)) return;
    const res = await api("POST", `/api/lines/${encodeURIComponent(line)}/shift/handover`, {});
    const h = res.data.handed_over;
    say($(".op-msg", b.closest(".op-line")), res.ok ? `handed over: ${h.parts} parts, ${h.ng} NG since ${h.since}` : errorText(res.data), res.ok);
  });
}

// -- result detail and review --------------------------------------------------------------------------------
function imagePoint(svg, ev) {
  const rect = svg.getBoundingClientRect();
  const w = Number(svg.dataset.w), h = Number(svg.dataset.h);
  return [
    Math.min(w, Math.max(0, (ev.clientX - rect.left) / rect.width * w)),
    Math.min(h, Math.max(0, (ev.clientY - rect.top) / rect.height * h)),
  ];
}

function resultPage() {
  for (const box of $$(".heat-toggle")) {
    const heat = $("img.heat", box.closest(".view"));
    box.addEventListener("change", () => { if (heat) heat.hidden = !box.checked; });
  }
  const data = $("#data");
  const result = jsonData(data, "result");
  const review = jsonData(data, "review");
  const names = jsonData(data, "names") || {};
  const canReview = data.dataset.canReview === "1";
  // the boxes being reviewed: the current review's, else the model's counted defects
  let boxes = review ? review.boxes.map(b => ({ ...b })) : result.defects.filter(d => d.counts_for_verdict)
    .map(d => ({ camera: d.camera, class: d.class, class_id: d.class_id, xyxy: d.xyxy, confidence: d.confidence }));
  const ignored = result.defects.filter(d => !d.counts_for_verdict);
  const undo = [];
  let selected = null;
  const remember = () => { undo.push(JSON.stringify(boxes)); if (undo.length > 50) undo.shift(); };
  const select = $("#new-class");
  if (select) for (const [id, name] of Object.entries(names)) select.appendChild(el("option", { value: id }, name));

  function redraw() {
    for (const fig of $$(".view")) {
      const svg = $("svg", fig);
      if (!svg) continue;
      const cam = fig.dataset.camera;
      fitOverlay(svg, Number(fig.dataset.width), Number(fig.dataset.height));
      svg.textContent = "";
      for (const d of ignored.filter(d => d.camera === cam)) drawBox(svg, d, { ignored: true });
      // the selected box last: on top, its corners never under another box's label
      const order = boxes.map((b, i) => i).filter(i => i !== selected).concat(selected === null ? [] : [selected]);
      order.forEach(i => {
        const b = boxes[i];
        if (!b || b.camera !== cam) return;
        const g = drawBox(svg, b);
        g.dataset.index = i;
        if (!canReview) return;
        g.classList.add("removable");
        if (i === selected) g.classList.add("selected");
        const s = strokeFor(svg) * 4, [x1, y1, x2, y2] = b.xyxy;
        for (const [corner, cx, cy] of [["nw", x1, y1], ["ne", x2, y1], ["sw", x1, y2], ["se", x2, y2]])
          g.appendChild(el("svg:rect", { class: `handle handle-${corner}`, "data-corner": corner, x: cx - s / 2, y: cy - s / 2, width: s, height: s }));
      });
    }
  }
  redraw();
  if (!canReview) return;

  for (const fig of $$(".view")) {
    const svg = $("svg", fig);
    if (!svg) continue;
    // one pointer gesture: draw a new box, or move / resize / (a click) delete an existing one
    let drag = null;
    svg.addEventListener("mousedown", ev => {
      ev.preventDefault();
      const p = imagePoint(svg, ev), g = ev.target.closest(".removable");
      if (g) {
        const i = Number(g.dataset.index);
        selected = i;
        drag = { kind: ev.target.dataset.corner ? "resize" : "move", corner: ev.target.dataset.corner, i, start: p, orig: boxes[i].xyxy.slice(), moved: false };
        return;
      }
      selected = null;
      const rubber = el("svg:rect", { class: "rubber", x: p[0], y: p[1], width: 0, height: 0 });
      svg.appendChild(rubber);
      drag = { kind: "draw", start: p, rubber };
    });
    svg.addEventListener("mousemove", ev => {
      if (!drag) return;
      const p = imagePoint(svg, ev), [sx, sy] = drag.start;
      if (drag.kind === "draw") {
        drag.rubber.setAttribute("x", Math.min(p[0], sx));
        drag.rubber.setAttribute("y", Math.min(p[1], sy));
        drag.rubber.setAttribute("width", Math.abs(p[0] - sx));
        drag.rubber.setAttribute("height", Math.abs(p[1] - sy));
        return;
      }
      const dx = p[0] - sx, dy = p[1] - sy;
      if (!drag.moved && Math.hypot(dx, dy) < 2) return;
      if (!drag.moved) { remember(); drag.moved = true; }
      const w = Number(svg.dataset.w), h = Number(svg.dataset.h);
      let [x1, y1, x2, y2] = drag.orig;
      if (drag.kind === "move") {
        const mx = Math.min(Math.max(dx, -x1), w - x2), my = Math.min(Math.max(dy, -y1), h - y2);
        x1 += mx; x2 += mx; y1 += my; y2 += my;
      } else {
        if (drag.corner.includes("w")) x1 = Math.min(p[0], x2 - 3); else x2 = Math.max(p[0], x1 + 3);
        if (drag.corner.includes("n")) y1 = Math.min(p[1], y2 - 3); else y2 = Math.max(p[1], y1 + 3);
      }
      boxes[drag.i].xyxy = [x1, y1, x2, y2].map(v => Math.round(v * 10) / 10);
      delete boxes[drag.i].confidence;  // a box the reviewer placed
      redraw();
    });
    const finish = ev => {
      if (!drag) return;
      const d = drag;
      drag = null;
      if (d.kind === "draw") {
        const p = imagePoint(svg, ev), [sx, sy] = d.start;
        const xyxy = [Math.min(p[0], sx), Math.min(p[1], sy), Math.max(p[0], sx), Math.max(p[1], sy)];
        if (xyxy[2] - xyxy[0] >= 3 && xyxy[3] - xyxy[1] >= 3) {
          remember();
          const id = Number(select.value);
          boxes.push({ camera: fig.dataset.camera, class: names[id], class_id: id, xyxy: xyxy.map(v => Math.round(v * 10) / 10) });
          selected = boxes.length - 1;
          $("#not-localised").checked = false;
        }
      } else if (!d.moved && ev.type === "mouseup") {  // a click on a box: delete it
        remember();
        boxes.splice(d.i, 1);
        selected = null;
      }
      redraw();
    };
    svg.addEventListener("mouseup", finish);
    svg.addEventListener("mouseleave", finish);
  }

  const msg = $("#review-message");
  async function decide(button) {
    const decision = button.dataset.decision;
    const notLocalised = $("#not-localised");
    if (decision === "false_reject" || decision === "confirmed_ok") {
      // the part was good: its label has no defect, whatever the model drew
      if (boxes.length) { remember(); boxes = []; selected = null; redraw(); }
      notLocalised.checked = false;
    } else if (!boxes.length && !notLocalised.checked) {
      say(msg, `${DECISION_TEXT[decision]}: draw a box around the defect, or tick “not localised”`, false);
      return;
    } else if (boxes.length && notLocalised.checked) {
      notLocalised.checked = false;
    }
    say(msg, "saving…");
    const body = {
      decision, comment: $("#review-comment").value, not_localised: notLocalised.checked,
      boxes: boxes.map(b => ({ camera: b.camera, class: b.class, class_id: b.class_id, xyxy: b.xyxy })),
    };
    const res = await api("POST", `/api/results/${result.seq}/review`, body);
    if (!res.ok) { say(msg, errorText(res.data), false); return; }
    const r = res.data;
    say(msg, `Saved: ${DECISION_TEXT[r.decision]}${r.not_localised ? ", not localised" : ""} (review ${r.id})`, true);
    document.body.dataset.saved = String(r.id);
    const cur = $("#current-decision");
    cur.textContent = DECISION_TEXT[r.decision] + (r.not_localised ? ", not localised" : "");
    cur.className = `chip chip-${r.decision}`;
    const hist = $("#review-history");
    const empty = $(".muted", hist);
    if (empty) empty.remove();
    let text = `${DECISION_TEXT[r.decision]} by ${r.reviewer}, ${r.time}`;
    if (r.changes.removed.length) text += `; removed ${r.changes.removed.length} box(es)`;
    if (r.changes.added.length) text += `; added ${r.changes.added.length} box(es)`;
    hist.appendChild(el("li", {}, text));
  }
  const buttons = $$("button.decision");
  for (const button of buttons) button.addEventListener("click", () => decide(button));

  document.addEventListener("keydown", ev => {
    if (ev.target.closest("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    if (k >= "1" && k <= "4") {
      const b = buttons[Number(k) - 1];
      if (b && !b.disabled) decide(b);
    } else if ((k === "Delete" || k === "Backspace") && selected !== null) {
      remember(); boxes.splice(selected, 1); selected = null; redraw();
    } else if (k === "z" && undo.length) {
      boxes = JSON.parse(undo.pop()); selected = null; redraw();
    } else if (k === "n") {
      location.href = $("#next-unreviewed").href;
    } else if (k === "u") {
      location.href = $("#next-uncertain").href;
    } else return;
    ev.preventDefault();
  });
}

// -- setup ------------------------------------------------------------------------------------------------------
function setupPage() {
  const line = document.body.dataset.line;
  const data = $("#data");
  const recipes = jsonData(data, "recipes");
  const classes = jsonData(data, "classes") || [];
  const svg = $("#roi-svg"), img = $("#ref-image"), msg = $("#setup-message");
  const recipeSel = $("#recipe"), cameraSel = $("#camera");
  let tool = "include", current = [], baseSha = null;
  // per recipe and camera: {include: [...], exclude: [...]} as it will be saved
  const rois = {};
  for (const [name, r] of Object.entries(recipes)) {
    rois[name] = {};
    for (const opt of $$("option", cameraSel)) {
      const roi = roiFor(r, opt.value);
      rois[name][opt.value] = { include: (roi.include || []).map(p => p.slice()), exclude: (roi.exclude || []).map(p => p.slice()) };
    }
  }
  const roi = () => rois[recipeSel.value][cameraSel.value];
  const changed = () => { $("#save").disabled = true; baseSha = null; };

  function redraw() {
    svg.textContent = "";
    drawRoi(svg, roi());
    if (current.length) {
      const s = strokeFor(svg);
      svg.appendChild(el("svg:polyline", { points: current.map(p => p.join(",")).join(" "), class: `drawing drawing-${tool}`, "stroke-width": s * 1.5 }));
      for (const p of current) svg.appendChild(el("svg:circle", { cx: p[0], cy: p[1], r: s * 3, class: "vertex" }));
    }
  }

  function loadImage() {
    const cam = cameraSel.value;
    img.onload = () => {
      // the picture shown is served at its full size: its own pixels are the ROI's (never an assumed size)
      fitOverlay(svg, img.naturalWidth, img.naturalHeight);
      redraw();
      document.body.dataset.ready = "1";
    };
    img.src = `/api/lines/${encodeURIComponent(line)}/reference/${encodeURIComponent(cam)}.jpg?t=${Date.now()}`;
  }

  function fillRules() {
    const r = recipes[recipeSel.value];
    $("#min-conf").value = r.min_confidence;
    const body = $("#class-rules tbody");
    body.textContent = "";
    for (const name of classes) {
      const rule = (r.classes || {})[name] || {};
      const tr = el("tr", { "data-class": name });
      tr.appendChild(el("td", {}, name));
      for (const key of ["min_confidence", "min_size", "max_count"]) {
        const td = el("td");
        const input = el("input", { type: "number", "data-key": key, step: key === "min_confidence" ? "0.01" : "1", min: "0" });
        if (key === "min_confidence") input.setAttribute("max", "1");
        if (rule[key] !== null && rule[key] !== undefined) input.value = rule[key];
        input.placeholder = key === "max_count" ? String(r.max_count) : key === "min_confidence" ? "recipe" : "–";
        input.addEventListener("input", changed);
        td.appendChild(input);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function proposal() {
    const cls = {};
    for (const tr of $$("#class-rules tbody tr")) {
      const rule = {};
      for (const input of $$("input", tr)) {
        if (input.value !== "") rule[input.dataset.key] = input.dataset.key === "max_count" ? parseInt(input.value, 10) : Number(input.value);
        else rule[input.dataset.key] = null;
      }
      cls[tr.dataset.class] = rule;
    }
    const mc = $("#min-conf").value;
    return { recipe: recipeSel.value, min_confidence: mc === "" ? null : Number(mc), classes: cls, camera_roi: rois[recipeSel.value] };
  }

  svg.addEventListener("click", ev => { current.push(imagePoint(svg, ev).map(v => Math.round(v * 10) / 10)); redraw(); });
  svg.addEventListener("dblclick", ev => { ev.preventDefault(); closePolygon(); });
  function closePolygon() {
    // a double-click also adds its two clicks' points; drop duplicates of the last point
    current = current.filter((p, i) => i === 0 || Math.hypot(p[0] - current[i - 1][0], p[1] - current[i - 1][1]) > 2);
    if (current.length < 3) { say(msg, "a polygon needs at least 3 points", false); return; }
    roi()[tool].push(current);
    current = [];
    changed();
    redraw();
    say(msg, `${tool === "include" ? "ROI" : "exclusion"} added; press “What if?” to see its effect`);
  }
  $("#finish-poly").addEventListener("click", closePolygon);
  $("#undo-point").addEventListener("click", () => { current.pop(); redraw(); });
  $("#clear-roi").addEventListener("click", () => { roi().include = []; roi().exclude = []; current = []; changed(); redraw(); });
  for (const b of $$("button.tool")) b.addEventListener("click", () => {
    tool = b.dataset.tool; current = [];
    for (const o of $$("button.tool")) o.classList.toggle("on", o === b);
    redraw();
  });
  recipeSel.addEventListener("change", () => { current = []; fillRules(); changed(); redraw(); });
  cameraSel.addEventListener("change", () => { current = []; loadImage(); });
  $("#min-conf").addEventListener("input", changed);

  $("#preview").addEventListener("click", async () => {
    say(msg, "checking…");
    const res = await api("POST", `/api/setup/${encodeURIComponent(line)}/preview`, { setup: proposal() });
    const out = $("#whatif");
    out.textContent = "";
    $("#diff").textContent = "";
    if (!res.ok) { say(msg, errorText(res.data), false); return; }
    const w = res.data.whatif;
    out.appendChild(el("p", { class: "whatif-summary" }, w.summary));
    for (const note of w.notes) out.appendChild(el("p", { class: "muted" }, note));
    for (const [title, list] of [["OK → NG", w.examples_ok_to_ng], ["NG → OK", w.examples_ng_to_ok]]) {
      if (!list.length) continue;
      const p = el("p", {}, `${title}: `);
      for (const e of list) { p.appendChild(el("a", { href: `/results/${e.seq}`, title: e.reason }, `#${e.seq}`)); p.appendChild(document.createTextNode(" ")); }
      out.appendChild(p);
    }
    $("#diff").textContent = res.data.diff || "(no change to the file)";
    baseSha = res.data.base_sha;
    $("#save").disabled = !res.data.diff;
    say(msg, res.data.diff ? "valid (passes config check): review the diff, then save" : "no change", true);
  });

  $("#save").addEventListener("click", async () => {
    say(msg, "saving…");
    const res = await api("POST", `/api/setup/${encodeURIComponent(line)}/save`, { setup: proposal(), base_sha: baseSha });
    if (!res.ok) { say(msg, errorText(res.data), false); return; }
    $("#save").disabled = true;
    const rl = res.data.reload;
    say(msg, rl.ok ? `saved as version ${res.data.version}; the line reloaded it` : `saved, but the reload failed: ${rl.error}`, rl.ok);
    document.body.dataset.saved = String(res.data.version);
  });

  for (const b of $$("button.restore")) b.addEventListener("click", async () => {
    if (!confirm("Restore the line file as it was before this change, and reload it?")) return;
    const res = await api("POST", `/api/setup/${encodeURIComponent(line)}/restore`, { version: Number(b.dataset.version) });
    if (!res.ok) { say(msg, errorText(res.data), false); return; }
    say(msg, `restored (version ${res.data.version}); reload ${res.data.reload.ok ? "ok" : "failed: " + res.data.reload.error}`, res.data.reload.ok);
    setTimeout(() => location.reload(), 800);
  });

  fillRules();
  loadImage();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  ({ overview: overviewPage, line: linePage, operator: operatorPage, result: resultPage, setup: setupPage }[page] || (() => {}))();
});
