"""The benchmark helper that lays out a ChestX-ray14 folder of any size from a few PNGs."""

import os

import pytest

from benchmarks.paper_size import lay_out
from cxrbench.data.dataset import open_dataset
from cxrbench.protocols import get_protocol

from .conftest import REAL_ORIGINALS


def test_layout_has_the_release_rows_lists_and_hard_links(tmp_path):
    made = lay_out(tmp_path / "nih", REAL_ORIGINALS, n=300)
    ds = open_dataset(tmp_path / "nih")
    assert made["images"] == 300 == len(ds.metadata) and ds.layout.has_official_lists
    paths = ds.layout.image_paths()
    assert sorted(paths) == sorted(ds.metadata.names)
    first = paths[str(ds.metadata.names[0])]
    assert first.parent.parent.name == "images_001" and os.stat(first).st_nlink > 1  # a link, not a copy
    assert first.read_bytes() == REAL_ORIGINALS[0].read_bytes()
    s = ds.splits(get_protocol("smoke"))
    assert s.source == "official lists" and len(s.full_trainval) + len(s.full_test) == 300
    with pytest.raises(SystemExit, match="not empty"):
        lay_out(tmp_path / "nih", REAL_ORIGINALS, n=10)
