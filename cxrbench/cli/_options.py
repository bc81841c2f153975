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
