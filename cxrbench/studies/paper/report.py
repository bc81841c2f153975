"""The study's report: report.json, report.md and report.html with a figure per claim, Tables 1 and 2, the
attention-model finding and the list of runs. Every number in it comes from the claims and tables modules."""

from __future__ import annotations

import html
import json
from pathlib import Path

from cxrbench.data.labels import FINDINGS
from cxrbench.data.subset import SUBSET_RULES
from cxrbench.numbers import rounded
from cxrbench.results.reference import PAPER_CITATION
from cxrbench.studies.paper.claims import evaluate, run_record
from cxrbench.studies.paper.design import RunSpec, Study
from cxrbench.studies.paper.tables import attention_finding, table1, table2


def figures(study: Study, runs: dict[RunSpec, Path], folder: Path) -> dict[str, str]:
    """A per-class bar chart per claim (PNG in `folder`); returns claim key -> file name."""
    from cxrbench.files import make_dirs
    from cxrbench.results.plots import per_class_bars
    from cxrbench.results.reference import REFERENCE_ROWS

    make_dirs(folder)
    hi, lo = study.high_lr, study.low_lr

    def series(specs: list[tuple[str, RunSpec]]):
        out = []
        for name, s in specs:
            d = runs.get(s)
            if d is not None:
                out.append((name, {c: v.auroc for c, v in run_record(d).test.per_class.items()}, False))
        return out

    figs = {}
    classes15 = list(FINDINGS) + ["No Finding"]
    plan = {
        "fifteen": (
            "Fig. 6: 15 vs 14 classes (test)",
            list(FINDINGS),
            [
                (f"{study.baseline} 15 classes", RunSpec(study.p15, study.baseline, hi)),
                (f"{study.baseline} 14 classes", RunSpec(study.p14, study.baseline, hi)),
            ],
        ),
        "lr": (
            f"Fig. 7: lr {lo:g} vs {hi:g} (test)",
            classes15,
            [
                (f"{m} lr {lr:g}", RunSpec(study.grid, m, lr))
                for m in (study.baseline, *study.attention)
                for lr in (lo, hi)
            ],
        ),
        "densenet": (
            "Fig. 8: baselines (test)",
            classes15,
            [(m, RunSpec(study.p15, m, hi)) for m in (study.baseline, study.resnet)],
        ),
        "attention": (
            "Fig. 9: baseline and attention models (test)",
            classes15,
            [(m, RunSpec(study.p15, m, hi)) for m in (study.baseline, *study.attention)],
        ),
        "nonimage": (
            "Fig. 11: with and without non-image features (test)",
            classes15,
            [(m, RunSpec(study.p15, m, hi)) for pair in study.nonimage for m in pair],
        ),
    }
    for key, (title, classes, specs) in plan.items():
        ser = series(specs)
        if key == "densenet" and study.name == "paper":
            ser += [(r["name"], r["per_class"], True) for r in REFERENCE_ROWS if r["per_class"]]
        if ser:
            figs[key] = per_class_bars(folder / f"fig-{key}.png", classes, ser, title).name
    return figs


def arms(replicates: dict[RunSpec, list[Path]] | None) -> dict[str, dict]:
    """Per arm of the study (protocol, model, lr): its training seeds, each seed's weighted mean test AUROC, their
    mean and seed standard deviation (ddof 1), from the runs' records."""
    import numpy as np

    out = {}
    for s, ds in (replicates or {}).items():
        recs = [run_record(d) for d in ds]
        w = [r.test.weighted_mean.auroc for r in recs]
        ok = np.array([x for x in w if x is not None], dtype=float)
        out[f"{s.protocol} {s.model} lr {s.lr:g}"] = {
            "seeds": [r.seeds["train"] for r in recs],
            "weighted_per_seed": w,
            "mean": rounded(ok.mean()) if len(ok) else None,
            "sd": rounded(ok.std(ddof=1)) if len(ok) > 1 else None,
        }
    return out


