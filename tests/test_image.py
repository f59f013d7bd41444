"""Image classification: modes, truncated files, augmentation only in training, preprocessing from the
model's processor, size limits in the service, base64 and multipart uploads, predict on folders and
lists, IDX files, duplicates across splits, and an EfficientNet-Lite-shaped run through ONNX."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from image_helpers import build_tiny_lite_dir, build_tiny_vit_dir, colour_image, write_image_folder

torch.set_num_threads(1)


def _config(tmp: Path, model: Path, *extra: str):
    from runassist.tasks import load_config

    return load_config(None, ["task=image", f"model.source={model}", f"data.train={tmp / 'train'}",
                              f"data.dev={tmp / 'dev'}", f"data.test={tmp / 'test'}", f"output.dir={tmp / 'runs'}",
                              "train.threads=1", "train.precision=fp32", "train.batch_size=8",
                              "train.warmup_ratio=0", *extra])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny ViT trained on light vs dark squares (about 2 s)."""
    from runassist.train.run import train

    tmp = tmp_path_factory.mktemp("image-run")
    for split, n, seed in (("train", 24, 0), ("dev", 8, 1), ("test", 8, 2)):
        write_image_folder(tmp / split, n, seed)
    model = build_tiny_vit_dir(tmp / "vit")
    result = train(_config(tmp, model, "train.epochs=4", "train.lr=3e-3", "task.augment=[flip,crop,color]"),
                   progress=False)
    assert result.summary["test"]["accuracy"] == 1.0, result.summary["test"]
    return result.run


@pytest.fixture(scope="module")
def predictor(image_run):
    from runassist.predict import Predictor

    return Predictor.from_run(image_run, precision="fp32")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_grayscale_rgba_cmyk_and_palette_images_all_predict(predictor):
    inputs = [{"base64": _b64(colour_image("light", 7, mode="L")), "name": "gray.png"},
              {"base64": _b64(colour_image("dark", 7, mode="RGBA")), "name": "rgba.png"},
              {"base64": _b64(colour_image("light", 8, mode="CMYK", fmt="JPEG")), "name": "cmyk.jpg"},
              {"base64": _b64(colour_image("dark", 8, mode="P")), "name": "palette.png"},
              {"base64": _b64(colour_image("light", 9, size=(300, 120))), "name": "wide.png"}]
    rows = predictor.predict(inputs)
    assert [(r["file"], r["label"]) for r in rows] == [("gray.png", "light"), ("rgba.png", "dark"),
                                                        ("cmyk.jpg", "light"), ("palette.png", "dark"),
                                                        ("wide.png", "light")]
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in rows)


def test_transparent_pixels_become_white_not_black():
    from PIL import Image

    from runassist.tasks.image import to_mode

    clear = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # fully transparent black
    assert np.asarray(to_mode(clear, "RGB")).tolist() == [[[255, 255, 255]] * 2] * 2
    assert np.asarray(to_mode(Image.new("CMYK", (1, 1), (0, 0, 0, 0)), "RGB")).tolist() == [[[255, 255, 255]]]


def test_normalised_with_the_models_own_mean_and_std(predictor):
    """The tiny ViT's processor says mean 0.4, std 0.3 (not ImageNet's): pixel 255 -> (1 - 0.4) / 0.3."""
    task = predictor.task
    example = task.media_example(colour_image("light", 1), "x.png")
    pixels = task.encode([example], predictor.processor, predictor.state)[0].inputs["pixels"]
    batch = task.collate(task.encode([example], predictor.processor, predictor.state), predictor.processor)
    expected = (pixels.astype(np.float32) / 255 - 0.4) / 0.3
    assert batch["pixel_values"].shape == (1, 3, 16, 16)
    assert np.allclose(batch["pixel_values"][0].numpy().transpose(1, 2, 0), expected, atol=1e-5)


