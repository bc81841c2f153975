"""The evaluation's views: the same tables as text (the terminal), Markdown and HTML, and every figure as one
CSV row. Group and class names are untrusted text: the HTML escapes them, the terminal strips markup."""

from __future__ import annotations

import csv
import html
import io
from typing import Any

Table = tuple[str, list[str], list[list[str]]]  # title, columns, rows


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _ci(v: dict | None, digits: int = 3) -> str:
    if v is None or v.get("value") is None:
        return "—"
    lo, hi = v["ci95"]
    return f"{v['value']:.{digits}f} [{_f(lo, digits)}, {_f(hi, digits)}]"


def _gap(g: dict | None) -> str:
    return "—" if g is None else f"{g['value']:.3f} ({g['highest']} vs {g['lowest']})"


def preamble(r: dict) -> list[str]:
    """What was evaluated and how, in sentences."""
    t = r["thresholds_from"]
    b = r["bootstrap"]
    return [
        f"{r['run_id']} ({r['model']}, {r['protocol']}): {r['test']['images']:,} test images of "
        f"{r['test']['patients']:,} patients.",
        f"Thresholds chosen on {t['file']} ({t['images']:,} validation images): {t['model']}.",
        f"95% CIs: patient bootstrap, {b['resamples']:,} resamples, seed {b['seed']} (the protocol's).",
        f"Calibration binning: {r['calibration']['binning']}.",
        f"Groups with fewer than {r['min_count']} positives or negatives get no AUROC, TPR or FPR (too few).",
    ]


def tables(r: dict) -> list[Table]:
    """Operating points, calibration, one table per subgroup attribute, underdiagnosis."""
    out: list[Table] = []
    rows = []
    for c in r["classes"]:
        for key, op in r["operating_points"][c].items():
            t = op["test"]
            rows.append(
                [
                    c,
                    key,
                    "—" if op["threshold"] is None else f"{op['threshold']:.4g}",
                    *(_ci(t[m]) for m in ("sensitivity", "specificity", "ppv", "npv", "f1")),
                ]
            )
    out.append(
        (
            "Operating points (thresholds chosen on validation; test figures)",
            ["class", "rule", "threshold", "sensitivity", "specificity", "PPV", "NPV", "F1"],
            rows,
        )
    )
    cal = r["calibration"]
    rows = [[c, _f(e["ece"], 4), _f(e["adaptive_ece"], 4), _f(e["brier"], 4)] for c, e in cal["per_class"].items()]
    p = cal["pooled"]
    rows.append(["all classes pooled", _f(p["ece"], 4), _f(p["adaptive_ece"], 4), _f(p["brier"], 4)])
    out.append(("Calibration (test)", ["class", "ECE", "adaptive ECE", "Brier"], rows))
    for name, sub in r["subgroups"].items():
        rows = []
        for c in r["classes"]:
            e = sub["per_class"][c]
            cells = []
            for g in sub["groups"]:
                x = e["groups"][g]
                cells.append(
                    f"too few ({x['positives']} pos., {x['negatives']} neg.)" if x["auroc"] is None else _ci(x["auroc"])
                )
            rows.append([c, *cells, e["worst_group"] or "—", _gap(e["auroc_gap"]), _gap(e["tpr_gap"])])
        cols = ["class", *(f"{g} AUROC [95% CI]" for g in sub["groups"]), "worst", "AUROC gap", "TPR gap (Youden)"]
        title = f"Subgroups by {name} ({sub['note']}; {sub['left_out']:,} image(s) without a group)"
        out.append((title, cols, rows))
    u = r["underdiagnosis"]
    rows = [["all", "all", f"{u['all']['with_finding']:,}", _rate(u["all"])]]
    for name, a in u["by"].items():
        for g, e in a["groups"].items():
            rows.append([name, g, f"{e['with_finding']:,}", _rate(e)])
        rows.append([name, "largest gap", "", _gap(a["gap"])])
    out.append(
        (
            f"Underdiagnosis: images with a finding called healthy ({u['rule']})",
            ["attribute", "group", "images with a finding", "rate [95% CI]"],
            rows,
        )
    )
    return out


def _rate(e: dict) -> str:
    return f"too few ({e['with_finding']})" if e["rate"] is None else _ci(e["rate"])


def show(r: dict, d: Any) -> None:
    """The four parts on the terminal."""
    for line in preamble(r):
        d.prose(line)
    for title, cols, rows in tables(r):
        cols = [_SHORT.get(c, c) for c in cols]  # headers that fit a terminal; the files keep the long ones
        rows = [[_SHORT_RULES.get(x, x) for x in row] for row in rows]
        d.table(cols, rows, title=title, no_wrap=cols[:1])


