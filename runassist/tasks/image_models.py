"""EfficientNet-Lite0 as a model folder like any other: ``config.json`` (``"runassist_arch":
"efficientnet-lite0"``), ``model.safetensors`` and ``preprocessor_config.json``.

The model code is the ``efficientnet_lite_pytorch`` package (no torchvision: its wheels do not import
with the CPU torch pinned here). transformers has no EfficientNet-Lite class (its EfficientNet is B0-B7,
with swish and squeeze-excitation), so the wrapper below gives the package's network what the rest of
runassist expects of a model: ``forward(pixel_values) -> .logits``, ``save_pretrained``, a
``base_model_prefix`` naming the backbone (``train.freeze: head_only`` freezes it) and a new head
sized for the user's classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

ARCH_KEY = "runassist_arch"
ARCH = "efficientnet-lite0"


def is_lite_folder(source: str | Path) -> bool:
    config = Path(source) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get(ARCH_KEY) == ARCH
    except (OSError, ValueError):
        return False


class LiteOutput(dict):
    """``.logits`` as transformers' outputs have it (a dict too, so tracing keeps it)."""

    @property
    def logits(self) -> torch.Tensor:
        return self["logits"]


class EfficientNetLiteClassifier(torch.nn.Module):
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.config = dict(config)
        # image_size fixes the "same" padding of every convolution for that input size (TF's rule).
        self.backbone = EfficientNet.from_name(ARCH, image_size=int(config["image_size"]))
        features = self.backbone._fc.in_features
        self.backbone._fc = torch.nn.Identity()  # the ImageNet head goes; ours follows the backbone's dropout
        self.classifier = torch.nn.Linear(features, int(config["num_labels"]))

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> LiteOutput:
        return LiteOutput(logits=self.classifier(self.backbone(pixel_values)))

    def save_pretrained(self, folder: str | Path, safe_serialization: bool = True, **_: Any) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))


def load_lite(source: str | Path, labels: list[str], *, image_size: int | None = None,
              dropout: float | None = None) -> EfficientNetLiteClassifier:
    """A lite0 folder: the packaged ImageNet weights (no head kept) or a trained run's model (its head
    kept when its labels are these)."""
    from safetensors.torch import load_file

    source = Path(source)
    saved = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config = {ARCH_KEY: ARCH, "image_size": int(image_size or saved.get("image_size", 224)),
              "num_labels": len(labels), "id2label": dict(enumerate(labels))}
    model = EfficientNetLiteClassifier(config)
    weights = load_file(str(source / "model.safetensors"))
    if any(k.startswith("backbone.") for k in weights):  # a trained run's model
        same_head = saved.get("id2label") and list(saved["id2label"].values()) == list(labels)
        if not same_head:
            weights = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
    else:  # the packaged ImageNet weights: the backbone's, without the 1000-class head
        weights = {f"backbone.{k}": v for k, v in weights.items() if not k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
    lost = [k for k in missing if not k.startswith("classifier.")]
    if lost or unexpected:
        raise ValueError(f"{source}: weights do not fit EfficientNet-Lite0 (missing {lost[:3]}, "
                         f"unexpected {unexpected[:3]})")
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
    return model