def test_augmentation_only_in_training_collate(predictor):
    task = predictor.task
    assert task.task_cfg.augment == ["flip", "crop", "color"]
    example = task.media_example(colour_image("dark", 3, size=(16, 16)), "x.png")
    features = task.encode([example] * 4, predictor.processor, predictor.state)
    plain = task.collate(features, predictor.processor)["pixel_values"]
    again = task.collate(features, predictor.processor)["pixel_values"]
    assert torch.equal(plain, again)
    augmented = task.training_collate(features, predictor.processor, np.random.default_rng(0))["pixel_values"]
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)
    # the same generator state draws the same augmentation (what makes --resume exact)
    twin = task.training_collate(features, predictor.processor, np.random.default_rng(0))["pixel_values"]
    assert torch.equal(augmented, twin)
    # evaluation and prediction: the same image answers identically, every time
    item = {"base64": _b64(colour_image("dark", 3)), "name": "x.png"}
    assert predictor.predict([item]) == predictor.predict([item])


def test_an_unknown_augmentation_names_the_allowed_ones(tmp_path):
    from runassist.errors import ConfigError
    from runassist.tasks import load_config

    with pytest.raises(ConfigError, match="flip.*crop.*color"):
        load_config(None, ["task=image", "task.augment=[flip,rotate]"])


def _truncated_png() -> bytes:
    data = colour_image("light", 5, size=(40, 40))
    return data[: len(data) // 2]


def test_check_data_names_a_truncated_file_and_counts_modes(tmp_path, predictor):
    from runassist.data.checks import check_data
    from runassist.tasks import load_config, make_task

    for split, n, seed in (("train", 6, 0), ("dev", 4, 1), ("test", 4, 2)):
        write_image_folder(tmp_path / split, n, seed)
    bad = tmp_path / "train" / "light" / "broken.png"
    bad.write_bytes(_truncated_png())
    (tmp_path / "train" / "dark" / "gray.png").write_bytes(colour_image("dark", 50, mode="L"))
    (tmp_path / "train" / "dark" / "tiny.png").write_bytes(colour_image("dark", 51, size=(4, 4)))
    # a test image that is byte for byte a training image, under another name
    (tmp_path / "test" / "light" / "copy.png").write_bytes((tmp_path / "train" / "light" / "light0.png").read_bytes())
    cfg = load_config(None, ["task=image", f"data.train={tmp_path / 'train'}", f"data.dev={tmp_path / 'dev'}",
                             f"data.test={tmp_path / 'test'}"])
    report = check_data(make_task(cfg), cfg.data, processor=predictor.processor)
    assert any(str(bad) in e and "truncated" in e for e in report.errors), report.errors
    assert any("image modes L 1, RGB" in w and "converted to RGB" in w for w in report.warnings), report.warnings
    assert any("smaller than 16 pixels" in w and "tiny.png" in w for w in report.warnings), report.warnings
    copy = tmp_path / "test" / "light" / "copy.png"
    assert any(w.startswith(f"{copy}: 1 of 9 test examples also appear in train") for w in report.warnings), \
        report.warnings
    assert report.splits["train"].labels == {"dark": 8, "light": 7}


def test_training_on_a_truncated_file_stops_with_its_name(tmp_path):
    from runassist.errors import DataError
    from runassist.train.run import train

    for split, n, seed in (("train", 4, 0), ("dev", 2, 1)):
        write_image_folder(tmp_path / split, n, seed)
    bad = tmp_path / "train" / "dark" / "cut.png"
    bad.write_bytes(_truncated_png())
    model = build_tiny_vit_dir(tmp_path / "vit")
    from runassist.tasks import load_config

    cfg = load_config(None, ["task=image", f"model.source={model}", f"data.train={tmp_path / 'train'}",
                             f"output.dir={tmp_path / 'runs'}", "train.max_steps=1", "train.threads=1"])
    with pytest.raises(DataError, match=rf"{bad}: .*truncated"):
        train(cfg, progress=False)


def test_manifest_with_relative_paths_and_several_labels(tmp_path):
    from runassist.tasks import load_config, make_task

    (tmp_path / "imgs").mkdir()
    for i, label in enumerate(["light", "dark"]):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(colour_image(label, i))
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "train.jsonl"
    manifest.write_text(json.dumps({"path": "../imgs/0.png", "label": ["light", "warm"]}) + "\n" +
                        json.dumps({"path": "../imgs/1.png", "label": ["dark"]}) + "\n", encoding="utf-8")
    task = make_task(load_config(None, ["task=image", "task.multi_label=true"]))
    examples = task.read(str(manifest))
    assert [(Path(e.path).resolve(), e.labels) for e in examples] == [
        ((tmp_path / "imgs" / "0.png").resolve(), ("light", "warm")), ((tmp_path / "imgs" / "1.png").resolve(), ("dark",))]
    assert examples[0].source == f"{manifest}:1"
    csv_file = tmp_path / "data" / "train.csv"
    csv_file.write_text("path,label\n../imgs/0.png,light\n../imgs/missing.png,dark\n", encoding="utf-8")
    single = make_task(load_config(None, ["task=image"]))
    rows = single.read(str(csv_file))
    assert rows[1].labels == ("dark",) and rows[1].source == f"{csv_file}:3"


def _idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())
    return path


