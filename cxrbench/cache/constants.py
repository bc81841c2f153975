"""The cache format's fixed names and numbers, in a leaf module that both the store and its manifest reader
import (the store needs the manifest's layout check, the manifest needs the format's numbers)."""

FORMAT = "cxrbench-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES = "tables"
LOCK = ".lock"
# chosen by measurement (benchmarks/results/cache_layout-*.json): 64 images (4 MiB raw) per chunk, a
# byte-delta filter (pixel minus its left neighbour) and zstd level 1 - 45% smaller than zstd alone on
# the real PNGs at the same encode cost
CHUNK_IMAGES = 64
CODECS = "delta+zstd1"
MAX_CHUNK_BYTES = 2 << 30  # 64 images of at most 4096 x 4096 px are 1 GiB raw; a regular file, never a FIFO
