// DOM builders. Document text only ever becomes text nodes (never innerHTML): a passage that
// contains markup shows as text.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// `text` with every word starting with a matched term wrapped in <mark>.
export function highlighted(text, terms) {
  const frag = document.createDocumentFragment();
  const words = [...new Set((terms || []).map((t) => String(t).trim()).filter((t) => t.length > 1))];
  if (!text) return frag;
  if (!words.length) {
    frag.append(document.createTextNode(text));
    return frag;
  }
  words.sort((a, b) => b.length - a.length);
  const re = new RegExp(`(${words.map(escapeRegExp).join("|")})[\\p{L}\\p{N}]*`, "giu");
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) frag.append(document.createTextNode(text.slice(last, m.index)));
    frag.append(el("mark", { text: m[0] }));
    last = m.index + m[0].length;
  }
  if (last < text.length) frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

// `text` with [start, end) in <mark class="cited"> (the whole text when the span is unusable).
export function spanHighlighted(text, start, end) {
  const frag = document.createDocumentFragment();
  text = text || "";
  const ok = Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end > start;
  if (!ok || end > text.length) {
    frag.append(el("mark", { class: "cited", text }));
    return frag;
  }
  frag.append(text.slice(0, start), el("mark", { class: "cited", text: text.slice(start, end) }));
  frag.append(text.slice(end));
  return frag;
}

export function matchedTerms(hit) {
  const terms = new Set();
  for (const ev of hit.explanation?.matched_evidence || []) {
    for (const t of ev.matched_terms || []) terms.add(t);
  }
  return [...terms];
}

const AXIS_LABELS = { fts: "BM25", mv: "MV", vv: "VV", tags: "Tags" };

export function axisLabel(axis) {
  return AXIS_LABELS[axis] || axis.toUpperCase();
}

export function badges(hit) {
  const out = el("ul", { class: "badges", "aria-label": "Why it ranks" });
  const axes = Object.entries(hit.axes || {}).sort((a, b) => a[0].localeCompare(b[0]));
  for (const [axis, info] of axes) {
    if (axis === "tags") continue; // shown as the tag match badge
    out.append(
      el("li", {
        class: `badge axis-${axis}`,
        title: `${axisLabel(axis)} rank ${info.rank}, score ${fmt(info.score)}`,
        text: `${axisLabel(axis)} #${info.rank}`,
      }),
    );
  }
  const tags = hit.explanation?.matched_tags || [];
  if (tags.length || hit.axes?.tags) {
    out.append(
      el("li", {
        class: "badge tag-match",
        title: tags.length ? `matched tags: ${tags.join(", ")}` : "matched content tags",
        text: tags.length ? `tag match: ${tags.join(", ")}` : "tag match",
      }),
    );
  }
  return out;
}

export function fmt(n, digits = 3) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  return Number(n.toFixed(digits)).toString();
}

export function bytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function where(hit) {
  const loc = hit.locator || {};
  const parts = [];
  if (loc.page !== undefined && loc.page !== null) parts.push(`page ${loc.page}`);
  if (loc.section) parts.push(`section “${loc.section}”`);
  return parts.join(" · ");
}

// The "why this result" panel: evidence, the runs and models behind it, the file version and
// the snapshot.
export function whyPanel(hit, snapshotId) {
  const ex = hit.explanation || {};
  const runs = ex.runs || {};
  const runById = {};
  for (const [task, run] of Object.entries(runs)) {
    if (run && run.run_id) runById[run.run_id] = { task, ...run };
  }
  const model = (run) =>
    run ? `${run.model_id || run.model_key || "?"}${run.revision ? "@" + run.revision : ""}` : "";

  const panel = el("div", { class: "why", role: "region", "aria-label": "Why this result" });
  const fusion = ex.fusion || {};
  const weights = Object.entries(fusion.weights || {})
    .map(([a, w]) => `${axisLabel(a)} ${fmt(w, 2)}`)
    .join(", ");
  panel.append(
    el("h4", { text: "Ranking" }),
    el(
      "p",
      {},
      `Fused score ${fmt(hit.score, 4)} (weighted RRF, k=${fusion.rrf_k ?? "–"}; query type `,
      el("strong", { text: fusion.query_type || "–" }),
      weights ? `; weights ${weights})` : ")",
    ),
  );
  const axisRows = Object.entries(hit.axes || {}).map(([a, i]) =>
    el("li", { text: `${axisLabel(a)}: rank ${i.rank}, score ${fmt(i.score)}` }),
  );
  if (axisRows.length) panel.append(el("ul", { class: "plain" }, axisRows));
  if ((ex.matched_tags || []).length) {
    panel.append(el("p", { text: `Matched tags: ${ex.matched_tags.join(", ")}` }));
  }

  panel.append(el("h4", { text: "Evidence" }));
  const evidence = ex.matched_evidence || [];
  if (!evidence.length) panel.append(el("p", { class: "muted", text: "No text evidence matched the query." }));
  const list = el("ol", { class: "evidence" });
  for (const ev of evidence) {
    const run = runById[ev.run_id];
    const meta = [ev.field || ev.kind, ev.confidence != null ? `confidence ${fmt(ev.confidence, 2)}` : null]
      .filter(Boolean)
      .join(" · ");
    list.append(
      el(
        "li",
        {},
        el("div", { class: "ev-meta", text: meta }),
        el("blockquote", {}, highlighted(ev.text, ev.matched_terms)),
        el("div", {
          class: "ev-run",
          text: ev.run_id ? `run ${ev.run_id}${run ? ` · ${run.task} · model ${model(run)}` : ""}` : "",
        }),
      ),
    );
  }
  panel.append(list);

  panel.append(el("h4", { text: "Analysis runs" }));
  const runList = el("ul", { class: "plain runs" });
  for (const [task, run] of Object.entries(runs)) {
    runList.append(el("li", { text: `${task}: ${run?.run_id || "–"} · model ${model(run)}` }));
  }
  if (!Object.keys(runs).length) runList.append(el("li", { class: "muted", text: "none recorded" }));
  panel.append(runList);

  const fv = ex.file_version || {};
  panel.append(
    el("h4", { text: "File version" }),
    el(
      "dl",
      { class: "kv" },
      el("dt", { text: "uri" }),
      el("dd", { text: `${fv.source || hit.source}/${fv.path || hit.path}` }),
      el("dt", { text: "size" }),
      el("dd", { text: bytes(fv.size) }),
      el("dt", { text: "modified" }),
      el("dd", { text: when(fv.mtime) }),
      el("dt", { text: "version" }),
      el("dd", { text: fv.version_id || hit.version_id }),
      el("dt", { text: "asset" }),
      el("dd", { text: fv.asset_id || hit.asset_id }),
      (fv.locations || []).length > 1 ? el("dt", { text: "copies" }) : null,
      (fv.locations || []).length > 1 ? el("dd", { text: fv.locations.join(", ") }) : null,
      el("dt", { text: "snapshot" }),
      el("dd", { class: "snapshot-id", text: snapshotId || ex.snapshot_id || "–" }),
    ),
  );
  return panel;
}