def write_report(
    study: Study,
    cache: str,
    out: Path,
    runs: dict[RunSpec, Path],
    replicates: dict[RunSpec, list[Path]] | None = None,
) -> tuple[Path, Path]:
    """Evaluate the claims and write report.json, report.md and report.html (with figures) in `out`; with
    `replicates` (the runs of every seed of each arm) the verdicts are seed-aware."""
    claims = evaluate(study, runs, replicates)
    figs = figures(study, runs, out)
    for c in claims:
        c.figure = figs.get(c.key)
    t1, t2 = table1(study, cache), table2()
    finding = attention_finding(study, cache, runs)
    data = {
        "study": study.name,
        "cache": str(cache),
        "claims": [vars(c) | {"verdict_changed": c.verdict_changed} for c in claims],
        "arms": arms(replicates),
        "table1": t1,
        "table2": t2,
        "attention_finding": finding,
        "runs": {f"{s.protocol} {s.model} lr {s.lr:g}": str(d) for s, d in runs.items()},
        **(
            {
                "replicates": {
                    f"{s.protocol} {s.model} lr {s.lr:g}": [str(d) for d in ds] for s, ds in replicates.items()
                }
            }
            if replicates
            else {}
        ),
    }
    from cxrbench.files import atomic_write_text

    atomic_write_text(out / "report.json", json.dumps(data, indent=1, default=str) + "\n")
    listed = replicates if replicates else {s: [d] for s, d in runs.items()}
    md = _markdown(study, claims, t1, t2, finding, listed, data["arms"])
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", _html(study, claims, t1, t2, finding, listed, data["arms"]))
    return out / "report.md", out / "report.html"


def _roles(study: Study) -> str:
    att = ", ".join(study.attention)
    non = ", ".join(b for _, b in study.nonimage)
    s = (
        f"Models: DenseNet-121 role {study.baseline}, ResNet-50 role {study.resnet}, attention {att}, non-image "
        f"{non}; protocols {study.p15}, {study.p14}, {study.grid} (lr {study.low_lr:g} and {study.high_lr:g})."
    )
    if study.name == "mini":
        s += (
            " This is the miniature: tiny models on 64-pixel phantom images, so its verdicts test the pipeline, "
            "not the paper."
        )
    return s


def _finding_text(f: dict) -> str:
    n5, t3 = f["features.norm5"], f["features.transition3"]
    return (
        f"In attA and attB, g adds the same constant <u, g> to every location's compatibility score and the "
        f"softmax over locations cancels it, so norm5 reaches the logits not at all. Measured on {f['model']}: "
        f"Grad-CAM on norm5 peaks at {n5['peak_ratio_max']:.1e} x the mean activation ({n5['degenerate']} of "
        f"{n5['maps']} maps flagged degenerate); on transition3, which feeds the attention, at "
        f"{t3['peak_ratio_max']:.1e} ({t3['degenerate']} of {t3['maps']} flagged). The paper's attA heatmaps on "
        "norm5 are therefore stretched float noise; cxrbench uses transition3."
    )


def _table1_note(t1: dict) -> str:
    rule = t1["subset_rule"]
    return (
        f"{t1['protocol']}, {t1['source']}, subset rule {rule} ({SUBSET_RULES[rule].description}); "
        "benchmarks/results/table1_readings.json compares every reading of the paper's rule over seeds."
    )


def _seeds_text(arms_: dict[str, dict]) -> str:
    """What the seed-aware report says of its seeds (empty without replicates)."""
    if not arms_:
        return ""
    n = sorted({len(a["seeds"]) for a in arms_.values()})
    return (
        f"Replicates: every arm was trained with {'/'.join(map(str, n))} training seeds (split, subset and bootstrap "
        "seeds stay the protocol's). Every verdict uses the seed-aware test (two-level-t@v1: the variance between "
        "seeds and between test patients, docs/seeds.md); under each verdict, the verdict of the single-seed test "
        "(each arm's first seed, paired patient bootstrap only) and whether it changed."
    )


def _arm_cells(a: dict) -> tuple[str, str, str, str]:
    """An arm's seeds, each seed's weighted test AUROC, their mean and seed sd, as text."""

    def f(x) -> str:
        return "—" if x is None else f"{x:.4f}"

    return (", ".join(map(str, a["seeds"])), ", ".join(f(x) for x in a["weighted_per_seed"]), f(a["mean"]), f(a["sd"]))


