"""Tiny image models and image data sets for the image tests and the contract test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# Told apart by brightness, which survives conversion to grayscale, CMYK and back.
COLOURS = {"light": (220, 190, 170), "dark": (50, 40, 60)}


def build_tiny_vit_dir(folder: Path, *, size: int = 16, mean: float = 0.4, std: float = 0.3) -> Path:
    """A 2-layer ViT (hidden 32, 8 x 8 patches) with a processor whose mean and std are not ImageNet's."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=size, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=2)
    ViTForImageClassification(config).save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": size, "width": size}, image_mean=[mean] * 3,
                      image_std=[std] * 3).save_pretrained(folder)
    return folder


def build_tiny_lite_dir(folder: Path) -> Path:
    """An EfficientNet-Lite0-shaped folder with random weights (the packaged one's layout, 4.7M parameters)."""
    import json

    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = EfficientNet.from_name("efficientnet-lite0", image_size=32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"runassist_arch": "efficientnet-lite0", "image_size": 224,
                                                    "num_labels": 1000}), encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.498] * 3, "image_std": [0.502] * 3}), encoding="utf-8")
    return folder


def colour_image(label: str, seed: int, size: tuple[int, int] = (20, 20), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """A noisy square of the label's colour, in ``mode``, encoded as ``fmt``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[label], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_image_folder(root: Path, n_per_class: int, seed: int) -> Path:
    for label in COLOURS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            (root / label / f"{label}{i}.png").write_bytes(colour_image(label, seed * 1000 + i))
    return root
