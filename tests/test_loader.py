import numpy as np
import pytest
import torch

from cxrbench.engine.loader import IMAGENET_MEAN, IMAGENET_STD, ResidentLoader, StreamingLoader, View


def _data(n=50, s=32, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n, s, s), dtype=np.uint8),
        (rng.random((n, 15)) < 0.3).astype(np.float32),
        rng.random((n, 5)).astype(np.float32),
    )


def test_centre_crop_and_normalisation_exact():
    imgs, y, f = _data()
    view = View(image_size=32, resize=32, crop=24, augment=False)
    ld = ResidentLoader(imgs, y, f, view, batch_size=8, device="cpu", shuffle=False, seed=0)
    b = next(iter(ld))
    assert b.x.shape == (8, 3, 24, 24) and b.y.shape == (8, 15) and b.features.shape == (8, 5)
    ref = imgs[:8, 4:28, 4:28].astype(np.float32) / 255.0
    for c in range(3):
        np.testing.assert_allclose(b.x[:, c].numpy(), (ref - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b.y.numpy(), y[:8])
    assert list(b.index.numpy()) == list(range(8))


def test_resize_is_area_average():
    imgs, y, f = _data(4, 64)
    view = View(image_size=64, resize=16, crop=16, augment=False)
    b = next(iter(ResidentLoader(imgs, y, f, view, 4, "cpu", False, 0)))
    mean4 = imgs.reshape(4, 16, 4, 16, 4).mean((2, 4)) / 255.0
    np.testing.assert_allclose(b.x[:, 0].numpy(), (mean4 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], atol=1e-5)


def test_seeded_batches_and_augmentation():
    imgs, y, f = _data()
    view = View(32, 32, 24, augment=True)
    a = ResidentLoader(imgs, y, f, view, 8, "cpu", shuffle=True, seed=3)
    b = ResidentLoader(imgs, y, f, view, 8, "cpu", shuffle=True, seed=3)
    c = ResidentLoader(imgs, y, f, view, 8, "cpu", shuffle=True, seed=4)
    for epoch in (0, 1):
        for ld in (a, b, c):
            ld.set_epoch(epoch)
        ba, bb, bc = list(a), list(b), list(c)
        assert all(torch.equal(x.x, z.x) and torch.equal(x.index, z.index) for x, z in zip(ba, bb))
        assert not all(torch.equal(x.index, z.index) for x, z in zip(ba, bc))
        seen = torch.cat([x.index for x in ba]).sort().values
        assert torch.equal(seen, torch.arange(50))  # every image once per epoch
    a.set_epoch(0)
    e0 = [x.index for x in a]
    a.set_epoch(1)
    assert not all(torch.equal(x, z) for x, z in zip(e0, [x.index for x in a]))


def test_random_crop_and_flip_are_real_crops():
    imgs, y, f = _data(16, 32)
    view = View(32, 32, 20, augment=True)
    ld = ResidentLoader(imgs, y, f, view, 16, "cpu", shuffle=False, seed=0)
    x = next(iter(ld)).x[:, 0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    got = np.round(x * 255).astype(np.int64)
    flips = 0
    for i in range(16):
        found = None
        for oy in range(13):
            for ox in range(13):
                win = imgs[i, oy : oy + 20, ox : ox + 20].astype(np.int64)
                if np.array_equal(win, got[i]):
                    found = "plain"
                elif np.array_equal(win[:, ::-1], got[i]):
                    found = "flip"
        assert found is not None
        flips += found == "flip"
    assert 0 < flips < 16


def test_rows_select_a_split_from_shared_tensors():
    imgs, y, f = _data()
    rows = np.array([5, 9, 11, 40])
    ld = ResidentLoader(imgs, y, f, View(32, 32, 32, False), 3, "cpu", False, 0, rows=rows)
    bs = list(ld)
    assert len(ld) == 2 and [len(b.index) for b in bs] == [3, 1]
    np.testing.assert_array_equal(torch.cat([b.y for b in bs]).numpy(), y[rows])


class _Store:
    """A minimal stand-in for CacheStore: chunked reads of an in-memory array."""

    chunk_images = 8

    def __init__(self, imgs):
        self.imgs = imgs
        self.size = imgs.shape[1]
        self.reads = 0

    def read(self, positions):
        self.reads += 1
        return self.imgs[positions]


@pytest.mark.parametrize("shuffle", [False, True])
def test_streaming_loader_covers_every_image_once(shuffle):
    imgs, y, f = _data(50, 32)
    store = _Store(imgs)
    positions = np.arange(50)[::-1].copy()
    ld = StreamingLoader(
        store, positions, y, f, View(32, 32, 32, False), 7, "cpu", shuffle=shuffle, seed=1, buffer_chunks=2
    )
    batches = list(ld)
    idx = torch.cat([b.index for b in batches])
    assert sorted(idx.tolist()) == list(range(50))
    for b in batches:
        ref = imgs[positions[b.index.numpy()]].astype(np.float32) / 255
        np.testing.assert_allclose(b.x[:, 0].numpy(), (ref - IMAGENET_MEAN[0]) / IMAGENET_STD[0], atol=1e-5)
        np.testing.assert_array_equal(b.y.numpy(), y[b.index.numpy()])
    assert all(len(b.index) == 7 for b in batches[:-1])
    again = torch.cat([b.index for b in ld])
    assert torch.equal(idx, again)  # seeded
