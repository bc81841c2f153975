import pytest

from cxrbench.errors import ConfigError
from cxrbench.protocols import PROTOCOLS, get_protocol

# A published protocol never changes: a change to any setting changes its hash and fails here. Publish the
# change as a new version (or a new id) and add its hash below instead of editing an existing line.
PINNED = {
    ("paper-15c", 1): "698cec738134df38",
    ("paper-14c", 1): "8430804d1ca91254",
    ("paper-lr-grid", 1): "58c000947f10fc82",
    ("nih-official-14c", 1): "3fbc8a3a201ca610",
    ("smoke", 1): "4f076b9648cd08c1",
    ("mini-paper-15c", 1): "cf96fdf9c01d0a75",
    ("mini-paper-14c", 1): "dd5499e3a6666136",
    ("mini-lr-grid", 1): "d82481498451a5b9",
    ("paper-15c", 2): "d5b3edab2ec7d8fa",
    ("paper-14c", 2): "8473dd9594abc200",
    ("paper-lr-grid", 2): "6a7ffb279c5cd5df",
    ("chexnet-14c", 1): "ab926c8c55d60de1",
}


def test_every_protocol_hash_is_pinned():
    assert {(p.id, p.version): p.content_hash for p in PROTOCOLS.values()} == PINNED


def test_paper_settings():
    p = get_protocol("paper-15c")
    assert (p.num_classes, p.subset, p.n_folds, p.val_fraction, p.final_run) == (15, "paper", 3, 0.1, True)
    assert (p.optimizer, p.momentum, p.lrs, p.epochs, p.batch_size, p.crop, p.resize) == (
        "sgd",
        0.9,
        (0.01,),
        8,
        32,
        224,
        256,
    )
    assert get_protocol("paper-14c").num_classes == 14
    assert get_protocol("paper-lr-grid").lrs == (0.001, 0.01)
    o = get_protocol("nih-official-14c")
    assert (o.subset, o.lists, o.val, o.num_classes) == ("all", "official", "patient", 14)


def test_lr_choice_and_versions():
    grid = get_protocol("paper-lr-grid")
    with pytest.raises(ConfigError, match="pick one with --lr"):
        grid.lr(None)
    assert grid.lr(0.001) == 0.001
    with pytest.raises(ConfigError, match="not in protocol"):
        get_protocol("paper-15c").lr(0.5)
    assert get_protocol("paper-15c@v1").key == "paper-15c@v1"
    with pytest.raises(ConfigError, match="has no version 99"):
        get_protocol("paper-15c@v99")
    with pytest.raises(ConfigError, match="write a version as paper-15c@v"):
        get_protocol("paper-15c@1")  # one spelling: id@vN


def test_v2_paper_protocols_state_the_later_fields():
    """v2: the Table 1 reading of the subset rule, the paper's resampling and the loss reading, stated in the
    settings that records carry; v1 keeps its published settings (without those fields) and hash."""
    from cxrbench.protocols import LATER_FIELDS

    for pid in ("paper-15c", "paper-14c", "paper-lr-grid"):
        v1, v2 = get_protocol(f"{pid}@v1"), get_protocol(f"{pid}@v2")
        assert get_protocol(pid) is v2  # the newest version by default
        assert (v2.subset_rule, v2.resample, v2.loss) == ("shortfall-all", "bilinear", "bce-mean")
        assert (v1.subset_rule, v1.resample, v1.loss) == ("shortfall-unselected", "box", "bce-mean")
        d1, d2 = v1.to_dict(), v2.to_dict()
        assert not set(LATER_FIELDS) & set(d1) and set(LATER_FIELDS) <= set(d2)
        assert {k: v for k, v in d2.items() if k not in LATER_FIELDS and k not in ("version", "description")} == {
            k: v for k, v in d1.items() if k not in ("version", "description")
        }
    assert all(set(LATER_FIELDS) <= set(p.to_dict()) for p in PROTOCOLS.values() if p.version > 1)


@pytest.mark.parametrize(
    "field,value", [("subset_rule", "shortfall-some"), ("resample", "bicubic"), ("loss", "bce-sum")]
)
def test_unknown_later_field_values_are_refused(field, value):
    from dataclasses import replace

    with pytest.raises(ConfigError, match=f"unknown {field} '{value}'"):
        replace(get_protocol("paper-15c@v2"), **{field: value})


def test_loss_reading_is_what_training_computes():
    """loss="bce-mean": the trainer's loss is the BCE averaged over images and classes (PyTorch's BCELoss), i.e.
    the paper's Eq. (8) sum over classes divided by C; one SGD step moves the weights by lr times its gradient."""
    import torch

    from cxrbench.engine.loader import Batch
    from cxrbench.engine.train import GraphStep, TrainConfig, forward
    from cxrbench.models import create_model

    assert {p.loss for p in PROTOCOLS.values()} == {"bce-mean"}
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=15)
    x = torch.randn(6, 3, 32, 32)
    y = (torch.rand(6, 15) < 0.3).float()
    batch = Batch(x, y, torch.zeros(6, 5), torch.arange(6))
    cfg = TrainConfig(lr=0.01, momentum=0.0, weight_decay=0.0, epochs=1, device="cpu", nonimage=False)
    with torch.no_grad():
        prob = torch.sigmoid(forward(model, batch, cfg))
    eq8 = -(y * prob.log() + (1 - y) * (1 - prob).log()).sum(dim=1).mean()  # Eq. (8) per image, Eq. (1) mean
    step = GraphStep(model, torch.optim.SGD(model.parameters(), lr=cfg.lr), cfg)
    loss = step.eager(batch)
    assert float(loss) == pytest.approx(float(eq8) / 15, rel=1e-5)
