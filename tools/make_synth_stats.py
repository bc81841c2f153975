"""Regenerate `cxrbench/data/resources/synth_stats.json` from the real NIH metadata CSV.

The phantom generator (`cxrbench synth`) draws label combinations, ages, sexes, views and images per
patient from these empirical frequencies, so that its data has the real label co-occurrence.

    python tools/make_synth_stats.py ../shared/data/nih/Data_Entry_2017_v2020.csv.gz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cxrbench.data.metadata import read_metadata


def main(csv: str) -> None:
    m = read_metadata(csv)
    t = m.table
    combos = t["labels"].value_counts()
    finding = t["labels"] != "No Finding"
    per_patient = t.groupby("patient").size().to_numpy()
    hist = np.bincount(np.minimum(per_patient, 50))[1:]
    stats = {
        "source": f"{Path(csv).name} sha256 {m.sha256}",
        "images": len(t),
        "label_combinations": {k: int(v) for k, v in combos.items()},
        "p_male": float((t["sex"] == "M").mean()),
        "p_ap_given_finding": float((t.loc[finding, "view"] == "AP").mean()),
        "p_ap_given_no_finding": float((t.loc[~finding, "view"] == "AP").mean()),
        "age_finding": [float(t.loc[finding, "age"].mean()), float(t.loc[finding, "age"].std())],
        "age_no_finding": [float(t.loc[~finding, "age"].mean()), float(t.loc[~finding, "age"].std())],
        "images_per_patient_hist": [int(x) for x in hist],  # index k: patients with k+1 images (50 = 50+)
    }
    out = Path(__file__).resolve().parents[1] / "cxrbench" / "data" / "resources" / "synth_stats.json"
    out.write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {out} ({len(combos)} label combinations)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/nih/Data_Entry_2017_v2020.csv.gz")
