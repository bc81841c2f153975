"""A second `cxrbench quickstart` reuses every finished step, its pages included: the board's Markdown, HTML and
plots and the gallery are not written again unless what they are made from changed (issue 28)."""

from pathlib import Path

import pytest


def _pages(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every page the quickstart writes."""
    files = [out / "leaderboard" / "LEADERBOARD.md", out / "leaderboard" / "index.html", out / "gallery" / "index.html"]
    files += sorted((out / "leaderboard" / "plots").glob("*.png"))
    return {str(f.relative_to(out)): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}


@pytest.mark.slow
def test_a_second_quickstart_leaves_its_pages_alone_until_an_input_changes(tmp_path, monkeypatch):
    from cxrbench.studies import quickstart as qs

    out = tmp_path / "q"
    qs.quickstart(out, device="cpu", n=48)
    first = _pages(out)
    assert len(first) == 5, first
    qs.quickstart(out, device="cpu", n=48)
    assert _pages(out) == first  # nothing they are made from changed: not one page rewritten

    # the best run's folder changed: the gallery is made again, the board pages are not
    for run in (out / "runs").iterdir():
        (run / "notes.txt").write_text("a change in the run folder\n")
    qs.quickstart(out, device="cpu", n=48)
    now = _pages(out)
    assert now["gallery/index.html"] != first["gallery/index.html"]
    assert {k: v for k, v in now.items() if not k.startswith("gallery")} == {
        k: v for k, v in first.items() if not k.startswith("gallery")
    }

    # the code that draws them changed: both are made again
    monkeypatch.setattr(qs, "_code_fingerprint", lambda: "another renderer")
    qs.quickstart(out, device="cpu", n=48)
    again = _pages(out)
    assert all(again[k] != now[k] for k in ("leaderboard/index.html", "leaderboard/LEADERBOARD.md")), again
    assert again["gallery/index.html"] != now["gallery/index.html"]
