"""`cxrbench doctor`: check the installation and say what to fix."""

from __future__ import annotations

import sys

import click


@click.command()
def doctor() -> None:
    """Print the versions of python, torch, torchvision, numba, zarr and the image decoders, the devices, and run
    a tiny self-check of each (a torchvision op, a numba kernel, a zarr round trip, a forward pass of the
    `tiny` model). Names what is broken and the command that fixes it; exits 1 when something is.

    \b
    Example:
      cxrbench doctor
    """
    from cxrbench.console import get_display
    from cxrbench.doctor import checks, devices

    d = get_display()
    results = checks()
    d.table(
        ["component", "version", "check", "result"],
        [[c.name, c.version, "ok" if c.ok else "BROKEN", c.detail] for c in results],
        title="cxrbench doctor",
        no_wrap=["component", "check"],
    )
    for line in devices():
        d.text(f"device {line}")
    broken = [c for c in results if not c.ok]
    for c in broken:
        d.error(f"{c.name} is broken: {c.detail}; fix: {c.fix}")
    if broken:
        sys.exit(1)
    d.info("every component works")
