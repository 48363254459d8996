// The clip page: a signal plot whose cursor follows the video and seeks it on click,
// the cameras of the clip group kept in step, verdicts, and keys.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("signal-data").textContent);
  const video = document.getElementById("video");
  const cams = [...document.querySelectorAll("video.cam")];
  const svg = document.getElementById("signals");
  const clipId = document.querySelector(".clip").dataset.clip;
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = {speed_mps: "#6cf", accel_mps2: "#f96", steering_angle_deg: "#fc6", brake_pressed: "#f66"};
  const SPAN = {hard_brake: "#f44", sharp_turn: "#fa4", evasive_steer: "#c6f", brake: "#f88", driver_override: "#6f6"};
  const W = 1000, LEFT = 110, RIGHT = 12, AXIS = 26, ROW = 16, MAX_ROWS = 4;
  const scenarios = data.scenarios || [], colors = data.colors || {};
  const duration = Math.max(data.t.length ? data.t[data.t.length - 1] + 0.05 : 0,
    parseFloat(document.querySelector(".clip").dataset.duration) || 0, 0.1);
  const x = t => LEFT + (W - LEFT - RIGHT) * t / duration;
  const tAt = px => Math.max(0, Math.min(duration, (px - LEFT) / (W - LEFT - RIGHT) * duration));
  const el = (name, attrs, text) => {
    const n = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };

  function legend() {
    // What the shaded spans are: one swatch per kind of trigger present in this clip.
    const box = document.getElementById("plot-legend");
    if (!box) return;
    const kinds = [...new Set(data.spans.map(s => s.kind))];
    box.replaceChildren();
    box.hidden = kinds.length === 0;
    if (!kinds.length) return;
    box.append("shaded: ");
    for (const k of kinds) {
      const sw = el("svg", {width: 12, height: 12, class: "swatch"});
      sw.appendChild(el("rect", {width: 12, height: 12, fill: SPAN[k] || "#888"}));
      const item = document.createElement("span");
      item.className = "legend-item";
      item.append(sw, ` ${k.replace(/_/g, " ")} `);
      box.append(item);
    }
  }

  // Scenario labels in rows above the lanes: each in the first row where it clears the one before.
  function labelRows() {
    const ends = [], rows = [];
    for (const s of scenarios) {
      const x0 = Math.max(x(s.t0), LEFT), text = `${s.name} v${s.version}`;
      const x1 = Math.max(x(s.t1), x0 + 7 * text.length + 10);
      let row = ends.findIndex(e => e <= x0);
      if (row < 0) row = ends.length < MAX_ROWS ? ends.length : ends.indexOf(Math.min(...ends));
      ends[row] = x1; rows.push({s, x0, text, row});
    }
    return {rows, n: ends.length};
  }

  function drawScenarios(labels, bottom) {
    // Each span shaded over every lane, its name (and version) written above them.
    for (const {s, x0, text, row} of labels.rows) {
      const color = colors[s.name] || "#888", y = 4 + row * ROW;
      const r = el("rect", {x: x(s.t0), y: y, width: Math.max(x(s.t1) - x(s.t0), 1.5), height: bottom - y,
        fill: color, "fill-opacity": 0.16, stroke: color, "stroke-opacity": 0.8, "stroke-dasharray": "4 3",
        "vector-effect": "non-scaling-stroke", class: "scenario-span"});
      r.dataset.name = s.name; r.dataset.version = String(s.version);
      r.dataset.t0 = String(s.t0); r.dataset.t1 = String(s.t1);
      r.appendChild(el("title", {}, `${text}: ${s.t0.toFixed(2)}-${s.t1.toFixed(2)} s`));
      svg.appendChild(r);
      const label = el("text", {x: x0 + 3, y: y + 12, fill: color, "font-size": 12, class: "scenario-label"},
        (s.before ? "\u2190 " : "") + text + (s.after ? " \u2192" : ""));
      label.dataset.name = s.name;
      svg.appendChild(label);
    }
  }

  // Policy versions' predicted actions, drawn dashed over the lane of the logged action.
  const policies = data.policies || [];
  const ACTION = {accel_mps2: "accel", steering_angle_deg: "steer"};
  const marked = policies.filter(p => p.worst);

  function yTicks(lo, span) {
    // Grid values of a lane: multiples of the largest 1-2-5 step that leaves two or more in it.
    const half = span / 2, base = Math.pow(10, Math.floor(Math.log10(half)));
    const step = [5, 2, 1].map(m => m * base).find(s => s <= half) || base;
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const out = [], first = Math.ceil(lo / step - 1e-9);
    if (!Number.isSafeInteger(first) || !(span > 0)) return out;  // a value past 2^53 steps: no grid, no endless loop
    for (let k = first; k * step <= lo + span + 1e-9 * step && out.length < 50; k++) out.push([k * step, digits]);
    return out;
  }

  function curve(ts, vs, x, y) {
    // A path through (t, v), lifted over missing values.
    let d = "", pen = false;
    vs.forEach((v, j) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(ts[j]).toFixed(2)},${y(v).toFixed(2)}`; pen = true;
    });
    return d;
  }

  function drawPolicies(lane, y) {
    const action = ACTION[lane.key];
    if (!action) return;
    for (const p of policies) {
      for (const [c, cls, dash, width] of [[p, "policy-pred", "6 4", 1.8], [p.horizon, "policy-horizon", "2 3", 1.4]]) {
        if (!c || !c[action] || !c[action].some(v => v !== null)) continue;
        const path = el("path", {d: curve(c.t, c[action], x, y), fill: "none", stroke: p.color, "stroke-width": width,
          "stroke-dasharray": dash, "vector-effect": "non-scaling-stroke", class: `${cls} ${cls}-${action}`});
        path.dataset.ref = p.ref; path.dataset.policy = p.name; path.dataset.version = String(p.version);
        path.appendChild(el("title", {}, `${p.ref}: ${cls === "policy-pred" ? "predicted" : "predicted at its worst step"} ${lane.label}`));
        svg.appendChild(path);
      }
    }
  }

  function drawWorst(row0, bottom) {
    // Each version's worst step: a line down the lanes, its errors written in a row above them.
    const fmt = (v, d) => (v === null ? null : v.toFixed(d));
    marked.forEach((p, i) => {
      const w = p.worst, xw = x(w.t), yRow = 4 + (row0 + i) * ROW;
      const line = el("line", {x1: xw, x2: xw, y1: yRow + 2, y2: bottom, stroke: p.color, "stroke-width": 1.5,
        "stroke-dasharray": "3 2", "vector-effect": "non-scaling-stroke", class: "worst-step"});
      line.dataset.ref = p.ref; line.dataset.t = String(w.t);
      const errs = [fmt(w.accel_err, 2) && `accel err ${fmt(w.accel_err, 2)} m/s\u00b2`,
        fmt(w.steer_err, 2) && `steer err ${fmt(w.steer_err, 2)}\u00b0`].filter(Boolean).join(", ");
      const text = `${p.ref} worst step ${w.t.toFixed(2)} s: ${errs}`;
      line.appendChild(el("title", {}, text));
      svg.appendChild(line);
      const right = xw > LEFT + (W - LEFT - RIGHT) * 0.6;
      const label = el("text", {x: right ? xw - 4 : xw + 4, y: yRow + 12, fill: p.color, "font-size": 12,
        "text-anchor": right ? "end" : "start", class: "worst-label"}, text);
      label.dataset.ref = p.ref;
      svg.appendChild(label);
    });
  }

  function draw() {
    const labels = labelRows(), TOP = 8 + (labels.n + marked.length) * ROW;
    const lanes = data.lanes, H = 280, laneH = (H - TOP - AXIS) / Math.max(lanes.length, 1);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("preserveAspectRatio", "none");
    svg.replaceChildren();
    legend();
    drawScenarios(labels, H - AXIS);
    for (const s of data.spans) {
      const r = el("rect", {x: x(s.t0), y: TOP, width: Math.max(x(s.t1) - x(s.t0), 1.5), height: H - TOP - AXIS,
        fill: SPAN[s.kind] || "#888", opacity: s.kind === "brake" ? 0.12 : 0.25, class: `span span-${s.kind}`});
      r.appendChild(el("title", {}, `${s.kind.replace("_", " ")}: ${s.t0.toFixed(2)}-${s.t1.toFixed(2)} s`));
      svg.appendChild(r);
    }
    lanes.forEach((lane, i) => {
      // A lane's scale holds the logged values and the policies' predictions of them alike.
      const action = ACTION[lane.key], vals = [lane.values];
      if (action) for (const p of policies) for (const c of [p, p.horizon]) vals.push(c[action] || []);
      let lo = Infinity, hi = -Infinity;
      for (const vs of vals) for (const v of vs) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      if (lo > hi) { lo = 0; hi = 1; }
      const y0 = TOP + i * laneH;
      const span = (hi - lo) || 1;
      const y = v => y0 + laneH - 6 - (laneH - 12) * (v - lo) / span;
      svg.appendChild(el("line", {x1: LEFT, x2: W - RIGHT, y1: y0 + laneH, y2: y0 + laneH, stroke: "#333"}));
      if (policies.length) {
        for (const [v, digits] of yTicks(lo, span)) {
          const g = el("line", {x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), stroke: "#2b2b2b", class: "ytick"});
          g.dataset.lane = lane.key;
          svg.appendChild(g);
          svg.appendChild(el("text", {x: W - RIGHT - 2, y: y(v) - 2, fill: "#777", "font-size": 10,
            "text-anchor": "end", class: "ytick-label"}, (Math.abs(v) < 1e-12 ? 0 : v).toFixed(digits)));
        }
      }
      svg.appendChild(el("path", {d: curve(data.t, lane.values, x, y), fill: "none", stroke: COLORS[lane.key] || "#ccc",
        "stroke-width": 1.6, "vector-effect": "non-scaling-stroke", class: `lane lane-${lane.key}`}));
      drawPolicies(lane, y);
      svg.appendChild(el("text", {x: 6, y: y0 + 16, fill: COLORS[lane.key] || "#ccc", "font-size": 13}, lane.label));
      svg.appendChild(el("text", {x: 6, y: y0 + 31, fill: "#999", "font-size": 11},
        `${lo.toFixed(1)} to ${hi.toFixed(1)} ${lane.unit}`));
    });
    drawWorst(labels.n, H - AXIS);
    const step = [0.5, 1, 2, 5, 10, 20, 30, 60].find(s => duration / s <= 12) || 120;
    const axisY = H - AXIS;
    svg.appendChild(el("line", {x1: LEFT, x2: W - RIGHT, y1: axisY, y2: axisY, stroke: "#777", class: "axis"}));
    for (let t = 0; t <= duration + 1e-9; t += step) {
      svg.appendChild(el("line", {x1: x(t), x2: x(t), y1: axisY, y2: axisY + 5, stroke: "#777"}));
      svg.appendChild(el("text", {x: x(t), y: axisY + 18, fill: "#aaa", "font-size": 12, "text-anchor": "middle",
        class: "tick"}, `${+t.toFixed(1)} s`));
    }
    svg.appendChild(el("line", {id: "cursor", x1: x(0), x2: x(0), y1: 8, y2: axisY, stroke: "#fff",
      "stroke-width": 2, "vector-effect": "non-scaling-stroke"}));
  }

  const tNow = document.getElementById("t-now");
  function follow() {
    const c = document.getElementById("cursor"), t = video ? video.currentTime : 0;
    if (c) { c.setAttribute("x1", x(t)); c.setAttribute("x2", x(t)); }
    tNow.textContent = t.toFixed(2);
    svg.dataset.cursorT = t.toFixed(3);
  }
  function loop() { follow(); if (video && !video.paused) requestAnimationFrame(loop); }

  if (data.t.length) draw();
  if (video) {
    ["timeupdate", "seeked", "loadedmetadata"].forEach(ev => video.addEventListener(ev, follow));
    video.addEventListener("play", () => { cams.forEach(c => { c.currentTime = video.currentTime; c.play().catch(() => {}); }); loop(); });
    video.addEventListener("pause", () => cams.forEach(c => c.pause()));
    video.addEventListener("seeked", () => cams.forEach(c => { c.currentTime = video.currentTime; }));
    video.addEventListener("error", () => {
      const p = document.getElementById("video-error");
      p.hidden = false;
      p.textContent = "The video could not be played (" + (video.error ? video.error.message || `code ${video.error.code}` : "unknown") +
        "). Download it from the link in the API, or check that the lake still holds it.";
    });
  }
  svg.addEventListener("click", e => {
    if (!video) return;
    const box = svg.getBoundingClientRect();
    const t = tAt((e.clientX - box.left) / box.width * W);
    video.currentTime = t; follow();
  });

  // Verdicts
  const status = document.getElementById("verdict-status");
  async function mark(verdict) {
    const tags = document.getElementById("tags").value.split(",").map(s => s.trim()).filter(Boolean);
    const note = document.getElementById("note").value.trim() || null;
    status.textContent = "saving...";
    try {
      const r = await fm.api("POST", `/v1/clips/${encodeURIComponent(clipId)}/reviews`, {verdict, tags, note});
      status.textContent = `saved: ${verdict.replace("_", " ")} by ${r.reviewer}`;
      const cur = document.getElementById("current-verdict");
      cur.innerHTML = ""; const b = document.createElement("span");
      b.className = `verdict v-${verdict}`; b.textContent = verdict.replace("_", " "); cur.appendChild(b);
      const li = document.createElement("li");
      li.textContent = `${verdict.replace("_", " ")} by ${r.reviewer} now${tags.length ? " · " + tags.join(", ") : ""}${note ? " · " + note : ""}`;
      const hist = document.getElementById("history");
      hist.querySelector(".muted")?.remove(); hist.prepend(li);
      document.body.dataset.verdict = verdict;
    } catch (err) {
      status.textContent = `not saved: ${err.message}`; status.className = "error";
    }
  }
  document.querySelectorAll("button[data-verdict]").forEach(b => b.addEventListener("click", () => mark(b.dataset.verdict)));

  const similarIds = () => [...document.querySelectorAll("#similar .card")].map(c => c.dataset.clip);
  document.getElementById("add-similar")?.addEventListener("click", () => fm.add(similarIds()));
  document.addEventListener("keydown", e => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const verdicts = ["confirmed", "not_interesting", "mislabelled"];
    const canMark = !document.querySelector("button[data-verdict]")?.disabled;
    const strip = [...document.querySelectorAll("#neighbours .card")];
    const here = strip.findIndex(c => c.dataset.clip === clipId);
    if (["1", "2", "3"].includes(e.key) && canMark) mark(verdicts[+e.key - 1]);
    else if (e.key === "b") fm.toggle(clipId);
    else if (e.key === " " && video) { video.paused ? video.play() : video.pause(); }
    else if (e.key === "j" && strip[here + 1]) location.href = strip[here + 1].querySelector("a").href;
    else if (e.key === "k" && here > 0) location.href = strip[here - 1].querySelector("a").href;
    else return;
    e.preventDefault();
  });
})();
