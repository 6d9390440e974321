// rigstream monitor page: plain JavaScript, no build step, no external resources.
//
// Frames are pulled one at a time per camera (GET /api/frame/<camera>?after=<n>): a tile asks
// for the next frame only after it has drawn the last one, so a slow browser simply asks less
// often. /api/state is polled about four times a second, /api/pose3d long-polled for the 3D view.
"use strict";

const STATE_EVERY_MS = 250;
const RETRY_MS = 1000;

const app = {
  config: null,
  state: null,
  edges: [],          // skeleton as [i, j] index pairs into the pose's keypoints
  pose3d: null,
  lastPose3d: null,  // the newest pose that had 3D points
  bounds: null,       // running 3D bounds {min: [x, y, z], max: [x, y, z]} in mm
  view: { yaw: -0.65, pitch: 0.5 },
  tiles: {},
  eventsKey: "",
};

// -- helpers -----------------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nextPaint = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function num(value, digits = 1, unit = "") {
  if (value === null || value === undefined || Number.isNaN(+value)) return "-";
  return `${(+value).toFixed(digits)}${unit}`;
}

function int(value) {
  if (value === null || value === undefined || Number.isNaN(+value)) return "-";
  return Math.round(+value).toLocaleString("en-US");
}

function pair(stats, digits = 1) {
  if (!stats || stats.p50 === null || stats.p50 === undefined) return "-";
  return `${num(stats.p50, digits)} / ${num(stats.p99, digits)} / ${num(stats.max, digits)} ms`;
}

function keypointColor(i, n) {
  return `hsl(${Math.round((i * 360) / Math.max(n, 1))}, 85%, 62%)`;
}

const RULE_COLORS = ["#ff9f43", "#a78bfa", "#f472b6", "#22d3ee", "#facc15", "#34d399"];
function ruleColor(name) {
  const rules = (app.config && app.config.rules) || [];
  const i = Math.max(0, rules.findIndex((r) => r.name === name));
  return RULE_COLORS[i % RULE_COLORS.length];
}

function ruleActive(name) {
  const rules = (app.state && app.state.rules) || [];
  const rule = rules.find((r) => r.name === name);
  return Boolean(rule && rule.active);
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// A canvas sized to its CSS box at the device's pixel ratio; returns its 2D context in CSS px.
function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, width: canvas.clientWidth, height: canvas.clientHeight };
}

// -- camera tiles ------------------------------------------------------------------------------

function buildTiles() {
  const holder = $("#tiles");
  for (const cam of app.config.cameras) {
    const canvas = el("canvas", { width: String(cam.width), height: String(cam.height) });
    canvas.style.setProperty("--aspect", `${cam.width} / ${cam.height}`);
    const info = el("span", { class: "tile-info", text: "waiting for frames" });
    const status = el("span", { class: "tile-status" });
    const figure = el("figure", { class: "tile", "data-camera": cam.name, "data-trigger-index": "-1",
                                  "data-frames": "0" },
      canvas, el("figcaption", {}, el("span", { class: "cam-name", text: cam.name }), info), status);
    holder.append(figure);
    app.tiles[cam.name] = { cam, figure, canvas, info, status, after: -1, shown: 0 };
  }
}

async function tileLoop(tile) {
  const minGapMs = 1000 / (app.config.max_fps || 15);
  let lastShown = 0;
  for (;;) {
    const wait = lastShown + minGapMs - performance.now();
    if (wait > 0) await sleep(wait);
    let response;
    try {
      response = await fetch(`/api/frame/${encodeURIComponent(tile.cam.name)}?after=${tile.after}`,
                             { cache: "no-store" });
    } catch (err) {
      tile.status.textContent = "monitor not reachable";
      await sleep(RETRY_MS);
      continue;
    }
    if (response.status === 204) {
      const newest = parseInt(response.headers.get("X-Newest-Index") || "-1", 10);
      if (newest >= 0 && newest < tile.after) tile.after = -1;  // a new session counts from 0 again
      tile.status.textContent = tile.shown ? "no new frames" : "waiting for frames";
      continue;
    }
    if (!response.ok) {
      tile.status.textContent = `frame request failed: HTTP ${response.status}`;
      await sleep(RETRY_MS);
      continue;
    }
    try {
      await showFrame(tile, response);
    } catch (err) {
      tile.status.textContent = `cannot draw frame: ${err}`;
      await sleep(RETRY_MS);
      continue;
    }
    lastShown = performance.now();
    await nextPaint();
  }
}

