"""`cxrbench export`: a finished run's model as one self-contained file, checked against the run's model."""

from __future__ import annotations

import click

from cxrbench.cli._options import plugin_option


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), default="torchscript", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="The model file (default: <run id>.torchscript.pt or <run id>.onnx here); its description goes "
    "beside it as .json (an existing .json there is replaced only if it is an export description).",
)
@click.option(
    "--cache",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="The run's cache, for the check on its test images (default: the cache its run.json names).",
)
@click.option(
    "--check-images",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Test images the export is checked on (spread over the test split).",
)
@plugin_option
def export(run: str, fmt: str, out: str | None, cache: str | None, check_images: int, plugins: tuple[str, ...]) -> None:
    """Export RUN's model with its preprocessing inside: a uint8 grey batch (B, S, S) at the cache's size in,
    probabilities per class out. TorchScript loads with torch.jit.load alone (no cxrbench needed); ONNX
    (`pip install 'cxrbench[onnx]'`) runs in onnxruntime, with a dynamic batch. The file is checked
    against the PyTorch model on the run's test images and the largest difference is printed.

    \b
    Example:
      cxrbench export runs/densenet121__paper-15c@v2__lr0.01__seed0 --out densenet121.pt
      python -c "import torch; m = torch.jit.load('densenet121.pt'); print(m(torch.zeros(1, 256, 256).byte()))"
    """
    from cxrbench.api import load_run
    from cxrbench.console import get_display
    from cxrbench.export import export_run
    from cxrbench.names import safe_name

    d = get_display()
    r = load_run(run, plugins)
    run_id = safe_name(r.record.run_id, "run_id", r.path / "record.json")  # a file name here, never a path
    default = f"{run_id}.{'onnx' if fmt == 'onnx' else 'torchscript.pt'}"
    e = export_run(r, out or default, fmt, cache, check_images)
    d.info(
        f"wrote {e.model} and {e.info}; checked on {e.checked_images} test image(s) against the PyTorch model: "
        f"largest difference in a probability {e.max_abs_diff:.2e}"
    )
