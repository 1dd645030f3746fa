"""The report as one self-contained HTML file: CSS inline, plots as base64 PNG data URIs,
no script and no external address, so it opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import html
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from bas.report import claims as claim_checks
from bas.report import published
from bas.report.data import BREAKDOWN_METRICS, COMPARE_METRICS, MIFO_COLUMNS, ReportData
from bas.report.plots import Plot
from bas.report.results import MethodKinds
from bas.report.stats import best_methods
from bas.schema import METRICS

SECTIONS = (
    ("overview", "Overview"),
    ("pareto", "Identity vs prompt similarity (BaS Fig. 5)"),
    ("means", "All metrics per method"),
    ("mifo", "MIFO metrics: SIM-C, SIM-D, NSIM-D, CS"),
    ("breakdowns", "Breakdowns: concepts, templates, scenes, detection"),
    ("significance", "Significance: Kruskal-Wallis and Tukey HSD"),
    ("claims", "Papers' claims"),
    ("pictures", "Pictures (BaS Fig. 9 layout)"),
    ("attention", "Attention maps (BaS Fig. 4)"),
    ("human", "Human ratings (BaS Table 4, Fig. 5 right)"),
    ("published", "Published figures"),
    ("compare", "Comparison with another run"),
    ("method-notes", "How the numbers are computed"),
)

SHORT_LABELS = {"identity_similarity": "Identity (SIM-D)", "prompt_similarity": "Prompt (SIM-C)",
                "identity_similarity_fallback": "Identity, whole image", "nsim_d": "NSIM-D", "cs": "CS",
                "clip_i": "CLIP-I", "detected": "Detection rate"}

CSS = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; line-height: 1.45; background: #fff; }
h1 { font-size: 1.75em; margin-bottom: 0.2em; }
h2 { font-size: 1.35em; margin-top: 2.2em; padding-bottom: 0.25em; border-bottom: 2px solid #d0d4da; }
h3 { font-size: 1.08em; margin-top: 1.6em; }
.subtitle { color: #555; margin-top: 0; }
.banner { border: 2px solid #b42318; background: #fdecea; color: #7a1810; padding: 12px 16px;
          font-weight: bold; border-radius: 6px; margin: 16px 0; }
.note { border-left: 4px solid #8a8f98; background: #f4f5f7; padding: 8px 12px; margin: 12px 0; }
.published { border: 2px dashed #7a4a00; background: #fff8ee; padding: 4px 16px 12px; border-radius: 6px;
             margin: 16px 0; }
.published-tag { display: inline-block; background: #7a4a00; color: #fff; font-size: 0.75em;
                 font-weight: bold; letter-spacing: 0.06em; padding: 2px 8px; border-radius: 3px; }
table { border-collapse: collapse; margin: 10px 0 6px; font-size: 0.9em; }
th, td { border: 1px solid #d0d4da; padding: 4px 9px; }
th { background: #eceef1; text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: "DejaVu Sans Mono", monospace;
         font-size: 0.95em; }
tr:nth-child(even) td { background: #fafbfc; }
tr.ablation td, tr.reference td { color: #555; font-style: italic; }
td.best { font-weight: bold; }
td.num small { white-space: nowrap; }
.published td.ours, .published th.ours { background: #ffffff; border-left: 3px solid #2f5d8a; }
td.good { color: #11672f; } td.bad { color: #a4161a; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; border: 1px solid #e3e5e8; }
figcaption { font-size: 0.9em; color: #444; margin-top: 4px; max-width: 900px; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.side-by-side > figure { flex: 1 1 420px; }
nav ol { columns: 2; font-size: 0.95em; }
details summary { cursor: pointer; color: #333; }
.scroll { overflow-x: auto; max-width: 100%; }
table.compact { font-size: 0.8em; } table.compact th, table.compact td { padding: 3px 5px; }
code { background: #f1f2f4; padding: 0 3px; border-radius: 3px; }
"""


