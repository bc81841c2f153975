import gzip

import numpy as np
import pytest

from cxrbench.data.labels import ALL_LABELS, FINDINGS, class_names
from cxrbench.data.metadata import read_metadata
from cxrbench.errors import InputError

from .conftest import REAL_CSV

REAL_TOTALS = {
    "Atelectasis": 11559,
    "Cardiomegaly": 2776,
    "Effusion": 13317,
    "Infiltration": 19894,
    "Mass": 5782,
    "Nodule": 6331,
    "Pneumonia": 1431,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Edema": 2303,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Pleural_Thickening": 3385,
    "Hernia": 227,
    "No Finding": 60361,
}


def test_real_metadata_counts(real_metadata):
    m = real_metadata
    assert len(m) == 112_120
    assert len(np.unique(m.patients)) == 30_805
    y = m.labels(15)
    assert dict(zip(ALL_LABELS, y.sum(axis=0).tolist())) == REAL_TOTALS
    assert m.labels(14).shape == (112_120, 14)
    assert (m.labels(14) == y[:, :14]).all()
    assert (m.table["view"] == "PA").sum() == 67_310 and (m.table["view"] == "AP").sum() == 44_810
    assert (m.table["sex"] == "M").sum() == 63_340 and (m.table["sex"] == "F").sum() == 48_780
    assert m.table["age"].mean() == pytest.approx(46.63, abs=0.005)
    assert m.table["age"].std() == pytest.approx(16.60, abs=0.005)


def test_class_order_fixed():
    assert class_names(14) == FINDINGS and class_names(15)[-1] == "No Finding"
    assert FINDINGS[0] == "Atelectasis" and FINDINGS[-1] == "Hernia" and FINDINGS[12] == "Pleural_Thickening"


def test_nonimage_features(real_metadata):
    f = real_metadata.features()
    assert f.shape == (112_120, 5) and f.dtype == np.float32
    row = real_metadata.table.iloc[0]  # 00000001_000.png: 57, M, PA
    assert row["age"] == 57
    np.testing.assert_allclose(f[0], [(57 - 46.63) / 16.6, 1, 0, 1, 0], rtol=1e-6)
    assert (f[:, 1] + f[:, 2] == 1).all() and (f[:, 3] + f[:, 4] == 1).all()


def _first_rows(n: int) -> list[str]:
    with gzip.open(REAL_CSV, "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(n + 1)]


def test_old_csv_format_plain_and_gzipped(tmp_path):
    """Data_Entry_2017.csv: same columns, a trailing empty column, ages such as 058Y."""
    lines = _first_rows(20)
    old = [lines[0] + ","]
    for ln in lines[1:]:
        cells = ln.split(",")
        cells[4] = f"{int(cells[4]):03d}Y"
        old.append(",".join(cells) + ",")
    text = "\n".join(old) + "\n"
    (tmp_path / "Data_Entry_2017.csv").write_text(text)
    with gzip.open(tmp_path / "old.csv.gz", "wt") as fh:
        fh.write(text)
    a = read_metadata(tmp_path / "Data_Entry_2017.csv")
    b = read_metadata(tmp_path / "old.csv.gz")
    assert len(a) == 20 and a.table["age"].iloc[0] == 57
    assert a.sha256 == b.sha256
    assert (a.labels(15) == b.labels(15)).all()


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda c: c.__setitem__(1, "Pneumonitis"), "unknown label 'Pneumonitis'"),
        (lambda c: c.__setitem__(4, "fifty"), "bad Patient Age 'fifty'"),
        (lambda c: c.__setitem__(4, "414"), "implausible Patient Age '414'"),
        (lambda c: c.__setitem__(5, "X"), "bad Patient Gender 'X'"),
        (lambda c: c.__setitem__(6, "LL"), "bad View Position 'LL'"),
        (lambda c: c.__setitem__(1, "No Finding|Mass"), "'No Finding' combined with findings"),
        (lambda c: c.__setitem__(3, "p7"), "bad Patient ID 'p7'"),
    ],
)
def test_malformed_rows_name_file_line_and_reason(tmp_path, mutate, expect):
    lines = _first_rows(10)
    cells = lines[7].split(",")
    mutate(cells)
    lines[7] = ",".join(cells)
    p = tmp_path / "Data_Entry_2017_v2020.csv"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        read_metadata(p)
    msg = str(e.value)
    assert str(p) in msg and "line 8" in msg and expect in msg


def test_missing_column_and_duplicates(tmp_path):
    lines = _first_rows(5)
    p = tmp_path / "a.csv"
    p.write_text("\n".join([lines[0].replace("Patient Age", "Age")] + lines[1:]) + "\n")
    with pytest.raises(InputError, match="missing column 'Patient Age'"):
        read_metadata(p)
    p.write_text("\n".join(lines + [lines[2]]) + "\n")
    with pytest.raises(InputError, match=r"line 7: image '00000001_001.png': Image Index appears twice"):
        read_metadata(p)
    with pytest.raises(InputError, match="file not found|the file is missing"):
        read_metadata(tmp_path / "nope.csv")
    p.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(InputError, match="damaged gzip"):
        read_metadata(p)
