"""`cxrbench submit` and `cxrbench leaderboard`: file validated records, show them ranked."""

from __future__ import annotations

from pathlib import Path

import click

_BOARD = click.option(
    "--leaderboard",
    "board",
    default="leaderboard",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Leaderboard folder (a private one too).",
)


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=str))
@_BOARD
@click.option("--allow-dirty", is_flag=True, help="Accept a run from a modified git tree (the board marks it).")
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="The cache or ChestX-ray14 folder whose tables the predictions are checked against (default: "
    "the cache recorded in RUN/run.json).",
)
def submit(run: str, board: str, allow_dirty: bool, data: str | None) -> None:
    """Check RUN (schema, hashes, protocol, every figure re-derived from its predictions, the predictions against
    the protocol's test split and labels of the run's data) and file it.

    \b
    Example:
      cxrbench submit runs/densenet121__paper-15c@v1__lr0.01__seed0
      cxrbench submit runs/mine --leaderboard my-board/ --data cache/ --allow-dirty
    """
    from cxrbench.console import get_display
    from cxrbench.results.leaderboard import submit as do_submit

    path = do_submit(run, board, allow_dirty=allow_dirty, data=data)
    get_display().info(f"filed {path}")


@click.command()
@_BOARD
@click.option("--protocol", default=None, help="Only this protocol (id, or id@vN for one version).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "md", "html", "csv", "json"]), default="table", show_default=True
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Write to this file instead of the terminal (html: plots go beside it).",
)
@click.option(
    "--show",
    default=None,
    metavar="COLUMNS",
    help="Table: add these columns to the compact view (comma-separated: rank, model, lr, seed, pretrained, "
    "weighted, plain, vs-best, validation, params, speed, pointing, bitwise, notes, entry; ece, worst-group, "
    "underdiagnosis add the evaluation columns, as --evaluation does).",
)
@click.option("--wide", is_flag=True, help="Table: every column, as wide as they need.")
@click.option(
    "--seeds",
    "per_seed",
    is_flag=True,
    help="Table: each seed's figures of every entry below its group (replicates pool into one entry).",
)
@click.option("--write", is_flag=True, help="Regenerate <leaderboard>/LEADERBOARD.md and index.html with plots.")
@click.option(
    "--adjudicated",
    "adjudicated",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Add columns scored against this adjudicated-labels CSV (Majkowska et al. 2019, plain or gzipped, "
    "as `cxrbench rescore` reads it): per entry, how many of its 'test' images the entry covers and "
    "per finding the AUROC with its 95% CI (patient bootstrap, the protocol's resamples and seed), "
    "ranked only among entries that cover the same images.",
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="With --adjudicated: JSON mapping of the four findings to ChestX-ray14 classes (default: "
    "cxr14-adjudicated@v1).",
)
@click.option(
    "--evaluation",
    is_flag=True,
    help="Add the evaluation columns (pooled ECE, worst-group AUROC, underdiagnosis gap), re-derived from every "
    "entry's checked predictions as `cxrbench evaluate` computes them; subgroups need --data.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="With --evaluation: a cache or dataset folder whose metadata gives sex, age and view (entries whose "
    "metadata differs get no subgroup figures).",
)
def leaderboard(
    board: str,
    protocol: str | None,
    fmt: str,
    out: str | None,
    show: str | None,
    wide: bool,
    per_seed: bool,
    write: bool,
    adjudicated: str | None,
    mapping: str | None,
    evaluation: bool,
    data: str | None,
) -> None:
    """Rank the filed records within each protocol version and data fingerprint. Paired comparisons use the
    protocol's bootstrap resamples and seed; a filed record that fails its checks is named and left out.

    The table shows what an entry is ranked by, one line per entry (--show adds columns, --wide shows all);
    md, html, csv and json have every column.

    With --adjudicated, each entry also shows its AUROCs against radiologist-adjudicated labels, computed from
    its filed predictions as `cxrbench rescore` computes them, with bootstrap CIs.

    \b
    Example:
      cxrbench leaderboard --leaderboard cxrbench-quickstart/leaderboard
      cxrbench leaderboard --show plain,params,speed
      cxrbench leaderboard --seeds
      cxrbench leaderboard --protocol paper-15c --format md
      cxrbench leaderboard --format csv --out board.csv
      cxrbench leaderboard --write
      cxrbench leaderboard --adjudicated four_findings_expert_labels_test_labels.csv --format json
      cxrbench leaderboard --show ece,worst-group,underdiagnosis --data cache/
    """
    from cxrbench.console import get_display
    from cxrbench.errors import ConfigError, InputError
    from cxrbench.results import render
    from cxrbench.results.leaderboard import load, rank

    d = get_display()
    root = Path(board)
    if not root.is_dir():
        raise InputError(
            root,
            f"no leaderboard here; point at another with --leaderboard PATH (the quickstart's is "
            f"cxrbench-quickstart/leaderboard), or `cxrbench submit RUN --leaderboard {board}` makes one",
        )
    if out is not None and Path(out).name in ("", ".", ".."):
        raise ConfigError(f"--out {out!r}: give a file name (for example leaderboard.md)")
    keys = [k.strip() for k in show.split(",") if k.strip()] if show else None
    from cxrbench.results.evaluation_board import SHOW_KEYS

    if keys is not None and set(keys) & set(SHOW_KEYS):  # the evaluation's columns come as their own table
        evaluation = True
        keys = [k for k in keys if k not in SHOW_KEYS]
    if data is not None and not evaluation:
        raise ConfigError("--data gives the evaluation's subgroups: pass --evaluation (or --show ece,...) with it")
    if keys is not None or wide or per_seed:
        if fmt != "table" or out is not None or write:
            raise ConfigError(
                "--show, --wide and --seeds choose what the table shows; md, html, csv and json have it all"
            )
        render.view_columns(keys, wide)  # an unknown column is refused before the board is read
    if mapping is not None and adjudicated is None:
        raise ConfigError("--mapping applies to the adjudicated columns: pass --adjudicated FILE with it")
    labels = m = None
    if adjudicated is not None:  # read and checked before anything is scored or written
        from cxrbench.results.adjudicated import DEFAULT_MAPPING, read_adjudicated, read_mapping

        labels = read_adjudicated(adjudicated)
        m = DEFAULT_MAPPING if mapping is None else read_mapping(mapping)
    groups = rank(load(root, d), protocol)
    if not groups:
        where = root.resolve()
        d.info(
            f"the leaderboard is empty: {where} holds no entries"
            + (f" for protocol {protocol}" if protocol else "")
            + "; point at another with --leaderboard PATH (the quickstart's is cxrbench-quickstart/leaderboard)"
        )
    elif fmt == "table" and out is None and not write:
        n = sum(len(g.entries) for g in groups)
        d.info(f"leaderboard {root.resolve()}: {n} entr{'y' if n == 1 else 'ies'} (--leaderboard PATH reads another)")
    adj: render.ExtraColumns | None = None
    if labels is not None and m is not None:  # m is read with the labels
        from cxrbench.results.adjudicated_board import score_board

        adj = score_board(groups, labels, m, d)
        d.info(
            f"adjudicated labels {labels.path.name}: mapping {m.key} (hash {m.content_hash}): "
            + "; ".join(m.describe())
        )
    if evaluation:
        from cxrbench.results.evaluation_board import Both
        from cxrbench.results.evaluation_board import score_board as evaluate_board

        ev = evaluate_board(groups, data, d)
        adj = ev if adj is None else Both(adj, ev)
    if write:  # the board may be shared: every name checked (no links below it) before anything is written
        from cxrbench.files import atomic_write_text, make_dirs

        make_dirs(root / "plots", root=root)
        md = render.to_markdown(groups, render.WRITTEN, adj)
        figs = render.plots(groups, root / "plots")
        atomic_write_text(root / "LEADERBOARD.md", md, root=root)
        atomic_write_text(root / "index.html", render.to_html(groups, figs, root / "index.html", adj), root=root)
        d.info(f"wrote {root / 'LEADERBOARD.md'} and {root / 'index.html'}")
        return
    if fmt == "table" and out is None:
        render.to_table(groups, d, adj, keys, wide, per_seed)
        return
    if fmt == "html":
        page = Path(out or "leaderboard.html")
        figs = render.plots(groups, page.parent / (page.stem + "-plots"))
        text = render.to_html(groups, figs, page, adj)
    elif fmt in ("md", "table"):
        text = render.to_markdown(groups, render.PRINTED, adj)
    else:
        text = {"csv": render.to_csv, "json": render.to_json}[fmt](groups, adj)
    if out is None:
        click.echo(text, nl=False)
    else:
        _atomic(Path(out), text)
        d.info(f"wrote {out}")


def _atomic(path: Path, text: str) -> None:
    from cxrbench.errors import ConfigError
    from cxrbench.files import atomic_write_text, make_dirs

    if not path.name or path.name in (".", ".."):
        raise ConfigError(f"--out {str(path)!r}: give a file name (for example leaderboard.md)")
    make_dirs(path.parent)
    atomic_write_text(path, text)
