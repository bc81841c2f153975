"""`cxrbench reproduce paper`: the reference paper's five claims re-tested with one command and one report.

The study runs (resuming any that stopped) every run the comparisons need under the built-in protocols
(`design`), evaluates each claim from the runs' predictions (`claims`), regenerates Tables 1 and 2 and the
attention-model measurement (`tables`), and writes report.md, report.html and PNG figures (`report`).
`--mini` runs a miniature of the same study (tiny models, 64-pixel protocols) on a phantom cache.
"""

from cxrbench.studies.paper.claims import (
    CLAIMED_GAIN,
    INCONCLUSIVE,
    Claim,
    evaluate,
    gain_in_range_verdict,
    greater_verdict,
    negligible_verdict,
)
from cxrbench.studies.paper.design import (
    MINI,
    NEGLIGIBLE,
    PAPER,
    PAPER_SAYS,
    PAPER_TABLE2,
    RunSpec,
    Study,
    commands,
    needed,
    replicate_dirs,
    run_all,
    run_dir,
    run_options,
)
from cxrbench.studies.paper.report import write_report

__all__ = [
    "CLAIMED_GAIN",
    "INCONCLUSIVE",
    "MINI",
    "NEGLIGIBLE",
    "PAPER",
    "PAPER_SAYS",
    "PAPER_TABLE2",
    "Claim",
    "RunSpec",
    "Study",
    "commands",
    "evaluate",
    "gain_in_range_verdict",
    "greater_verdict",
    "needed",
    "negligible_verdict",
    "replicate_dirs",
    "run_all",
    "run_dir",
    "run_options",
    "write_report",
]
