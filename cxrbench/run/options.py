"""What a run is asked to do (`RunOptions`, from the command line or Python) and the names derived from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cxrbench.errors import ConfigError


@dataclass
class RunOptions:
    """The settings of one `cxrbench run`; everything else comes from the protocol and the cache."""

    model: str
    protocol: str
    cache: str
    device: str = "auto"
    out: str = "runs"
    lr: float | None = None
    plugins: tuple[str, ...] = ()
    resume: bool = False
    run_id: str | None = None
    pretrained: bool | None = None  # None: what the protocol says
    weights: str | None = None
    loader: str = "auto"  # auto | resident | stream
    compile: bool = False
    cuda_graphs: bool | None = None  # capture full-batch training steps as CUDA graphs on a GPU (None: unless
    #                                  deterministic)
    deterministic: bool = False  # deterministic algorithms, no cuDNN autotuning: bitwise reproducible on a GPU
    seed: int | None = None  # the training seed (None: the protocol's); split, subset and bootstrap seeds stay its
    tensorboard: str | None = None  # a folder for TensorBoard event files: a side output, not part of the run


MAX_SEED = 2**31 - 1  # a training seed: 0 to 2**31-1 (fold seeds add up to 100 to it)


def train_seed(opts: RunOptions, protocol) -> int:
    """The run's training seed: --seed, else the protocol's; checked to lie in 0..MAX_SEED."""
    seed = protocol.seed if opts.seed is None else opts.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed!r} is not a whole number from 0 to {MAX_SEED}")
    return seed


MAX_REPLICATES = 100  # seeds one `--seeds` may ask for


def parse_seeds(text: str) -> tuple[int, ...]:
    """The training seeds `--seeds` names: a list (`0,1,2`: those seeds) or a count (`5`: seeds 0 to 4). Refuses,
    in one line, an empty list, a part that is not a whole number, a seed out of range, a seed named twice, a
    count of 0 or more than MAX_REPLICATES."""
    raw = str(text).strip()
    parts = [x.strip() for x in raw.split(",")]
    if not raw or any(not x for x in parts):
        raise ConfigError(f"--seeds {text!r}: give a count (5: seeds 0 to 4) or seeds separated by commas (0,1,2)")
    bad = [x for x in parts if not x.isascii() or not x.isdigit()]
    if bad:
        raise ConfigError(f"--seeds {text!r}: {bad[0]!r} is not a whole number of 0 or more")
    nums = [int(x) for x in parts]
    if len(nums) == 1:
        if not 1 <= nums[0] <= MAX_REPLICATES:
            raise ConfigError(
                f"--seeds {text!r}: a count of seeds is 1 to {MAX_REPLICATES} (one run with seed N: --seed N)"
            )
        return tuple(range(nums[0]))
    if len(nums) > MAX_REPLICATES:
        raise ConfigError(f"--seeds {text!r}: {len(nums)} seeds, at most {MAX_REPLICATES}")
    out = [n for n in nums if n > MAX_SEED]
    if out:
        raise ConfigError(f"--seeds {text!r}: seed {out[0]} is above {MAX_SEED}")
    twice = sorted({n for n in nums if nums.count(n) > 1})
    if twice:
        raise ConfigError(f"--seeds {text!r}: seed {twice[0]} is named twice")
    return tuple(nums)


def default_run_id(model: str, protocol, lr: float, seed: int | None = None) -> str:
    """model__protocol@vN__lrX__seedS (S: the training seed, the protocol's unless given), with anything but
    letters, digits and ._+- in the model name made `_`."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", model)
    return f"{safe}__{protocol.key}__lr{lr:g}__seed{protocol.seed if seed is None else seed}"


def run_id_of(opts: RunOptions, protocol, lr: float) -> str:
    """The run's id (--run-id, else the default), checked by the same name rule `submit` applies: one path
    component, so that a run folder can never land outside --out (`../x` or an absolute path is refused)."""
    from cxrbench.errors import ConfigError
    from cxrbench.names import safe_name

    seed = train_seed(opts, protocol)
    return safe_name(opts.run_id or default_run_id(opts.model, protocol, lr, seed), "--run-id", "run", ConfigError)


def run_dir(opts: RunOptions) -> Path:
    """The folder a run writes: OUT/<--run-id, else the default run id of its model, protocol and lr>."""
    from cxrbench.protocols import get_protocol

    p = get_protocol(opts.protocol)
    return Path(opts.out) / run_id_of(opts, p, p.lr(opts.lr))


def resolve_device(device: str) -> str:
    """`auto` -> cuda where there is a GPU, else cpu; an unavailable or unknown device is a ConfigError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available here")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown --device {device!r} (auto, cpu, cuda or cuda:N)")
    return device
