"""Single- and multi-process runs: under torchrun (RANK/WORLD_SIZE set) a run trains with
DistributedDataParallel; `cxrbench run --nproc K` re-executes itself under torchrun."""

from __future__ import annotations

import os
import sys


def run_maybe_distributed(opts, display=None):
    """Run in this process, or as one rank of a torchrun job when its environment says so."""
    from cxrbench.experiment import Runner

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Runner(opts, display).execute()
    from cxrbench.errors import ConfigError

    raise ConfigError("distributed runs are not available yet")


def exec_torchrun(nproc: int) -> None:
    """Replace this process by `torchrun --nproc_per_node=K -m cxrbench <same arguments minus --nproc>`."""
    args = []
    skip = False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "cxrbench", *args]
    os.execv(sys.executable, cmd)
