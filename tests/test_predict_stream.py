"""Batch prediction in chunks: the same bytes as the in-memory path it replaced, one chunk held at a
time, resumable after a kill -9, the same bytes from 2 worker processes, progress on stderr, and
the Ray engine giving the same predictions."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, make_ner_sentences, write_conll
from legacy_predict import legacy_predict_file
from serve_fixtures import RUNASSIST, subprocess_env, tiny_run  # noqa: F401  (tiny_run is a fixture)

from runassist.errors import DataError, RunassistError
from runassist.predict import Predictor, predict_file
from runassist.predict_input import read_chunks
from runassist.predict_output import ResumableOutput


def _inputs(folder: Path, n: int = 23) -> dict[str, Path]:
    """The same sentences as text lines (with blank and CRLF lines), CoNLL, JSONL, CSV and TSV (with a
    quoted cell holding a comma and a line break)."""
    sents = make_ner_sentences(n, seed=5)
    texts = [" ".join(w for w, _ in s) for s in sents]
    files = {"txt": folder / "in.txt", "conll": write_conll(folder / "in.conll", sents), "jsonl": folder / "in.jsonl"}
    files["txt"].write_bytes(("\n".join(texts[:10]) + "\n\n  \r\n" + "\r\n".join(texts[10:]) + "\n").encode())
    files["jsonl"].write_text("".join(json.dumps({"text": t}) + "\n" + ("\n" if i % 5 == 0 else "")
                                      for i, t in enumerate(texts)), encoding="utf-8")
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        files[kind] = folder / f"in.{kind}"
        with open(files[kind], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(["id", "text", "note"])
            for i, t in enumerate(texts):
                writer.writerow([i, t, 'a, "quoted"\nline' if i % 4 == 0 else ""])
    return files


@pytest.fixture(scope="module")
def predictor(tiny_run):  # noqa: F811
    return Predictor.from_run(tiny_run.run)


@pytest.mark.parametrize("kind,fmt", [("txt", "auto"), ("txt", "conll"), ("conll", "auto"), ("conll", "csv"),
                                      ("jsonl", "auto"), ("csv", "auto"), ("tsv", "auto"), ("tsv", "jsonl")])
def test_chunks_write_the_bytes_the_in_memory_path_wrote(predictor, tmp_path, kind, fmt):
    source = _inputs(tmp_path)[kind]
    legacy_predict_file(predictor, str(source), str(tmp_path / "old.out"), fmt=fmt)
    old = (tmp_path / "old.out").read_bytes()
    assert len(old) > 500
    for chunk_size in (1, 4, 1000):  # one item a chunk, chunks cut mid-file, one chunk
        n = predict_file(predictor, str(source), str(tmp_path / "new.out"), fmt=fmt, chunk_size=chunk_size)
        assert n == 23
        assert (tmp_path / "new.out").read_bytes() == old, (kind, fmt, chunk_size)
        assert not (tmp_path / "new.out.partial").exists() and not (tmp_path / "new.out.progress").exists()


def test_entities_are_found(predictor, tiny_run, tmp_path):  # noqa: F811
    """The comparisons above are not between two empty answers."""
    source = tmp_path / "tagged.txt"
    source.write_text("\n".join(tiny_run.tagged) + "\n", encoding="utf-8")
    predict_file(predictor, str(source), str(tmp_path / "out.jsonl"), chunk_size=1)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(tiny_run.tagged) and all(row["entities"] for row in rows)


def test_the_reader_never_holds_more_than_a_chunk(predictor, tmp_path):
    lines = tmp_path / "many.txt"
    rng = random.Random(0)
    lines.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(25)) + "\n" for _ in range(500)))
    files = _inputs(tmp_path)
    for source, total in ((lines, 500), (files["csv"], 23), (files["conll"], 23), (files["jsonl"], 23)):
        stats: dict[str, int] = {}
        sizes = [len(c.examples) for c in read_chunks(predictor.task, str(source), chunk_size=7, stats=stats)]
        assert stats["max_held"] == 7, source
        assert sum(sizes) == total and max(sizes) == 7 and all(s == 7 for s in sizes[:-1])
    # resuming reads past chunks without making examples of them
    chunks = list(read_chunks(predictor.task, str(lines), chunk_size=100, skip=3))
    assert [c.index for c in chunks] == [3, 4] and chunks[-1].read_bytes == lines.stat().st_size


def test_evaluate_holds_one_chunk_of_outputs_and_scores_as_before(predictor, tiny_run, tmp_path, monkeypatch):  # noqa: F811
    from runassist.evaluate import evaluate

    source = _inputs(tmp_path)["conll"]
    task = predictor.task
    examples = task.read(str(source))
    # before: everything predicted at once, scored and written whole
    whole = predictor.predict_examples(examples)
    before = task.score(examples, whole, predictor.state)
    before_file = task.write_predictions(tmp_path / "before", examples, whole).read_bytes()
    del whole

    alive: list[weakref.ref] = []
    most: list[int] = []
    predict = predictor.predict_examples

    def counting(part):  # how many predictions of earlier chunks are still held when a chunk starts
        most.append(sum(ref() is not None for ref in alive))
        out = predict(part)
        alive.extend(weakref.ref(p) for p in out)
        return out

    monkeypatch.setattr(predictor, "predict_examples", counting)
    result = evaluate(tiny_run.run, data=str(source), predictor=predictor, chunk_size=5)
    assert len(most) == 5 and max(most) == 0  # 23 sentences, 5 at a time; none held past its chunk
    assert result["scores"] == before and result["scores"]["counts"]["gold"] > 0
    assert Path(result["files"]["predictions"]).read_bytes() == before_file
    assert json.loads(Path(result["files"]["scores"]).read_text()) == json.loads(json.dumps(before))


def test_errors_name_the_file_and_line(predictor, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": "john went"}) + "\n" for _ in range(9)) + "{oops\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:10: not valid JSON"):
        predict_file(predictor, str(bad), str(tmp_path / "out.jsonl"), chunk_size=4)
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"john went\nmary \xff went\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not valid UTF-8"):
        predict_file(predictor, str(binary), str(tmp_path / "out.jsonl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "bad.txt"]  # no output, nothing to resume


def test_progress_totals_on_stderr_unless_quiet(predictor, tmp_path, capsys):
    source = _inputs(tmp_path)["txt"]
    predict_file(predictor, str(source), str(tmp_path / "out.jsonl"), chunk_size=5, quiet=False)
    err = capsys.readouterr().err
    assert "predict in.txt: 23 items in 5 chunks" in err and "items/s" in err
    predict_file(predictor, str(source), str(tmp_path / "out.jsonl"), chunk_size=5, quiet=True)
    assert capsys.readouterr().err == ""


def test_stdin_to_stdout_streams_and_cannot_resume(predictor, tmp_path, monkeypatch, capsys):
    source = _inputs(tmp_path)["txt"]
    legacy_predict_file(predictor, str(source), str(tmp_path / "old.jsonl"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(source.read_bytes())))
    assert predict_file(predictor, "-", None, chunk_size=4) == 23
    assert capsys.readouterr().out == (tmp_path / "old.jsonl").read_text()
    with pytest.raises(RunassistError, match="--resume needs an output file"):
        predict_file(predictor, str(source), None, resume=True)


def test_resume_refuses_a_different_prediction(tmp_path):
    out = ResumableOutput(tmp_path / "out.jsonl", {"input": "a.txt", "chunk_size": 10})
    out.write("x\n", 1)
    out.close()
    with pytest.raises(RunassistError, match="different chunk_size"):
        ResumableOutput(tmp_path / "out.jsonl", {"input": "a.txt", "chunk_size": 20}, resume=True)
    again = ResumableOutput(tmp_path / "out.jsonl", {"input": "a.txt", "chunk_size": 10}, resume=True)
    assert (again.chunks, again.items) == (1, 1)
    again.write("y\n", 1)
    again.finish("")
    assert (tmp_path / "out.jsonl").read_text() == "x\ny\n"


def _long_file(path: Path, n: int) -> Path:
    rng = random.Random(1)
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(25)) + "\n" for _ in range(n)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_killed_mid_way_then_resumed_is_byte_identical(tiny_run, tmp_path):  # noqa: F811
    source = _long_file(tmp_path / "long.txt", 1200)
    args = [RUNASSIST, "predict", str(tiny_run.run), str(source), "--chunk-size", "20", "-q"]
    env = subprocess_env()
    subprocess.run([*args, "-o", str(tmp_path / "whole.jsonl")], env=env, check=True, timeout=600)
    target = tmp_path / "killed.jsonl"
    progress = tmp_path / "killed.jsonl.progress"
    proc = subprocess.Popen([*args, "-o", str(target)], env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and json.loads(progress.read_text() or "{}").get("chunks", 0) >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads(progress.read_text())
    assert 3 <= state["chunks"] < 60 and not target.exists(), "the kill did not land mid-way"
    subprocess.run([*args, "-o", str(target), "--resume"], env=env, check=True, timeout=600)
    assert target.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not progress.exists() and not (tmp_path / "killed.jsonl.partial").exists()


@pytest.mark.slow
def test_two_workers_write_the_bytes_one_writes(predictor, tmp_path):
    source = _long_file(tmp_path / "long.txt", 200)
    predict_file(predictor, str(source), str(tmp_path / "one.jsonl"), chunk_size=30)
    n = predict_file(predictor, str(source), str(tmp_path / "two.jsonl"), chunk_size=30, workers=2)
    assert n == 200
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def _kill_processes_naming(text: str) -> None:
    """SIGKILL this user's processes whose command line holds ``text`` (a folder only they were given)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace") and cmdline.stat().st_uid == os.getuid():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):  # gone meanwhile
            continue


