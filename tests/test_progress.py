"""Progress that fits and tells the truth (issue 28): a bar never wraps at 80 columns (fields are dropped first),
plain lines when output is not a terminal, one rate shared by a bar and its summary line, no bar before a
refusal."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from cxrbench.console import Display, _BarState, progress_line

# a bar with everything in it: a long description, a big total, a status; advanced in steps, then finished
SCRIPT = textwrap.dedent(
    """
    import cxrbench.console as c
    c.PLAIN_EVERY = 0.0  # a plain line at every change: the test counts them, whatever the machine's speed
    d = c.Display()
    with d.progress("final epoch 12/20", total=1_121_200, unit="images") as bar:
        for i in range(1, 5):
            bar.advance(200_000)
            # the rate by the caller's clock (400 images/s), as training gives it: the line's fields then do not
            # depend on how fast this machine runs the script
            bar.update(status="loss 0.1234", work=(200_000 * i, 500.0 * i))
    """
)


def _strip(text: str) -> list[str]:
    """The lines a terminal shows: escape sequences removed, split at carriage returns and newlines."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_the_line_drops_fields_before_it_would_wrap():
    from rich.cells import cell_len

    s = _BarState("fold0 epoch 12/20", 1_121_200, "images")
    s.completed, s.status = 200_000, "loss 0.1234"
    s.t_stop = s.t0 + 500.0  # a fixed clock: 400 images/s, whatever the machine's speed
    for width in range(20, 201):
        line = progress_line(s, width).plain
        assert len(line) <= width, (width, line)
        assert "200,000/1,121,200" in line, (width, line)  # the count is the last thing to go
    s.description = "胸部X線 " * 6  # wide characters take two cells each
    for width in range(20, 120):
        assert cell_len(progress_line(s, width).plain) <= width, width
    s.description = "fold0 epoch 12/20"
    wide = progress_line(s, 200).plain
    assert all(x in wide for x in ("fold0 epoch 12/20", "━", "18%", "images/s", "left", "loss 0.1234"))
    narrow = progress_line(s, 60).plain
    assert "images/s" in narrow and "18%" not in narrow  # the percentage goes before the rate


def test_bar_in_a_pseudo_terminal_of_80_columns_never_wraps(tmp_path):
    from tests.terminal import run_in_pty

    script = tmp_path / "bar.py"
    script.write_text(SCRIPT)
    rc, out = run_in_pty([sys.executable, str(script)], columns=80, rows=24, timeout=60)
    assert rc == 0
    lines = _strip(out.decode())
    assert lines and all(len(line) <= 80 for line in lines), lines
    assert "━" in lines[0], lines  # a bar, redrawn in place
    last = lines[-1]  # at 80 columns the bar and the percentage made room for the status
    assert "800,000/1,121,200" in last and "images/s" in last and "loss 0.1234" in last, lines


def test_piped_output_gets_plain_lines_that_fit_columns(tmp_path):
    script = tmp_path / "bar.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"}
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "\r" not in r.stderr and "\x1b" not in r.stderr and "━" not in r.stderr  # no redraws, no bar
    assert all(len(line) <= 80 for line in lines), lines
    # one line per change (PLAIN_EVERY is 0 here; 10 s by default) and one at the end
    assert len(lines) == 9 and lines[-1].startswith("final epoch 12/20 800,000/1,121,200 "), lines


def test_quiet_shows_no_progress(capsys):
    d = Display(quiet=True)
    with d.progress("x", total=3) as bar:
        bar.advance(3)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_cache_bar_and_summary_say_the_same_rate(synth_dir, tmp_path):
    """The bar's last rate and the summary line's are one number: images decoded over the decoding's seconds."""
    r = subprocess.run(
        [sys.executable, "-m", "cxrbench", "cache", "build", "--data-dir", str(synth_dir)]
        + ["--out", str(tmp_path / "cache"), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    bar = [line for line in r.stderr.splitlines() if line.startswith("cache build ")]
    summary = next(line for line in r.stderr.splitlines() if "decoded now at " in line)
    assert bar and bar[-1].startswith("cache build 48/48 "), r.stderr  # (a line every 10 s before the last)
    shown = re.search(r" ([\d,]+) images/s", bar[-1]).group(1)
    said = re.search(r"decoded now at ([\d,]+) images/s", summary).group(1)
    assert shown == said, r.stderr
    import json

    build = json.loads((tmp_path / "cache" / "manifest.json").read_text())["build"]
    assert build["images_per_s"] == pytest.approx(build["decoded"] / build["decode_seconds"], rel=0.01, abs=0.1)


def test_resumed_cache_bar_counts_only_this_sessions_images_in_its_rate():
    from cxrbench.console import ProgressHandle

    s = _BarState("cache build", 100, "images")
    h = ProgressHandle(s, None)
    h.update(completed=90)  # what an earlier session decoded
    h.advance(10)
    s.t_stop = s.t0 + 2.0  # stopped two seconds into this session
    assert s.rate() == 5.0  # 10 images in 2 s, not 100


def test_gallery_prints_no_bar_before_refusing_a_damaged_record(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "record.json").write_text('{"schema_version": ')  # damaged
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["gallery", str(run_dir), "--n", "24", "--out", str(tmp_path / "g")])
    assert r.exit_code != 0
    assert "record.json" in str(r.exception), r.exception
    assert not any(line.startswith("gallery") for line in r.stderr.splitlines()), r.stderr


def test_a_refusal_before_any_work_leaves_no_progress_line(capsys, monkeypatch):
    from cxrbench.errors import InputError

    monkeypatch.setenv("COLUMNS", "80")
    d = Display()
    with pytest.raises(InputError), d.progress("evaluate", total=None, unit="runs"):
        raise InputError(None, "a damaged record")
    assert capsys.readouterr().err == ""
    with pytest.raises(InputError), d.progress("cache build", total=10) as bar:  # work done: where it stopped
        bar.advance(4)
        raise InputError(None, "a bad image")
    assert capsys.readouterr().err.startswith("cache build 4/10 ")
    with d.progress("evaluate", total=None, unit="runs"):  # a spinner that counts nothing shows its time only
        pass
    err = capsys.readouterr().err
    assert re.fullmatch(r"evaluate \d:\d\d:\d\d\n", err), err
