"""`cxrbench rescore`: a finished run's test predictions scored against radiologist-adjudicated labels."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option(
    "--adjudicated",
    "adjudicated",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="The adjudicated-labels CSV of Majkowska et al. 2019 (plain or gzipped), as distributed.",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="JSON mapping of the four findings to ChestX-ray14 classes (default: cxr14-adjudicated@v1).",
)
@click.option(
    "--set",
    "which",
    type=click.Choice(["test", "val", "both"]),
    default="test",
    show_default=True,
    help="Which adjudicated set to score (the 'test' images all lie in the official test list).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="The run's dataset tables (a cache or a dataset folder) to check names and patients against "
    "(default: the cache the run recorded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rescore(run: str, adjudicated: str, mapping: str | None, which: str, data: str | None, as_json: bool) -> None:
    """Score RUN's saved test predictions against radiologist-adjudicated labels, beside the NIH labels of the
    same images (no retraining); writes RUN/adjudicated-<mapping hash>.json.

    \b
    Example:
      cxrbench rescore runs/densenet121__paper-15c@v2__lr0.01__seed0 \
        --adjudicated four_findings_expert_labels_test_labels.csv
    """
    from cxrbench.console import get_display
    from cxrbench.results.rescore import UnsavedResult, rescore_run

    d = get_display()
    sets = ("test", "val") if which == "both" else (which,)
    try:
        result, path = rescore_run(run, adjudicated, mapping, sets, data)
    except UnsavedResult as e:  # computed, not saved: show it, then the one-line error (exit 2)
        if as_json:
            click.echo(json.dumps(e.result, indent=2))
        else:
            show(e.result, d)
        raise
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    show(result, d)
    d.info(f"wrote {path}")


def show(result: dict, d) -> None:
    """The mapping, the coverage and one row per finding."""
    from cxrbench.results.adjudicated import Mapping

    m = result["mapping"]
    mapping = Mapping(m["id"], m["version"], {f: tuple(c) for f, c in m["findings"].items()})
    d.info(f"mapping {m['key']} (hash {m['hash']}): " + "; ".join(mapping.describe()))
    c = result["coverage"]
    d.info(
        f"{c['in_predictions']:,} of the {c['adjudicated_images']:,} adjudicated images of set "
        f"{'+'.join(result['sets'])} are in this run's test predictions ({c['patients']:,} patients); "
        f"95% CIs: patient bootstrap, {result['bootstrap']['resamples']:,} resamples, seed "
        f"{result['bootstrap']['seed']}"
    )
    rows = []
    for f, e in result["findings"].items():
        if not e["scored"]:
            rows.append([f, "—", f"{e['positives_adjudicated']:,}", "—", "—", "—", "—", e["reason"]])
            continue
        diff = e["difference"]
        rows.append(
            [
                f,
                "+".join(e["classes"]),
                f"{e['positives_adjudicated']:,}",
                f"{e['positives_nih']:,}",
                _ci(e["auroc_nih"]),
                _ci(e["auroc_adjudicated"]),
                "—"
                if diff is None
                else f"{diff['diff']:+.4f} [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}] p={diff['p_value']:.3f}",
                ""
                if e["label_kappa"] is None
                else f"labels agree on {e['label_agreement']:.1%}, kappa {e['label_kappa']:.2f}",
            ]
        )
    d.table(
        [
            "finding",
            "classes",
            "positive (adjudicated)",
            "positive (NIH)",
            "AUROC vs NIH labels [95% CI]",
            "AUROC vs adjudicated [95% CI]",
            "adjudicated - NIH (paired)",
            "note",
        ],
        rows,
        title=f"{result['run_id']}: adjudicated vs NIH labels",
    )


def _ci(m: dict) -> str:
    if m["auroc"] is None:
        return "undefined"
    lo, hi = m["ci95"]
    return f"{m['auroc']:.4f} [{lo:.4f}, {hi:.4f}]"
