"""GPU-only checks (skipped cleanly where no CUDA device is present; run by tools/gpu_check.sh)."""

import numpy as np
import pytest
import torch

from cxrbench.engine.loader import ResidentLoader, StreamingLoader, View

pytestmark = pytest.mark.gpu


def _data(n=64, s=64, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n, s, s), dtype=np.uint8),
        (rng.random((n, 15)) < 0.3).astype(np.float32),
        rng.random((n, 5)).astype(np.float32),
    )


@pytest.mark.parametrize("augment", [False, True])
def test_gpu_batches_equal_cpu_batches(augment):
    imgs, y, f = _data()
    view_cpu = View(64, 64, 48, augment=augment)
    view_gpu = View(64, 64, 48, augment=augment, channels_last=True)
    a = ResidentLoader(imgs, y, f, view_cpu, 16, "cpu", shuffle=True, seed=5)
    b = ResidentLoader(imgs, y, f, view_gpu, 16, "cuda", shuffle=True, seed=5)
    for ba, bb in zip(a, b):
        assert torch.equal(ba.index, bb.index)
        torch.testing.assert_close(ba.x, bb.x.cpu(), rtol=0, atol=1e-5)
        assert bb.x.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(ba.y, bb.y.cpu())


def test_gpu_streaming_loader_equals_the_cpu_one():
    """The streaming loader on the GPU hands over every image once, on the device, with the same batches (pixels,
    labels, order) as the same loader on the CPU."""
    imgs, y, f = _data(40, 32)

    class Store:
        chunk_images = 8
        size = 32

        def read(self, pos):
            return imgs[pos]

    def loader(device):
        return StreamingLoader(Store(), np.arange(40), y, f, View(32, 32, 32, False), 16, device, True, 0)

    cpu, gpu = list(loader("cpu")), list(loader("cuda"))
    assert len(cpu) == len(gpu) and sorted(torch.cat([b.index for b in gpu]).tolist()) == list(range(40))
    for bc, bg in zip(cpu, gpu, strict=True):
        assert bg.x.is_cuda and bg.y.is_cuda and torch.equal(bc.index, bg.index.cpu())
        torch.testing.assert_close(bc.x, bg.x.cpu(), rtol=0, atol=1e-5)
        torch.testing.assert_close(bc.y, bg.y.cpu())


@pytest.mark.parametrize("name", ["densenet121", "densenet121_attA", "resnet50"])
def test_training_step_in_bf16_channels_last(name):
    """The engine's training step as a GPU run configures it (bf16 autocast, channels-last, the captured CUDA
    graph after its warm-up): finite losses and gradients, bf16 logits, and weights that move."""
    from cxrbench.engine.loader import Batch
    from cxrbench.engine.train import GraphStep, TrainConfig, autocast, forward
    from cxrbench.models import create_model

    torch.manual_seed(0)
    m = create_model(name).cuda().to(memory_format=torch.channels_last)
    cfg = TrainConfig(
        lr=0.01, momentum=0.9, weight_decay=1e-4, epochs=1, device="cuda", nonimage=False,
        amp=True, channels_last=True, cuda_graphs=True,
    )  # fmt: skip
    x = torch.randn(8, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    batch = Batch(x, (torch.rand(8, 15, device="cuda") < 0.2).float(), torch.zeros(8, 5, device="cuda"),
                  torch.arange(8, device="cuda"))  # fmt: skip
    with torch.no_grad(), autocast(cfg):
        assert forward(m, batch, cfg).dtype == torch.bfloat16
    before = [p.detach().clone() for p in m.parameters()]
    step = GraphStep(m, torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum), cfg)
    losses = [float(step(batch)) for _ in range(GraphStep.WARMUP + 2)]  # warm-up, capture, replay
    assert step.replay is not None and all(np.isfinite(losses))
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, m.parameters(), strict=True))


def test_smoke_run_on_gpu(synth_cache, tmp_path):
    from cxrbench.results.record import read_record
    from cxrbench.run import RunOptions, run

    rec = read_record(
        run(
            RunOptions(model="tiny_attn", protocol="smoke", cache=str(synth_cache), out=str(tmp_path), device="cuda")
        ).parent
    )
    assert rec["environment"]["device"] == "cuda" and rec["environment"]["device_name"] != "cpu"
    assert rec["environment"]["loader"] == "resident"
    assert rec["test"]["n_images"] > 0


def test_gradcam_on_gpu_matches_cpu():
    from cxrbench.explain.gradcam import GradCAM
    from cxrbench.models import create_model

    torch.manual_seed(0)
    m = create_model("densenet121_attA").eval()
    x = torch.randn(4, 3, 224, 224)
    cls = torch.tensor([[0, 3], [1, 2], [14, 5], [7, 7]])
    with GradCAM(m, "features.transition3") as cam:
        ref = cam(x, cls)
    m = m.cuda()
    with GradCAM(m, "features.transition3") as cam:
        got = cam(x.cuda(), cls.cuda())
    # cuDNN convolutions use TF32 on the GPU: compare at a tolerance relative to each map's peak
    peak = ref.maps.flatten(2).amax(-1)[..., None, None].clamp_min(1e-12)  # zero maps stay zero
    torch.testing.assert_close(got.maps.cpu() / peak, ref.maps / peak, rtol=0, atol=0.02)
    assert torch.equal(got.degenerate.cpu(), ref.degenerate)
    with GradCAM(m, "features.norm5") as cam:
        assert cam(x.cuda(), cls.cuda()).degenerate.all()  # g cancels: norm5 is flagged on the GPU too