async function showFrame(tile, response) {
  const index = parseInt(response.headers.get("X-Trigger-Index"), 10);
  const poseIndex = response.headers.get("X-Pose-Index");
  const keypoints = JSON.parse(response.headers.get("X-Keypoints") || "null");
  const bitmap = await createImageBitmap(await response.blob());
  const { canvas } = tile;
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const scale = canvas.width / tile.cam.width;
  drawRegions2d(ctx, tile.cam.name, scale);
  if (keypoints) drawKeypoints2d(ctx, keypoints, canvas.width);
  tile.after = index;
  tile.shown += 1;
  tile.figure.dataset.triggerIndex = String(index);
  tile.figure.dataset.frames = String(tile.shown);
  const pose = poseIndex === null ? "no keypoints"
    : (+poseIndex === index ? "keypoints" : `keypoints of n=${poseIndex}`);
  const newest = parseInt(response.headers.get("X-Newest-Index") || "-1", 10);
  const behindS = newest > index ? (newest - index) / app.config.rate_hz : 0;
  const behind = behindS >= 0.15 ? ` · ${num(behindS, 1)} s behind live` : "";
  tile.info.textContent = `n=${index} · ${pose}${behind}`;
  tile.status.textContent = "";
}

function drawKeypoints2d(ctx, keypoints, width) {
  const radius = Math.max(2.5, width / 160);
  ctx.lineWidth = Math.max(1.5, width / 400);
  ctx.strokeStyle = "rgba(255, 255, 255, 0.75)";
  for (const [i, j] of app.edges) {
    const a = keypoints[i];
    const b = keypoints[j];
    if (!a || !b) continue;
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  }
  keypoints.forEach((p, i) => {
    if (!p) return;
    ctx.beginPath();
    ctx.arc(p[0], p[1], radius, 0, 2 * Math.PI);
    ctx.fillStyle = keypointColor(i, keypoints.length);
    ctx.globalAlpha = p[2] >= 0.3 ? 1 : 0.35;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
    ctx.lineWidth = 1;
    ctx.stroke();
  });
}

