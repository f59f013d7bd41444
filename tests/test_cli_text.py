"""User text printed by the CLI is text: markup-like tokens, tags and paths are shown as they are,
on a terminal (rich) and in a pipe (plain), and never crash the command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "runassist.cli"]


@pytest.mark.parametrize("terminal", [False, True])
def test_markup_like_text_is_printed_as_it_is(tmp_path, tiny_model, terminal):
    folder = tmp_path / "data" / "[red]x"
    folder.mkdir(parents=True)
    train = folder / "train.conll"
    train.write_text("john\tB-:smile:\nwent\tO\n\nmary\tB-[bold]\n", encoding="utf-8")
    dev = folder / "dev.conll"
    dev.write_text("paris\tB-[/]\nhi\tO\n", encoding="utf-8")
    bad = folder / "bad.conll"
    bad.write_text("john\tO\n[/]\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    if terminal:
        env["FORCE_COLOR"] = "1"  # rich draws tables and reads markup as on a terminal
    done = subprocess.run([*CLI, "check-data", "task=ner", f"data.train={train}", f"data.dev={dev}",
                           f"data.test={bad}", f"model.source={tiny_model}"], env=env, capture_output=True,
                          text=True, timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in text, text
    plain = _strip_ansi(text)
    assert f"{dev}:1: entity type '[/]' (1 in dev) never appears in train" in plain
    assert f"{bad}:2: expected a token and a tag separated by a tab or spaces, got '[/]'" in plain
    assert ":smile:" in plain and "😄" not in plain and "[bold]" in plain

    done = subprocess.run([*CLI, "train", f"{folder}/missing.yaml"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and f"{folder}/missing.yaml: config file not found" in _strip_ansi(done.stderr)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
