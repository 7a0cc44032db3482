// The search page: sign-in, search / ask, results, explanations, feedback, downloads.
import { api, ApiError, query } from "./api.js";
import { download, toCsv } from "./export.js";
import {
  axisLabel,
  badges,
  el,
  highlighted,
  matchedTerms,
  spanHighlighted,
  where,
  whyPanel,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const state = { session: null, last: null, tagsLoaded: false };
const K = 24;
const ASK_K = 8;

// -- sign-in ---------------------------------------------------------------------------------

function showSignIn(message) {
  state.session = null;
  $("booting").hidden = true;
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("key").value = "";
  $("key").focus();
}

function showApp(session) {
  state.session = session;
  $("booting").hidden = true;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-text").textContent = session.dev
    ? `dev mode · tenant ${session.tenant}`
    : `tenant ${session.tenant} · key ${session.key_id}`;
  $("sign-out").hidden = session.dev;
  const select = $("qtype");
  select.replaceChildren(el("option", { value: "", text: "auto" }));
  for (const t of session.query_types || []) select.append(el("option", { value: t, text: t }));
  loadTags();
  $("q").focus();
}

async function boot() {
  try {
    const session = await api("/session");
    if (session.signed_in) showApp(session);
    else showSignIn(session.message ? `Signed out: ${session.message}.` : "");
  } catch (e) {
    showSignIn(`The server did not answer the sign-in check (${e.message}).`);
  }
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  $("signin-button").disabled = true;
  try {
    showApp(await api("/session", { method: "POST", body: { key } }));
  } catch (e) {
    const why = e.status === 401 ? `The key was refused: ${e.message}.` : e.message;
    showSignIn(why);
  } finally {
    $("signin-button").disabled = false;
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api("/session", { method: "DELETE" });
  } finally {
    clearResults();
    showSignIn("Signed out.");
  }
});

// -- filters ---------------------------------------------------------------------------------

async function loadTags() {
  const box = $("f-tags");
  try {
    const resp = await api("/v1/tags?limit=200");
    box.replaceChildren();
    for (const { tag, units } of resp.tags) {
      box.append(
        el(
          "label",
          { class: "tag-option" },
          el("input", { type: "checkbox", value: tag, name: "tag" }),
          ` ${tag} `,
          el("span", { class: "muted", text: `(${units})` }),
        ),
      );
    }
    if (!resp.tags.length) box.append(el("span", { class: "muted", text: "no tags" }));
  } catch (e) {
    if (!handleAuth(e)) box.replaceChildren(el("span", { class: "muted", text: `tags unavailable: ${e.message}` }));
  }
}

const dayStart = (d) => (d ? `${d}T00:00:00Z` : undefined);
// "to" dates are inclusive: before the next day.
const dayAfter = (d) => {
  if (!d) return undefined;
  const t = new Date(`${d}T00:00:00Z`);
  t.setUTCDate(t.getUTCDate() + 1);
  return t.toISOString();
};

function filters() {
  const f = {
    kind: $("f-kind").value || undefined,
    folder_prefix: $("f-folder").value.trim() || undefined,
    modified_after: dayStart($("f-mod-from").value),
    modified_before: dayAfter($("f-mod-to").value),
    taken_after: dayStart($("f-taken-from").value),
    taken_before: dayAfter($("f-taken-to").value),
    tags: [...document.querySelectorAll("#f-tags input:checked")].map((i) => i.value),
  };
  if (!f.tags.length) delete f.tags;
  for (const k of Object.keys(f)) if (f[k] === undefined) delete f[k];
  $("filter-count").textContent = Object.keys(f).length ? `(${Object.keys(f).length})` : "";
  return Object.keys(f).length ? f : null;
}

$("f-clear").addEventListener("click", () => {
  for (const id of ["f-kind", "f-folder", "f-mod-from", "f-mod-to", "f-taken-from", "f-taken-to"]) $(id).value = "";
  for (const i of document.querySelectorAll("#f-tags input")) i.checked = false;
  filters();
});

// -- requests --------------------------------------------------------------------------------

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    const ask = mode() === "ask";
    $("go").textContent = ask ? "Ask" : "Search";
    $("qtype").hidden = ask;
    $("q").placeholder = ask ? "Ask a question about your documents" : "Search images and documents  (press / to focus)";
  });
}

// true when the error was the session's end (then the sign-in form is showing).
function handleAuth(e) {
  if (e instanceof ApiError && e.status === 401) {
    clearResults();
    showSignIn(`Your session ended: ${e.message}. Sign in again.`);
    return true;
  }
  return false;
}

