"""Numbers reported by other papers, shown beside measured results as reference rows: marked as reported,
with their source and split, and never ranked as if measured here."""

from __future__ import annotations

from cxrbench.data.labels import FINDINGS

# The paper whose models and protocols cxrbench reproduces, cited by its authors and title.
PAPER_CITATION = (
    'M. Tan, X. Tian, W. Chan and J. Ceaser, "Multi-Label Classification and Visual Explanation of '
    'Chest X-ray Images using Neural Networks with Attention Mechanism and Grad-CAM" (University of '
    "Illinois Urbana-Champaign)"
)

# Per-class test AUROC in the class order of cxrbench.data.labels.FINDINGS, as printed in Table 2 of
# Rajpurkar et al., "CheXNet" (arXiv:1711.05225v3), which also lists Wang et al. (2017) for comparison;
# cross-checked against the copy of that table in the arnoweng/CheXNet README.
_CHEXNET = (
    0.8094,
    0.9248,
    0.8638,
    0.7345,
    0.8676,
    0.7802,
    0.7680,
    0.8887,
    0.7901,
    0.8878,
    0.9371,
    0.8047,
    0.8062,
    0.9164,
)
_WANG = (0.716, 0.807, 0.784, 0.609, 0.706, 0.671, 0.633, 0.806, 0.708, 0.835, 0.815, 0.769, 0.708, 0.767)

REFERENCE_ROWS: tuple[dict, ...] = (
    {
        "name": "CheXNet (DenseNet-121)",
        "source": "Rajpurkar et al. 2017, arXiv:1711.05225, Table 2",
        "split": "their own random 70/10/20 patient split of all 112,120 images; 14 findings; trained to convergence",
        "per_class": dict(zip(FINDINGS, _CHEXNET)),
    },
    {
        "name": "Wang et al. 2017 (ResNet-50)",
        "source": "Wang et al., ChestX-ray8, CVPR 2017, as listed in CheXNet's Table 2",
        "split": "official train-val/test lists; 14 findings",
        "per_class": dict(zip(FINDINGS, _WANG)),
    },
    {
        "name": "Tan et al. (the reference paper)",
        "source": "Tan et al., abstract and Sec. 3.1 (figures only, no table of values)",
        "split": "the paper's class-balanced subset (Table 1); 15 classes",
        "per_class": {},
        "note": "mean validation and test AUROC 'as high as 0.7 or greater'; attention models +0.02 to 0.03 test "
        "AUROC over DenseNet-121 at lr 0.01, 8 epochs",
    },
)


def plain_mean(row: dict) -> float | None:
    """The unweighted mean of a row's reported per-class values (computed here from the reported values)."""
    v = list(row["per_class"].values())
    return round(sum(v) / len(v), 4) if v else None