function drawRegions2d(ctx, camera, scale) {
  for (const region of app.config.regions) {
    if (region.shape !== "box" || region.camera !== camera) continue;
    const [x0, y0] = region.min;
    const [x1, y1] = region.max;
    ctx.strokeStyle = ruleColor(region.rule);
    ctx.lineWidth = 2;
    ctx.setLineDash(region.negated ? [6, 4] : []);
    ctx.strokeRect(x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
    ctx.setLineDash([]);
    if (ruleActive(region.rule)) {
      ctx.fillStyle = "rgba(255, 159, 67, 0.18)";
      ctx.fillRect(x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
    }
  }
}

// -- 3D view -----------------------------------------------------------------------------------

async function pose3dLoop() {
  const minGapMs = 1000 / (app.config.max_fps || 15);
  let after = -1;
  for (;;) {
    const started = performance.now();
    try {
      const response = await fetch(`/api/pose3d?after=${after}`, { cache: "no-store" });
      if (response.status === 200) {
        app.pose3d = await response.json();
        after = app.pose3d.trigger_index;
        if (app.pose3d.edges && app.pose3d.edges.length) app.edges = app.pose3d.edges;
        draw3d();
      } else if (response.status !== 204) {
        await sleep(RETRY_MS);
      }
    } catch (err) {
      await sleep(RETRY_MS);
    }
    const wait = started + minGapMs - performance.now();
    if (wait > 0) await sleep(wait);
    await nextPaint();
  }
}

function growBounds(points) {
  for (const p of points) {
    if (!p || p.some((v) => v === null || !Number.isFinite(v))) continue;
    if (!app.bounds) app.bounds = { min: [...p], max: [...p] };
    for (let k = 0; k < 3; k++) {
      app.bounds.min[k] = Math.min(app.bounds.min[k], p[k]);
      app.bounds.max[k] = Math.max(app.bounds.max[k], p[k]);
    }
  }
}

function regionPoints() {
  const points = [];
  for (const r of app.config.regions) {
    if (r.camera) continue;
    if (r.shape === "box") points.push(r.min, r.max);
    if (r.shape === "sphere") {
      const [x, y, z] = r.center;
      const s = r.radius_mm;
      points.push([x - s, y - s, z - s], [x + s, y + s, z + s]);
    }
  }
  return points;
}

function niceStep(x) {
  const exp = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 5, 10]) if (m * exp >= x) return m * exp;
  return 10 * exp;
}

function makeProjection(width, height) {
  const b = app.bounds;
  const center = [0, 1, 2].map((k) => (b.min[k] + b.max[k]) / 2);
  const radius = Math.max(60, ...[0, 1, 2].map((k) => (b.max[k] - b.min[k]) / 2)) * 1.2;
  const scale = (Math.min(width, height) * 0.5) / radius;
  const { yaw, pitch } = app.view;
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  return (p) => {
    const dx = p[0] - center[0], dy = p[1] - center[1], dz = p[2] - center[2];
    const x1 = cy * dx - sy * dy;
    const y1 = sy * dx + cy * dy;
    return { x: width / 2 + scale * x1, y: height / 2 - scale * (y1 * sp + dz * cp),
             depth: y1 * cp - dz * sp, scale };
  };
}

function draw3d() {
  const canvas = $("#view3d");
  const { ctx, width, height } = fitCanvas(canvas);
  ctx.clearRect(0, 0, width, height);
  // A pose without any 3D point (tracking lost) leaves the last one with points drawn, dimmed.
  const pose = app.pose3d;
  const hasPoints = pose && pose.xyz.some((p) => p && p.every((v) => v !== null));
  if (hasPoints) app.lastPose3d = pose;
  const shown = hasPoints ? pose : app.lastPose3d;
  const points = shown ? shown.xyz : [];
  growBounds(points);
  growBounds(regionPoints());
  if (!app.bounds) {
    ctx.fillStyle = "#5f6977";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText("waiting for 3D poses", 16, 26);
    return;
  }
  const project = makeProjection(width, height);
  drawFloor(ctx, project);
  drawRegions3d(ctx, project);
  ctx.globalAlpha = hasPoints ? 1 : 0.35;
  const drawn = drawPose3d(ctx, project, points);
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#8a94a3";
  ctx.font = "12px ui-monospace, monospace";
  let caption = "no pose yet";
  if (hasPoints) caption = `n=${pose.trigger_index} · ${drawn} of ${points.length} keypoints`;
  else if (pose && shown) caption = `n=${pose.trigger_index}: no 3D points (showing n=${shown.trigger_index})`;
  else if (pose) caption = `n=${pose.trigger_index}: no 3D points`;
  ctx.fillText(caption, 12, height - 12);
  canvas.dataset.points = String(hasPoints ? drawn : 0);
  canvas.dataset.triggerIndex = String(pose ? pose.trigger_index : -1);
}

