// Results as files, made in the browser (a Blob): nothing is asked of the server again.

const COLUMNS = ["rank", "kind", "title", "source", "path", "page", "section", "score",
  "bm25_rank", "mv_rank", "vv_rank", "matched_tags", "unit_id", "asset_id", "snippet"];

function cell(value) {
  const s = value === undefined || value === null ? "" : String(value);
  // Quote always; a leading = + - @ would be a formula in a spreadsheet: prefix a quote.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return `"${safe.replace(/"/g, '""')}"`;
}

export function toCsv(hits) {
  const rows = [COLUMNS.join(",")];
  hits.forEach((h, i) => {
    const loc = h.locator || {};
    const row = {
      rank: i + 1,
      kind: h.kind,
      title: h.title,
      source: h.source,
      path: h.path,
      page: loc.page,
      section: loc.section,
      score: h.score,
      bm25_rank: h.axes?.fts?.rank,
      mv_rank: h.axes?.mv?.rank,
      vv_rank: h.axes?.vv?.rank,
      matched_tags: (h.explanation?.matched_tags || []).join(" "),
      unit_id: h.unit_id,
      asset_id: h.asset_id,
      snippet: h.snippet,
    };
    rows.push(COLUMNS.map((c) => cell(row[c])).join(","));
  });
  return rows.join("\r\n") + "\r\n";
}

export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