function showError(e, what) {
  if (handleAuth(e)) return;
  let text;
  if (e.status === 429) {
    text = `Rate limited: ${e.message}. Try again in ${e.retryAfter || "a few"} s.`;
  } else if (e.code === "axis_unavailable") {
    text = `An axis is unavailable: ${e.message}${e.retryAfter ? ` (retry in ${e.retryAfter} s)` : ""}.`;
  } else if (e.status === 404 && what === "ask") {
    text = "Ask is not available on this server (no /v1/ask). Search still works.";
  } else {
    text = `${what === "ask" ? "Ask" : "Search"} failed: ${e.message}`;
  }
  if (e.requestId) text += ` (request ${e.requestId})`;
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
  $("status").textContent = "";
}

function setBusy(busy, label) {
  $("go").disabled = busy;
  $("results").setAttribute("aria-busy", busy ? "true" : "false");
  if (busy) {
    $("error").hidden = true;
    $("status").replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), ` ${label}…`);
  }
}

async function run(what, label, call) {
  setBusy(true, label);
  const t0 = performance.now();
  try {
    const resp = await call();
    const ms = Math.round(performance.now() - t0);
    return { resp, ms };
  } catch (e) {
    showError(e, what);
    return null;
  } finally {
    setBusy(false);
  }
}

$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  if (mode() === "ask") return ask(q);
  const body = { query: q, k: K };
  const type = $("qtype").value;
  if (type) body.query_type = type;
  const f = filters();
  if (f) body.filters = f;
  const out = await run("search", "Searching", () => api("/v1/search", { method: "POST", body }));
  if (out) show("search", out.resp, out.ms, `“${q}”`);
});

async function similar(hit) {
  const params = { asset_id: hit.asset_id, k: K };
  const out = await run("similar", "Finding similar", () => api(`/v1/similar?${query(params)}`));
  if (out) show("similar", out.resp, out.ms, `similar to ${hit.title || hit.path}`);
}

async function ask(question) {
  const body = { question, k: ASK_K, mode: "auto" };
  const f = filters();
  body.filters = f || {};
  const out = await run("ask", "Thinking", () => api("/v1/ask", { method: "POST", body }));
  if (out) show("ask", out.resp, out.ms, `“${question}”`);
}

// -- results ---------------------------------------------------------------------------------

function clearResults() {
  state.last = null;
  for (const id of ["images", "documents", "answer-body", "notices"]) $(id).replaceChildren();
  for (const id of ["answer", "toolbar", "images-title", "docs-title", "empty", "error"]) $(id).hidden = true;
  $("status").textContent = "";
}

function show(kind, resp, ms, label) {
  clearResults();
  state.last = { kind, resp, label };
  const hits = resp.hits || [];
  const server = resp.latency_ms ?? resp.timings_ms?.total;
  const noun = kind === "ask" ? "passage" : "result";
  $("status").textContent =
    `${hits.length} ${noun}${hits.length === 1 ? "" : "s"} for ${label} in ${ms} ms` +
    (server != null ? ` (server ${Math.round(server)} ms)` : "");
  const notices = $("notices");
  const used = (resp.axes_used || []).map(axisLabel);
  const missing = Object.entries(resp.axes_unavailable || {});
  if (used.length || missing.length) {
    notices.append(
      el(
        "p",
        { class: "axes-note" },
        used.length ? `Axes used: ${used.join(", ")}.` : "",
        ...missing.map(([axis, why]) =>
          el("span", { class: "axis-unavailable", text: ` ${axisLabel(axis)} unavailable: ${why}.` }),
        ),
      ),
    );
  }
  if (resp.fallback) notices.append(el("p", { class: "notice warn", text: `Fallback: ${resp.fallback}` }));
  if (kind === "ask") renderAnswer(resp);
  $("toolbar").hidden = !hits.length;
  $("context").textContent = kind === "similar" ? `Showing ${label}` : "";
  if (!hits.length) {
    const empty = $("empty");
    empty.hidden = false;
    empty.textContent =
      kind === "ask" ? "No passages to show." : "Nothing found. Try other words, another query type or fewer filters.";
    return;
  }
  hits.forEach((hit, i) => {
    const card = hit.kind === "image" ? imageCard(hit, i + 1, resp) : docCard(hit, i + 1, resp);
    (hit.kind === "image" ? $("images") : $("documents")).append(card);
  });
  $("images-title").hidden = !$("images").children.length;
  $("docs-title").hidden = !$("documents").children.length;
}

