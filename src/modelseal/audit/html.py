"""Render an :class:`~modelseal.audit.report.AuditReport` as one self-contained HTML file.

No external asset (no script, font, stylesheet or image is fetched): inline CSS and an inline
SVG provenance graph, so the file can be archived with the audit and opened offline in any
browser years later. Every value from the model or its attestations is escaped: they are
untrusted text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from modelseal.audit.report import AuditReport, short_predicate

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .sub{font:12px ui-monospace,monospace;color:#c9d1dc;word-break:break-all}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;margin:16px 0;padding:14px 18px}
h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;border-bottom:1px solid #eceff3;padding:5px 8px;vertical-align:top}
th{background:#f1f3f6;font-weight:600}
code,.mono{font:12px ui-monospace,monospace;word-break:break-all}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:700;color:#fff}
.VERIFIED,.passed{background:#1f883d}.REFUSED,.failed{background:#cf222e}
.NOT.VERIFIED,.claimed{background:#9a6700}
.refusal{color:#cf222e}.warning{color:#9a6700}.ignored,.note{color:#57606a}
svg text{font:12px system-ui,sans-serif}
"""

KIND_COLOUR = {"input": "#ddf4ff", "step": "#fff8c5", "model": "#dafbe1", "stage": "#fbefff"}
STATUS_STROKE = {"passed": "#1f883d", "failed": "#cf222e", "claimed": "#9a6700"}
BOX_W, BOX_H, COL_GAP, ROW_GAP = 180, 38, 90, 22


