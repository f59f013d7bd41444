"""Image classification (``task.name: image``): single- or multi-label, from an image folder, a
``path,label`` manifest or IDX files, with any local Hugging Face image-classification model
(ViT, ResNet, ConvNeXt, ...) or the packaged EfficientNet-Lite0.

Everything about labels, decoding, thresholds, scores, margins, the confusion matrix and run
comparison is text classification's (``ClassifyTask``); this module holds what is the image's own:
reading, preprocessing, augmentation, the model, check-data and the report's grid of mistakes.

Preprocessing reads the model's own image processor (size, resample, rescale, mean, std), and does
the steps by hand with PIL and numpy rather than calling the processor: the processor resizes and
normalises in one call, while training needs the resized uint8 pixels in between (kept in memory
when they fit ``task.memory_mb``, and augmented per batch in ``training_collate``). Augmentation is
never applied in ``collate``, which evaluation and prediction use.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from runassist.config import TaskSection
from runassist.data.checks import CheckReport, SplitStats, percentiles
from runassist.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageExample,
    image_format,
    open_image,
    pil_image,
    read_folder,
    read_idx,
    read_manifest,
)
from runassist.data.records import Split
from runassist.errors import DataError, RunassistError
from runassist.tasks.base import Capabilities, Feature, TaskState
from runassist.tasks.classify import ClassifyTask, LabelPrediction

AUGMENTATIONS = ("flip", "crop", "color")
TINY = 16  # pixels on the shorter side: check-data warns below this
MISTAKES_SHOWN = 24  # thumbnails in the report's grid


class ImageSection(TaskSection):
    name: Literal["image"] = "image"
    multi_label: bool = Field(False, description="an image may carry several labels (sigmoid + thresholds tuned "
                                                 "on dev)")
    augment: list[Literal["flip", "crop", "color"]] = Field(
        default_factory=list, description="training-time augmentation, any of: flip (horizontal), crop (pad by "
                                          "1/8 and crop back), color (brightness and contrast); never at evaluation")
    image_size: int | None = Field(None, ge=8, le=1024, description="resize to this square size instead of the "
                                                                     "model's own (smaller trains faster on a CPU; "
                                                                     "ViT needs its own)")
    path_column: str = Field("path", description="manifest (CSV/JSONL) column holding the image path, relative to "
                                                 "the manifest")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="width x height above which an image is refused "
                                                                   "(decompression bombs), read from its header")
    memory_mb: int = Field(2048, ge=0, description="keep a split's resized pixels in memory up to this size; above "
                                                   "it, images are decoded from their files for every batch")


@dataclass(frozen=True)
class Prep:
    """What the model's processor says about its input."""

    height: int
    width: int
    resize_to: tuple[int, int] | int | None  # (h, w), or an int: the shorter side (then center crop)
    mean: np.ndarray
    std: np.ndarray
    scale: float
    resample: int
    channels: int

    @classmethod
    def of(cls, processor: Any, channels: int = 3) -> Prep:
        size = dict(getattr(processor, "size", None) or {"height": 224, "width": 224})
        crop = dict(getattr(processor, "crop_size", None) or {}) if getattr(processor, "do_center_crop", False) else {}
        if "height" in size:
            resize: tuple[int, int] | int | None = (int(size["height"]), int(size["width"]))
            height, width = resize
        else:
            edge = int(size.get("shortest_edge") or 224)
            crop_pct = getattr(processor, "crop_pct", None)
            if crop_pct and edge < 384:  # ConvNeXt: resize to edge / crop_pct, then crop edge
                resize, height, width = int(edge / crop_pct), edge, edge
            elif crop:
                resize, height, width = edge, int(crop["height"]), int(crop["width"])
            else:
                resize, height, width = (edge, edge), edge, edge
        if not getattr(processor, "do_resize", True):
            resize = None
        normalise = getattr(processor, "do_normalize", True)
        mean = np.asarray(getattr(processor, "image_mean", None) or [0.5] * channels, dtype=np.float32)
        std = np.asarray(getattr(processor, "image_std", None) or [0.5] * channels, dtype=np.float32)
        if not normalise:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        scale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        return cls(height, width, resize, mean[:channels], std[:channels], scale,
                   int(getattr(processor, "resample", 2) or 2), channels)