def _single(c) -> str:
    if c.single_seed_verdict is None:
        return ""
    how = "changed" if c.verdict_changed else "unchanged"
    return f"Single-seed test (first seed of each arm): {c.single_seed_verdict} - verdict {how}."


def _off_target(v: dict) -> str:
    return "taken whole" if v["taken_whole"] else f"{v['difference']:+,}"


def _markdown(study, claims, t1, t2, finding, runs, arms_=None) -> str:
    L = [
        f"# Reproducing the reference paper ({study.name} study)",
        "",
        "Every number below was produced by `cxrbench reproduce paper`; the paper's statements are quoted as "
        f"reported ({PAPER_CITATION}). Tests are paired patient-level bootstraps of the weighted mean test "
        "AUROC with each protocol's resamples and seed (the leaderboard's); verdicts: holds / does not hold / "
        "inconclusive at 95%.",
        "",
        _roles(study),
        "",
        *([_seeds_text(arms_), ""] if arms_ else []),
        *(
            ["| arm | seeds | weighted test AUROC per seed | mean | seed sd |", "|---|---|---|---|---|"]
            + ["| " + " | ".join((k, *_arm_cells(a))) + " |" for k, a in arms_.items()]
            + [""]
            if arms_
            else []
        ),
        "## Table 1 (regenerated)",
        "",
        _table1_note(t1),
        "",
        "| dataset | images | % of all | paper (reported) | difference |",
        "|---|---|---|---|---|",
    ]
    L += [f"| {n} | {c:,} | {pct:.2f} % | {p:,} | {d:+,} |" for n, c, pct, p, d in t1["rows"]]
    L += [
        "",
        'Per class, the subset beside the paper\'s targets ("quite close to the targets"):',
        "",
        "| class | subset | target | subset - target |",
        "|---|---|---|---|",
    ]
    L += [f"| {c} | {v['subset']:,} | {v['target']:,} | {_off_target(v)} |" for c, v in t1["classes"].items()]
    L += ["", "## Table 2 (regenerated)", "", "| model | parameters | paper (reported) |", "|---|---|---|"]
    L += [f"| {m} | {n:,} | {p:,} |" for m, n, p in t2]
    for c in claims:
        L += [
            "",
            f"## {c.title}",
            "",
            f"**Verdict: {c.verdict}**" + (f" ({c.why})" if c.why else ""),
            "",
            *([_single(c), ""] if c.single_seed_verdict is not None else []),
            f"Paper (reported): {c.says}",
            "",
        ]
        if c.rows:
            L += ["| reproduced | value [95% CI] |", "|---|---|"] + [f"| {a} | {b} |" for a, b in c.rows] + [""]
        if c.tests:
            L += ["| contrast | difference [95% CI] | p |", "|---|---|---|"]
            L += [
                f"| {n} | {t['diff']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}] | {_p(t)} |" for n, t in c.tests
            ] + [""]
        if c.figure:
            L += [f"![{c.title}]({c.figure})", ""]
    L += ["## The attention-model finding", "", _finding_text(finding), "", "## Runs", ""]
    L += [f"- `{s.protocol}` {s.model} lr {s.lr:g}: " + ", ".join(f"`{d}`" for d in ds) for s, ds in runs.items()]
    return "\n".join(L) + "\n"


