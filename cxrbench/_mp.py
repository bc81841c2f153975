"""The multiprocessing start method for worker pools."""

from __future__ import annotations

import multiprocessing as mp
import sys


def context():
    """fork where it is safe (fast start, kernels inherited); forkserver once torch's threads exist, since
    forking a multi-threaded process can deadlock the child."""
    return mp.get_context("forkserver" if "torch" in sys.modules else "fork")
