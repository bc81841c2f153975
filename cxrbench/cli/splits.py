"""`cxrbench splits`: the paper's Table 1 and per-class counts for a protocol's splits."""

from __future__ import annotations

import json

import click

# The reference paper's Table 1 (reported; reference-paper.md, section 1.2).
PAPER_TABLE1 = {
    "Full training-validation": 86524,
    "Full test": 25596,
    "Training-validation subset": 16944,
    "Training subset": 15249,
    "Validation subset": 1695,
    "Test subset": 6112,
}


@click.command()
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Dataset folder with the metadata CSV (images not needed).")
@click.option("--protocol", "protocol_name", default="paper-15c", show_default=True, help="Protocol id.")
@click.option("--seed", type=int, default=None, help="Another draw: overrides the subset and split seeds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def splits(data_dir: str, protocol_name: str, seed: int | None, as_json: bool) -> None:
    """Show a protocol's splits: Table 1, per-class counts and the patient-leakage check.

    \b
    Example:
      cxrbench splits --data-dir /data/ChestX-ray14 --protocol paper-15c --seed 0
    """
    from cxrbench.console import get_display
    from cxrbench.data.dataset import open_dataset, per_class_counts
    from cxrbench.protocols import get_protocol

    protocol = get_protocol(protocol_name)
    ds = open_dataset(data_dir)
    s = ds.splits(protocol, seed)
    n = len(ds.metadata)
    table1 = s.table1(n)
    per_class = per_class_counts(ds.metadata, s)
    leaks = [
        {"a": lk.a, "b": lk.b, "shared_patients": lk.patients, "images_a": lk.images_a, "images_b": lk.images_b,
         "image_wise_by_design": lk.allowed}
        for lk in s.leaks
    ]
    if as_json:
        click.echo(json.dumps({
            "protocol": protocol.key,
            "seed": seed,
            "source": s.source,
            "images": n,
            "table1": {name: count for name, count, _ in table1},
            "per_class": per_class,
            "dropped_singletons": int(len(s.dropped_singletons)),
            "folds": [{"train": int(len(f.train)), "val": int(len(f.val))} for f in s.folds],
            "leakage": leaks,
        }, indent=2))
        return
    d = get_display()
    paper = protocol.subset == "paper"
    cols = ["Dataset", "No. of images", "% of all images"] + (["paper (reported)"] if paper else [])
    rows = [[name, f"{c:,}", f"{pct:.2f} %"] + ([f"{PAPER_TABLE1[name]:,}"] if paper else [])
            for name, c, pct in table1]
    d.table(cols, rows, title=f"Table 1 - {protocol.key}, {s.source}",
            justify=["left", "right", "right"] + (["right"] if paper else []))
    d.table(["Class", "full", "subset", "train", "val", "test"],
            [[c, *(f"{v[k]:,}" for k in ("full", "subset", "train", "val", "test"))] for c, v in per_class.items()],
            title="Images per class (train/val: fold 0)", justify=["left"] + ["right"] * 5)
    if len(s.dropped_singletons):
        d.info(f"{len(s.dropped_singletons)} images with a string label that occurs once were dropped "
               "before the stratified split.")
    for lk in leaks:
        if lk["shared_patients"] == 0:
            d.info(f"leakage check {lk['a']} / {lk['b']}: no shared patients")
        else:
            d.info(f"leakage check {lk['a']} / {lk['b']}: {lk['shared_patients']} shared patients "
                   f"({lk['images_a']} / {lk['images_b']} images) - image-wise split, as in the reference paper")