def test_idx_files_read_with_their_labels(tmp_path):
    from runassist.errors import DataError
    from runassist.tasks import load_config, make_task

    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = _idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([2, 0, 1]))
    task = make_task(load_config(None, ["task=image"]))
    examples = task.read(str(path))
    assert [e.labels for e in examples] == [("2",), ("0",), ("1",)]
    assert np.array_equal(examples[1].pixels, images[1]) and examples[1].source == f"{path}#1"
    broken = tmp_path / "bad-images-idx3-ubyte.gz"
    with gzip.open(broken, "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(DataError, match="bad-images-idx3-ubyte.gz: IDX header says .* truncated"):
        task.read(str(broken))


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST is not installed: make fashion-mnist")
def test_fashion_mnist_alias_has_a_fixed_dev_split():
    from runassist import assets

    dev = assets.read_alias("fashion-mnist:dev")
    train = assets.read_alias("fashion-mnist:train")
    assert len(dev) == 5_000 and len(train) == 55_000
    assert {e.name for e in dev}.isdisjoint(e.name for e in train)
    assert [e.name for e in dev[:3]] == [e.name for e in assets.read_alias("fashion-mnist:dev")[:3]]
    assert set(assets.FASHION_CLASSES) == {e.labels[0] for e in dev}
    assert assets.alias_task("fashion-mnist:test") == "image"


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    from runassist import assets
    from runassist.errors import RunassistError

    monkeypatch.setenv("RUNASSIST_FASHION_MNIST", str(tmp_path))
    with pytest.raises(RunassistError, match="make fashion-mnist"):
        assets.read_alias("fashion-mnist:train")


def test_predict_on_a_folder_a_list_and_one_file(tmp_path, predictor):
    from runassist.errors import DataError
    from runassist.predict import predict_file

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.png").write_bytes(colour_image("dark", 1))
    (folder / "sub" / "a.jpg").write_bytes(colour_image("light", 2, fmt="JPEG"))
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert predict_file(predictor, str(folder), str(out)) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(r["file"]).relative_to(folder).as_posix(), r["label"]) for r in rows] == [
        ("b.png", "dark"), ("sub/a.jpg", "light")]
    listing = tmp_path / "list.txt"
    listing.write_text("in/sub/a.jpg\nin/b.png\n", encoding="utf-8")
    assert predict_file(predictor, str(listing), str(out), fmt="csv") == 2
    lines = out.read_text().splitlines()
    assert lines[0].startswith("file,pred_labels,pred_label") and lines[1].startswith(f"{tmp_path}/in/sub/a.jpg,")
    assert predict_file(predictor, str(folder / "b.png"), str(out)) == 1
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n nothing more")
    with pytest.raises(DataError, match=rf"{folder / 'c.png'}: "):
        predict_file(predictor, str(folder), str(out))


