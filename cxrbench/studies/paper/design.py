"""The paper study's design: its two scales (the paper's models and protocols, and the miniature on phantoms),
the paper's statements quoted as reported, and every run the five claims need (`needed`), as run options, as
command lines for a cluster, or run here (`run_all`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Study:
    """One scale of the study: which protocols and models play each role of the paper's comparisons."""

    name: str
    p15: str
    p14: str
    grid: str
    baseline: str
    resnet: str
    attention: tuple[str, ...]
    nonimage: tuple[tuple[str, str], ...]  # (image only, with non-image features)
    low_lr: float
    high_lr: float


PAPER = Study(
    "paper",
    "paper-15c",
    "paper-14c",
    "paper-lr-grid",
    "densenet121",
    "resnet50",
    ("densenet121_attA", "densenet121_attB"),
    (("densenet121", "densenet121_nonimage"), ("densenet121_attA", "densenet121_attA_nonimage")),
    0.001,
    0.01,
)
MINI = Study(
    "mini",
    "mini-paper-15c",
    "mini-paper-14c",
    "mini-lr-grid",
    "tiny",
    "tiny_res",
    ("tiny_attn",),
    (("tiny", "tiny_nonimage"),),
    0.01,
    0.1,
)

# What the reference paper (reference.PAPER_CITATION) says, quoted in the report as reported.
PAPER_SAYS = {
    "subset": 'Table 1 (train-val subset 16,944, train 15,249, validation 1,695, test 6,112 images); "average '
    'validation and test AUROC scores as high as 0.7 or greater can be achieved" with DenseNet-121 '
    "and ResNet-50 (abstract).",
    "densenet": '"The superior performance of DenseNet-121 over ResNet-50 shown in the CheXNet study is reproduced '
    'with the smaller data set" (abstract; Fig. 8).',
    "fifteen": '"we compare the performances of the 14-class and 15-class multi-label classification and find the '
    'latter to be significantly better" (Sec. 3.1, Fig. 6: 3 epochs, lr 0.001, pretrained).',
    "lr": '"the gain in AUROC for the attention models with higher learning rate is significant and consistent '
    'for all classes", while for the baselines "the impact of learning rate on the average AUROCs appear '
    'to be small" (Sec. 3.1, Fig. 7).',
    "attention": 'The attention models "improve the test AUROC between 0.02 and 0.03 when all models were trained '
    'with a learning rate of 0.01 for 8 epochs" (abstract; Fig. 9).',
    "nonimage": '"the non-image features do not help improve the model performance significantly on average" '
    "(Sec. 3.3, Fig. 11).",
}
PAPER_TABLE2 = {"resnet50": 23538767, "densenet121": 6969231, "densenet121_attA": 7920527, "densenet121_attB": 6971279}
NEGLIGIBLE = 0.02  # a gain below this is "not much" (claim 5)


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: protocol, model, learning rate."""

    protocol: str
    model: str
    lr: float


def needed(study: Study, models: set[str] | None = None) -> list[RunSpec]:
    """Every run the five comparisons need (restricted to `models` when given)."""
    p15 = [study.baseline, study.resnet, *study.attention, *(b for _, b in study.nonimage)]
    specs = [RunSpec(study.p15, m, study.high_lr) for m in dict.fromkeys(p15)]
    specs.append(RunSpec(study.p14, study.baseline, study.high_lr))
    for m in (study.baseline, *study.attention):
        for lr in (study.low_lr, study.high_lr):
            specs.append(RunSpec(study.grid, m, lr))
    return [s for s in specs if models is None or s.model in models]


def run_options(
    study: Study,
    cache: str,
    out: Path,
    device: str,
    models: set[str] | None,
    pretrained: bool | None = None,
    seeds: tuple[int, ...] | None = None,
) -> list:
    """The RunOptions of every needed run (in OUT/runs), once per training seed in `seeds` (None: the
    protocol's seed only)."""
    from cxrbench.run import RunOptions

    return [
        RunOptions(
            model=s.model,
            protocol=s.protocol,
            cache=cache,
            out=str(out / "runs"),
            device=device,
            lr=s.lr,
            pretrained=pretrained,
            seed=seed,
        )
        for s in needed(study, models)
        for seed in (seeds or (None,))
    ]


def run_dir(out: Path, s: RunSpec, seed: int | None = None) -> Path:
    """The folder of a study run: OUT/runs/<its default run id> (of training seed `seed`, else the protocol's)."""
    from cxrbench.protocols import get_protocol
    from cxrbench.run import default_run_id

    return out / "runs" / default_run_id(s.model, get_protocol(s.protocol), s.lr, seed)


def replicate_dirs(
    study: Study, out: Path, models: set[str] | None, seeds: tuple[int, ...]
) -> dict[RunSpec, list[Path]]:
    """Every needed run's folders, one per training seed, in the order of `seeds`."""
    return {s: [run_dir(out, s, seed) for seed in seeds] for s in needed(study, models)}


def commands(
    study: Study,
    cache: str,
    out: Path,
    device: str,
    models: set[str] | None,
    pretrained: bool | None = None,
    seeds: tuple[int, ...] | None = None,
) -> list[str]:
    """One `cxrbench run` command line per needed run (and seed), for a cluster's job array."""
    from cxrbench.orchestrate.sweep import run_command

    return [run_command(o) for o in run_options(study, cache, out, device, models, pretrained, seeds)]


def run_all(
    study: Study,
    cache: str,
    out: Path,
    device: str,
    models: set[str] | None,
    pretrained: bool | None,
    display=None,
    parallel: int | None = 1,
    seeds: tuple[int, ...] | None = None,
) -> dict[RunSpec, Path]:
    """Run (or resume) every needed run (once per seed in `seeds`), finished runs reused: one after another in
    this process, or `parallel` at a time per GPU (None: the measured default; see
    cxrbench.orchestrate.sweep.run_many), logs in OUT/logs. Returns each needed run's folder (of the first
    seed; `replicate_dirs` gives them all)."""
    from cxrbench.orchestrate.sweep import run_many

    run_many(run_options(study, cache, out, device, models, pretrained, seeds), parallel, out / "logs", display)
    return {s: run_dir(out, s, seeds[0] if seeds else None) for s in needed(study, models)}