_SHORT = {"threshold": "thresh.", "sensitivity": "sens.", "specificity": "spec."}
_SHORT_RULES = {"sensitivity>=0.9": "sens.>=0.9", "specificity>=0.9": "spec.>=0.9"}


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(r: dict) -> str:
    """The four parts as Markdown."""
    lines = [f"# Evaluation of {_md_cell(r['run_id'])}", ""]
    lines += [f"- {_md_cell(s)}" for s in preamble(r)]
    for title, cols, rows in tables(r):
        lines += ["", f"## {_md_cell(title)}", "", "| " + " | ".join(map(_md_cell, cols)) + " |"]
        lines.append("|" + "---|" * len(cols))
        lines += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_html(r: dict, pictures: dict[str, str]) -> str:
    """A self-contained page (the PNGs beside it) with the four parts and the pictures."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Evaluation of {e(r['run_id'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:12px;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>Evaluation of {e(r['run_id'])}</h1><ul>",
        *(f"<li>{e(s)}</li>" for s in preamble(r)),
        "</ul>",
    ]
    figs = {
        "Operating points (thresholds chosen on validation; test figures)": ["roc"],
        "Calibration (test)": ["reliability"],
    }
    forests = [k for k in pictures if k.startswith("forest-")]
    for title, cols, rows in tables(r):
        parts.append(f"<h2>{e(title)}</h2>")
        for pic in figs.get(title, []):
            if pic in pictures:
                parts.append(f"<img src='{e(pictures[pic])}' alt='{e(pic)}'>")
        if title.startswith("Subgroups by") and forests:
            parts.append(f"<img src='{e(pictures[forests.pop(0)])}' alt='forest plot'>")
        parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


CSV_COLUMNS = ["section", "class", "attribute", "group", "rule", "metric", "value", "ci_low", "ci_high", "n", "note"]


def csv_rows(r: dict) -> list[list[Any]]:
    """Every figure as a row of numbers (empty: undefined, with the reason in note)."""
    rows: list[list[Any]] = []

    def add(section, cls, attr, group, rule, metric, v, n="", note=""):
        if isinstance(v, dict):
            val, (lo, hi) = v.get("value"), v.get("ci95", [None, None])
        else:
            val, lo, hi = v, None, None
        rows.append(
            [section, cls, attr, group, rule, metric, *("" if x is None else x for x in (val, lo, hi)), n, note]
        )

    for c in r["classes"]:
        for key, op in r["operating_points"][c].items():
            add("operating_point", c, "", "", key, "threshold", op["threshold"])
            for m, v in op["test"].items():
                add("operating_point", c, "", "", key, m, v)
    cal = r["calibration"]
    for c, e in [*cal["per_class"].items(), ("pooled", cal["pooled"])]:
        for m in ("ece", "adaptive_ece", "brier"):
            add("calibration", c, "", "", "", m, e[m])
    for name, sub in r["subgroups"].items():
        for c in r["classes"]:
            pc = sub["per_class"][c]
            for g in sub["groups"]:
                x = pc["groups"][g]
                note = x.get("too_few", "")
                add("subgroup", c, name, g, "", "auroc", x["auroc"], x["images"], note)
                add("subgroup", c, name, g, "", "positives", x["positives"], x["images"])
                add("subgroup", c, name, g, "youden", "tpr", x["tpr"], x["images"], note)
                add("subgroup", c, name, g, "youden", "fpr", x["fpr"], x["images"], note)
            for m in ("auroc_gap", "tpr_gap", "fpr_gap"):
                gap = pc[m]
                add(
                    "subgroup",
                    c,
                    name,
                    "",
                    "",
                    m,
                    None if gap is None else gap["value"],
                    "",
                    "" if gap is None else f"{gap['highest']} vs {gap['lowest']}",
                )
    u = r["underdiagnosis"]
    add("underdiagnosis", "", "", "all", "youden", "rate", u["all"]["rate"], u["all"]["with_finding"])
    for name, a in u["by"].items():
        for g, e in a["groups"].items():
            add("underdiagnosis", "", name, g, "youden", "rate", e["rate"], e["with_finding"], e.get("too_few", ""))
        gap = a["gap"]
        add(
            "underdiagnosis",
            "",
            name,
            "",
            "youden",
            "rate_gap",
            None if gap is None else gap["value"],
            "",
            "" if gap is None else f"{gap['highest']} vs {gap['lowest']}",
        )
    return rows


def to_csv(r: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    w.writerows(csv_rows(r))
    return buf.getvalue()