RAY_TIMEOUT_S = 240  # ~40 s on 2 busy cores; a Ray that cannot start or schedule must not hang `make test`


@pytest.mark.slow
def test_ray_engine_gives_the_default_paths_predictions(predictor, tiny_run, tmp_path):  # noqa: F811
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"Ray Data is not installed ({exc}): `make ray` installs it, where pip can")
    texts = [" ".join(random.Random(i).choice(WORDS) for _ in range(12)) for i in range(60)] + tiny_run.tagged
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    predict_file(predictor, str(source), str(tmp_path / "local.jsonl"))
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    # The real command, in a process: a hung ray.get in this one would ignore pytest-timeout's signal (it
    # blocks in C++). Ray's own temporary folder (short: its socket paths must fit 107 bytes) names every
    # process of this Ray, so a timeout kills them all: its workers outlive a killed driver.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    proc = subprocess.Popen([RUNASSIST, "predict", str(tiny_run.run), str(source), "-o", str(tmp_path / "ray-out"),
                             "--engine", "ray", "--workers", "2", "--batch-size", "8"],
                            env={**subprocess_env(), "RAY_TMPDIR": ray_tmp}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=RAY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _kill_processes_naming(ray_tmp)
        _, stderr = proc.communicate()
        pytest.fail(f"--engine ray did not finish in {RAY_TIMEOUT_S} s (killed):\n{stderr[-2000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, stderr[-3000:]
    rows = [json.loads(line) for part in sorted((tmp_path / "ray-out").iterdir())
            for line in part.read_text().splitlines()]
    assert f"predicted {len(texts)} items" in stderr
    assert len(rows) == len(texts)
    assert [r["id"] for r in rows] == list(range(len(texts)))  # input order kept
    assert [json.loads(r["prediction"]) for r in rows] == local


def test_a_terminal_gets_a_live_bar_with_items_rate_and_eta():
    from runassist.predict_progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = Progress(total_bytes=1000, label="predict in.txt", stream=screen)
    bar.update(250, 400)
    bar.update(250, 1000)
    bar.close(chunks=2)
    shown = screen.getvalue()
    assert "500 items" in shown and "items/s" in shown and "ETA" in shown
    assert "predict in.txt: 500 items in 2 chunks" in shown


def test_a_device_or_a_pipe_as_output_is_written_not_replaced(tmp_path):
    """`-o /dev/null` once replaced /dev/null with a regular file (the result renamed over it): after
    that no other program could write to it. A FIFO stands in for the device here."""
    import os
    import stat
    import threading

    from runassist.atomic import atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    atomic_write(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert got == ["through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a pipe, not a file renamed over it
    assert not list(tmp_path.glob(".pipe.*"))  # no temporary file left beside it


def test_predict_into_a_pipe_keeps_the_pipe(predictor, tmp_path):
    import os
    import stat
    import threading

    source = _inputs(tmp_path)["txt"]
    fifo = tmp_path / "out-pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    n = predict_file(predictor, str(source), str(fifo), chunk_size=5, quiet=True)
    reader.join(timeout=30)
    assert n == 23 and len(got[0].splitlines()) == 23
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert not list(tmp_path.glob("out-pipe.*"))  # no .partial / .progress beside it
    with pytest.raises(RunassistError, match="device or a pipe"):
        predict_file(predictor, str(source), str(fifo), resume=True, quiet=True)


def test_inference_pads_to_few_batch_shapes_with_the_same_outputs(predictor, monkeypatch):
    """One batch shape per length made the CPU backend's memory grow with the file (bench/README.md):
    inference pads token batches to a multiple of 16, and the outputs are those of unpadded batches."""
    import runassist.inference as inference
    from runassist.tasks.base import pad_inputs, padded_to_multiple

    task = predictor.task
    examples = predictor.examples([" ".join(random.Random(i).choice(WORDS) for _ in range(3 + i % 40))
                                   for i in range(120)])
    features = task.encode(examples, predictor.processor, predictor.state)
    shapes: list[tuple[int, int]] = []
    collate = task.collate

    def recording(batch_features, processor):
        batch = collate(batch_features, processor)
        shapes.append(tuple(batch["input_ids"].shape))
        return batch

    monkeypatch.setattr(task, "collate", recording)
    padded = inference.outputs_for(task, predictor.model, features, predictor.processor, predictor.state, batch_size=8)
    lengths = {length for _, length in shapes}
    assert all(length % 16 == 0 for length in lengths) and len(lengths) <= 4 < len({f.size for f in features})
    monkeypatch.setattr(inference, "PAD_MULTIPLE", 1)
    plain = inference.outputs_for(task, predictor.model, features, predictor.processor, predictor.state, batch_size=8)
    assert all(a.shape == b.shape and np.allclose(a, b, atol=1e-5) for a, b in zip(padded, plain))
    # the padding is masked out, never past the tokenizer's limit, and only inside the context
    with padded_to_multiple(16, limit=20):
        batch = pad_inputs(features[:1], 0)
    size = features[0].size
    assert batch["input_ids"].shape[1] == max(size, min(-(-size // 16) * 16, 20))
    assert batch["attention_mask"][0].tolist() == [1] * size + [0] * (batch["input_ids"].shape[1] - size)
    assert pad_inputs(features[:1], 0)["input_ids"].shape[1] == size


@pytest.mark.slow
def test_accelerate_launch_with_two_processes_writes_the_bytes_one_writes(predictor, tiny_run, tmp_path):  # noqa: F811
    source = _long_file(tmp_path / "long.txt", 130)
    predict_file(predictor, str(source), str(tmp_path / "one.conll"), fmt="conll", chunk_size=20)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}  # --multi_gpu + CPU: two gloo processes (test_distributed)
    # CoNLL: a blank line joins two chunks, so the parts must be joined in order. 7 chunks: ranks 0 and 1
    # take turns, and the last chunk is short.
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "runassist.cli", "predict",
                           str(tiny_run.run), str(source), "-o", str(tmp_path / "two.conll"), "--format", "conll",
                           "--chunk-size", "20", "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "two.conll").read_bytes() == (tmp_path / "one.conll").read_bytes()
    assert (tmp_path / "one.conll").read_text().count("\n\n") == 129
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("two.")] == ["two.conll"]  # parts removed
