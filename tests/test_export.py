"""`cxrbench export`: the run's model with its preprocessing inside, loaded by torch.jit.load in a fresh process
(no cxrbench imported there) and giving the run's recorded test probabilities from the cache's uint8 pixels."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

FRESH = """
import json, sys
import numpy as np, torch
m = torch.jit.load(sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    p = m(x)
print(json.dumps({"cxrbench": "cxrbench" in sys.modules, "shape": list(p.shape), "p": p.tolist()}))
"""


@pytest.mark.slow
def test_export_torchscript_loads_alone_and_reproduces_the_run(real_run, tmp_path, capsys):
    from cxrbench.api import load_run
    from cxrbench.cache.store import open_cache
    from cxrbench.cli import main

    folder, _ = real_run
    out = tmp_path / "m.pt"
    with pytest.raises(SystemExit) as e:
        main(["export", str(folder), "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 0, err
    run = load_run(folder)
    info = json.loads((tmp_path / "m.json").read_text())
    n = len(run.test.images)
    assert info["classes"] == list(run.classes) and info["protocol"] == "smoke@v1"
    assert info["record_sha256"] == run.record.record_sha256
    assert info["input"]["shape"] == ["batch", 256, 256] and info["input"]["dtype"] == "uint8"
    assert info["check"]["test_images"] == n and info["check"]["max_abs_diff_vs_pytorch"] < 1e-5
    assert f"checked on {n} test image(s)" in err and "largest difference" in err
    # a batch size the trace never saw (3), in a fresh process that imports torch and numpy only
    store = open_cache(run.settings["cache_path"])
    pos = {str(k): i for i, k in enumerate(store.names())}
    names = run.test.images[:3]
    np.save(tmp_path / "x.npy", store.read(np.array([pos[k] for k in names])))
    r = subprocess.run(
        [sys.executable, "-c", FRESH, str(out), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    got = json.loads(r.stdout)
    assert got["cxrbench"] is False and got["shape"] == [3, len(run.classes)]
    assert np.abs(np.array(got["p"]) - run.test.probabilities[:3]).max() < 1e-6


def test_export_refuses_without_the_cache_before_writing(real_run, tmp_path):
    import shutil

    from cxrbench.api import load_run
    from cxrbench.errors import ConfigError
    from cxrbench.export import export_run

    folder, _ = real_run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    settings = json.loads((copy / "run.json").read_text())
    settings["cache_path"] = str(tmp_path / "gone")
    (copy / "run.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match="pass --cache"):
        export_run(load_run(copy), tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(ConfigError, match="must not end in .json"):
        export_run(load_run(copy), tmp_path / "m.json")


@pytest.mark.slow
def test_export_onnx_runs_in_onnxruntime_with_any_batch(real_run, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cxrbench.api import load_run
    from cxrbench.cache.store import open_cache
    from cxrbench.export import export_run

    run = load_run(real_run[0])
    e = export_run(run, tmp_path / "m.onnx", "onnx", check_images=4)
    info = json.loads(e.info.read_text())
    assert info["format"] == "onnx" and info["onnx"]["input_name"] == "images" and e.max_abs_diff < 1e-5
    store = open_cache(run.settings["cache_path"])
    pos = {str(k): i for i, k in enumerate(store.names())}
    x = store.read(np.array([pos[k] for k in run.test.images[:3]]))
    got = ort.InferenceSession(str(e.model), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert got.shape == (3, 15) and np.abs(got - run.test.probabilities[:3]).max() < 1e-5


def test_export_onnx_without_onnx_says_what_to_install(real_run, tmp_path, monkeypatch):
    from cxrbench.api import load_run
    from cxrbench.errors import ConfigError
    from cxrbench.export import export_run

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'cxrbench\[onnx\]'"):
        export_run(load_run(real_run[0]), tmp_path / "m.onnx", "onnx")
    assert not (tmp_path / "m.onnx").exists()