function drawFloor(ctx, project) {
  const b = app.bounds;
  const span = Math.max(b.max[0] - b.min[0], b.max[1] - b.min[1], 100);
  const step = niceStep(span / 6);
  const x0 = Math.floor(b.min[0] / step) * step, x1 = Math.ceil(b.max[0] / step) * step;
  const y0 = Math.floor(b.min[1] / step) * step, y1 = Math.ceil(b.max[1] / step) * step;
  const line = (a, c, style, width = 1) => {
    const p = project(a), q = project(c);
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    ctx.beginPath();
    ctx.moveTo(p.x, p.y);
    ctx.lineTo(q.x, q.y);
    ctx.stroke();
  };
  for (let x = x0; x <= x1 + 1e-6; x += step) line([x, y0, 0], [x, y1, 0], "#222a34");
  for (let y = y0; y <= y1 + 1e-6; y += step) line([x0, y, 0], [x1, y, 0], "#222a34");
  const origin = [Math.min(Math.max(0, x0), x1), Math.min(Math.max(0, y0), y1), 0];
  const axes = [[[step, 0, 0], "#ff6b6b", "x"], [[0, step, 0], "#3ecf8e", "y"], [[0, 0, step], "#4ea1ff", "z"]];
  for (const [d, color, label] of axes) {
    const tip = [origin[0] + d[0], origin[1] + d[1], origin[2] + d[2]];
    line(origin, tip, color, 2);
    const t = project(tip);
    ctx.fillStyle = color;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(label, t.x + 3, t.y - 3);
  }
  ctx.fillStyle = "#5f6977";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`grid ${step} mm`, 12, 18);
}

function drawRegions3d(ctx, project) {
  for (const r of app.config.regions) {
    if (r.camera) continue;
    const color = ruleColor(r.rule);
    const active = ruleActive(r.rule);
    ctx.strokeStyle = color;
    ctx.lineWidth = active ? 2.5 : 1.5;
    ctx.setLineDash(r.negated ? [5, 4] : []);
    if (r.shape === "sphere") {
      const c = project(r.center);
      ctx.beginPath();
      ctx.arc(c.x, c.y, r.radius_mm * c.scale, 0, 2 * Math.PI);
      if (active) {
        ctx.fillStyle = "rgba(255, 159, 67, 0.22)";
        ctx.fill();
      }
      ctx.stroke();
    } else if (r.shape === "box") {
      drawBox(ctx, project, r.min, r.max, active);
    }
    ctx.setLineDash([]);
  }
}

function drawBox(ctx, project, lo, hi, active) {
  const corner = (i) => project([(i & 1) ? hi[0] : lo[0], (i & 2) ? hi[1] : lo[1], (i & 4) ? hi[2] : lo[2]]);
  const c = [0, 1, 2, 3, 4, 5, 6, 7].map(corner);
  const edges = [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]];
  ctx.beginPath();
  for (const [i, j] of edges) {
    ctx.moveTo(c[i].x, c[i].y);
    ctx.lineTo(c[j].x, c[j].y);
  }
  ctx.stroke();
  if (active) {
    ctx.fillStyle = "rgba(255, 159, 67, 0.12)";
    ctx.beginPath();
    [0, 1, 3, 2].forEach((i, k) => (k ? ctx.lineTo(c[i].x, c[i].y) : ctx.moveTo(c[i].x, c[i].y)));
    ctx.fill();
  }
}

function drawPose3d(ctx, project, points) {
  const projected = points.map((p) => (p && p.every((v) => v !== null) ? project(p) : null));
  ctx.strokeStyle = "rgba(228, 232, 238, 0.85)";
  ctx.lineWidth = 2;
  for (const [i, j] of app.edges) {
    const a = projected[i], b = projected[j];
    if (!a || !b) continue;
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
  }
  const order = projected.map((p, i) => [p, i]).filter(([p]) => p).sort((a, b) => b[0].depth - a[0].depth);
  for (const [p, i] of order) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, 4.5, 0, 2 * Math.PI);
    ctx.fillStyle = keypointColor(i, points.length);
    ctx.fill();
    ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
    ctx.lineWidth = 1;
    ctx.stroke();
  }
  return order.length;
}

