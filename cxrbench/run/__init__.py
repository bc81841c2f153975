"""`cxrbench run` as a pipeline of stages, one module each, in the order the data flows:

    bind     options, protocol, cache binding, labels and features; the model built once (weights, CAM layer)
    folder   the run folder: may this run use it (resume, settings), run.json
    load     the run's images, once: resident on the device, streamed, or sharded under DDP (`load.Images`)
    fit      every fold (validation scores and predictions) and the final run; checkpoints (`fit.Trained`)
    score    test predictions, AUROCs with bootstrap CIs, predictions.csv.gz (`score.Scored`)
    explain  Grad-CAM localisation on the test images with boxes
    record   the sealed record.json, with every stage's seconds

`pipeline` runs them (`run`, `run_or_reuse`); `context.RunContext` is what bind hands to every later stage.
"""

from cxrbench.run.options import RunOptions, default_run_id
from cxrbench.run.pipeline import run, run_or_reuse

__all__ = ["RunOptions", "default_run_id", "run", "run_or_reuse"]
