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
  const svg = el("svg:svg", { viewBox: `0 0 ${w} ${entries.length * rowH}`, class: "bars", role: "img" });
  entries.forEach(([name, n], i) => {
    const bw = Math.max(2, (w - labelW - 60) * n / max);
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
    for (const c of l.cameras) cams.appendChild(el("span", { class: `cam cam-${c.state}` }, `${c.name}: ${c.state} `));
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

// -- line view ---------------------------------------------------------------------------------------------------
function linePage() {
  const line = document.body.dataset.line;
  const rules = jsonData($("#rules"), "json") || {};
  const loading = {};
  const src = new EventSource(`/api/events?line=${encodeURIComponent(line)}`);
  src.addEventListener("result", ev => {
    const r = JSON.parse(ev.data);
    const banner = $("#banner");
    banner.className = `banner banner-${r.verdict}`;
    $(".verdict", banner).textContent = r.verdict;
    $(".reason", banner).textContent = r.reasons.length ? r.reasons.join("; ") : "no defect counts";
    for (const fig of $$(".view")) {
      const cam = fig.dataset.camera;
      const info = r.frames.find(f => f.camera === cam);
      if (!info || loading[cam]) continue;  // one frame at a time per camera: never a backlog
      loading[cam] = true;
      const img = $("img.frame", fig), svg = $("svg", fig);
      const next = new Image();
      next.onload = () => {
        img.src = next.src;
        showHeat(fig, r, cam, `/api/lines/${encodeURIComponent(line)}/heat/${encodeURIComponent(cam)}.png?seq=${r.seq}`);
        fitOverlay(svg, info.width, info.height);
        svg.textContent = "";
        drawRoi(svg, roiFor(rules[r.recipe], cam));
        for (const d of r.defects.filter(d => d.camera === cam)) drawBox(svg, d, { ignored: !d.counts_for_verdict });
        $(".part", fig).textContent = r.part_id;
        $(".seq", fig).textContent = `#${r.seq}`;
        fig.dataset.seq = r.seq;
        loading[cam] = false;
      };
      next.onerror = () => { loading[cam] = false; };
      next.src = `/api/lines/${encodeURIComponent(line)}/frame/${encodeURIComponent(cam)}.jpg?seq=${r.seq}`;
    }
  });
  src.addEventListener("overview", ev => {
    const o = JSON.parse(ev.data);
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
    const list = $("#recent");
    list.textContent = "";
    for (const r of l.recent) {
      const li = el("li", { class: `verdict-${r.verdict}` });
      const a = el("a", { href: `/results/${r.seq}` });
      a.appendChild(el("b", { class: "v" }, r.verdict));
      a.appendChild(document.createTextNode(` ${r.time} #${r.seq} ${r.part_id} ${r.classes.join(", ") || r.reason}`));
      li.appendChild(a);
      list.appendChild(li);
    }
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
      boxes.forEach((b, i) => {
        if (b.camera !== cam) return;
        const g = drawBox(svg, b);
        g.dataset.index = i;
        if (canReview) {
          g.classList.add("removable");
          g.addEventListener("click", ev => { ev.stopPropagation(); boxes.splice(i, 1); redraw(); });
        }
      });
    }
  }
  redraw();
  if (!canReview) return;

  for (const fig of $$(".view")) {
    const svg = $("svg", fig);
    if (!svg) continue;
    let start = null, rubber = null;
    svg.addEventListener("mousedown", ev => {
      if (ev.target.closest(".removable")) return;
      start = imagePoint(svg, ev);
      rubber = el("svg:rect", { class: "rubber", x: start[0], y: start[1], width: 0, height: 0 });
      svg.appendChild(rubber);
      ev.preventDefault();
    });
    svg.addEventListener("mousemove", ev => {
      if (!start) return;
      const p = imagePoint(svg, ev);
      rubber.setAttribute("x", Math.min(p[0], start[0]));
      rubber.setAttribute("y", Math.min(p[1], start[1]));
      rubber.setAttribute("width", Math.abs(p[0] - start[0]));
      rubber.setAttribute("height", Math.abs(p[1] - start[1]));
    });
    const finish = ev => {
      if (!start) return;
      const p = imagePoint(svg, ev);
      const xyxy = [Math.min(p[0], start[0]), Math.min(p[1], start[1]), Math.max(p[0], start[0]), Math.max(p[1], start[1])];
      start = null;
      if (xyxy[2] - xyxy[0] >= 3 && xyxy[3] - xyxy[1] >= 3) {
        const id = Number(select.value);
        boxes.push({ camera: fig.dataset.camera, class: names[id], class_id: id, xyxy: xyxy.map(v => Math.round(v * 10) / 10) });
      }
      redraw();
    };
    svg.addEventListener("mouseup", finish);
    svg.addEventListener("mouseleave", finish);
  }

  for (const button of $$("button.decision")) {
    button.addEventListener("click", async () => {
      const msg = $("#review-message");
      say(msg, "saving…");
      const body = {
        decision: button.dataset.decision, comment: $("#review-comment").value,
        boxes: boxes.map(b => ({ camera: b.camera, class: b.class, class_id: b.class_id, xyxy: b.xyxy })),
      };
      const res = await api("POST", `/api/results/${result.seq}/review`, body);
      if (!res.ok) { say(msg, errorText(res.data), false); return; }
      const r = res.data;
      say(msg, `Saved: ${DECISION_TEXT[r.decision]} (review ${r.id})`, true);
      const cur = $("#current-decision");
      cur.textContent = DECISION_TEXT[r.decision];
      cur.className = `chip chip-${r.decision}`;
      const hist = $("#review-history");
      const empty = $(".muted", hist);
      if (empty) empty.remove();
      let text = `${DECISION_TEXT[r.decision]} by ${r.reviewer}, ${r.time}`;
      if (r.changes.removed.length) text += `; removed ${r.changes.removed.length} box(es)`;
      if (r.changes.added.length) text += `; added ${r.changes.added.length} box(es)`;
      hist.appendChild(el("li", {}, text));
    });
  }
}

// -- setup ------------------------------------------------------------------------------------------------------
function setupPage() {
  const line = document.body.dataset.line;
  const data = $("#data");
  const recipes = jsonData(data, "recipes");
  const classes = jsonData(data, "classes") || [];
  const sizes = jsonData(data, "sizes") || {};
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
      const size = sizes[cam] || [img.naturalWidth, img.naturalHeight];
      fitOverlay(svg, size[0], size[1]);
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
  ({ overview: overviewPage, line: linePage, result: resultPage, setup: setupPage }[page] || (() => {}))();
});