function setupDrag() {
  const canvas = $("#view3d");
  let last = null;
  canvas.addEventListener("pointerdown", (e) => {
    last = [e.clientX, e.clientY];
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    app.view.yaw += (e.clientX - last[0]) * 0.01;
    app.view.pitch = Math.max(-0.2, Math.min(Math.PI / 2, app.view.pitch + (e.clientY - last[1]) * 0.01));
    last = [e.clientX, e.clientY];
    draw3d();
  });
  const release = () => { last = null; };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("dblclick", () => {
    app.view = { yaw: -0.65, pitch: 0.5 };
    draw3d();
  });
  window.addEventListener("resize", () => { draw3d(); drawHistogram(); });
}

function buildRegionsLegend() {
  const holder = $("#regions-legend");
  const seen = new Set();
  for (const r of app.config.regions) {
    if (r.camera || seen.has(r.rule)) continue;
    seen.add(r.rule);
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = ruleColor(r.rule);
    holder.append(el("span", {}, swatch, `${r.rule} (${r.shape} on ${r.keypoint})`));
  }
}

// -- state panels ------------------------------------------------------------------------------

async function stateLoop() {
  for (;;) {
    const started = performance.now();
    try {
      app.state = await getJSON("/api/state");
      renderState(app.state);
    } catch (err) {
      const pill = $("#session-state");
      pill.textContent = "monitor not reachable";
      pill.dataset.state = "error";
    }
    await sleep(Math.max(50, started + STATE_EVERY_MS - performance.now()));
  }
}

function renderState(state) {
  if ((!app.edges || !app.edges.length) && state.edges && state.edges.length) app.edges = state.edges;
  renderSession(state.session);
  renderCameras(state.cameras);
  renderPose(state.pose);
  drawHistogram();
  renderRules(state.rules);
  renderEvents(state.events);
}

function renderSession(s) {
  const pill = $("#session-state");
  const failed = Object.keys(s.failed || {});
  let label = "waiting for the session";
  let mood = "waiting";
  if (s.seen) {
    const stale = s.age_s !== null && s.age_s > 3;
    label = stale ? `no health for ${num(s.age_s, 0)} s` : (failed.length ? `${failed.length} failed` : "running");
    mood = stale ? "stale" : (failed.length ? "failed" : "running");
  }
  pill.textContent = label;
  pill.dataset.state = mood;
  $("#session-t").textContent = s.t_s === null || s.t_s === undefined ? "-" : `${num(s.t_s, 1)} s`;
  $("#session-pulses").textContent = int(s.pulses);
  $("#session-rate").textContent = s.rate_hz ? `${num(s.rate_hz, 0)} Hz` : "-";
  const holder = $("#components");
  const comps = Object.entries(s.components || {});
  const key = comps.map(([n, st]) => `${n}=${st}`).join(",") + failed.join(",");
  if (holder.dataset.key === key) return;
  holder.dataset.key = key;
  holder.replaceChildren(...comps.map(([name, st]) => {
    const state = failed.includes(name) ? "failed" : st;
    return el("span", { class: "pill", "data-state": state, text: `${name} · ${state}` });
  }));
}

function renderCameras(cameras) {
  const body = $("#camera-table tbody");
  for (const [name, c] of Object.entries(cameras)) {
    let row = body.querySelector(`tr[data-camera="${CSS.escape(name)}"]`);
    if (!row) {
      row = el("tr", { "data-camera": name }, el("td", { text: name }));
      for (const field of ["fps", "frames", "dropped", "ring", "monitor"]) {
        row.append(el("td", { "data-field": field }));
      }
      body.append(row);
    }
    const cell = (field) => row.querySelector(`td[data-field="${field}"]`);
    cell("fps").textContent = num(c.fps, 1);
    cell("frames").textContent = int(c.frames);
    cell("dropped").textContent = int(c.dropped);
    cell("dropped").classList.toggle("bad", (c.dropped || 0) > 0);
    renderFill(cell("ring"), c.ring_fill);
    cell("monitor").textContent = c.monitor_fps === null ? "-" : `${num(c.monitor_fps, 0)} fps`;
    cell("monitor").title = `frames the monitor received: ${int(c.monitor_frames)} (it keeps the newest; the tile shows at most ${app.config.max_fps} fps)`;
  }
}

