"""Frozen, versioned benchmark protocols: what a run trains on, how, and how it is scored.

A published protocol never changes: its content hash is pinned by a test, and any change needs a new
version (or a new id); old versions stay available. Everything that names a protocol spells it one way,
`id@vN` (`paper-15c@v1`): runs, run folders, records, leaderboards, reports. Runs, records and leaderboards
also carry its content hash.

Settings added after the first protocols were published (`LATER_FIELDS`: the subset rule, the resampling, the
loss) are stated by every later protocol; the protocols published before them leave them out of their settings
and hash at the value they always had implicitly, so their hashes and records stay as published.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import partial

from cxrbench.cache.resample import RESAMPLES
from cxrbench.data.subset import SUBSET_RULES, V1_RULE
from cxrbench.errors import ConfigError

# The loss readings a protocol can state. The paper's Eq. (8) sums the binary cross-entropy over the C classes
# (and Eq. (1) averages over images); PyTorch's BCELoss, which the paper says it used, averages over images
# and classes alike: C times smaller, so under SGD the same lr steps C times less far. cxrbench trains with the
# mean (cxrbench/engine/train.py: binary_cross_entropy_with_logits, reduction "mean"), as the paper's code did.
LOSSES: dict[str, str] = {
    "bce-mean": "binary cross-entropy averaged over images and classes (PyTorch's BCELoss default); the paper's "
    "Eq. (8) sums over classes, which would scale the gradient, and so the effective lr, by C",
}

# Settings added with the v2 paper protocols, with the value every earlier protocol had implicitly.
LATER_FIELDS: dict[str, object] = {"subset_rule": V1_RULE, "resample": "box", "loss": "bce-mean"}
# The protocols published before LATER_FIELDS existed: their settings and hashes leave those fields out.
_PUBLISHED_WITHOUT_LATER_FIELDS = frozenset(
    {
        "paper-15c@v1",
        "paper-14c@v1",
        "paper-lr-grid@v1",
        "nih-official-14c@v1",
        "smoke@v1",
        "mini-paper-15c@v1",
        "mini-paper-14c@v1",
        "mini-lr-grid@v1",
    }
)


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """One benchmark protocol (every setting explicit; docs/paper-readings.md gives the paper's choices)."""

    id: str
    version: int
    description: str
    num_classes: int  # 14 findings, or 15 with "No Finding"
    # data
    subset: str  # "paper": the class-balanced selection; "all": every image
    subset_seed: int
    lists: str  # "official" (patient-wise stand-in where absent) or a named split list
    val: str  # "stratified" (paper: on the string label, singletons dropped) or "patient"
    n_folds: int  # train/val splits, each trained and scored on validation
    val_fraction: float
    split_seed: int
    final_run: bool  # also train on train+val and score on test (else fold 0's model scores test)
    # images
    image_size: int  # cache resolution (uint8, square)
    resize: int  # on-device resize before cropping (== image_size: none)
    crop: int  # centre crop (or random crop with augmentation)
    augment: str  # "none" or "crop_flip" (random crop + horizontal flip)
    # training
    optimizer: str  # "sgd"
    lrs: tuple[float, ...]  # one, or a grid that runs choose from
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int  # global batch (split across processes under DDP)
    pretrained: bool  # ImageNet backbone where weights exist
    seed: int  # training seed (initialisation, shuffling, augmentation)
    bootstrap: int  # resamples for confidence intervals
    # stated since the v2 paper protocols (LATER_FIELDS); the defaults are what the earlier protocols did
    subset_rule: str = V1_RULE  # how the paper subset draws a class above its target (data/subset.py)
    resample: str = "box"  # the cache's resampling to image_size: "box" or "bilinear" (the paper's, Pillow's)
    loss: str = "bce-mean"  # the reading of the paper's loss (LOSSES)

    def __post_init__(self) -> None:
        for name, value, known in (
            ("subset_rule", self.subset_rule, SUBSET_RULES),
            ("resample", self.resample, RESAMPLES),
            ("loss", self.loss, LOSSES),
        ):
            if value not in known:
                raise ConfigError(f"protocol {self.key}: unknown {name} {value!r} (known: {', '.join(known)})")

    def to_dict(self) -> dict:
        """Every setting (the canonical form that is hashed and written into records)."""
        d = asdict(self)
        d["lrs"] = list(self.lrs)
        if self.key in _PUBLISHED_WITHOUT_LATER_FIELDS:
            for name, value in LATER_FIELDS.items():
                if d[name] == value:
                    del d[name]
        return d

    @property
    def content_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of every setting."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def key(self) -> str:
        """`id@vN`: the one spelling of a protocol everywhere (run folders, records, boards, reports)."""
        return protocol_key(self.id, self.version)

    def lr(self, lr: float | None) -> float:
        """The learning rate a run uses: the only one, or `lr` chosen from the grid."""
        if lr is None:
            if len(self.lrs) == 1:
                return self.lrs[0]
            raise ConfigError(
                f"protocol {self.id} is a grid over lr {', '.join(map(str, self.lrs))}; pick one with --lr "
                "or run the whole grid with `cxrbench sweep`"
            )
        if not any(abs(lr - x) < 1e-12 for x in self.lrs):
            raise ConfigError(f"lr {lr} is not in protocol {self.id} (allowed: {', '.join(map(str, self.lrs))})")
        return float(lr)


# the shared settings of a family of protocols: each protocol below adds its id, version and the rest
_PAPER = partial(
    Protocol,
    subset="paper",
    subset_seed=0,
    lists="official",
    val="stratified",
    n_folds=3,
    val_fraction=0.1,
    split_seed=0,
    final_run=True,
    image_size=256,
    resize=256,
    crop=224,
    augment="none",
    optimizer="sgd",
    momentum=0.9,
    weight_decay=0.0,
    epochs=8,
    batch_size=32,
    pretrained=True,
    seed=0,
    bootstrap=1000,
)

# the v2 paper protocols: v1's settings, plus the subset reading closest to Table 1 with the official lists
# (benchmarks/results/table1_readings.json), the paper's resampling, and the loss reading stated
_PAPER_V2 = partial(_PAPER, subset_rule="shortfall-all", resample="bilinear", loss="bce-mean")


# every image, 14 findings, one split scored as trained (nih-official-14c, chexnet-14c: they differ in their lists)
_ALL_14C = partial(
    Protocol,
    num_classes=14,
    subset="all",
    subset_seed=0,
    val="patient",
    n_folds=1,
    val_fraction=0.1,
    split_seed=0,
    final_run=False,
    image_size=256,
    resize=256,
    crop=224,
    augment="crop_flip",
    optimizer="sgd",
    lrs=(0.01,),
    momentum=0.9,
    weight_decay=0.0,
    epochs=8,
    batch_size=32,
    pretrained=True,
    seed=0,
    bootstrap=1000,
)


def protocol_key(pid: str, version: int) -> str:
    """`id@vN` for a protocol id and version."""
    return f"{pid}@v{version}"


# every published protocol by key (`id@vN`), old versions included
PROTOCOLS: dict[str, Protocol] = {
    p.key: p
    for p in (
        _PAPER(
            id="paper-15c",
            version=1,
            num_classes=15,
            lrs=(0.01,),
            description="The reference paper's setting: class-balanced subset, 15 classes (with No Finding), "
            "3 stratified train/val splits + train-on-train+val scored on test, SGD lr 0.01, 8 epochs.",
        ),
        _PAPER(
            id="paper-14c",
            version=1,
            num_classes=14,
            lrs=(0.01,),
            description="As paper-15c with the 14 findings only (the paper's Fig. 6 comparison).",
        ),
        _PAPER(
            id="paper-lr-grid",
            version=1,
            num_classes=15,
            lrs=(0.001, 0.01),
            description="As paper-15c over lr 0.001 and 0.01 (the paper's Fig. 7); a run picks one with --lr.",
        ),
        _PAPER_V2(
            id="paper-15c",
            version=2,
            num_classes=15,
            lrs=(0.01,),
            description="The reference paper's setting, v2: as v1, with the subset drawn under the reading of its "
            "rule that comes closest to its Table 1 (shortfall-all), images resampled as the paper did (Pillow's "
            "antialiased bilinear: cache build --resample bilinear) and the loss reading stated (bce-mean).",
        ),
        _PAPER_V2(
            id="paper-14c",
            version=2,
            num_classes=14,
            lrs=(0.01,),
            description="As paper-15c@v2 with the 14 findings only (the paper's Fig. 6 comparison).",
        ),
        _PAPER_V2(
            id="paper-lr-grid",
            version=2,
            num_classes=15,
            lrs=(0.001, 0.01),
            description="As paper-15c@v2 over lr 0.001 and 0.01 (the paper's Fig. 7); a run picks one with --lr.",
        ),
        _ALL_14C(
            id="nih-official-14c",
            version=1,
            lists="official",
            description="All images, the official train-val/test lists, a patient-wise 10% validation split, "
            "14 findings, random crop + flip; the model after the last epoch is scored on test.",
        ),
        _ALL_14C(
            id="chexnet-14c",
            version=1,
            lists="chexnet-community",
            description="All images on the CheXNet community split lists (chexnet-community_{train,val,test}.txt "
            "in the dataset's splits/ folder: patient-wise train/val/test), 14 findings, nih-official-14c's "
            "training (not CheXNet's Adam schedule); the model after the last epoch is scored on test.",
        ),
        Protocol(
            id="smoke",
            version=1,
            num_classes=15,
            subset="all",
            subset_seed=0,
            lists="official",
            val="patient",
            n_folds=1,
            val_fraction=0.15,
            split_seed=0,
            final_run=False,
            image_size=256,
            resize=64,
            crop=64,
            augment="none",
            optimizer="sgd",
            lrs=(0.1,),
            momentum=0.9,
            weight_decay=0.0,
            epochs=20,
            batch_size=16,
            pretrained=False,
            seed=0,
            bootstrap=200,
            description="A small protocol for CI and the quickstart: images area-resized to 64 pixels, 20 epochs, "
            "no pretrained weights, one patient-wise validation split; meant for `cxrbench synth` data on a CPU.",
        ),
        *(
            Protocol(
                id=pid,
                version=1,
                num_classes=nc,
                subset="paper",
                subset_seed=0,
                lists="official",
                val="stratified",
                n_folds=1,
                val_fraction=0.1,
                split_seed=0,
                final_run=True,
                image_size=256,
                resize=64,
                crop=64,
                augment="none",
                optimizer="sgd",
                lrs=lrs,
                momentum=0.9,
                weight_decay=0.0,
                epochs=10,
                batch_size=16,
                pretrained=False,
                seed=0,
                bootstrap=200,
                description=f"Miniature of {ref} for `cxrbench reproduce paper --mini` on phantom data: 64-pixel "
                "images, one stratified train/val split + the final run, 10 epochs, no pretrained weights.",
            )
            for pid, nc, lrs, ref in (
                ("mini-paper-15c", 15, (0.1,), "paper-15c"),
                ("mini-paper-14c", 14, (0.1,), "paper-14c"),
                ("mini-lr-grid", 15, (0.01, 0.1), "paper-lr-grid"),
            )
        ),
    )
}


def latest() -> dict[str, Protocol]:
    """The newest version of every protocol id, by id."""
    out: dict[str, Protocol] = {}
    for p in PROTOCOLS.values():
        if p.id not in out or p.version > out[p.id].version:
            out[p.id] = p
    return out


def get_protocol(name: str) -> Protocol:
    """A built-in protocol by id (its newest version) or by `id@vN`; unknown names suggest the closest."""
    pid, at, ver = name.partition("@")
    newest = latest()
    if pid not in newest:
        import difflib

        close = difflib.get_close_matches(pid, newest, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown protocol {name!r}{hint} (known: {', '.join(newest)})")
    if not at:
        return newest[pid]
    if not (ver.startswith("v") and ver[1:].isdigit()):
        raise ConfigError(f"protocol {name!r}: write a version as {protocol_key(pid, newest[pid].version)}")
    p = PROTOCOLS.get(protocol_key(pid, int(ver[1:])))
    if p is None:
        have = ", ".join(k for k, q in PROTOCOLS.items() if q.id == pid)
        raise ConfigError(f"protocol {pid} has no version {ver[1:]} (published: {have})")
    return p


def protocol_fields() -> list[str]:
    """Names of every protocol setting, in declaration order."""
    return [f.name for f in fields(Protocol)]
