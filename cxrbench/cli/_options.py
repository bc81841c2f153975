"""Options shared by several commands."""

from __future__ import annotations

import click


def plugin_option(f):
    """`--plugin FILE` (repeatable): a Python file that registers models; loaded before `--model` is used."""
    return click.option(
        "--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False, path_type=str),
        help="Python file that registers models with @register_model (repeatable).",
    )(f)