def _html(study, claims, t1, t2, finding, runs, arms_=None) -> str:
    e = html.escape
    parts = [
        f"<h1>Reproducing the reference paper ({e(study.name)} study)</h1>",
        "<p>Every number was produced by <code>cxrbench reproduce paper</code>; the paper's statements are "
        "quoted as reported. Tests: paired patient-level bootstraps of the weighted mean test AUROC.</p>",
        f"<p>{e(_roles(study))}</p>",
        *([f"<p>{e(_seeds_text(arms_))}</p>"] if arms_ else []),
        *(
            [
                "<table><tr><th>arm</th><th>seeds</th><th>weighted test AUROC per seed</th><th>mean</th>"
                "<th>seed sd</th></tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{e(x)}</td>" for x in (k, *_arm_cells(a))) + "</tr>"
                    for k, a in arms_.items()
                )
                + "</table>"
            ]
            if arms_
            else []
        ),
        f"<h2>Table 1 (regenerated)</h2><p>{e(_table1_note(t1))}</p><table><tr><th>dataset</th><th>images</th>"
        "<th>% of all</th><th>paper (reported)</th><th>difference</th></tr>",
    ]
    parts += [
        f"<tr><td>{e(n)}</td><td>{c:,}</td><td>{pct:.2f} %</td><td>{p:,}</td><td>{d:+,}</td></tr>"
        for n, c, pct, p, d in t1["rows"]
    ]
    parts += [
        "</table><p>Per class, the subset beside the paper's targets:</p><table><tr><th>class</th>"
        "<th>subset</th><th>target</th><th>subset - target</th></tr>"
    ]
    parts += [
        f"<tr><td>{e(c)}</td><td>{v['subset']:,}</td><td>{v['target']:,}</td><td>{e(_off_target(v))}</td></tr>"
        for c, v in t1["classes"].items()
    ]
    parts += [
        "</table><h2>Table 2 (regenerated)</h2><table><tr><th>model</th><th>parameters</th>"
        "<th>paper (reported)</th></tr>"
    ]
    parts += [f"<tr><td>{e(m)}</td><td>{n:,}</td><td>{p:,}</td></tr>" for m, n, p in t2]
    parts.append("</table>")
    for c in claims:
        cls = {"holds": "holds", "does not hold": "fails"}.get(c.verdict, "open")
        parts.append(
            f"<section class='claim'><h2>{e(c.title)}</h2><p class='verdict {cls}'>Verdict: "
            f"{e(c.verdict)}</p>"
            + (f"<p class='why'>{e(c.why)}</p>" if c.why else "")
            + (f"<p class='single'>{e(_single(c))}</p>" if c.single_seed_verdict is not None else "")
            + f"<p class='reported'>Paper (reported): {e(c.says)}</p>"
        )
        if c.rows:
            parts.append(
                "<table><tr><th>reproduced</th><th>value [95% CI]</th></tr>"
                + "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in c.rows)
                + "</table>"
            )
        if c.tests:
            parts.append(
                "<table><tr><th>contrast</th><th>difference [95% CI]</th><th>p</th></tr>"
                + "".join(
                    f"<tr><td>{e(n)}</td><td>{t['diff']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]</td>"
                    f"<td>{e(_p(t))}</td></tr>"
                    for n, t in c.tests
                )
                + "</table>"
            )
        if c.figure:
            parts.append(f"<img src='{e(c.figure)}' alt='{e(c.title)}'>")
        parts.append("</section>")
    parts.append(f"<h2>The attention-model finding</h2><p>{e(_finding_text(finding))}</p><h2>Runs</h2><ul>")
    parts += [
        f"<li><code>{e(s.protocol)}</code> {e(s.model)} lr {s.lr:g}: "
        + ", ".join(f"<code>{e(str(d))}</code>" for d in ds)
        + "</li>"
        for s, ds in runs.items()
    ]
    parts.append("</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}table{border-collapse:"
        "collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}th{background:"
        "#f0f0f0}.verdict{font-weight:bold}.holds{color:#070}.fails{color:#a00}.open{color:#a60}.reported{color:"
        "#555;font-style:italic}img{max-width:100%;border:1px solid #ddd}"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cxrbench: reproducing the paper"
        f"</title><style>{style}</style></head><body data-images='pending'>{''.join(parts)}"
        "<script>window.addEventListener('load',function(){var ok=Array.prototype.slice.call(document.images)"
        ".every(function(i){return i.complete&&i.naturalWidth>0});document.body.setAttribute('data-images',"
        "ok?'ok':'broken')});</script></body></html>\n"
    )


def _p(t: dict) -> str:
    """A contrast's p-value as the board writes it (`p<0.001`, never `p=0.000`)."""
    from cxrbench.results.render import p_text

    return p_text(t["p_value"], t.get("resamples")).removeprefix("p=")