# -- the service -----------------------------------------------------------------------------------

def _bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A PNG header claiming width x height pixels, with one compressed row: tiny on the wire."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def test_service_takes_base64_and_multipart_and_refuses_bombs(predictor):
    from fastapi.testclient import TestClient

    from runassist.serve import ServeSettings, create_app

    light, dark = colour_image("light", 11), colour_image("dark", 12)
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1, max_file_bytes=200_000,
                                                                    max_media_bytes=1_000_000))) as client:
        info = client.get("/v1/model").json()
        assert info["media"] == "image" and ".png" in info["media_suffixes"]
        schema = client.get("/v1/tools").json()["function"]["parameters"]["properties"]["inputs"]["items"]
        assert schema["required"] == ["base64"] and set(schema["properties"]) == {"base64", "name"}
        as_json = client.post("/v1/predict", json={"inputs": [
            {"base64": "data:image/png;base64," + _b64(light), "name": "l.png"}, {"base64": _b64(dark)}]})
        assert as_json.status_code == 200, as_json.text
        answers = as_json.json()["predictions"]
        assert [(a["file"], a["label"]) for a in answers] == [("l.png", "light"), ("inputs[1]", "dark")]
        uploaded = client.post("/v1/predict", files=[("file", ("l.png", light, "image/png")),
                                                     ("file", ("d.png", dark, "image/png"))])
        assert uploaded.status_code == 200, uploaded.text
        assert [a["probs"] for a in uploaded.json()["predictions"]] == [a["probs"] for a in answers]

        bomb = _bomb_png()
        assert len(bomb) < 1_000
        for response in (client.post("/v1/predict", json={"inputs": [{"base64": _b64(bomb), "name": "bomb.png"}]}),
                         client.post("/v1/predict", files={"file": ("bomb.png", bomb, "image/png")})):
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "media_too_large"
            assert "10000x10000" in response.json()["error"]["message"]
        big = client.post("/v1/predict", files={"file": ("big.png", b"\0" * 300_000, "image/png")})
        assert big.status_code == 413 and big.json()["error"]["limit"] == "max_file_bytes"
        huge = client.post("/v1/predict", json={"inputs": [{"base64": "A" * 1_100_000}]})
        assert huge.status_code == 413 and huge.json()["error"]["limit"] == "max_media_bytes"
        within = client.post("/v1/predict", json={"inputs": [{"base64": "A" * 900_000}]})  # body fits, file does not
        assert within.status_code == 413 and within.json()["error"]["limit"] == "max_file_bytes"
        broken = client.post("/v1/predict", files={"file": ("cut.png", _truncated_png(), "image/png")})
        assert broken.status_code == 422 and "cut.png" in broken.json()["error"]["message"]
        bad = client.post("/v1/predict", json={"inputs": [{"base64": "%%%", "name": "x.png"}]})
        assert bad.status_code == 422 and "not valid base64" in bad.json()["error"]["message"]
        path = client.post("/v1/predict", json={"inputs": ["/etc/passwd"]})  # never a server-side path
        assert path.status_code == 422 and "base64" in path.json()["error"]["message"]
        empty = client.post("/v1/predict", files={"other": ("x.png", light, "image/png")})
        assert empty.status_code == 422
        # the service is still up and answers as before
        again = client.post("/v1/predict", files={"file": ("l.png", light, "image/png")})
        assert again.status_code == 200 and again.json()["predictions"][0]["label"] == "light"
        assert client.get("/health").json()["status"] == "ok"


def test_a_text_model_refuses_uploads(tiny_run):
    from fastapi.testclient import TestClient

    from runassist.predict import Predictor
    from runassist.serve import ServeSettings, create_app

    with TestClient(create_app(Predictor.from_run(tiny_run.run), settings=ServeSettings(max_wait_ms=1))) as client:
        response = client.post("/v1/predict", files={"file": ("a.png", b"x", "image/png")})
        assert response.status_code == 415 and "not file uploads" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    from serve_fixtures import train_tiny_run

    return train_tiny_run(tiny_model, tmp_path_factory.mktemp("ner-run"))