def _e(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def _short(digest: str | None, n: int = 19) -> str:
    return (digest or "")[:n]


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *,
           row_attrs: Sequence[str] | None = None, table_id: str | None = None) -> str:
    """Cells are HTML already (escape values before)."""
    rows = list(rows)
    if not rows:
        return "<p class='note'>none</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    tid = f" id='{_e(table_id)}'" if table_id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_graph(graph: Mapping[str, Any]) -> str:
    """The provenance graph as inline SVG: inputs -> steps -> model -> stages, in columns."""
    nodes = list(graph.get("nodes") or [])
    cols = {"input": 0, "step": 1, "model": 2, "stage": 3}
    per_col: dict[int, list[dict[str, Any]]] = {}
    for n in nodes:
        per_col.setdefault(cols.get(n.get("kind", ""), 1), []).append(n)
    pos: dict[str, tuple[float, float]] = {}
    height = max((len(v) for v in per_col.values()), default=1) * (BOX_H + ROW_GAP) + ROW_GAP
    for c, col_nodes in per_col.items():
        total = len(col_nodes) * (BOX_H + ROW_GAP) - ROW_GAP
        top = (height - total) / 2
        for i, n in enumerate(col_nodes):
            pos[n["id"]] = (20 + c * (BOX_W + COL_GAP), top + i * (BOX_H + ROW_GAP))
    width = 20 + 4 * (BOX_W + COL_GAP)
    parts = [f"<svg id='provenance-graph' xmlns='http://www.w3.org/2000/svg' role='img' "
             f"aria-label='provenance graph' width='{width}' height='{height:.0f}' "
             f"viewBox='0 0 {width} {height:.0f}'>",
             "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
             "markerHeight='7' orient='auto-start-reverse'><path d='M0,0L10,5L0,10z' "
             "fill='#57606a'/></marker></defs>"]
    for a, b in graph.get("edges") or []:
        if a not in pos or b not in pos:
            continue
        (ax, ay), (bx, by) = pos[a], pos[b]
        if abs(ax - bx) < 1:  # same column (step -> step): a curve on the right side
            x = ax + BOX_W
            y1, y2 = ay + BOX_H / 2, by + BOX_H / 2
            bend = x + 30 + abs(y2 - y1) / 8
            d = f"M{x:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x:.0f},{y2:.0f}"
        else:
            x1, y1 = ax + BOX_W, ay + BOX_H / 2
            x2, y2 = bx, by + BOX_H / 2
            mid = (x1 + x2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        parts.append(f"<path class='edge' data-from='{_e(a)}' data-to='{_e(b)}' d='{d}' "
                     "fill='none' stroke='#8c959f' stroke-width='1.4' "
                     "marker-end='url(#arrow)'/>")
    for n in nodes:
        x, y = pos[n["id"]]
        kind = n.get("kind", "step")
        stroke = STATUS_STROKE.get(n.get("status", ""), "#57606a")
        label = str(n.get("label", ""))
        shown = label if len(label) <= 24 else label[:23] + "\u2026"
        parts.append(
            f"<g class='node {kind}' data-node='{_e(n['id'])}'><title>{_e(label)}</title>"
            f"<rect x='{x:.0f}' y='{y:.0f}' width='{BOX_W}' height='{BOX_H}' rx='6' "
            f"fill='{KIND_COLOUR.get(kind, '#fff')}' stroke='{stroke}' stroke-width='1.5'/>"
            f"<text x='{x + BOX_W / 2:.0f}' y='{y + BOX_H / 2 + 4:.0f}' "
            f"text-anchor='middle'>{_e(shown)}</text></g>")
    parts.append("</svg>")
    return "".join(parts)


def _kv(d: Mapping[str, Any]) -> str:
    return _table(["field", "value"], [[_e(k), _e(v)] for k, v in d.items()
                                       if v not in (None, "", [], {})])


def _bom(bom: Mapping[str, Any] | None) -> str:
    if not bom:
        return "<p class='note'>No ML-BOM is attached to this model.</p>"
    out = ["<h3>Model</h3>", _kv({**(bom.get("model") or {}), "task": bom.get("task"),
                                  "architecture": bom.get("architecture"),
                                  "CycloneDX": bom.get("spec_version")})]
    ds = bom.get("datasets") or []
    out.append("<h3>Datasets</h3>")
    out.append(_table(["name", "sha256", "license", "source"],
                      [[_e(d.get("name")), f"<code>{_e(d.get('sha256'))}</code>",
                        _e(d.get("license")), _e(d.get("source"))] for d in ds],
                      table_id="bom-datasets"))
    metrics = bom.get("metrics") or []
    out.append("<h3>Performance metrics</h3>")
    out.append(_table(["type", "value", "slice", "confidence"],
                      [[_e(m.get("type")), _e(m.get("value")), _e(m.get("slice")),
                        _e(m.get("confidenceInterval"))] for m in metrics
                       if isinstance(m, Mapping)], table_id="bom-metrics"))
    libs = bom.get("libraries") or {}
    out.append(f"<h3>Libraries ({_e(libs.get('count', 0))})</h3>")
    out.append(_table(["license", "libraries"],
                      [[_e(k), _e(v)] for k, v in (libs.get("licenses") or {}).items()]))
    cons = bom.get("considerations") or {}
    if cons:
        out.append("<h3>Considerations</h3>")
        out.append(_table(["kind", "entries"],
                          [[_e(k), _e(v if not isinstance(v, list) else
                                      "; ".join(str(x) for x in v))] for k, v in cons.items()]))
    return "".join(out)


def render_html(report: AuditReport) -> str:
    """The whole report as one HTML document (UTF-8 text)."""
    v = report.verification
    verdict = report.verdict
    title = f"{report.name}" + (f" {report.version}" if report.version else "")
    sec: list[str] = []

    reasons = []
    if v is not None:
        for r in v.get("refusals") or []:
            where = ", ".join(f"{k}: {_e(val)}" for k, val in r.items() if k != "message")
            reasons.append(f"<li class='refusal'>{_e(r.get('message'))}"
                           + (f" <span class='mono'>({where})</span>" if where else "")
                           + "</li>")
        reqs = _table(["requirement", "result", "detail"],
                      [[_e(r.get("name")),
                        f"<span class='badge {'passed' if r.get('passed') else 'failed'}'>"
                        f"{'passed' if r.get('passed') else 'failed'}</span>",
                        _e(r.get("detail"))] for r in v.get("requirements") or []])
        layout = (f"<p>Layout <code>{_e(v.get('layout'))}</code> "
                  f"(<code>{_e(v.get('layoutDigest'))}</code>), verified at "
                  f"{_e(v.get('verifiedAt'))}, {_e(v.get('attestations'))} attestations seen."
                  "</p>")
    else:
        reqs = ""
        layout = ("<p class='note'>No policy was given: nothing below was verified; signers "
                  "are what each bundle claims.</p>")
    sec.append(
        "<section id='verdict'><h2>Verdict</h2>"
        f"<p><span id='verdict-value' class='badge {verdict}'>{_e(verdict)}</span></p>"
        f"{layout}"
        + (f"<h3>Reasons</h3><ul id='reasons'>{''.join(reasons)}</ul>" if reasons else "")
        + reqs + "</section>")

    sec.append("<section id='provenance'><h2>Provenance</h2>"
               "<p class='note'>inputs (datasets, code) &rarr; steps &rarr; model &rarr; "
               "stages, from the link attestations</p>"
               f"{render_graph(report.graph)}</section>")

    by_digest = {e.digest: e for e in report.evidence}
    step_rows, step_attrs = [], []
    for s in report.steps:
        status = ("passed" if s.passed else "failed") if s.passed is not None else "claimed"
        ev = "<br>".join(
            f"<code>{_e(_short(d))}</code> "
            f"{_e(short_predicate(by_digest[d].predicate_type) if d in by_digest else '')}"
            for d in s.evidence)
        step_rows.append([f"<b>{_e(s.name)}</b>",
                          f"<span class='badge {status}'>{status}</span>",
                          _e(", ".join(s.signers) or "-"), _e(", ".join(s.times) or "-"),
                          f"<code>{_e(' '.join(s.command))}</code>", ev])
        step_attrs.append(f"data-step='{_e(s.name)}'")
    sec.append("<section id='steps'><h2>Steps</h2>"
               + _table(["step", "result", "signers", "times", "command", "evidence"],
                        step_rows, row_attrs=step_attrs, table_id="steps-table")
               + "</section>")

    if report.stages:
        sec.append("<section id='stages'><h2>Stages</h2>" + _table(
            ["stage", "reason", "signer (claimed)", "time", "attestation"],
            [[_e(s.get("stage")), _e(s.get("reason")), _e(s.get("signer")),
              _e(s.get("created")), f"<code>{_e(_short(s.get('attestation')))}</code>"]
             for s in report.stages]) + "</section>")

    sec.append("<section id='attestations'><h2>Attestations</h2>" + _table(
        ["predicate", "step", "signer", "created", "counted", "says", "digest"],
        [[_e(short_predicate(e.predicate_type)), _e(e.step or "-"), _e(e.signer),
          _e(e.created), "yes" if e.counted else "no", _e(e.summary()),
          f"<code>{_e(e.digest)}</code>"] for e in report.evidence]) + "</section>")

    sec.append("<section id='files'><h2>Files</h2>" + _table(
        ["path", "role", "size", "digest"],
        [[_e(f["path"]), _e(f["role"]), _e(f["size"]), f"<code>{_e(f['digest'])}</code>"]
         for f in report.files]) + "</section>")

    sec.append(f"<section id='bom'><h2>ML-BOM</h2>{_bom(report.bom)}</section>")

    sf = report.safety
    if sf:
        safety = (f"<p>Result: <span class='badge "
                  f"{'passed' if sf.get('result') == 'PASSED' else 'failed'}'>"
                  f"{_e(sf.get('result'))}</span> (scanner {_e(sf.get('scanner'))}"
                  f"{', ' + _e(sf.get('scannedAt')) if sf.get('scannedAt') else ''})</p>"
                  + _table(["file", "verdict"], [[_e(f.get("path")), _e(f.get("verdict"))]
                                                 for f in sf.get("flagged") or []]))
    else:
        safety = "<p class='note'>No model-safety result is attached.</p>"
    sec.append(f"<section id='safety'><h2>Model safety</h2>{safety}</section>")

    sec.append("<section id='findings'><h2>Findings</h2>" + _table(
        ["severity", "finding", "where"],
        [[f"<span class='{_e(f['severity'])}'>{_e(f['severity'])}</span>",
          _e(f["message"]), f"<span class='mono'>{_e(f.get('where'))}</span>"]
         for f in report.findings]) + "</section>")

    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>modelseal audit: {_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1 id='model-name'>{_e(title)}</h1>"
            f"<div class='sub'>{_e(report.ref)}</div>"
            f"<div class='sub'>report generated {_e(report.generated)} by modelseal</div>"
            f"</header><main>{''.join(sec)}</main></body></html>\n")
