"""`cxrbench splits`: the paper's Table 1 and per-class counts for a protocol's splits, beside the paper's."""

from __future__ import annotations

import json

import click

from cxrbench.data.subset import SUBSET_RULES


@click.command()
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=str),
    help="Dataset folder with the metadata CSV (images not needed). [required]",
)
@click.option("--protocol", "protocol_name", default="paper-15c", show_default=True, help="Protocol id.")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Another draw: overrides the subset and split seeds (0 to 2**32-1).",
)
@click.option(
    "--subset-rule",
    type=click.Choice(list(SUBSET_RULES)),
    default=None,
    help="Draw the paper subset under another reading of its rule, to compare (default: the protocol's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def splits(data_dir: str | None, protocol_name: str, seed: int | None, subset_rule: str | None, as_json: bool) -> None:
    """Show a protocol's splits: Table 1 and per-class counts beside the paper's, and the patient-leakage check.

    \b
    Example:
      cxrbench splits --data-dir /data/ChestX-ray14 --protocol paper-15c --seed 0
      cxrbench splits --data-dir /data/ChestX-ray14 --protocol paper-15c --subset-rule shortfall-unselected
    """
    from dataclasses import replace

    from cxrbench.cli._options import require
    from cxrbench.console import get_display
    from cxrbench.data.dataset import open_dataset, per_class_counts, subset_vs_targets
    from cxrbench.protocols import get_protocol

    protocol = get_protocol(protocol_name)  # a typo is named before a missing --data-dir
    rule = subset_rule or protocol.subset_rule
    ds = open_dataset(require(data_dir, "--data-dir"))
    s = ds.splits(replace(protocol, subset_rule=rule), seed)
    n = len(ds.metadata)
    paper = protocol.subset == "paper"
    table1 = s.table1_vs_paper(n)
    per_class = per_class_counts(ds.metadata, s)
    targets = subset_vs_targets(per_class) if paper else None
    leaks = [
        {
            "a": lk.a,
            "b": lk.b,
            "shared_patients": lk.patients,
            "images_a": lk.images_a,
            "images_b": lk.images_b,
            "image_wise_by_design": lk.allowed,
        }
        for lk in s.leaks
    ]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "protocol": protocol.key,
                    "seed": seed,
                    "subset_rule": rule if paper else None,
                    "source": s.source,
                    "images": n,
                    "table1": {name: count for name, count, *_ in table1},
                    "paper_table1": {name: p for name, _, _, p, _ in table1},
                    "difference": {name: d for name, *_, d in table1},
                    "per_class": per_class,
                    "subset_vs_targets": targets,
                    "dropped_singletons": int(len(s.dropped_singletons)),
                    "folds": [{"train": int(len(f.train)), "val": int(len(f.val))} for f in s.folds],
                    "leakage": leaks,
                    "unlisted": s.unlisted,
                },
                indent=2,
            )
        )
        return
    d = get_display()
    cols = ["Dataset", "No. of images", "% of all images"] + (["paper (reported)", "difference"] if paper else [])
    rows = [
        [name, f"{c:,}", f"{pct:.2f} %"] + ([f"{p:,}", f"{diff:+,}"] if paper else [])
        for name, c, pct, p, diff in table1
    ]
    how = f", subset rule {rule}" if paper else ""
    d.table(
        cols,
        rows,
        title=f"Table 1 - {protocol.key}, {s.source}{how}",
        justify=["left", "right", "right"] + (["right", "right"] if paper else []),
    )
    cols = ["Class", "full", "subset", "train", "val", "test"] + (["target", "subset - target"] if paper else [])
    rows = []
    for c, v in per_class.items():
        row = [c, *(f"{v[k]:,}" for k in ("full", "subset", "train", "val", "test"))]
        if targets is not None:
            t = targets[c]
            row += [f"{t['target']:,}", "taken whole" if t["taken_whole"] else f"{t['difference']:+,}"]
        rows.append(row)
    d.table(cols, rows, title="Images per class (train/val: fold 0)", justify=["left"] + ["right"] * (len(cols) - 1))
    if paper:
        d.info(
            f'subset rule {rule}: {SUBSET_RULES[rule].description}; the paper reports "numbers that are quite '
            'close to the targets" (2,000 per finding, 10,000 No Finding). Compare the readings with '
            "--subset-rule; benchmarks/table1_readings.py measures them all over seeds."
        )
    unlisted = s.unlisted_note()
    if unlisted:
        d.info(unlisted)
    if len(s.dropped_singletons):
        d.info(
            f"{len(s.dropped_singletons)} images with a string label that occurs once were dropped "
            "before the stratified split."
        )
    for lk in leaks:
        if lk["shared_patients"] == 0:
            d.info(f"leakage check {lk['a']} / {lk['b']}: no shared patients")
        else:
            d.info(
                f"leakage check {lk['a']} / {lk['b']}: {lk['shared_patients']} shared patients "
                f"({lk['images_a']} / {lk['images_b']} images) - image-wise split, as in the reference paper"
            )
