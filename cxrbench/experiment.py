"""The run's former home, kept so that `from cxrbench.experiment import run, RunOptions, ...` keeps working.

The run itself is `cxrbench.run`: a pipeline of stages (bind -> load -> fit folds -> score -> explain ->
record), one module each.
"""

from cxrbench.run import RunOptions, default_run_id, run, run_or_reuse

__all__ = ["RunOptions", "default_run_id", "run", "run_or_reuse"]
