"""The process-wide numeric settings of a run, set for its duration and restored afterwards.

Default on a GPU: cuDNN autotuning (`cudnn.benchmark`, static shapes) and CUDA-graph training steps, which are
fast but not bitwise reproducible (autotuning may pick other kernels, some kernels accumulate atomically).
`--deterministic`: `torch.use_deterministic_algorithms(True)`, `cudnn.deterministic`, no autotuning, no CUDA
graphs unless asked for, and `CUBLAS_WORKSPACE_CONFIG` set before CUDA starts (cuBLAS reads it when it
creates its handles). On the CPU every run is bitwise reproducible on the same machine and library versions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from cxrbench.errors import ConfigError

CUBLAS_WORKSPACE = ":4096:8"


def bitwise_reproducible(device: str, deterministic: bool, cuda_graphs: bool) -> bool:
    """Whether the same run repeated gives the same bytes: always on the CPU; on a GPU only in deterministic mode
    without CUDA graphs (graph replay under deterministic algorithms is not yet measured; tools/gpu_check.sh)."""
    return not device.startswith("cuda") or (deterministic and not cuda_graphs)


@contextmanager
def numeric_mode(device: str, deterministic: bool) -> Iterator[None]:
    """Apply the run's settings (see the module docstring) and restore the previous ones on exit."""
    import torch

    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    if deterministic:
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            if torch.cuda.is_initialized():
                raise ConfigError(
                    "--deterministic needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts, and CUDA "
                    f"has started in this process: set CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} in "
                    "the environment"
                )
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        torch.use_deterministic_algorithms(True)
        cudnn.deterministic, cudnn.benchmark = True, False
    elif device.startswith("cuda"):
        cudnn.benchmark = True  # static shapes: autotune each convolution once
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def nondeterministic_op(error: BaseException) -> str | None:
    """The message of a RuntimeError that deterministic mode raised for an operation it cannot make
    deterministic, else None."""
    text = str(error)
    if isinstance(error, RuntimeError) and "does not have a deterministic implementation" in text:
        return text.split("\n")[0].split(", but you set")[0]
    return None