# -- EfficientNet-Lite --------------------------------------------------------------------------------

@pytest.mark.slow
def test_lite_shaped_run_trains_head_only_exports_with_parity_and_serves_onnx(tmp_path):
    """A random-weight EfficientNet-Lite0 (the packaged model's exact layout) trains with only its head,
    is saved as safetensors with its preprocessing, exports to ONNX with parity, and serves images
    with --backend onnx."""
    from fastapi.testclient import TestClient

    from runassist.export import export
    from runassist.predict import Predictor
    from runassist.serve import ServeSettings, create_app
    from runassist.train.run import train

    for split, n, seed in (("train", 8, 0), ("dev", 4, 1), ("test", 4, 2)):
        write_image_folder(tmp_path / split, n, seed)
    lite = build_tiny_lite_dir(tmp_path / "lite")
    result = train(_config(tmp_path, lite, "train.epochs=1", "train.freeze=head_only", "task.image_size=32"),
                   progress=False)
    summary = result.summary
    assert summary["trainable_parameters"] == 1280 * 2 + 2  # the new head only
    model_dir = result.run / "model"
    assert {p.name for p in model_dir.iterdir()} >= {"model.safetensors", "config.json", "preprocessor_config.json"}
    saved = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": 32, "width": 32} and saved["image_mean"] == [0.498] * 3
    exported = export(result.run)
    assert exported["passed"] and exported["agreement"] == 1.0
    torch_rows = Predictor.from_run(result.run, precision="fp32").predict(
        [{"base64": _b64(colour_image("light", 3)), "name": "a.png"}])
    onnx = Predictor.from_run(result.run, backend="onnx")
    with TestClient(create_app(onnx, settings=ServeSettings(max_wait_ms=1))) as client:
        response = client.post("/v1/predict", files={"file": ("a.png", colour_image("light", 3), "image/png")})
        assert response.status_code == 200, response.text
        row = response.json()["predictions"][0]
        assert row["label"] == torch_rows[0]["label"]
        assert all(abs(row["probs"][k] - torch_rows[0]["probs"][k]) < 1e-3 for k in row["probs"])
        assert client.get("/v1/model").json()["backend"] == "onnx"


def test_report_shows_misclassified_images_as_thumbnails(tmp_path):
    from runassist.tasks.image_report import errors_section

    picture = tmp_path / "p.png"
    picture.write_bytes(colour_image("dark", 1))
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    idx = _idx(tmp_path / "t-images-idx3-ubyte.gz", images)
    rows = [{"file": "p.png", "source": str(picture), "gold": ["light"], "labels": ["dark"],
             "probs": {"dark": 0.9, "light": 0.1}},
            {"file": "i#1", "source": f"{idx}#1", "gold": ["dark"], "labels": ["light"],
             "probs": {"light": 0.6, "dark": 0.4}},
            {"file": "ok.png", "source": str(picture), "gold": ["dark"], "labels": ["dark"],
             "probs": {"dark": 0.9, "light": 0.1}}]
    predictions = tmp_path / "test.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    html = errors_section(None, predictions, {}, shown=10)
    assert "2 of 3 test images are wrong" in html
    assert html.count('src="data:image/png;base64,') == 2
    assert html.index("predicted: dark") < html.index("predicted: light")  # surest mistake first


