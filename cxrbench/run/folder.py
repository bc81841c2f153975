"""The run folder: what it holds and when a run may use it.

`run.json` (the settings), per training a checkpoint (`fold0.pt`, `final.pt`) and, once it is finished, its
result (`fold0.json`, `final.json`; folds also `fold0-val.csv.gz`), then `predictions.csv.gz` and
`record.json`. A folder with a checkpoint or a training result holds a run in progress: it continues only with
`--resume` and the same settings. A folder without any (a start that failed before training, e.g. on missing
ImageNet weights) blocks nothing: a new start proceeds with its own settings and says so.
"""

from __future__ import annotations

from pathlib import Path

from cxrbench.errors import ConfigError, TrainingError
from cxrbench.run.context import RunContext

RESULT_FORMAT = 2
MAX_CONFIG_BYTES = 1 << 20  # run.json: the settings of one run, a few hundred bytes
MAX_RESULT_BYTES = 64 << 20  # a fold's result: its history and metrics, a few hundred KB


def config(ctx: RunContext) -> dict:
    """The settings a resumed run must share with the run it continues."""
    return {
        "model": ctx.opts.model,
        "protocol": ctx.protocol.key,
        "protocol_hash": ctx.protocol.content_hash,
        "lr": ctx.lr,
        "pretrained": bool(ctx.pretrained),
        "weights": ctx.opts.weights,
        "cache_fingerprint": ctx.store.fingerprint,
        "model_source": ctx.spec.source,
        "seed": ctx.seed,
    }


def training_state(run_dir: Path) -> list[Path]:
    """Files that hold training: checkpoints and training results."""
    if not run_dir.is_dir():
        return []
    return sorted(
        p
        for p in run_dir.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix == ".pt" or (p.suffix == ".json" and p.stem.startswith(("fold", "final"))))
    )


def prepare(ctx: RunContext) -> None:
    """Check that the run may use its folder (see the module docstring), create it and write run.json."""
    from cxrbench.files import atomic_write_json, make_dirs

    if ctx.dist is not None and not ctx.is_main:  # rank 0 checks and creates the folder; the others wait for it
        ctx.dist.barrier()
        return
    d = ctx.dir
    cfg_path = d / "run.json"
    want = config(ctx)
    old = _read_config(cfg_path)
    if old is not None and "seed" not in old:  # written before --seed: trained with the protocol's seed
        old["seed"] = ctx.protocol.seed
    if (d / "record.json").exists():
        if not ctx.opts.resume:
            raise ConfigError(f"{d} already exists; continue it with --resume, or give another --run-id")
        raise ConfigError(f"{d} is already finished (record.json exists)")
    state = training_state(d)
    diff = [] if old is None else [k for k in want if old.get(k) != want[k]]
    if state:
        if not ctx.opts.resume:
            raise ConfigError(f"{d} already exists; continue it with --resume, or give another --run-id")
        if diff:
            raise ConfigError(
                f"{d} was started with other settings ({', '.join(diff)}); it cannot be resumed with "
                "these - give another --run-id"
            )
    elif old is not None:
        change = f" with other settings ({', '.join(diff)})" if diff else ""
        ctx.info(f"{d} holds no training yet (an earlier start stopped before training): starting it afresh{change}")
    make_dirs(d, root=ctx.opts.out)  # one component below --out, never through a link planted there
    # where the cache was (not part of what must match on resume: a cache may move)
    atomic_write_json(cfg_path, {**want, "cache_path": str(Path(ctx.opts.cache).resolve())})
    if ctx.dist is not None:
        ctx.dist.barrier()


def _read_config(path: Path) -> dict | None:
    from cxrbench.files import read_json

    if not path.exists() and not path.is_symlink():
        return None
    old = read_json(
        path, MAX_CONFIG_BYTES, "the run's settings", lambda m: ConfigError(f"{m}; remove it or give another --run-id")
    )
    if not isinstance(old, dict):
        raise ConfigError(f"{path} is not a JSON object; remove it or give another --run-id")
    old.pop("cache_path", None)
    return old


def write_result(path: Path, result: dict, stages: dict[str, float]) -> None:
    """A finished training's result (what the record lists) and its stage seconds, atomically."""
    from cxrbench.files import atomic_write_json

    atomic_write_json(path, {"format": RESULT_FORMAT, "result": result, "stages": stages})


def read_result(path: Path) -> tuple[dict, dict[str, float]]:
    """(result, stage seconds) of a finished training; a result written before stage timing has no stages."""
    from cxrbench.files import read_json

    data = read_json(
        path,
        MAX_RESULT_BYTES,
        "the training result",
        lambda m: TrainingError(f"{m}; remove it (and resume) to train that part again"),
    )
    if isinstance(data, dict) and data.get("format") == RESULT_FORMAT and isinstance(data.get("result"), dict):
        return data["result"], dict(data.get("stages") or {})
    if isinstance(data, dict) and "history" in data:  # written by cxrbench before results had a format
        return data, {}
    raise TrainingError(f"{path} is not a training result; remove it (and resume) to train that part again")
