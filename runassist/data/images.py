"""Image data: an image folder (``split/<label>/*.png``), a CSV/JSONL manifest of ``path,label``
(paths relative to the manifest), or MNIST-style IDX files; and the one place an image's bytes are
opened, with the pixel limit checked from the header before anything is decoded.

An ``ImageExample`` holds where its pixels are (a file path, uploaded bytes, or an IDX array), not
the decoded image: decoding happens when the task encodes, so a split of 60,000 files costs a list
of paths until then.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runassist.data.io import media_files
from runassist.data.tabular import table_records, text_format
from runassist.errors import DataError, MediaTooLarge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# PIL's own guard is 89M pixels (a warning) and twice that (an error); a classifier never needs that
# many, and a 10,000 x 10,000 PNG of a few hundred KB would take 300 MB to decode.
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True, eq=False)
class ImageExample:
    """One image: exactly one of ``path`` (a file), ``data`` (bytes: an upload, base64) or ``pixels``
    (an HxW or HxWxC uint8 array: IDX files) says where it is. ``name`` is what outputs call it."""

    name: str
    labels: tuple[str, ...] = ()
    path: str | None = None
    data: bytes | None = None
    pixels: np.ndarray | None = None
    source: str = ""  # "manifest:line" or the file, for messages

    def raw(self) -> bytes:
        """The encoded bytes (file or upload); IDX pixels have none."""
        if self.data is not None:
            return self.data
        if self.path is not None:
            try:
                return Path(self.path).read_bytes()
            except OSError as exc:
                raise DataError(self.path, None, f"cannot read the image ({exc.strerror})") from None
        raise ValueError("an IDX image has no file bytes")

    def content_hash(self) -> str:
        """SHA-256 of the pixels' source (file bytes, or the array): duplicates across splits."""
        if self.pixels is not None:
            return hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes()).hexdigest()
        return hashlib.sha256(self.raw()).hexdigest()


def open_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Bytes -> a fully decoded PIL image. The size is read from the header first: over ``max_pixels``
    raises MediaTooLarge before any pixel is decoded (decompression bombs); unreadable or truncated
    data raises ValueError naming ``name``."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL's own guard (Image.MAX_IMAGE_PIXELS) is applied below, as an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not an image PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"{name}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{name}: unreadable image ({exc})") from None
    width, height = image.size
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise MediaTooLarge(f"{name}: {width}x{height} is {width * height:,} pixels; at most {limit:,}")
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"{name}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated files, broken chunks
        raise ValueError(f"{name}: truncated or corrupt image ({exc})") from None
    return image


def pil_image(example: ImageExample, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """The example's image as PIL, in its own mode (L, RGB, RGBA, CMYK, P, ...)."""
    from PIL import Image

    if example.pixels is not None:
        return Image.fromarray(example.pixels)
    return open_image(example.raw(), example.path or example.name, max_pixels=max_pixels)


# -- readers ------------------------------------------------------------------------------------

def image_format(path: Path) -> str | None:
    """folder, csv, tsv, jsonl, idx, or None."""
    if path.is_dir():
        return "folder"
    if is_idx(path):
        return "idx"
    return text_format(path)


def read_folder(root: Path, *, require_labels: bool = True) -> list[ImageExample]:
    """``root/<label>/**/*.png``: the sub-folder is the label; files in sorted order. Loose images in
    ``root`` are unlabelled (prediction only)."""
    out: list[ImageExample] = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in media_files(label_dir, IMAGE_SUFFIXES):
            out.append(ImageExample(name=str(file), labels=(label_dir.name,), path=str(file), source=str(file)))
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        if require_labels:
            raise DataError(loose[0], None, "an image outside any label folder; put it in <folder>/<label>/")
        out += [ImageExample(name=str(p), path=str(p), source=str(p)) for p in loose]
    return out


def read_manifest(path: Path, fmt: str, *, path_column: str, label_column: str, separator: str | None,
                  multi_label: bool, require_labels: bool = True) -> list[ImageExample]:
    """CSV/TSV/JSONL rows of ``path,label`` (paths relative to the manifest). Multi-label: a JSON list,
    or labels joined by ``separator`` in CSV."""
    from runassist.data.tabular import _labels  # one label parser for text and images

    header, records = table_records(str(path), fmt)
    if header is not None and path_column not in header:
        raise DataError(path, 1, f"no column '{path_column}' (data.text_column names the image path column); "
                                 f"columns: {', '.join(header)}")
    out = []
    for line, record in records:
        where = line if line is not None else None
        value = record.get(path_column)
        if not isinstance(value, str) or not value.strip():
            raise DataError(path, where, f"'{path_column}' must be an image path")
        file = (path.parent / value.strip()).resolve()
        labels: tuple[str, ...] = ()
        if label_column in record and record[label_column] not in (None, ""):
            labels = _labels(record[label_column], path=str(path), line=where, multi_label=multi_label,
                             separator=separator)
        elif require_labels:
            raise DataError(path, where, f"no label (column '{label_column}')")
        source = f"{path}:{line}" if line is not None else f"{path}:#{len(out)}"
        out.append(ImageExample(name=value.strip(), labels=labels, path=str(file), source=source))
    return out


# -- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def is_idx(path: Path) -> bool:
    name = path.name.lower()
    return "-idx" in name and (name.endswith(".gz") or "ubyte" in name)


def read_idx_array(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or raw) as an array; a bad header names the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(path, None, f"cannot read the IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(path, None, "not an IDX file (expected a 0x0000 magic number and a type byte)")
    dims = raw[3]
    shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 0
    body = raw[4 + 4 * dims:]
    if len(body) != count * dtype.itemsize:
        raise DataError(path, None, f"IDX header says {shape} ({count * dtype.itemsize} bytes) but the file holds "
                                    f"{len(body)}; truncated?")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def labels_file(images: Path) -> Path:
    """``train-images-idx3-ubyte.gz`` -> ``train-labels-idx1-ubyte.gz`` beside it."""
    return images.with_name(images.name.replace("images-idx3", "labels-idx1"))


def read_idx(images: Path, *, names: list[str] | None = None, require_labels: bool = True,
             indices: np.ndarray | None = None) -> list[ImageExample]:
    """An IDX image file and its labels file (found by name beside it). ``names``: class names by
    label number (Fashion-MNIST's); otherwise the numbers are the labels. ``indices``: only these."""
    pixels = read_idx_array(images)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise DataError(images, None, f"expected N x H x W uint8 images, found {pixels.shape} {pixels.dtype}")
    labels_path = labels_file(images)
    labels = None
    if labels_path.exists():
        labels = read_idx_array(labels_path)
        if labels.shape != (len(pixels),):
            raise DataError(labels_path, None, f"{labels.shape[0]} labels for {len(pixels)} images in {images.name}")
    elif require_labels:
        raise DataError(images, None, f"no labels file {labels_path.name} beside it")
    chosen = range(len(pixels)) if indices is None else indices
    out = []
    for i in chosen:
        i = int(i)
        label: tuple[str, ...] = ()
        if labels is not None:
            number = int(labels[i])
            label = (names[number] if names else str(number),)
        out.append(ImageExample(name=f"{images.name}#{i}", labels=label, pixels=pixels[i],
                                source=f"{images}#{i}"))
    return out
