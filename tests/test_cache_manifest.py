"""The cache manifest's one parser (`cxrbench.cache.manifest.Manifest.from_dict`): typed fields of a built
cache, and every way `open_cache` refuses a manifest refused by the parser with the same reason."""

import json

import pytest

from cxrbench.cache.manifest import Manifest
from cxrbench.cache.store import MANIFEST, open_cache
from cxrbench.errors import CacheError


def test_a_built_cache_parses_typed(synth_cache):
    m = json.loads((synth_cache / MANIFEST).read_text())
    man = Manifest.from_dict(m, synth_cache)
    store = open_cache(synth_cache)
    assert (man.n_images, man.size, man.chunk_images) == (store.n_images, store.size, store.chunk_images)
    assert man.chunk_count == len(man.checksums) and set(man.bad_images) == store.bad()
    assert man.raw == store.manifest
    with pytest.raises(AttributeError):
        man.size = 1  # frozen


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda m: m.update(format="other"), "not a cxrbench cache"),
        (lambda m: m.update(format_version=99), "format version 99"),
        (lambda m: m.update(complete=False), "not complete"),
        (lambda m: m["params"].update(size="64"), "damaged manifest"),
        (lambda m: m["chunks"].update(count=m["chunks"]["count"] + 1), "damaged manifest"),
        (lambda m: m["params"].update(codecs="gzip"), "damaged manifest"),
        (lambda m: m["chunks"].update(checksums=[]), "damaged manifest"),
    ],
)
def test_bad_manifests_are_refused(synth_cache, edit, reason):
    m = json.loads((synth_cache / MANIFEST).read_text())
    edit(m)
    with pytest.raises(CacheError, match=reason):
        Manifest.from_dict(m, synth_cache)
