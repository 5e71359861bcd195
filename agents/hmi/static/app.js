// Operator page: follows /events (Server-Sent Events) and redraws what changed.
// No framework, no build step. All text from the line goes through textContent.
(() => {
  "use strict";

  const STALE_MS = 3000;

  /** Absolute URL of a relative path with extra query parameters. The token is never in a
   * URL: the server moved it to an HttpOnly cookie that the browser sends by itself. */
  function url(path, extra) {
    const u = new URL(path, document.baseURI);
    for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, String(v));
    return u.href;
  }

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const fmt = (n) => (n === null || n === undefined ? "\u2013" : Number(n).toLocaleString());
  const fixed = (n, d) => (n === null || n === undefined ? "\u2013" : Number(n).toFixed(d));
  function duration(s) {
    if (s === null || s === undefined) return "\u2013";
    if (s < 60) return `${Math.round(s)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const pretty = (outcome) => String(outcome || "").replace(/_/g, " ");
  /** The one numbering the page uses: the part key (the PLC's seq only where it is labelled). */
  const partName = (p) => (p && p.key ? p.key : p && p.part_seq !== null && p.part_seq !== undefined ? `seq ${p.part_seq}` : "\u2013");
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  const outcomeClass = (o) => (o === "ok" ? "ok" : o === "incomplete" ? "warn" : "bad");

  // -- header ------------------------------------------------------------------------------
  let lastMessageAt = 0;
  function setLink(state) {
    const pill = $("link");
    if (pill.dataset.state === state) return;
    pill.dataset.state = state;
    pill.textContent = { live: "LIVE", stale: "STALE", offline: "OFFLINE", connecting: "CONNECTING" }[state];
  }
  setInterval(() => {
    $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false });
    if (lastMessageAt && Date.now() - lastMessageAt > STALE_MS && $("link").dataset.state === "live") {
      setLink("stale");
    }
  }, 500);

  function renderHeader(s) {
    $("graph").textContent = s.graph ? `graph ${s.graph}` : "";
    const last = s.last_outcome;
    const box = $("last-part");
    if (!last) return;
    box.replaceChildren(
      document.createTextNode("Last part "),
      el("b", "", partName(last)),
      el("span", `tag ${outcomeClass(last.outcome)}`, pretty(last.outcome).toUpperCase()),
    );
  }

  // -- counters ----------------------------------------------------------------------------
  function renderCounters(c) {
    $("k-parts").textContent = fmt(c.parts);
    $("k-ok").textContent = fmt(c.ok);
    $("k-defective").textContent = fmt(c.defective);
    $("k-incomplete").textContent = fmt(c.incomplete);
    $("k-rate").textContent = `${fixed(c.parts_per_min, 1)} / min`;
    const by = c.by_outcome || {};
    $("k-split").textContent =
      `front ${fmt(by.defective_front || 0)} \u00b7 back ${fmt(by.defective_back || 0)} \u00b7 both ${fmt(by.defective_both || 0)}`;
    $("k-rejected").textContent = `${fmt(c.rejected)} rejected in total`;
    const y = c.yield_pct;
    $("k-yield").textContent = y === null || y === undefined ? "\u2013" : y.toFixed(1);
    $("yield-bar").style.width = `${y || 0}%`;
    const target = c.yield_target_pct;
    $("k-target").textContent = `target ${fixed(target, 1)}%`;
    $("yield-mark").style.left = `${target}%`;
    $("yield-box").dataset.level = y === null || y === undefined ? "" : y >= target ? "good" : y >= target - 5 ? "fair" : "poor";
  }

  // -- cameras -----------------------------------------------------------------------------
  const tiles = new Map();

  function makeTile(name) {
    const root = el("article", "cam");
    const head = el("div", "cam-head");
    const title = el("span", "cam-name", name);
    const badge = el("span", "badge", "NO VERDICT");
    head.append(title, badge);
    const frame = el("div", "cam-img");
    const img = el("img");
    img.alt = `camera ${name}`;
    img.dataset.camera = name;
    frame.append(img);
    const foot = el("div", "cam-foot");
    const tile = { root, badge, img, foot, name, shown: -1, wanted: -1, loading: false,
      latest: null, pending: null };
    img.addEventListener("load", () => {
      tile.loading = false;
      if (tile.pending) renderTileInfo(tile, tile.pending);
      loadImage(tile);
    });
    img.addEventListener("error", () => {
      tile.loading = false;
      setTimeout(() => loadImage(tile), 1000);
    });
    root.append(head, frame, foot);
    return tile;
  }

  function loadImage(tile) {
    if (tile.loading || tile.wanted <= tile.shown) return;
    tile.loading = true;
    tile.shown = tile.wanted;
    tile.pending = tile.latest;
    // the server gives the address: a camera name may hold "/" or a lone surrogate
    tile.img.src = url(tile.latest.image, { v: tile.wanted });
  }

  function footItem(label, value) {
    const span = el("span", "", `${label} `);
    span.append(el("b", "", value));
    return span;
  }

  /** Badge and footer of a tile; drawn when its image arrives, so both tell the same story. */
  function renderTileInfo(tile, cam) {
    const v = cam.verdict;
    if (v) {
      const cls = v.defective ? "bad" : "ok";
      tile.badge.className = `badge ${cls}`;
      tile.badge.textContent = `${String(v.label).toUpperCase()} \u00b7 P(def) ${fixed(v.score, 2)}${v.matched ? "" : " *"}`;
      tile.badge.title = v.matched ? "label and P(defective) of this picture"
        : "* the newest verdict, of another picture";
      tile.root.dataset.state = cls;
    } else {
      tile.badge.className = "badge";
      tile.badge.textContent = "NO VERDICT";
      tile.root.dataset.state = "";
    }
    tile.foot.replaceChildren(
      footItem("part", partName(cam)),
      footItem("fps", fixed(cam.fps, 1)),
      footItem("ok", fmt(cam.ok)),
      footItem("defective", fmt(cam.defective)),
      footItem("model", v ? v.model : "\u2013"),
    );
  }

  function renderCameras(cams) {
    const box = $("cameras");
    $("no-cameras").hidden = cams.length > 0;
    for (const cam of cams) {
      let tile = tiles.get(cam.name);
      if (!tile) {
        tile = makeTile(cam.name);
        tiles.set(cam.name, tile);
        box.append(tile.root);
        renderTileInfo(tile, cam);
      }
      tile.latest = cam;
      tile.root.dataset.stale = cam.age_s !== null && cam.age_s > 5 ? "1" : "0";
      if (cam.has_image) {
        tile.wanted = cam.version;
        loadImage(tile);
      } else {
        renderTileInfo(tile, cam);
      }
    }
  }

  // -- defects -----------------------------------------------------------------------------
  const shownDefects = new Map();
  let firstDefectRender = true;

  function renderDefects(defects) {
    const strip = $("defects");
    $("defect-count").textContent = defects.length ? `(${defects.length} most recent)` : "";
    if (!defects.length) {
      if (shownDefects.size || firstDefectRender) strip.replaceChildren(el("div", "muted", "No rejected parts."));
      shownDefects.clear();
      firstDefectRender = false;
      return;
    }
    const nodes = [];
    for (const d of defects) {
      let node = shownDefects.get(d.uid);
      if (!node) {
        node = el("figure", "defect");
        if (!firstDefectRender) node.classList.add("fresh");
        const img = el("img");
        img.alt = `reject ${partName(d)}`;
        img.src = url(`defect/${d.index}.jpg`, { uid: d.uid });
        const cap = el("figcaption", "cap");
        const head = el("div", "cap-head");
        head.append(el("span", "part", partName(d)), el("b", "", pretty(d.outcome)), el("span", "", clock(d.at)));
        cap.append(head, el("div", "reason", reasonOf(d)));
        node.append(img, cap);
        node.tabIndex = 0;
        node.title = "click to enlarge";
        const open = () => enlarge(d, img.src);
        node.addEventListener("click", open);
        node.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
        shownDefects.set(d.uid, node);
      }
      nodes.push(node);
    }
    const keep = new Set(defects.map((d) => d.uid));
    for (const uid of [...shownDefects.keys()]) if (!keep.has(uid)) shownDefects.delete(uid);
    const current = [...strip.children];
    if (current.length !== nodes.length || current.some((n, i) => n !== nodes[i])) strip.replaceChildren(...nodes);
    firstDefectRender = false;
  }

  /** Why a part was rejected: the views that judged it defective (label, P(def), model) and
   * the views missing. */
  function reasonOf(d) {
    const parts = [];
    for (const [name, v] of Object.entries(d.cameras || {}).sort()) {
      if (v.defective || (d.outcome || "").startsWith("defective") === false) {
        parts.push(`${name}: ${v.label} P(def) ${fixed(v.score, 2)} \u00b7 ${v.model || "?"}`);
      }
    }
    for (const m of d.missing || []) parts.push(`${m}: missing (no verdict in time)`);
    return parts.join(" | ") || pretty(d.outcome);
  }

  function enlarge(d, src) {
    const dlg = $("enlarge");
    $("enlarge-img").src = src;
    $("enlarge-text").replaceChildren(
      el("div", "big", `${partName(d)} \u2014 ${pretty(d.outcome).toUpperCase()} at ${clock(d.at)}`),
      el("div", "", reasonOf(d)),
      el("div", "muted", d.part_seq !== null && d.part_seq !== undefined ? `PLC seq ${d.part_seq}` : "not written to the PLC"),
    );
    if (!dlg.open) dlg.showModal();
  }

  // -- banner, events, PLC, latency --------------------------------------------------------
  function renderBanner(alerts) {
    const b = $("banner");
    b.hidden = !alerts.length;
    if (!alerts.length) return;
    b.dataset.level = alerts.some((a) => a.level === "bad") ? "bad" : "warn";
    $("banner-text").textContent = alerts.map((a) => a.text).join(" \u00b7 ");
  }

  function renderEvents(events) {
    const list = $("events");
    $("event-count").textContent = events.length ? `(${events.length}, newest first)` : "";
    if (!events.length) return;
    list.replaceChildren(...events.slice(0, 50).map((e) => {
      const li = el("li", `ev ${e.level}`);
      li.dataset.kind = e.kind;
      li.append(el("span", "t", clock(e.last_at)), el("span", "x", e.text + (e.count > 1 && e.kind !== "incomplete" ? ` (\u00d7${e.count})` : "")));
      if (e.subjects && e.subjects.length && e.kind === "incomplete") li.append(el("span", "s", e.subjects.join(", ")));
      return li;
    }));
  }

  function renderPlc(plc) {
    if (!plc) return;
    const st = $("plc-state");
    st.dataset.state = plc.state;
    st.className = `state ${plc.state === "ok" ? "ok" : plc.state === "unknown" ? "warn" : "down"}`;
    st.textContent = plc.state.toUpperCase();
    $("plc-text").textContent = plc.text;
    const w = plc.last_write;
    $("plc-last").textContent = w
      ? `Last write: ${partName(w)} \u2192 ${pretty(w.outcome)}${w.reject ? " (reject)" : ""}, PLC seq ${w.part_seq}, ${fixed(w.age_s, 1)} s ago (${clock(w.at)})`
      : "No part written yet.";
  }

  function renderLatency(lat) {
    if (!lat) return;
    $("k-p50").textContent = lat.p50_ms === null ? "\u2013" : fixed(lat.p50_ms, lat.p50_ms < 100 ? 1 : 0);
    $("k-p99").textContent = `p50 \u00b7 p99 ${fixed(lat.p99_ms, 1)} ms (last ${lat.n})`;
  }

  // -- health ------------------------------------------------------------------------------
  function renderHealth(rows, age) {
    $("health-age").textContent = age === null || age === undefined ? "" : age > 3 ? `(updated ${fixed(age, 0)}s ago)` : "";
    const body = $("health");
    if (!rows.length) return;
    const trs = rows.map((r) => {
      const tr = el("tr");
      tr.dataset.agent = r.agent;
      const cell = (text, cls) => {
        const td = el("td", cls || "n", text);
        tr.append(td);
        return td;
      };
      cell(r.agent, "agent");
      const st = el("td");
      st.append(el("span", `state ${r.status}`, r.status.toUpperCase()));
      tr.append(st);
      cell(`${r.alive}/${r.expected}`, r.alive < r.expected ? "n alert" : "n");
      cell(fixed(r.rate_in, 1));
      cell(fixed(r.rate_out, 1));
      cell(fmt(r.lag), r.lag > 100 ? "n alert" : "n");
      cell(fixed(r.latency_p50_ms, 1));
      cell(`${fmt(r.errors)} / ${fmt(r.dead)}`, r.errors || r.dead ? "n alert" : "n");
      cell(fmt(r.restarts), r.restarts ? "n alert" : "n");
      cell(duration(r.uptime_s));
      return tr;
    });
    body.replaceChildren(...trs);
  }

  // -- recent parts ------------------------------------------------------------------------
  const TREND_SLOTS = 60;
  function renderTrend(parts) {
    const box = $("trend");
    if (box.children.length !== TREND_SLOTS) {
      box.replaceChildren(...Array.from({ length: TREND_SLOTS }, () => el("span")));
    }
    const cells = box.children;
    const start = TREND_SLOTS - parts.length;
    for (let i = 0; i < TREND_SLOTS; i++) {
      const p = i >= start ? parts[i - start] : null;
      cells[i].className = p ? outcomeClass(p.outcome) : "";
      cells[i].title = p ? `${partName(p)} ${pretty(p.outcome)}` : "";
    }
    $("trend-count").textContent = parts.length ? `(newest last, ${parts.length} shown)` : "";
  }

  // -- wiring ------------------------------------------------------------------------------
  function render(s) {
    lastMessageAt = Date.now();
    setLink("live");
    renderHeader(s);
    renderCounters(s.counters);
    renderCameras(s.cameras);
    renderDefects(s.defects);
    renderHealth(s.health, s.health_age_s);
    renderTrend(s.recent_parts || []);
    renderBanner(s.alerts || []);
    renderEvents(s.events || []);
    renderPlc(s.plc);
    renderLatency(s.latency);
  }

  function connect() {
    const source = new EventSource(url("events"));
    source.onmessage = (ev) => render(JSON.parse(ev.data));
    source.onopen = () => setLink("live");
    source.onerror = () => setLink(source.readyState === EventSource.CLOSED ? "offline" : "connecting");
    return source;
  }

  fetch(url("api/state"), { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then(render)
    .catch(() => setLink("offline"));
  connect();
})();
