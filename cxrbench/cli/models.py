"""`cxrbench models`: every registered model with its size, CAM layer, inputs and origin."""

from __future__ import annotations

import json

import click

from cxrbench.cli._options import plugin_option


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--pattern", default=None, help="Only names matching this fnmatch pattern (e.g. 'densenet*').")
@plugin_option
def models(as_json: bool, pattern: str | None, plugins: tuple[str, ...]) -> None:
    """List registered models: parameters at 15 classes, CAM layer, non-image input, source. Any timm
    architecture is a model too (--model timm/<name>); the listing ends with whether timm is installed.

    \b
    Example:
      cxrbench models --pattern 'densenet*'
      cxrbench models --plugin examples/my_model.py --json
    """
    from cxrbench.console import get_display
    from cxrbench.models import count_parameters, create_model, get_spec, list_models
    from cxrbench.models.plugins import load_plugins
    from cxrbench.models.timm_models import timm_note

    load_plugins(plugins)
    rows = []
    for name in list_models(pattern):
        spec = get_spec(name)
        rows.append(
            {
                "name": name,
                "parameters_15c": count_parameters(create_model(name, num_classes=15, pretrained=False)),
                "cam_layer": spec.cam_layer,
                "input_size": spec.input_size,
                "nonimage": spec.nonimage,
                "attention": spec.attention,
                "source": spec.source_text,
                "description": spec.description,
            }
        )
    d = get_display()
    if as_json:  # stdout stays the JSON list; the timm line goes to stderr
        click.echo(json.dumps(rows, indent=2))
        d.info(timm_note())
        return
    d.table(
        ["model", "params", "input", "CAM layer", "extras", "source"],
        [
            [
                r["name"],
                f"{r['parameters_15c']:,}",
                r["input_size"],
                r["cam_layer"],
                ", ".join(k for k in ("attention", "nonimage") if r[k]).replace("nonimage", "non-image"),
                r["source"],
            ]
            for r in rows
        ],
        title="Registered models (params: with 15 classes)",
        justify=["left", "right", "right", "left", "left", "left"],
        no_wrap=["model", "params"],
    )
    d.prose(timm_note())