function actions(hit, resp) {
  const bar = el("div", { class: "actions" });
  const whyId = `why-${cssId(hit.unit_id)}`;
  const why = el("button", {
    type: "button",
    class: "why-toggle",
    "aria-expanded": "false",
    "aria-controls": whyId,
    text: "Why this result",
  });
  const note = el("span", { class: "feedback-note", role: "status" });
  const judge = (judgement, label) =>
    el("button", {
      type: "button",
      class: `judge ${judgement}`,
      "aria-pressed": "false",
      disabled: !resp.query_id,
      title: resp.query_id ? `Mark as ${label}` : "feedback needs the query log",
      text: label,
      onclick: (ev) => feedback(hit, resp, judgement, ev.currentTarget, note),
    });
  bar.append(
    why,
    el("button", { type: "button", class: "similar", text: "Find similar", onclick: () => similar(hit) }),
    judge("relevant", "Relevant"),
    judge("not_relevant", "Not relevant"),
    note,
  );
  why.addEventListener("click", () => {
    const card = why.closest(".hit");
    let panel = card.querySelector(".why");
    if (panel) {
      panel.remove();
      card.classList.remove("open");
      why.setAttribute("aria-expanded", "false");
      return;
    }
    panel = whyPanel(hit, resp.snapshot_id);
    panel.id = whyId;
    card.append(panel);
    card.classList.add("open"); // an image card spans the grid's width while it explains
    why.setAttribute("aria-expanded", "true");
  });
  return bar;
}

function cssId(s) {
  return String(s).replace(/[^A-Za-z0-9_-]/g, "_");
}

async function feedback(hit, resp, judgement, button, note) {
  const bar = button.parentElement;
  for (const b of bar.querySelectorAll(".judge")) b.disabled = true;
  note.textContent = "Saving…";
  try {
    await api("/v1/feedback", { method: "POST", body: { query_id: resp.query_id, unit_id: hit.unit_id, judgement } });
    for (const b of bar.querySelectorAll(".judge")) b.setAttribute("aria-pressed", String(b === button));
    note.textContent = `Thanks: recorded as ${judgement.replace("_", " ")}.`;
  } catch (e) {
    if (handleAuth(e)) return;
    note.textContent = e.status === 429 ? `Rate limited: retry in ${e.retryAfter || "a few"} s.` : `Not recorded: ${e.message}`;
  } finally {
    for (const b of bar.querySelectorAll(".judge")) b.disabled = !resp.query_id;
  }
}

function imageCard(hit, rank, resp) {
  const alt = hit.caption || hit.title || hit.path;
  const li = el("li", { class: "hit image-hit", id: `hit-${cssId(hit.unit_id)}`, dataset: { unitId: hit.unit_id } });
  const terms = matchedTerms(hit);
  li.append(
    el(
      "figure",
      {},
      el("img", {
        src: `/v1/thumbnails/${hit.asset_id}`,
        alt,
        loading: "lazy",
        decoding: "async",
        width: "256",
        height: "192",
      }),
      el(
        "figcaption",
        {},
        el("span", { class: "rank", text: `#${rank}` }),
        " ",
        el("strong", { class: "title", text: hit.title || hit.path }),
        el("div", { class: "path", text: `${hit.source}/${hit.path}` }),
        hit.caption ? el("p", { class: "caption" }, el("span", { class: "label", text: "Caption " }), highlighted(hit.caption, terms)) : null,
        hit.ocr ? el("p", { class: "ocr" }, el("span", { class: "label", text: "OCR " }), highlighted(hit.ocr, terms)) : null,
        !hit.caption && !hit.ocr && hit.snippet ? el("p", { class: "snippet" }, highlighted(hit.snippet, terms)) : null,
      ),
    ),
    badges(hit),
    actions(hit, resp),
  );
  return li;
}

function docCard(hit, rank, resp) {
  const li = el("li", { class: "hit doc-hit", id: `hit-${cssId(hit.unit_id)}`, dataset: { unitId: hit.unit_id } });
  const loc = where(hit);
  li.append(
    el("h3", {}, el("span", { class: "rank", text: `#${rank}` }), " ", el("span", { class: "title", text: hit.title || hit.path })),
    el("div", { class: "path" }, `${hit.source}/${hit.path}`, loc ? el("span", { class: "loc", text: ` · ${loc}` }) : null),
    el("p", { class: "snippet" }, highlighted(hit.snippet, matchedTerms(hit))),
    badges(hit),
    actions(hit, resp),
  );
  return li;
}

