"""The typed record (`cxrbench.results.types.Record`) and predictions (`Predictions`): one parser each, the same
rules as the validator, and the record on disk and its hash unchanged by the types."""

import json

import numpy as np
import pytest

from cxrbench.errors import RecordError
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import read_record, record_hash
from cxrbench.results.types import Record


@pytest.fixture(scope="module")
def run_dir(synth_cache, tmp_path_factory):
    from cxrbench.run import RunOptions, run

    out = tmp_path_factory.mktemp("typed_runs")
    return run(RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")).parent


def test_record_reads_typed_and_keeps_its_dict(run_dir):
    raw = read_record(run_dir)
    rec = Record.read(run_dir)
    assert rec.raw == raw and record_hash(dict(rec.raw)) == rec.record_sha256 == raw["record_sha256"]
    assert rec.run_id == raw["run_id"] and rec.model.name == "tiny" and rec.protocol.id == "smoke"
    assert list(rec.classes) == raw["data"]["classes"] and list(rec.test.per_class) == list(raw["test"]["per_class"])
    c = rec.classes[0]
    assert rec.test.per_class[c].auroc == raw["test"]["per_class"][c]["auroc"]
    assert rec.test.weighted_mean.ci95 == tuple(raw["test"]["weighted_mean"]["ci95"])
    assert len(rec.folds) == len(raw["validation"]["folds"]) and rec.test.n_images == raw["test"]["n_images"]
    assert rec.timing.wall_seconds == raw["timing"]["wall_seconds"]
    with pytest.raises(AttributeError):
        rec.lr = 1.0  # frozen


def test_from_dict_refuses_what_the_validator_refuses(run_dir):
    raw = json.loads((run_dir / "record.json").read_text())
    assert Record.from_dict(raw).record_sha256 == raw["record_sha256"]
    bad = dict(raw, lr="fast")
    with pytest.raises(RecordError, match="lr"):
        Record.from_dict(bad, "edited.json")
    edited = json.loads(json.dumps(raw))
    edited["test"]["n_images"] += 1
    with pytest.raises(RecordError, match="record_sha256"):
        Record.from_dict(edited)
    with pytest.raises(RecordError, match="not a JSON object"):
        Record.from_dict([raw])


def test_predictions_round_trip(run_dir, tmp_path):
    rec = Record.read(run_dir)
    pred = Predictions.read(run_dir / rec.predictions.path)
    assert len(pred.images) == rec.test.n_images and pred.classes == list(rec.classes)
    assert pred.labels.dtype == np.uint8 and pred.probabilities.shape == (len(pred.images), len(pred.classes))
    sha = pred.write(tmp_path / "copy.csv.gz")
    assert sha == rec.predictions.sha256  # the writer is deterministic: the same bytes as the run wrote
    again = Predictions.read(tmp_path / "copy.csv.gz")
    assert again.images == pred.images and np.array_equal(again.probabilities, pred.probabilities)
    with pytest.raises(RecordError, match="columns"):
        Predictions.parse(b"image,patient\n", "bad.csv")
