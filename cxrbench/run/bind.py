"""Stage 1, bind: resolve the options (protocol, learning rate, model, device), open the cache, bind the
protocol's splits to cache positions, take the labels and features of the run's images, and build the model
once - so that missing ImageNet weights or a plugin's bad CAM layer stop the run in seconds, before any image
is loaded or any folder is written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cxrbench.errors import CacheError
from cxrbench.run.context import Bound, PreparedModel, RunContext, RunState
from cxrbench.run.options import RunOptions, resolve_device, run_id_of
from cxrbench.run.timing import StageClock


def bind(opts: RunOptions, display=None, dist=None, build_model: bool = True) -> RunContext:
    """Everything a run needs before it touches pixels; `build_model=False` skips the model check (galleries and
    other readers of a finished run)."""
    from cxrbench.cache.store import open_cache
    from cxrbench.models import get_spec
    from cxrbench.models.plugins import load_plugins
    from cxrbench.protocols import get_protocol

    clock = StageClock()
    load_plugins(opts.plugins)
    protocol = get_protocol(opts.protocol)
    lr = protocol.lr(opts.lr)
    run_id = run_id_of(opts, protocol, lr)  # before anything is opened or written
    spec = get_spec(opts.model)
    if dist is not None:
        from cxrbench.engine.distributed import check_batch

        check_batch(protocol.batch_size, dist.world)
    device = dist.device if dist is not None else resolve_device(opts.device)
    store = open_cache(opts.cache)
    bound = bind_cache(store, protocol)
    ctx = RunContext(
        opts=opts,
        protocol=protocol,
        spec=spec,
        lr=lr,
        pretrained=protocol.pretrained if opts.pretrained is None else opts.pretrained,
        device=device,
        store=store,
        bound=bound,
        labels=bound.metadata.labels(protocol.num_classes)[bound.rows],
        features=bound.metadata.features()[bound.rows],
        run_id=run_id,
        dir=Path(opts.out) / run_id,
        dist=dist,
        display=display if dist is None or dist.rank == 0 else None,
        state=RunState(clock=clock),
    )
    note = bound.splits.unlisted_note()
    if note and build_model:  # said once, by the run that trains (not by readers of a finished run)
        ctx.info(note)
    if build_model:
        prepared = ctx.state.prepared = prepare_model(ctx, ctx.seed)  # fold 0's seed: the training seed
        ctx = replace(ctx, weights_info=getattr(prepared.model, "cxrbench_weights", {"pretrained": False}))
    clock.add("bind", clock.wall())
    return ctx


def check_cache(store, protocol) -> None:
    """The cache must hold images as the protocol needs them (every such check lives here)."""
    if protocol.image_size != store.size:
        raise CacheError(
            f"{store.path}: images are {store.size} px, protocol {protocol.key} needs "
            f"{protocol.image_size} px (cache build --size {protocol.image_size})"
        )
    from cxrbench.cache.resample import manifest_resample

    made = manifest_resample(store.manifest["params"])
    if protocol.resample != made:
        raise CacheError(
            f"{store.path}: images were resampled with {made}, protocol {protocol.key} needs "
            f"{protocol.resample} (cache build --resample {protocol.resample})"
        )


def bind_cache(store, protocol) -> Bound:
    """Splits of `protocol` from the cache's stored tables, mapped to cache positions."""
    from cxrbench.data.dataset import open_dataset, splits_for
    from cxrbench.data.labels import class_names

    check_cache(store, protocol)
    ds = open_dataset(store.tables_dir())
    s = splits_for(ds.metadata, ds.layout, protocol)
    need = np.union1d(s.trainval, s.test)
    names = ds.metadata.names
    pos_of = {n: i for i, n in enumerate(store.names())}
    bad = store.bad()
    keep = np.array([names[r] not in bad for r in need], dtype=bool)
    rows = need[keep]
    missing = [names[r] for r in rows if names[r] not in pos_of]
    if missing:
        raise CacheError(
            f"{store.path}: {len(missing)} images that protocol {protocol.key} needs are not in this "
            f"cache (e.g. {missing[0]}); it was built with --subset "
            f"{store.manifest['params']['subset']} - rebuild with --subset all"
        )
    positions = np.array([pos_of[names[r]] for r in rows], dtype=np.int64)
    return Bound(
        store, ds.metadata, s, class_names(protocol.num_classes), ds.layout, rows, positions, int((~keep).sum())
    )


def split_hashes(b: Bound) -> dict:
    """sha256 (16 hex digits) of the sorted image names of every split: what a record says it trained on."""
    from cxrbench.results.record import split_hashes as hashes

    return hashes(b.metadata.names, b.splits)


def new_model(ctx: RunContext, pretrained: bool | str):
    """A freshly built model of the run (on the CPU), checked by the registry if it is a plugin."""
    from cxrbench.models import create_model

    return create_model(ctx.opts.model, num_classes=ctx.protocol.num_classes, pretrained=pretrained)


def pretrained_arg(ctx: RunContext) -> bool | str:
    """What `create_model` gets for `pretrained`: False, True (ImageNet) or the --weights file."""
    return ctx.opts.weights if (ctx.pretrained and ctx.opts.weights) else bool(ctx.pretrained)


def prepare_model(ctx: RunContext, seed: int) -> PreparedModel:
    """Build the model as the training with `seed` will (weights loaded, plugin checks run) and keep it."""
    import torch

    torch.manual_seed(seed)
    model = new_model(ctx, pretrained_arg(ctx))
    return PreparedModel(model, seed, torch.get_rng_state())