// -- ask -------------------------------------------------------------------------------------

function renderAnswer(resp) {
  const box = $("answer-body");
  $("answer").hidden = false;
  if (resp.refused) {
    box.append(
      el("p", { class: "refusal", text: `No answer: ${resp.refusal_reason || "the documents do not say."}` }),
      (resp.hits || []).length ? el("p", { class: "muted", text: "The closest passages are below." }) : null,
    );
    return;
  }
  const byN = new Map((resp.citations || []).map((c) => [c.n, c]));
  const para = el("p", { class: "answer-text" });
  const sentences = resp.sentences && resp.sentences.length ? resp.sentences : [{ text: resp.answer, citations: [] }];
  for (const s of sentences) {
    para.append(s.text);
    for (const n of s.citations || []) {
      const c = byN.get(n);
      para.append(
        el("a", {
          href: c ? `#hit-${cssId(c.unit_id)}` : "#",
          class: "cite",
          "aria-label": `citation ${n}${c ? `: ${c.title || c.path}` : ""}`,
          text: `[${n}]`,
          onclick: (ev) => {
            ev.preventDefault();
            if (c) openCitation(c);
          },
        }),
      );
    }
    para.append(" ");
  }
  box.append(para);
  if (byN.size) {
    const list = el("ol", { class: "sources" });
    for (const c of byN.values()) {
      list.append(
        el(
          "li",
          { value: String(c.n) },
          el("a", {
            href: `#hit-${cssId(c.unit_id)}`,
            text: `${c.title || c.path}`,
            onclick: (ev) => {
              ev.preventDefault();
              openCitation(c);
            },
          }),
          el("span", { class: "path", text: ` ${c.source}/${c.path}${c.page != null ? ` · page ${c.page}` : ""}${c.section ? ` · ${c.section}` : ""}` }),
        ),
      );
    }
    box.append(el("h3", { text: "Sources" }), list);
  }
}

function openCitation(c) {
  let card = document.getElementById(`hit-${cssId(c.unit_id)}`);
  if (!card) {
    // A cited unit that is not among the hits: show the citation as its own card.
    card = el(
      "li",
      { class: "hit doc-hit", id: `hit-${cssId(c.unit_id)}`, dataset: { unitId: c.unit_id } },
      el("h3", {}, el("span", { class: "title", text: c.title || c.path })),
      el("div", { class: "path", text: `${c.source}/${c.path}` }),
    );
    $("documents").prepend(card);
    $("docs-title").hidden = false;
  }
  for (const old of document.querySelectorAll(".hit.cited-hit")) old.classList.remove("cited-hit");
  card.querySelector(".cited-passage")?.remove();
  card.classList.add("cited-hit");
  // `text` is the cited span itself (`start`/`end`: its offsets in the unit's text).
  const span = c.text || "";
  const snippet = card.querySelector(".snippet");
  const at = snippet ? snippet.textContent.indexOf(span) : -1;
  if (snippet && span && at >= 0) {
    // the span inside the passage already shown, in its context
    const text = snippet.textContent;
    snippet.replaceChildren(spanHighlighted(text, at, at + span.length));
  }
  card.append(
    el(
      "blockquote",
      { class: "cited-passage", tabindex: "-1" },
      el("span", { class: "label", text: `Cited [${c.n}]: ` }),
      el("mark", { class: "cited", text: span }),
      Number.isInteger(c.start) && Number.isInteger(c.end)
        ? el("span", { class: "muted", text: ` (characters ${c.start}–${c.end})` })
        : null,
    ),
  );
  card.scrollIntoView({ behavior: "smooth", block: "center" });
  card.querySelector(".cited-passage").focus({ preventScroll: true });
}

// -- downloads and keys ----------------------------------------------------------------------

function fileStem() {
  const id = state.last?.resp?.query_id || new Date().toISOString().replace(/[:.]/g, "-");
  return `rag-results-${id}`;
}

$("dl-csv").addEventListener("click", () => {
  if (state.last) download(`${fileStem()}.csv`, "text/csv", toCsv(state.last.resp.hits || []));
});
$("dl-json").addEventListener("click", () => {
  if (state.last) download(`${fileStem()}.json`, "application/json", JSON.stringify(state.last.resp, null, 2));
});

document.addEventListener("keydown", (ev) => {
  if (ev.key !== "/" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
  if ($("app").hidden) return;
  ev.preventDefault();
  $("q").focus();
  $("q").select();
});

boot();
