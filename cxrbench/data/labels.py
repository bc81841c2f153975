"""The class list in its fixed order, label matrices and the paper's non-image features."""

from __future__ import annotations

import numpy as np

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
ALL_LABELS: tuple[str, ...] = FINDINGS + (NO_FINDING,)

# BBox_List_2017.csv spells one finding differently from the metadata.
BBOX_ALIASES: dict[str, str] = {"Infiltrate": "Infiltration"}

# The reference paper's normalisation constants (mean and sd of Patient Age over all 112,120 rows).
AGE_MEAN = 46.63
AGE_STD = 16.6
NONIMAGE_FEATURES: tuple[str, ...] = ("age_z", "sex_M", "sex_F", "view_PA", "view_AP")


def class_names(num_classes: int) -> tuple[str, ...]:
    """The 14 findings, or the 14 findings plus "No Finding" for 15."""
    if num_classes == 14:
        return FINDINGS
    if num_classes == 15:
        return ALL_LABELS
    from cxrbench.errors import ConfigError

    raise ConfigError(f"num_classes must be 14 or 15, got {num_classes}")


def label_matrix(label_strings: np.ndarray | list[str], num_classes: int = 15) -> np.ndarray:
    """Multi-hot uint8 matrix (N, C) from `Finding Labels` strings such as "Effusion|Mass"."""
    names = class_names(num_classes)
    col = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(label_strings), num_classes), dtype=np.uint8)
    for row, s in enumerate(label_strings):
        for lab in str(s).split("|"):
            j = col.get(lab)
            if j is not None:
                out[row, j] = 1
    return out


def nonimage_features(age: np.ndarray, sex: np.ndarray, view: np.ndarray) -> np.ndarray:
    """float32 (N, 5): normalised age, sex one-hot (M, F), view one-hot (PA, AP), as in the paper."""
    age = np.asarray(age, dtype=np.float32)
    sex = np.asarray(sex).astype(str)
    view = np.asarray(view).astype(str)
    return np.stack(
        [
            (age - AGE_MEAN) / AGE_STD,
            (sex == "M").astype(np.float32),
            (sex == "F").astype(np.float32),
            (view == "PA").astype(np.float32),
            (view == "AP").astype(np.float32),
        ],
        axis=1,
    ).astype(np.float32)