function renderFill(td, fill) {
  if (fill === null || fill === undefined) {
    td.textContent = "-";
    return;
  }
  const pct = Math.round(fill * 100);
  const bar = el("span", { class: "bar" }, el("span"));
  bar.firstChild.style.width = `${pct}%`;
  td.replaceChildren(el("span", { class: "fill" }, bar, `${pct}%`));
}

function renderPose(p) {
  const put = (field, text) => { $(`#pose-stats dd[data-field="${field}"]`).textContent = text; };
  put("posed", int(p.posed));
  put("skipped", int(p.skipped));
  put("p2d", pair(p.pulse_to_pose2d_ms));
  put("p3d", pair(p.pulse_to_pose3d_ms));
  put("pttl", pair(p.pulse_to_ttl_ms));
  put("last3d", p.last_pose3d_index === null ? "-" : `n=${p.last_pose3d_index}`);
}

function drawHistogram() {
  const state = app.state;
  const canvas = $("#histogram");
  const { ctx, width, height } = fitCanvas(canvas);
  ctx.clearRect(0, 0, width, height);
  if (!state) return;
  const h = state.histogram;
  const series = [["pulse_to_pose3d", "pulse → 3D pose", "#4ea1ff"], ["pulse_to_ttl", "pulse → TTL", "#ff9f43"]];
  const left = 8, right = width - 8, top = 48, bottom = height - 22;
  const bins = h.edges_ms.length - 1;
  const binWidth = (right - left) / bins;
  const fractions = series.map(([key]) => {
    const counts = h.counts[key] || [];
    const total = counts.reduce((a, b) => a + b, 0);
    return counts.map((c) => (total ? c / total : 0));
  });
  const peak = Math.max(0.01, ...fractions.flat());
  series.forEach(([key, label, color], s) => {
    ctx.fillStyle = color;
    fractions[s].forEach((f, i) => {
      if (!f) return;
      const barHeight = ((bottom - top) * f) / peak;
      const x = left + i * binWidth + 1 + (s * (binWidth - 2)) / 2;
      ctx.fillRect(x, bottom - barHeight, Math.max(1, (binWidth - 2) / 2), barHeight);
    });
    const st = h.stats[key] || {};
    ctx.font = "12px system-ui, sans-serif";
    const y = 6 + s * 18;
    ctx.fillRect(left, y, 10, 10);
    ctx.fillStyle = "#c9d1dc";
    const text = st.n ? `${label}   p50 ${num(st.p50)} · p99 ${num(st.p99)} · max ${num(st.max)} ms · n ${st.n}` : `${label}: none yet`;
    ctx.fillText(text, left + 16, y + 9);
  });
  ctx.strokeStyle = "#2a313c";
  ctx.beginPath();
  ctx.moveTo(left, bottom + 0.5);
  ctx.lineTo(right, bottom + 0.5);
  ctx.stroke();
  ctx.fillStyle = "#8a94a3";
  ctx.font = "11px ui-monospace, monospace";
  const maxMs = h.edges_ms[bins];
  for (const frac of [0, 0.25, 0.5, 0.75, 1]) {
    const x = left + frac * (right - left);
    const label = `${num(maxMs * frac, maxMs < 10 ? 1 : 0)}${frac === 1 ? " ms" : ""}`;
    const w = ctx.measureText(label).width;
    ctx.fillText(label, Math.min(right - w, Math.max(left, x - w / 2)), bottom + 15);
  }
}

