"""Options shared by several commands."""

from __future__ import annotations

import click


def plugin_option(f):
    """`--plugin FILE` (repeatable): a Python file that registers models; loaded before `--model` is used."""
    return click.option(
        "--plugin",
        "plugins",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=str),
        help="Python file that registers models with @register_model (repeatable).",
    )(f)


def parallel_option(f):
    """`--parallel K`: runs at once per GPU (default: measured from free memory; 1 on a CPU)."""
    return click.option(
        "--parallel",
        type=click.IntRange(min=1),
        default=None,
        help="Runs at once on each visible GPU, as `cxrbench run` subprocesses logging to OUT/logs (default: as "
        "many as fit in free GPU memory, at most 4, the most measured to pay; 1 on a CPU, in this process).",
    )(f)


def _seeds(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    from cxrbench.errors import ConfigError
    from cxrbench.run.options import parse_seeds

    if value is None:
        return None
    try:
        return parse_seeds(value)
    except ConfigError as e:
        raise click.BadParameter(str(e).removeprefix(f"--seeds {value!r}: "), param_hint="--seeds") from None


def seeds_option(f):
    """`--seeds 0,1,2` (those training seeds) or `--seeds 5` (seeds 0 to 4): one run per seed, replicates."""
    return click.option(
        "--seeds",
        default=None,
        callback=_seeds,
        metavar="LIST|N",
        help="Replicates: one run per training seed, `0,1,2` (those seeds) or `5` (seeds 0 to 4); split, subset "
        "and bootstrap seeds stay the protocol's. The board pools them as one entry.",
    )(f)


def cache_option(help: str = "The cache."):
    """`--cache DIR`, required, but checked in the command after its model and protocol names (`require`), so a
    typo in `--model` or `--protocol` is reported before a missing `--cache`."""
    return click.option(
        "--cache", default=None, type=click.Path(file_okay=False, path_type=str), help=f"{help} [required]"
    )


def require(value: str | None, option: str) -> str:
    """`value`, or click's usage error for a missing required option (exit 2), as click words it."""
    if value is None:
        raise click.UsageError(f"Missing option '{option}'.")
    return value


def check_names(models: list[str] | tuple[str, ...] = (), protocols: tuple[str, ...] = (), plugins=()) -> None:
    """Every model name (after loading `plugins`) and protocol id resolves, and what each model needs imports:
    one line naming the first that does not (ModelError, ConfigError), the closest names suggested."""
    from cxrbench.protocols import get_protocol

    for p in protocols:
        get_protocol(p)
    if models:
        from cxrbench.models import get_spec
        from cxrbench.models.plugins import load_plugins

        load_plugins(tuple(plugins))
        for m in models:
            get_spec(m)


def tensorboard_option(f):
    """`--tensorboard DIR`: the training curves (history.csv's figures) as TensorBoard event files in
    DIR/<run id>/<training>; a side output, not part of the run (optional extra `cxrbench[tensorboard]`)."""
    return click.option(
        "--tensorboard",
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Also write the training curves (history.csv's figures) as TensorBoard event files to "
        "DIR/<run id>/<training> (needs the extra: pip install 'cxrbench[tensorboard]'; not part of the record).",
    )(f)
