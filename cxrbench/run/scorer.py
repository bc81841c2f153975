"""The model that scored a finished run, rebuilt from its run folder: one function for every reader (the
gallery, the paper study's figures) so that the checkpoint chosen, its checks and the device placement agree."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def scoring_checkpoint(run_dir: Path, final_run: bool) -> Path:
    """The checkpoint whose model scored the test split: `final.pt` under a final-run protocol, else fold 0's."""
    return Path(run_dir) / ("final.pt" if final_run else "fold0.pt")


def load_scored_model(run_dir: Path, model: str, num_classes: int, final_run: bool, device: str = "cpu") -> nn.Module:
    """The registered `model` with the weights of the run's scoring checkpoint (verified: sha256 and checkpoint
    version), on `device`, in eval mode; a TrainingError says why a checkpoint cannot be used."""
    from cxrbench.engine.checkpoint import load_checkpoint
    from cxrbench.models import create_model

    net = create_model(model, num_classes=num_classes, pretrained=False)
    net.load_state_dict(load_checkpoint(scoring_checkpoint(run_dir, final_run))["model"])
    return net.to(device).eval()