function renderRules(rules) {
  const body = $("#rules-table tbody");
  $("#rules-empty").hidden = rules.length > 0;
  $("#rules-table").hidden = rules.length === 0;
  for (const r of rules) {
    let row = body.querySelector(`tr[data-rule="${CSS.escape(r.name)}"]`);
    if (!row) {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = ruleColor(r.name);
      row = el("tr", { "data-rule": r.name });
      const name = el("td", {}, swatch, r.name);
      row.append(name, el("td", { class: "text", text: r.kind || "-" }),
                 el("td", { class: "text", text: (r.actions || []).join(", ") || "-" }),
                 el("td", { "data-field": "fired" }), el("td", { "data-field": "last" }),
                 el("td", { "data-field": "state", class: "text" }));
      body.append(row);
    }
    row.querySelector('[data-field="fired"]').textContent = int(r.fired);
    row.querySelector('[data-field="last"]').textContent =
      r.last_trigger_index === null || r.last_trigger_index === undefined ? "-" : `n=${r.last_trigger_index}`;
    const badges = [];
    if (r.active) badges.push(el("span", { class: "badge on", text: "active" }));
    if (r.armed === true) badges.push(el("span", { class: "badge armed", text: "armed" }));
    if (r.armed === false) badges.push(el("span", { class: "badge", text: "disarmed" }));
    if (!badges.length) badges.push("-");
    row.querySelector('[data-field="state"]').replaceChildren(...badges);
  }
}

function renderEvents(events) {
  const key = events.length ? `${events.length}:${events[0].t_s}:${events[0].text}` : "0";
  if (key === app.eventsKey) return;
  app.eventsKey = key;
  const list = $("#events");
  list.replaceChildren(...events.map((e) => el("li", { "data-kind": e.kind },
    el("span", { class: "t", text: e.t }),
    el("span", { class: `kind kind-${e.kind}`, text: e.kind }),
    el("span", { class: "text", text: e.text }))));
  if (!events.length) list.append(el("li", { class: "empty", text: "nothing yet" }));
}

// -- buttons -----------------------------------------------------------------------------------

function setupButtons() {
  const status = $("#action-status");
  const press = async (button, url, body, describe) => {
    button.disabled = true;
    status.className = "action-status";
    status.textContent = "…";
    try {
      const response = await fetch(url, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const reply = await response.json().catch(() => ({}));
      const ok = response.ok && reply.ok !== false;
      status.className = `action-status ${ok ? "ok" : "bad"}`;
      status.textContent = ok ? describe(reply) : (reply.error || `HTTP ${response.status}`);
    } catch (err) {
      status.className = "action-status bad";
      status.textContent = `request failed: ${err}`;
    } finally {
      button.disabled = false;
    }
  };
  $("#btn-clip").addEventListener("click", (e) =>
    press(e.currentTarget, "/api/clip", {},
          (reply) => reply.message || "clip requested from the ring buffer"));
  $("#btn-ttl").addEventListener("click", (e) =>
    press(e.currentTarget, "/api/ttl", { width_ms: app.config.ttl_width_ms },
          (reply) => `TTL #${reply.data && reply.data.index !== undefined ? reply.data.index : "?"} fired`));
}

// -- start -------------------------------------------------------------------------------------

async function main() {
  for (;;) {
    try {
      app.config = await getJSON("/api/config");
      break;
    } catch (err) {
      $("#session-state").textContent = "monitor not reachable";
      await sleep(RETRY_MS);
    }
  }
  document.title = `rigstream monitor · ${app.config.rig}`;
  $("#rig-name").textContent = app.config.rig;
  buildTiles();
  buildRegionsLegend();
  setupDrag();
  setupButtons();
  draw3d();
  stateLoop();
  pose3dLoop();
  for (const tile of Object.values(app.tiles)) tileLoop(tile);
}

main();
