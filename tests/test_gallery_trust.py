"""Galleries of runs from other people: a plugin is imported only when the user names it and its sha256 is the
record's (issue 13 item 1), nothing is written through a link in a run folder, and the default panels show the
true findings first, no "No Finding" heatmap unless asked, with a colour scale (issue 12 item 12)."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cxrbench.cli import cli
from cxrbench.results.record import seal
from cxrbench.run import RunOptions, run

from .conftest import slow_fixture


@pytest.fixture(scope="module")
@slow_fixture
def runs(synth_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery_runs")
    return {
        "tiny": run(
            RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")
        ).parent
    }


def _copy(run_dir, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("gallery"))
    return dst


def _reseal(run_dir, tmp_path, edit):
    copy = _copy(run_dir, tmp_path, f"{edit.__name__}-{run_dir.name}")
    rec = json.loads((copy / "record.json").read_text())
    edit(rec)
    (copy / "record.json").write_text(json.dumps(seal(rec)))
    return copy


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ------------------------------------------------------------------------------------ no code from records


def test_gallery_never_imports_a_plugin_the_record_names(runs, tmp_path):
    marker = tmp_path / "marker"
    plugin = tmp_path / "theirs" / "mynet.py"
    plugin.parent.mkdir()
    plugin.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    from cxrbench.hashing import file_sha256

    def from_plugin(rec):
        rec["model"]["source"] = {"kind": "file", "path": str(plugin), "sha256": file_sha256(plugin)}

    crafted = _reseal(runs["tiny"], tmp_path, from_plugin)
    r = _cli("gallery", crafted, "--n", "1", "--out", tmp_path / "g")
    assert r.exit_code != 0 and "--plugin" in str(r.exception) and "does not import" in str(r.exception)
    assert not marker.exists()
    other = tmp_path / "mine" / "mynet.py"  # same name, other content
    other.parent.mkdir()
    other.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran too')\n")
    r = _cli("gallery", crafted, "--n", "1", "--out", tmp_path / "g", "--plugin", other)
    assert r.exit_code != 0 and "sha256" in str(r.exception) and "refusing to load" in str(r.exception)
    assert not marker.exists()


def test_gallery_refuses_a_model_the_record_calls_installed_but_is_not(runs, tmp_path):
    def entry_point(rec):
        rec["model"]["source"] = {
            "kind": "entry point",
            "name": "tiny",
            "value": "evil.mod:tiny",
            "distribution": "evil",
            "version": "1",
        }

    r = _cli("gallery", _reseal(runs["tiny"], tmp_path, entry_point), "--n", "1", "--out", tmp_path / "g")
    assert r.exit_code != 0 and "is not installed here as the record says" in str(r.exception)


# ------------------------------------------------------------------------------------ panels, scale, links


def test_gallery_panels_truth_first_and_no_finding_only_when_asked():
    from cxrbench.data.labels import ALL_LABELS
    from cxrbench.explain.gallery import panel_classes

    classes = list(ALL_LABELS)
    probs = np.linspace(0.1, 0.9, 15)  # No Finding (the last) is the most probable
    truth = np.zeros(15, np.uint8)
    truth[[0, 2]] = 1  # Atelectasis, Effusion: not among the most probable
    assert panel_classes(probs, truth, classes) == [2, 0, 13]  # the true findings first, then the most probable
    assert panel_classes(probs, truth, classes, no_finding=True) == [2, 0, 14]
    assert 14 not in panel_classes(probs, truth, classes, "top3") and panel_classes(probs, truth, classes, "top3") == [
        13,
        12,
        11,
    ]
    nf = np.zeros(15, np.uint8)
    nf[14] = 1
    assert panel_classes(probs, nf, classes) == [13, 12, 11]
    assert panel_classes(probs, nf, classes, "truth") == [13]
    assert panel_classes(probs, truth, classes, "truth") == [2, 0]


@pytest.mark.slow
def test_gallery_has_a_colour_scale_and_no_no_finding_panel(runs, tmp_path):
    r = _cli("gallery", runs["tiny"], "--n", "3", "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "g" / "index.html").read_text()
    assert (
        "colour-scale.png" in page and "Heatmap colour scale" in page and (tmp_path / "g" / "colour-scale.png").exists()
    )
    assert "<b>No Finding p=" not in page
    r = _cli("gallery", runs["tiny"], "--n", "3", "--out", tmp_path / "g2", "--no-finding-cam", "--classes", "top3")
    assert r.exit_code == 0 and "<b>No Finding p=" in (tmp_path / "g2" / "index.html").read_text()


def test_gallery_never_writes_through_links_in_a_run_folder(runs, tmp_path):
    crafted = _copy(runs["tiny"], tmp_path, "links")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (crafted / "gallery").mkdir()
    (crafted / "gallery" / "index.html").symlink_to(victim)
    (crafted / "gallery" / "000-xray.png").symlink_to(victim)
    r = _cli("gallery", crafted, "--n", "1")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious" and not (crafted / "gallery" / "index.html").is_symlink()
    out_link = _copy(runs["tiny"], tmp_path, "out-link")
    (out_link / "gallery").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    r = _cli("gallery", out_link, "--n", "1")
    assert r.exit_code != 0 and "a link out of the run folder" in str(r.exception)