# --------------------------------------------------------------------------- helpers


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "—"
    if p == 0.0:
        return "&lt; 1e-300"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.3f}"


def fmt_signed(value: float, digits: int = 3) -> str:
    if not np.isfinite(value):
        return "—"
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0.0 else text  # no sign on a zero (nor "-0.000")


def image(plot: Plot, alt: str) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def figure(plot: Optional[Plot], alt: str, caption: str) -> str:
    if plot is None:
        return ""
    return (f"<figure>{image(plot, alt)}<figcaption>{caption} "
            f"<span class=\"files\">(files: <code>plots/{esc(plot.name)}.png</code>)</span>"
            f"</figcaption></figure>")


def table(header: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Sequence[str] = (),
          compact: bool = False) -> str:
    """Rows are lists of ready-made <td> cells (use `td`); wide tables scroll sideways."""
    opening = '<table class="compact">' if compact else "<table>"
    out = [f'<div class="scroll">{opening}', "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for i, cells in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def td(text: str, num: bool = False, extra: str = "") -> str:
    classes = " ".join(c for c in ("num" if num else "", extra) if c)
    return f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>"


def direction(metric: str) -> str:
    return "↑" if METRICS[metric].higher_is_better else "↓"


def frame_table(frame: pd.DataFrame, kinds: MethodKinds, index_label: str, index_format=str, digits: int = 3,
                best_per_row: Optional[str] = None) -> str:
    """A numeric frame (rows x methods); `best_per_row` = metric whose best method is bolded."""
    header = [esc(index_label)] + [f"<i>{esc(c)}</i><br><small>{kinds.label(c)}</small>" if kinds.label(c) else esc(c)
                                   for c in frame.columns]
    rows = []
    for index, values in frame.iterrows():
        best = set()
        if best_per_row is not None:
            main = values[[c for c in frame.columns if kinds.is_competitor(c)]].dropna()
            if main.nunique() > 1:
                target = main.max() if METRICS[best_per_row].higher_is_better else main.min()
                best = set(main.index[main == target])
        rows.append([td(esc(index_format(index)))] +
                    [td(fmt(v, digits), num=True, extra="best" if c in best else "")
                     for c, v in values.items()])
    return table(header, rows)


# --------------------------------------------------------------------------- sections


def section(key: str, body: str) -> str:
    title = dict(SECTIONS)[key]
    return f'<section id="{key}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def overview(data: ReportData) -> str:
    parts = [f"<p>Results read from <code>{esc(data.results_dir)}</code>. Model profile: "
             f"<b>{esc(', '.join(data.profiles))}</b>. Methods: {len(data.methods)} "
             f"({sum(data.kinds.is_competitor(m) for m in data.methods)} compared, "
             f"{sum(data.kinds.is_ablation(m) for m in data.methods)} ablation(s) (recipes of kind "
             f"<code>ablation</code>), shown in italics and kept off the Pareto front"
             + (f"; {sum(data.kinds.is_reference(m) for m in data.methods)} ground-truth reference(s) of the sandbox "
                f"world: the true objects rendered in each grid cell (<code>ground_truth</code>, each metric's "
                f"ceiling) and same-shape objects of another colour (<code>other_identity</code>, identity's "
                f"floor), in italics, off the front and out of the tests" if any(map(data.kinds.is_reference, data.methods)) else "")
             + ").</p>"]
    rows = [[td(esc(m))] + [td(str(int(v)), num=True) for v in data.overview.loc[m]] for m in data.methods]
    parts.append(table(["method", "scenes", "images", "scored (image, concept) pairs"], rows,
                       [data.kinds.label(m) for m in data.methods]))
    if data.incomplete:
        parts.append(f'<p class="note">Left out, no <code>scores.parquet</code> yet: '
                     f'{esc(", ".join(data.incomplete))}.</p>')
    for note in data.notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    front = ", ".join(data.front) or "none"
    parts.append(f"<p><b>Pareto front</b> (identity and prompt similarity, both higher is better): "
                 f"{esc(front)}.</p>")
    toc = "".join(f'<li><a href="#{k}">{esc(t)}</a></li>' for k, t in SECTIONS)
    parts.append(f"<nav><ol>{toc}</ol></nav>")
    return section("overview", "\n".join(parts))


def pareto(data: ReportData) -> str:
    conf = f"{data.cfg.confidence:.0%}"
    ours = figure(data.plots["pareto"], "identity vs prompt similarity",
                  f"<b>This run.</b> Each point is a method's mean over its images; bars are {conf} "
                  f"bootstrap confidence intervals ({data.cfg.bootstrap_samples} resamples of images). "
                  f"Right is better (prompt similarity), up is better (identity similarity). The dashed "
                  f"line joins the Pareto front: methods no other compared method beats on both axes. "
                  f"Open markers are ablations of <code>bas</code>, drawn apart and not on the front.")
    theirs = figure(data.plots["published_user_study"], "published BaS user study",
                    "<span class=\"published-tag\">PUBLISHED</span> BaS Fig. 5 (right), redrawn from "
                    "BaS Table 4: mean human ratings on a 1-5 scale from the paper, not from this run, "
                    "and not on the scale of our similarities. Right and up are better.")
    return section("pareto", f'<div class="side-by-side">{ours}{theirs}</div>')


def means(data: ReportData) -> str:
    metrics = list(METRICS)
    s = data.summary
    header = ["method", "images"] + [f"{esc(METRICS[m].label)} {direction(m)}" for m in metrics]
    rows = []
    best = {m: best_methods(s, m) for m in metrics}
    for method in data.methods:
        own = s[s["method"] == method].set_index("metric")
        cells = [td(esc(method)), td(str(int(own.at["prompt_similarity", "n"])), num=True)]
        for m in metrics:
            mean, lo, hi = own.at[m, "mean"], own.at[m, "ci_low"], own.at[m, "ci_high"]
            text = f"{fmt(mean)}<br><small>[{fmt(lo)}, {fmt(hi)}]</small>"
            cells.append(td(text, num=True, extra="best" if method in best[m] else ""))
        rows.append(cells)
    body = table(header, rows, [data.kinds.label(m) for m in data.methods])
    body += (f"<p>Mean over images with its {data.cfg.confidence:.0%} bootstrap interval in brackets; "
             f"↑ higher is better, ↓ lower is better; the best compared method per column is bold. "
             f"Identity similarity and CS count only images where MaskFormer found at least one of the "
             f"prompt's concepts (see the detection rate).</p>")
    return section("means", body)


def mifo(data: ReportData) -> str:
    columns = list(MIFO_COLUMNS) + ["CS of means"]
    frame = data.mifo[columns]
    header = ["method"] + [f"{esc(c)} {direction(MIFO_COLUMNS.get(c, 'cs'))}" for c in columns]
    best = {c: best_methods(data.summary, MIFO_COLUMNS[c]) for c in MIFO_COLUMNS}
    rows = []
    for method, values in frame.iterrows():
        rows.append([td(esc(method))] + [td(fmt(v), num=True, extra="best" if method in best.get(c, ()) else "")
                                         for c, v in values.items()])
    body = table(header, rows, [data.kinds.label(m) for m in frame.index])
    body += ("<p>SIM-C = prompt similarity (CLIP), SIM-D = identity similarity (DINO), NSIM-D = DINO "
             "similarity of a generated concept to the scene's other concepts (lower is better), "
             "CS = SIM-C × SIM-D × (1 − NSIM-D) per (image, concept), averaged. "
             "<i>CS of means</i> applies that product to the three means, which is how MIFO's "
             "published CS relates to its published means. The published tables are in "
             "<a href=\"#published\">Published figures</a>.</p>")
    return section("mifo", body)


def breakdowns(data: ReportData) -> str:
    parts = ["<h3>By number of concepts in the prompt</h3>",
             figure(data.plots["by_subset_size"], "scores by number of concepts",
                    "Mean per-image score against the number of concepts in the prompt (1 to the "
                    "scene's count); higher is better on both panels. Dashed lines with open markers "
                    "are ablations.")]
    for metric in BREAKDOWN_METRICS:
        parts.append(f"<p><b>{esc(METRICS[metric].label)}</b> {direction(metric)} by number of concepts</p>")
        parts.append(frame_table(data.by_subset[metric], data.kinds, "concepts", best_per_row=metric))
    parts += ["<h3>By template</h3>",
              figure(data.plots["by_template"], "scores by template",
                     "Mean per-image score per prompt template (\"… \" stands for \"a photo of "
                     "{tokens}\"); one marker per method, right is better.")]
    for metric in BREAKDOWN_METRICS:
        parts.append(f"<p><b>{esc(METRICS[metric].label)}</b> {direction(metric)} by template</p>")
        parts.append(frame_table(data.by_template[metric], data.kinds, "template",
                                 index_format=lambda i: f"{i}: {data.templates.get(i, '')}",
                                 best_per_row=metric))
    parts.append("<h3>By scene</h3>")
    for metric in BREAKDOWN_METRICS:
        n = len(data.by_scene[metric])
        parts.append(f"<details open><summary><b>{esc(METRICS[metric].label)}</b> {direction(metric)} "
                     f"by scene ({n} scenes)</summary>"
                     f"{frame_table(data.by_scene[metric], data.kinds, 'scene', best_per_row=metric)}</details>")
    parts += ["<h3>Detection rate of the identity metric</h3>",
              figure(data.plots["detection"], "detection rate",
                     f"Share of the prompt's concepts that MaskFormer found in the generated image, "
                     f"averaged over images, with {data.cfg.confidence:.0%} bootstrap CI; higher is "
                     f"better. Identity similarity exists only for detected concepts, so a low rate "
                     f"means the identity mean rests on few images."),
              frame_table(data.detection_by_subset, data.kinds, "concepts", best_per_row="detected")]
    return section("breakdowns", "\n".join(parts))


def significance(data: ReportData) -> str:
    parts = ["<p>Tests on per-image scores (each image's concept rows averaged first, so samples are "
             "independent images). Kruskal-Wallis asks whether any method differs; Tukey's HSD gives "
             "every pair's mean difference with a family-wise confidence interval and p-value, as BaS "
             "Table 3 does for its user study. Ablations are included as groups.</p>"]
    rows = []
    for k in data.kruskal:
        rows.append([td(esc(METRICS[k.metric].label)), td(str(len(k.methods)), num=True),
                     td(str(k.n_total), num=True), td(fmt(k.statistic, 2), num=True),
                     td(fmt_p(k.pvalue), num=True), td(esc(k.note))])
    parts.append("<h3>Kruskal-Wallis across methods</h3>")
    parts.append(table(["metric", "methods", "images", "H", "p-value", "note"], rows))
    alpha = data.cfg.alpha
    for metric, pairs in data.tukey.items():
        parts.append(f"<h3>Tukey HSD: {esc(METRICS[metric].label)} {direction(metric)}</h3>")
        if pairs.empty:
            parts.append("<p>Not computable: needs at least two methods with two or more scored images.</p>")
            continue
        rows = []
        for r in pairs.itertuples():
            sig = r.pvalue < alpha
            rows.append([td(esc(r.method_a)), td(esc(r.method_b)), td(fmt(r.mean_a), num=True),
                         td(fmt(r.mean_b), num=True), td(fmt_signed(r.difference), num=True),
                         td(f"[{fmt_signed(r.ci_low)}, {fmt_signed(r.ci_high)}]", num=True),
                         td(fmt_p(r.pvalue), num=True), td("yes" if sig else "no", extra="best" if sig else "")])
        parts.append(table(["method A", "method B", "mean A", "mean B", "B − A",
                            f"{data.cfg.confidence:.0%} CI of B − A", "p-value", f"p &lt; {alpha:g}"], rows))
    return section("significance", "\n".join(parts))


VERDICT_CLASS = {claim_checks.REPRODUCED: "good", claim_checks.NOT_REPRODUCED: "bad"}


def claims(data: ReportData) -> str:
    cfg = data.cfg
    parts = [f"<p>Each paper's central claim tested on this run's per-image scores (references left out). "
             f"A comparison is significant when the {cfg.confidence:.0%} bootstrap interval of the "
             f"difference of means ({cfg.bootstrap_samples} resamples of each method's images, seed "
             f"{cfg.bootstrap_seed}) excludes 0. <i>reproduced</i>: every comparison goes the claimed way, "
             f"significantly; <i>direction only</i>: it goes that way, not significantly; <i>not reproduced</i>: "
             f"a comparison goes the other way; <i>not measured</i>: a method the claim needs has no "
             f"results (or fewer than 2 scored images). Δ = first − second method, with its interval; "
             f"n = scored images of each.</p>"]
    rows = []
    for r in data.claims:
        c = r.claim
        rows.append([td(f"<b>{esc(c.paper)}</b> {esc(c.source)}<br>{esc(c.title)}"), td(esc(c.tested)),
                     td(f"<b>{esc(r.verdict)}</b><br><small>{esc(r.reason)}</small>",
                        extra=VERDICT_CLASS.get(r.verdict, "")),
                     td("<br>".join(f"<small>{esc(line)}</small>" for line in r.numbers))])
    parts.append(table(["claim", "tested", "verdict", "numbers"], rows))
    quotes = "".join(f"<li><b>{esc(r.claim.paper)} {esc(r.claim.source)}</b>: {esc(r.claim.statement)}</li>"
                     for r in data.claims)
    parts.append(f"<details><summary>The papers' words</summary><ul>{quotes}</ul></details>")
    return section("claims", "\n".join(parts))


def pictures(data: ReportData) -> str:
    cfg = data.cfg
    parts = [f"<p>For each chosen scene: the input, its concept masks, then every method's image for "
             f"the same prompt: template {cfg.picture_template_id}, all of the scene's concepts, seed "
             f"index {cfg.picture_seed_index} (same seed for every method). Scenes are set by "
             f"<code>report.picture_scenes</code>.</p>"]
    if not data.picture_rows:
        parts.append("<p>No scene chosen (<code>report.picture_scene_count</code> is 0).</p>")
    for row in data.picture_rows:
        caption = (f"Scene <code>{esc(row.scene_id)}</code>, prompt “{esc(row.prompt)}” (concepts "
                   f"{esc(row.subset)}, template {row.template_id}, seed index {row.seed_index}).")
        if row.missing:
            caption += f" No image for: {esc(', '.join(row.missing))}."
        if row.note:
            caption += f" Note: {esc(row.note)}."
        parts.append(figure(row.plot, f"pictures of {row.scene_id}", caption))
    return section("pictures", "\n".join(parts))


def attention(data: ReportData) -> str:
    parts = ["<p>Per-token cross-attention maps of the images above, for the methods that saved them "
             "(<code>&lt;run&gt;/attention/&lt;image&gt;.npz</code>); brighter is more attention.</p>"]
    for row in data.attention_rows:
        parts.append(f"<h3>Scene <code>{esc(row.scene_id)}</code></h3>")
        if row.plot is not None:
            parts.append(figure(row.plot, f"attention maps of {row.scene_id}",
                                f"Generated image and one map per placeholder token (its class in "
                                f"brackets) for: {esc(', '.join(row.produced))}."))
        if row.not_produced:
            parts.append(f"<p>Attention maps not produced by: {esc(', '.join(row.not_produced))}.</p>")
    if not data.attention_rows:
        parts.append("<p>No scene chosen for pictures.</p>")
    return section("attention", "\n".join(parts))


def published_block(view, note_extra: str = "") -> str:
    t = view.table
    header = ["method (paper's label)"] + [f"{esc(c)}<br><small>published</small>" for c in t.columns] + \
             ['our method<br><small>this run</small>'] + [f"{esc(c)}<br><small>this run</small>" for c in t.columns]
    rows = []
    for label, values in t.rows.items():
        ours = view.ours.loc[label]
        rows.append([td(esc(label))] + [td(published.formatted(t, v), num=True) for v in values] +
                    [td(esc(view.matched.get(label, "—")), extra="ours")] +
                    [td(fmt(v, t.digits), num=True, extra="ours") for v in ours])
    return (f'<div class="published"><p><span class="published-tag">PUBLISHED</span> '
            f"<b>{esc(t.title)}</b><br><small>Source: {esc(t.source)}. {esc(t.note)}{note_extra}</small></p>"
            f"{table(header, rows)}</div>")


def published_section(data: ReportData) -> str:
    parts = ["<p>Numbers from the papers (PROTOCOL.md section 6), each with its source. They are not "
             "ours: they are never averaged, tested or plotted with our results. Where one of our "
             "methods has the paper's method name, our mean is given in its own columns for reading "
             "side by side; datasets, models and seeds differ, so only trends should be compared.</p>"]
    t = published.BAS_USER_STUDY
    rows = [[td(esc(label))] + [td(published.formatted(t, v), num=True) for v in values]
            for label, values in t.rows.items()]
    parts.append(f'<div class="published"><p><span class="published-tag">PUBLISHED</span> '
                 f"<b>{esc(t.title)}</b><br><small>Source: {esc(t.source)}. {esc(t.note)}</small></p>"
                 f"{table(['method'] + [esc(c) for c in t.columns], rows)}</div>")
    for view in data.published_views:
        parts.append(published_block(view))
    t = published.TL_VS_CUSTOM_DIFFUSION
    method, baseline = published.TL_METHODS
    values = next(iter(t.rows.values()))
    rows = [[td("published")] + [td(f"+{published.formatted(t, v)}%", num=True) for v in values],
            [td(f"this run ({esc(method)} vs {esc(baseline)})", extra="ours")] +
            [td("—" if data.tl_ours[c] is None else f"{data.tl_ours[c]:+.2f}%", num=True, extra="ours")
             for c in t.columns]]
    parts.append(f'<div class="published"><p><span class="published-tag">PUBLISHED</span> '
                 f"<b>{esc(t.title)}</b><br><small>Source: {esc(t.source)}. {esc(t.note)}</small></p>"
                 f"{table(['', *[esc(c) for c in t.columns]], rows)}</div>")
    return section("published", "\n".join(parts))


def compare(data: ReportData) -> str:
    c = data.comparison
    if c is None:
        return section("compare", "<p>No other run given (<code>bas report --compare OTHER</code>, where "
                                  "OTHER is a results directory or a <code>metrics.json</code>, e.g. of a "
                                  "DVC experiment).</p>")
    parts = [f"<p>This run against <code>{esc(c.label)}</code>"
             + (f" (profile {esc(', '.join(c.profiles))})" if c.profiles else "")
             + ". Δ = this − other; green is a change for the better given the metric's direction, "
               "red for the worse.</p>"]
    header = ["method"]
    for metric in COMPARE_METRICS:
        header += [f"{esc(SHORT_LABELS[metric])} {direction(metric)}<br><small>this</small>",
                   "<small>other</small>", "<small>Δ</small>"]
    rows = []
    methods = list(dict.fromkeys(c.table["method"]))
    for method in methods:
        own = c.table[c.table["method"] == method].set_index("metric")
        cells = [td(esc(method))]
        for metric in COMPARE_METRICS:
            r = own.loc[metric]
            extra = {"yes": "good", "no": "bad"}.get(r["better"], "")
            cells += [td(fmt(r["this"]), num=True), td(fmt(r["other"]), num=True),
                      td(fmt_signed(r["delta"]), num=True, extra=extra)]
        rows.append(cells)
    parts.append(table(header, rows, [data.kinds.label(m) for m in methods], compact=True))
    return section("compare", "\n".join(parts))


def method_notes(data: ReportData) -> str:
    cfg = data.cfg
    items = [
        "Scores come from <code>scores.parquet</code>, one row per (generated image, concept in its "
        "prompt). Each image's rows are averaged first (NaN-skipping); every mean, interval and test "
        "is over images, so an image weighs the same whatever its number of concepts.",
        "Identity similarity (SIM-D) and CS exist only for concepts MaskFormer detected; an image "
        "with none detected has no identity score and is left out of that metric (the whole-image "
        "fallback is reported separately). The detection rate is the mean share of detected concepts.",
        f"Confidence intervals: percentile bootstrap of the mean, {cfg.bootstrap_samples} resamples of "
        f"a method's images, level {cfg.confidence:g}, seed {cfg.bootstrap_seed}.",
        "Pareto front: over method means of prompt and identity similarity, directions from the "
        "metric registry; a method is on it when no other method is at least as good on both and "
        "better on one. Ablations (recipes of kind <code>ablation</code>) "
        + ("take part." if cfg.pareto_include_ablations else "are drawn but do not take part."),
        "Kruskal-Wallis: <code>scipy.stats.kruskal</code>; Tukey HSD: <code>scipy.stats.tukey_hsd</code>, "
        f"pairs with p &lt; {cfg.alpha:g} marked.",
        "Tables as CSV are in <code>tables/</code>, plots as PNG and SVG in <code>plots/</code>, "
        "method means for <code>dvc metrics show</code> in <code>metrics.json</code>.",
    ]
    return section("method-notes", "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")


def plain_table(frame: pd.DataFrame, digits: int = 3) -> str:
    rows = [[td(fmt(v, digits), num=True) if isinstance(v, (float, np.floating)) else td(esc(v))
             for v in record] for record in frame.itertuples(index=False)]
    return table([str(c) for c in frame.columns], rows)


def human(data: ReportData) -> str:
    if data.human is None:
        return section("human", "<p>No human ratings: run <code>bas rate invite</code>, "
                                "<code>bas rate serve</code>, then <code>bas rate export</code>.</p>")
    h = data.human
    parts = [f"<p>Ratings from this lab's own study (<code>bas rate</code>): {esc(h.get('num_ratings'))} "
             f"ratings by {esc(h.get('num_raters'))} raters, 1-5 scale; not from the paper.</p>",
             figure(data.plots.get("human_pareto"), "human ratings",
                    "Mean human ratings per method: right = prompt correspondence, up = identity; "
                    "dashed line: Pareto front."),
             "<h3>Means and variances (BaS Table 4 layout)</h3>", plain_table(h["table4"]),
             "<h3>Kruskal-Wallis</h3>", plain_table(h["kruskal"], 4),
             "<h3>Tukey HSD pairs</h3>", plain_table(h["tukey"], 4)]
    return section("human", "\n".join(parts))


def render_html(data: ReportData) -> str:
    banner = f'<div class="banner">{esc(data.banner)}</div>' if data.banner else ""
    body = "\n".join([
        "<h1>Multi-concept personalization: comparison report</h1>",
        f'<p class="subtitle">Profile <b>{esc(", ".join(data.profiles))}</b> · '
        f'{len(data.methods)} methods · {int(data.overview["images"].sum())} images</p>',
        banner,
        overview(data), pareto(data), means(data), mifo(data), breakdowns(data), significance(data),
        claims(data), pictures(data), attention(data), human(data), published_section(data), compare(data),
        method_notes(data),
        banner,
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>bas comparison report ({esc(', '.join(data.profiles))})</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