@pytest.mark.slow
def test_resume_draws_the_augmentations_an_uninterrupted_run_draws(tmp_path, monkeypatch):
    """Interrupted mid-epoch (Ctrl-C) and resumed, an augmented run ends with the uninterrupted run's
    weights: each batch's generator is seeded from its position, which the checkpoint holds."""
    from safetensors.torch import load_file

    from runassist.train import callbacks
    from runassist.train.run import train

    for split, n, seed in (("train", 12, 0), ("dev", 4, 1)):
        write_image_folder(tmp_path / split, n, seed)
    model = build_tiny_vit_dir(tmp_path / "vit")

    def cfg(name: str):
        from runassist.tasks import load_config

        return load_config(None, ["task=image", f"model.source={model}", f"data.train={tmp_path / 'train'}",
                                  f"data.dev={tmp_path / 'dev'}", f"output.dir={tmp_path / 'runs'}",
                                  f"output.name={name}", "train.threads=1", "train.precision=fp32",
                                  "train.batch_size=4", "train.epochs=2", "train.lr=3e-3", "train.dropout=0.1",
                                  "task.augment=[flip,crop,color]"])

    whole = train(cfg("whole"), progress=False).run
    real = callbacks.Checkpoint.on_step

    def interrupt(self, ctx, info):
        real(self, ctx, info)
        if info.position.step == 4:  # mid-epoch: 6 batches an epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.Checkpoint, "on_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg("cut"), progress=False)
    monkeypatch.setattr(callbacks.Checkpoint, "on_step", real)
    resumed = train(cfg("cut"), resume=tmp_path / "runs" / "cut", progress=False).run
    a, b = load_file(str(whole / "model" / "model.safetensors")), load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_over_the_memory_budget_images_are_decoded_per_batch(tmp_path, predictor):
    """task.memory_mb: 0 keeps no pixels in the features; each batch decodes its files, to the same tensor."""
    import dataclasses

    from runassist.tasks import make_task

    (tmp_path / "a.png").write_bytes(colour_image("light", 4, size=(30, 20)))
    cfg = predictor.cfg
    lean = make_task(cfg.model_copy(update={"task": cfg.task.model_copy(update={"memory_mb": 0})}))
    example = predictor.task.read(str(tmp_path / "a.png"), require_labels=False)[0]
    kept = predictor.task.encode([example], predictor.processor, predictor.state)
    lazy = lean.encode([example], predictor.processor, predictor.state)
    assert "pixels" in kept[0].inputs and set(lazy[0].inputs) == {"image"}
    assert torch.equal(predictor.task.collate(kept, predictor.processor)["pixel_values"],
                       lean.collate(lazy, predictor.processor)["pixel_values"])
    assert dataclasses.is_dataclass(lazy[0].inputs["image"])


@pytest.mark.parametrize("kind", ["ConvNextImageProcessor", "ViTImageProcessor", "BitImageProcessor"])
def test_preprocessing_matches_the_models_own_processor(tmp_path, kind):
    """Done by hand (the uint8 pixels are kept between resize and normalise), it gives the processor's
    pixel_values: ConvNeXt's shortest edge / crop_pct then center crop, ViT's fixed height and width,
    BiT's (ResNet's) shortest edge then crop_size."""
    import transformers
    from PIL import Image
    from transformers import ConvNextConfig, ConvNextForImageClassification

    from runassist.tasks import load_config, make_task
    from runassist.tasks.base import TaskState

    ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)).save_pretrained(
        tmp_path)
    settings = {"ConvNextImageProcessor": {"size": {"shortest_edge": 64}, "crop_pct": 0.875},
                "ViTImageProcessor": {"size": {"height": 48, "width": 40}},
                "BitImageProcessor": {"size": {"shortest_edge": 56}, "crop_size": {"height": 48, "width": 48}}}[kind]
    getattr(transformers, kind)(**settings, image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.25, 0.3]).save_pretrained(
        tmp_path)
    task = make_task(load_config(None, ["task=image", f"model.source={tmp_path}"]))
    processor = task.load_processor(str(tmp_path))
    data = colour_image("light", 1, size=(100, 60))
    ours = task.collate(task.encode([task.media_example(data, "x.png")], processor, TaskState(labels=["a"])),
                        processor)["pixel_values"]
    theirs = processor(images=[Image.open(io.BytesIO(data)).convert("RGB")], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5)