class ImageTask(ClassifyTask):
    name = "image"
    Section = ImageSection
    capabilities = Capabilities(onnx=True, int8_guard=True)
    peft_task_type = None  # the head is replaced by runassist; freeze layers with train.freeze instead
    tool_name = "classify_image"
    media = "image"
    media_suffixes = IMAGE_SUFFIXES

    def __init__(self, section: ImageSection, data: Any, model: Any):
        super().__init__(section, data, model)  # multi_label, headline: as text classification
        self.curve_extras = ("macro_f1",)
        self._channels = 3

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name, "augment": ["flip", "crop"], "image_size": 64},
                "model": {"source": "efficientnet-lite0"},
                "data": {"train": "fashion-mnist:train", "dev": "fashion-mnist:dev", "test": "fashion-mnist:test",
                         "max_train_examples": 6000, "max_eval_examples": 1000},
                "train": {"epochs": 2, "lr": 1e-3, "batch_size": 32}}

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        fmt = self.data_cfg.format if self.data_cfg.format != "auto" else image_format(path)
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if require_labels:
                raise DataError(path, None, "one image has no label; give a folder <split>/<label>/*.png or a "
                                            "path,label manifest")
            return Split(str(path), [ImageExample(name=str(path), path=str(path), source=str(path))])
        if fmt == "folder":
            examples = read_folder(path, require_labels=require_labels)
        elif fmt == "idx":
            examples = read_idx(path, require_labels=require_labels)
        elif fmt in ("csv", "tsv", "jsonl"):
            examples = read_manifest(path, fmt, path_column=self.task_cfg.path_column,
                                     label_column=self.data_cfg.label_column, separator=self.data_cfg.label_separator,
                                     multi_label=self.multi_label, require_labels=require_labels)
        else:
            raise DataError(path, None, "expected an image folder (<label>/*.png), a CSV/JSONL manifest of "
                                        "path,label, or IDX files (*-images-idx3-ubyte.gz)")
        return Split(str(path), examples)

    def unlabelled(self, example: ImageExample) -> ImageExample:
        return dataclasses.replace(example, labels=())

    def media_example(self, data: bytes, name: str) -> ImageExample:
        # Decoded once here so that a bad upload is refused before it is queued: header first, then the pixels.
        open_image(data, name, max_pixels=self.task_cfg.max_pixels)
        return ImageExample(name=name, data=data, source=name)

    def example_from_input(self, item: Any) -> ImageExample:
        if isinstance(item, ImageExample):
            return item
        raise ValueError('an image input is an object {"base64": "<image bytes in base64>", "name": "a.png"}')

    def input_columns(self) -> list[str]:
        return [self.task_cfg.path_column]

    def example_from_row(self, row: dict[str, str]) -> ImageExample:
        path = row.get(self.task_cfg.path_column) or ""
        return ImageExample(name=path, path=path, source=path)

    def export_probe(self) -> list[ImageExample]:
        """Two images of different sizes and modes (the graph sees the preprocessed, equal-sized pixels)."""
        import io

        from PIL import Image

        out = []
        for size, mode in (((40, 30), "RGB"), ((20, 24), "L")):
            buffer = io.BytesIO()
            rng = np.random.default_rng(size[0])
            pixels = rng.integers(0, 255, (size[1], size[0], 3 if mode == "RGB" else 1), dtype=np.uint8)
            Image.fromarray(pixels.squeeze()).convert(mode).save(buffer, format="PNG")
            out.append(ImageExample(name=f"probe-{mode}.png", data=buffer.getvalue()))
        return out

    # -- preprocessing ------------------------------------------------------
    def load_processor(self, source: str) -> Any:
        from transformers import AutoImageProcessor

        from runassist.tasks.hf import _loading, quiet_transformers

        quiet_transformers()
        with _loading(source, "image processor"):
            processor = AutoImageProcessor.from_pretrained(source)
        config = Path(source) / "config.json"
        if config.is_file():  # a grayscale model (num_channels: 1) gets L, every other RGB
            try:
                self._channels = int(json.loads(config.read_text(encoding="utf-8")).get("num_channels") or 3)
            except (OSError, ValueError):
                pass
        size = self.task_cfg.image_size
        if size:  # saved with the model, so predict and serve resize the same way
            processor.size = {"height": size, "width": size}
            if getattr(processor, "do_center_crop", False):
                processor.do_center_crop = False
            if hasattr(processor, "crop_pct"):
                processor.crop_pct = None
        return processor

    def check_source(self, source: str) -> None:
        super().check_source(source)
        if not (Path(source) / "preprocessor_config.json").is_file() and Path(source).is_dir():
            raise RunassistError(f"model.source: '{source}' has no preprocessor_config.json (the image processor: "
                                 "size, mean and std the model was trained with)")

    def _pixels(self, example: ImageExample, prep: Prep) -> np.ndarray:
        """One image as resized uint8 pixels, H x W x C, in the mode the model takes."""
        from PIL import Image, ImageOps

        try:
            image = pil_image(example, max_pixels=self.task_cfg.max_pixels)
        except ValueError as exc:
            raise DataError(example.source or example.name, None, str(exc)) from None
        image = ImageOps.exif_transpose(image)
        image = to_mode(image, "L" if prep.channels == 1 else "RGB")
        if prep.resize_to is not None:
            if isinstance(prep.resize_to, int):
                w, h = image.size
                short = prep.resize_to
                # the longer side truncated, as transformers' get_resize_output_image_size does
                image = image.resize((max(short, int(w * short / min(w, h))), max(short, int(h * short / min(w, h)))),
                                     resample=Image.Resampling(prep.resample))
            else:
                image = image.resize((prep.resize_to[1], prep.resize_to[0]), resample=Image.Resampling(prep.resample))
        w, h = image.size
        if (h, w) != (prep.height, prep.width):  # center crop (or pad, for a smaller image)
            image = ImageOps.pad(image, (max(w, prep.width), max(h, prep.height)))
            w, h = image.size
            left, top = (w - prep.width) // 2, (h - prep.height) // 2
            image = image.crop((left, top, left + prep.width, top + prep.height))
        arr = np.asarray(image, dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    def encode(self, examples: Sequence[ImageExample], processor: Any, state: TaskState) -> list[Feature]:
        """One feature per image: its resized pixels when the split fits ``task.memory_mb``, else the
        example itself (decoded again in every batch)."""
        labels = state.labels or []
        label2id = {label: i for i, label in enumerate(labels)}
        prep = self._prep(processor)
        in_memory = len(examples) * prep.height * prep.width * prep.channels <= self.task_cfg.memory_mb * 2 ** 20
        features = []
        for index, ex in enumerate(examples):
            inputs = {"pixels": self._pixels(ex, prep)} if in_memory else {"image": ex}
            features.append(Feature(example=index, inputs=inputs, target=self._target(ex, label2id, labels),
                                    meta={"window": 0, "windows": 1, "truncated": False}, size=1))
        return features

    def _prep(self, processor: Any) -> Prep:
        return Prep.of(processor, channels=self._channels)

    def _batch_pixels(self, features: Sequence[Feature], prep: Prep) -> list[np.ndarray]:
        return [f.inputs["pixels"] if "pixels" in f.inputs else self._pixels(f.inputs["image"], prep)
                for f in features]

    def _batch(self, features: Sequence[Feature], pixels: list[np.ndarray], prep: Prep) -> dict[str, torch.Tensor]:
        x = np.stack(pixels).astype(np.float32) * prep.scale
        x = (x - prep.mean) / prep.std
        batch = {"pixel_values": torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))}
        if all(f.target is not None for f in features):
            dtype = torch.float32 if self.multi_label else torch.long
            batch["labels"] = torch.tensor([f.target for f in features], dtype=dtype)
        return batch

    def collate(self, features: Sequence[Feature], processor: Any) -> dict[str, torch.Tensor]:
        prep = self._prep(processor)
        return self._batch(features, self._batch_pixels(features, prep), prep)

    def training_collate(self, features: Sequence[Feature], processor: Any, rng: Any) -> dict[str, torch.Tensor]:
        prep = self._prep(processor)
        pixels = [augment(p, self.task_cfg.augment, rng) for p in self._batch_pixels(features, prep)]
        return self._batch(features, pixels, prep)

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from runassist.tasks.image_models import is_lite_folder, load_lite

        labels = state.labels or []
        if is_lite_folder(source):
            try:
                model = load_lite(source, labels, image_size=self.task_cfg.image_size, dropout=dropout)
            except ValueError as exc:
                raise RunassistError(f"model.source: {exc}") from None
            self._channels = 3
            return model
        from transformers import AutoModelForImageClassification

        from runassist.tasks.hf import load_model

        problem = "multi_label_classification" if self.multi_label else "single_label_classification"
        model = load_model(AutoModelForImageClassification, source, labels, dropout=dropout, problem_type=problem)
        self._channels = int(getattr(model.config, "num_channels", 3) or 3)
        return model

    # -- outputs ------------------------------------------------------------
    def to_json(self, example: ImageExample, prediction: LabelPrediction) -> dict[str, Any]:
        return {"file": example.name, **super().to_json(example, prediction)}

    def gold_json(self, example: ImageExample) -> dict[str, Any]:
        # "source" locates the pixels again (a file, or IDX file#index) for the report's thumbnails.
        return {"file": example.name, "source": example.path or example.source, "gold": list(example.labels)}

    def overlap_key(self, example: ImageExample) -> str:
        try:
            return example.content_hash()
        except (DataError, ValueError):
            return f"unreadable:{example.source}"

    # -- check-data -----------------------------------------------------------
    def split_stats(self, spec: str, examples: Sequence[ImageExample]) -> SplitStats:
        stats = super(ClassifyTask, self).split_stats(spec, examples)
        return stats

    def check_processor(self, name: str, examples: Sequence[ImageExample], processor: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Every image opened in full: unreadable or truncated files (named), modes (converted to the
        model's), tiny images; sizes as percentiles of the shorter side."""
        modes: dict[str, int] = {}
        sides, tiny, bad = [], [], 0
        for ex in examples:
            try:
                image = pil_image(ex, max_pixels=self.task_cfg.max_pixels)
            except (ValueError, DataError) as exc:
                bad += 1
                if bad <= 20:
                    report.errors.append(f"{name}: {exc}" if ex.source in str(exc) else f"{ex.source}: {exc}")
                continue
            modes[image.mode] = modes.get(image.mode, 0) + 1
            side = min(image.size)
            sides.append(side)
            if side < TINY:
                tiny.append(ex.source)
        if bad > 20:
            report.errors.append(f"{name}: {bad - 20} more unreadable images ({bad} in all)")
        stats.length = percentiles(sides)
        target = "L" if self._channels == 1 else "RGB"
        if len(modes) > 1:  # one mode throughout (grayscale digits) is converted just the same, and is no surprise
            counts = ", ".join(f"{mode} {n}" for mode, n in sorted(modes.items()))
            report.warnings.append(f"{name}: image modes {counts}; all are converted to {target} for the model "
                                   "(transparency over white)")
        if tiny:
            report.warnings.append(f"{name}: {len(tiny)} images smaller than {TINY} pixels on a side (e.g. {tiny[0]}); "
                                   f"they are upscaled to {self._prep(processor).height}")

    # -- report ---------------------------------------------------------------
    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        from runassist.tasks.image_report import errors_section

        return errors_section(scores, predictions, images, shown=MISTAKES_SHOWN)

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        return {"type": "object", "description": "an image file, base64-encoded",
                "properties": {"base64": {"type": "string", "description": "the file's bytes in base64 (a data: URL "
                                                                           "prefix such as data:image/png;base64, is "
                                                                           "accepted)"},
                               "name": {"type": "string", "description": "the file name, echoed in the answer"}},
                "required": ["base64"], "additionalProperties": False}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        kind = "Assign zero or more of these labels to each image" if self.multi_label else \
            "Classify each image as one of these labels"
        return (f"{kind} {about}: {', '.join(labels or [])}. Each input is an image file in base64. Returns one "
                "prediction per input, in order: file, labels" + ("" if self.multi_label else ", label") +
                " and probs (every label's probability, highest first).")


def to_mode(image: Any, mode: str) -> Any:
    """Any PIL mode as ``mode`` ("RGB" or "L"): transparency (RGBA, LA, P with a transparent colour)
    composited over white, since the colour under a transparent pixel is arbitrary (often black);
    CMYK and 16-bit modes through PIL's conversions."""
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() or 1.0
        image = Image.fromarray((arr * (255.0 / top)).astype(np.uint8))
    if image.mode == "F":
        image = image.convert("L")
    return image if image.mode == mode else image.convert(mode)


def augment(pixels: np.ndarray, kinds: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One training image, augmented by ``kinds`` with draws from ``rng`` (the trainer's, per batch)."""
    out = pixels
    if "flip" in kinds and rng.random() < 0.5:
        out = out[:, ::-1]
    if "crop" in kinds:
        h, w = out.shape[:2]
        pad = max(1, min(h, w) // 8)
        padded = np.pad(out, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        top, left = rng.integers(0, 2 * pad + 1, size=2)
        out = padded[top:top + h, left:left + w]
    if "color" in kinds:
        brightness, contrast = rng.uniform(0.8, 1.2, size=2)
        x = out.astype(np.float32) * brightness
        mean = x.mean()
        out = np.clip((x - mean) * contrast + mean, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)
