"""`cxrbench reproduce paper`: the reference paper's experiments as one command and one report."""

from __future__ import annotations

from pathlib import Path

import click

from cxrbench.cli._options import cache_option, check_names, parallel_option, require, seeds_option


@click.group()
def reproduce() -> None:
    """Re-test published claims on your own hardware.

    \b
    Example:
      cxrbench reproduce paper --cache cache/ --out reproduce/
    """


@reproduce.command()
@cache_option()
@click.option(
    "--out",
    default="reproduce",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for the runs and the report.",
)
@click.option(
    "--models",
    default=None,
    help="Comma-separated subset of the study's models (claims that need others say `not run`).",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--print", "print_only", is_flag=True, help="Print the runs as `cxrbench run` commands and stop.")
@click.option("--mini", is_flag=True, help="The miniature study: tiny models, 64-pixel protocols (phantom data).")
@click.option("--no-pretrained", is_flag=True, help="Train without ImageNet weights (recorded in every run).")
@seeds_option
@parallel_option
def paper(
    cache: str | None,
    out: str,
    models: str | None,
    device: str,
    print_only: bool,
    mini: bool,
    no_pretrained: bool,
    seeds: tuple[int, ...] | None,
    parallel: int | None,
) -> None:
    """Run every run the paper's five comparisons need (resuming any that stopped; K at a time per GPU with
    --parallel), then write OUT/report.md, OUT/report.html and figures with a verdict per claim. Comparisons
    bootstrap with the protocol's resamples and seed, as the leaderboard does, so a comparison has one p-value
    everywhere. With --seeds, every arm is trained once per seed and every verdict uses the seed-aware test
    (two-level-t@v1, docs/seeds.md); the report gives each arm's seed sd and where the single-seed test
    (each arm's first seed) would have judged otherwise.

    \b
    Example:
      cxrbench reproduce paper --cache cache/ --out reproduce/
      cxrbench reproduce paper --cache cache/ --parallel 4         # 4 runs at once per GPU, logs in OUT/logs
      cxrbench reproduce paper --cache cache/ --print > jobs.txt   # one command per run, for a cluster
      cxrbench reproduce paper --cache phantom-cache/ --mini      # the whole study in miniature, on a CPU
      cxrbench reproduce paper --cache phantom-cache/ --mini --seeds 3   # 3 seeds per arm, seed-aware verdicts
    """
    from cxrbench.console import get_display
    from cxrbench.studies.paper import MINI, PAPER, commands, replicate_dirs, run_all, write_report

    study = MINI if mini else PAPER
    chosen = None if models is None else {m.strip() for m in models.split(",") if m.strip()}
    _check_study(study, chosen)  # a typo is named before a missing --cache
    cache = require(cache, "--cache")
    outp = Path(out)
    if print_only:
        for line in commands(study, cache, outp, device, chosen, False if no_pretrained else None, seeds):
            click.echo(line)
        return
    d = get_display()
    outp.mkdir(parents=True, exist_ok=True)
    runs = run_all(study, cache, outp, device, chosen, False if no_pretrained else None, d, parallel, seeds)
    reps = replicate_dirs(study, outp, chosen, seeds) if seeds else None
    md, page = write_report(study, cache, outp, runs, reps)
    d.info(f"wrote {md} and {page}")


def _check_study(study, chosen: set[str] | None) -> None:
    """Every `--models` name is one of the study's, and every model and protocol of the runs it needs resolves
    (ConfigError, ModelError: one line)."""
    from cxrbench.errors import ConfigError
    from cxrbench.studies.paper.design import needed

    specs = needed(study)
    known = list(dict.fromkeys(s.model for s in specs))
    for m in sorted(chosen or ()):
        if m not in known:
            import difflib

            close = difflib.get_close_matches(m, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"--models: {m!r} is not one of this study's models ({hint}the study's: {', '.join(known)})"
            )
    use = [s for s in specs if chosen is None or s.model in chosen]
    check_names(list(dict.fromkeys(s.model for s in use)), tuple(dict.fromkeys(s.protocol for s in use)))
