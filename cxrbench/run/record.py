"""Stage 6, record: the sealed run record (`record.json`): protocol, model, data and split hashes, seeds, code,
environment (with whether the run is bitwise reproducible), timing with every stage's seconds, validation
results of every fold with their predictions files, test scores, the predictions' sha256 and localisation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cxrbench.numbers import mean_or_none
from cxrbench.run.context import RunContext
from cxrbench.run.fit import Trained
from cxrbench.run.load import Images
from cxrbench.run.score import Scored
from cxrbench.run.timing import rounded


def build(
    ctx: RunContext, images: Images, trained: Trained, scored: Scored, localization: dict | None, wall_seconds: float
) -> dict:
    """The record's fields (unsealed)."""
    from cxrbench.cache.resample import PAPER_RESAMPLE, RESAMPLES
    from cxrbench.engine.checkpoint import checkpoint_sha256
    from cxrbench.engine.train import unwrap
    from cxrbench.models import count_parameters
    from cxrbench.results.provenance import environment, package_git
    from cxrbench.results.record import PREDICTIONS, SCHEMA_VERSION
    from cxrbench.run.bind import split_hashes
    from cxrbench.run.determinism import bitwise_reproducible
    from cxrbench.run.scorer import scoring_checkpoint

    p, b, o = ctx.protocol, ctx.bound, ctx.opts
    ckpt = scoring_checkpoint(ctx.dir, p.final_run)  # the file the record ties the scoring model to
    scores = scored.scores  # first: waits for the bootstrap thread, whose time is one of the stages below
    deviations = []
    had_weights = bool(ctx.weights_info.get("pretrained"))  # what the record states as model.pretrained
    if p.pretrained and not had_weights:
        deviations.append("trained without the ImageNet weights the protocol asks for (--no-pretrained)")
    if had_weights and not p.pretrained:
        deviations.append("trained from pretrained weights; the protocol trains from scratch (--pretrained)")
    if images.mode == "stream":
        deviations.append("images streamed from the cache (chunk-level shuffle), not resident")
    if b.excluded:
        deviations.append(f"{b.excluded} images excluded (recorded as undecodable by the cache build)")
    if p.resample != PAPER_RESAMPLE and "paper" in p.id:  # a note only where the protocol names the paper
        deviations.append(
            f"images resampled with {p.resample} ({RESAMPLES[p.resample]}), not with the reference "
            f"paper's {PAPER_RESAMPLE} ({RESAMPLES[PAPER_RESAMPLE]})"
        )
    env = environment(ctx.device)
    env.update(
        processes=ctx.world,
        backend=None if ctx.dist is None else ctx.dist.backend,
        loader="resident" if images.mode == "sharded" else images.mode,
        compile=o.compile,
        cuda_graphs=ctx.cuda_graphs,
        deterministic=o.deterministic,
        bitwise_reproducible=bitwise_reproducible(ctx.device, o.deterministic, ctx.cuda_graphs),
    )
    folds = trained.folds
    val_w = [f["weighted_auroc"] for f in folds if f.get("weighted_auroc") is not None]
    val_p = [f["plain_auroc"] for f in folds if f.get("plain_auroc") is not None]
    train_images = sum(t["train_images"] for t in trained.trainings)
    train_seconds = sum(t["train_seconds"] for t in trained.trainings)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": ctx.run_id,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "protocol": {"id": p.id, "version": p.version, "hash": p.content_hash, "settings": p.to_dict()},
        "model": {
            "name": o.model,
            "source": ctx.spec.source,
            "parameters": count_parameters(unwrap(trained.model)),
            "pretrained": had_weights,
            "weights": ctx.weights_info,
        },
        "lr": float(ctx.lr),
        "deviations": deviations,
        "data": {
            "metadata_csv_sha256": b.metadata.sha256,
            "split_hashes": split_hashes(b),
            "cache_fingerprint": ctx.store.fingerprint,
            "classes": list(b.classes),
            "split_source": b.splits.source,
            "n_trainval": int(len(b.splits.trainval)),
            "n_test": int(len(b.splits.test)),
            "excluded_bad_images": b.excluded,
        },
        "seeds": {"train": ctx.seed, "subset": p.subset_seed, "split": p.split_seed, "bootstrap": p.seed},
        "code": package_git(),
        "environment": env,
        "timing": {
            "wall_seconds": round(wall_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "train_images": int(train_images),
            "train_images_per_s": round(train_images / train_seconds, 1) if train_seconds else 0.0,
            "resumed": len(trained.trained_now) < len(trained.trainings),
            "stages": rounded({**ctx.state.clock.seconds, **trained.stages}),
        },
        "validation": {"folds": folds, "mean_weighted_auroc": _mean(val_w), "mean_plain_auroc": _mean(val_p)},
        "test": scores.to_dict(b.classes),
        "predictions": {"path": PREDICTIONS, "sha256": scored.predictions_sha256},
        "scoring_checkpoint": {"path": ckpt.name, "sha256": checkpoint_sha256(ckpt)},
        **({"localization": localization} if localization is not None else {}),
    }


def write(ctx: RunContext, record: dict) -> Path:
    """Check every file the record names, then seal and write record.json atomically; returns its path."""
    from cxrbench.results.record import write_record

    check_files(ctx.dir, record)
    return write_record(ctx.dir, record)


def check_files(run_dir: Path, record: dict) -> None:
    """Every file a record will name (test predictions, each fold's validation predictions) is a regular file
    in the run folder with the sha256 the record gives; else a TrainingError, and nothing is sealed (a sealed
    record that `submit` refuses could never be resumed)."""
    import hashlib

    from cxrbench.errors import CxrbenchError, TrainingError
    from cxrbench.results.record import MAX_PREDICTIONS_BYTES, inside, read_regular

    named = [("test predictions", record["predictions"])]
    named += [
        (f"fold {k} validation predictions", f["predictions"])
        for k, f in enumerate(record["validation"]["folds"])
        if "predictions" in f
    ]
    for what, f in named:
        try:
            path = inside(run_dir, f["path"], f"{what} path", run_dir / "record.json")
            ok = hashlib.sha256(read_regular(path, MAX_PREDICTIONS_BYTES, what)).hexdigest() == f["sha256"]
        except CxrbenchError as e:
            raise TrainingError(f"{e}; the record is not sealed - run again with --resume to make it") from None
        if not ok:
            raise TrainingError(
                f"{path}: {what} changed after it was written (sha256 differs); the record is not sealed - "
                "run again with --resume to make it"
            )


def _mean(xs: list[float]) -> float | None:
    return mean_or_none(xs)
