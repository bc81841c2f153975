"""Issue 24, class 7: every decoder backend gives the same verdict on PNGs that decoders used to disagree on (a bad
ancillary CRC, a second IHDR, IDAT chunks split by a tEXt chunk), and images of the metadata in neither official
list are counted, once."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import zlib

import numpy as np
import pytest

from cxrbench.cache.decode import available_decoders, decode_resized
from cxrbench.cache.png import DecodeError

from .pngutil import png_bytes


def _chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    good = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", good if crc is None else crc)


def _chunks(data: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos : pos + 12 + n])
        pos += 12 + n
    return out


def _image() -> bytes:
    rng = np.random.default_rng(0)
    return png_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8), idat_chunks=3)


def _bad_ancillary_crc() -> bytes:
    c = _chunks(_image())
    text = _chunk(b"tEXt", b"Comment\x00hello", crc=0)
    return b"\x89PNG\r\n\x1a\n" + c[0] + text + b"".join(c[1:])


def _second_ihdr() -> bytes:
    c = _chunks(_image())
    other = _chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + c[0] + other + b"".join(c[1:])


def _idat_split_by_text() -> bytes:
    c = _chunks(_image())  # IHDR, IDAT, IDAT, IDAT, IEND
    text = _chunk(b"tEXt", b"Comment\x00between")
    return b"\x89PNG\r\n\x1a\n" + c[0] + c[1] + text + b"".join(c[2:])


CASES = {
    "bad ancillary CRC": (_bad_ancillary_crc, "bad CRC in the tEXt chunk"),
    "second IHDR": (_second_ihdr, "an IHDR chunk at byte 33 that is not the first chunk"),
    "IDAT split by tEXt": (_idat_split_by_text, "the IDAT chunks are not consecutive ('tEXt' chunk before"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_backend_gives_the_same_verdict(case):
    make, reason = CASES[case]
    data = make()
    verdicts = {}
    for backend in available_decoders():
        try:
            decode_resized(backend, data, 8)
            verdicts[backend] = "accepted"
        except DecodeError as e:
            verdicts[backend] = str(e)
    assert len(available_decoders()) >= 2, verdicts  # cxr and pillow at least
    assert set(verdicts.values()) == {verdicts["cxr"]}, verdicts
    assert reason in verdicts["cxr"], verdicts


def test_the_same_file_without_the_fault_decodes_alike_everywhere():
    data = _image()
    c = _chunks(data)
    with_text = b"\x89PNG\r\n\x1a\n" + c[0] + _chunk(b"tEXt", b"Comment\x00ok") + b"".join(c[1:])
    for d in (data, with_text):
        pixels = {b: decode_resized(b, d, 8).pixels.tobytes() for b in available_decoders()}
        assert len(set(pixels.values())) == 1


def test_images_in_neither_official_list_are_counted_once(synth_dir, tmp_path, capfd):
    from cxrbench.cli import main
    from cxrbench.data.dataset import open_dataset
    from cxrbench.protocols import get_protocol

    data = tmp_path / "data"
    data.mkdir()
    for f in synth_dir.iterdir():
        if f.is_file():
            shutil.copy(f, data / f.name)
    lists = sorted(data.glob("train_val_list.txt*"))
    assert lists, sorted(p.name for p in data.iterdir())
    tv = lists[0]
    raw = tv.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    names = (gzip.decompress(raw) if gz else raw).decode().split()
    kept = "\n".join(names[3:]) + "\n"
    tv.write_bytes(gzip.compress(kept.encode()) if gz else kept.encode())
    s = open_dataset(data).splits(get_protocol("smoke"))
    assert s.unlisted == 3
    with pytest.raises(SystemExit):
        main(["splits", "--data-dir", str(data), "--protocol", "smoke"])
    out, err = capfd.readouterr()
    said = [line for line in (out + err).splitlines() if "in neither official list" in line]
    assert len(said) == 1 and said[0].startswith("3 image(s)")
    with pytest.raises(SystemExit):
        main(["splits", "--data-dir", str(data), "--protocol", "smoke", "--json"])
    out, _ = capfd.readouterr()
    assert json.loads(out)["unlisted"] == 3
    s = open_dataset(synth_dir).splits(get_protocol("smoke"))
    assert s.unlisted == 0 and s.unlisted_note() is None
