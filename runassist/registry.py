"""The model registry of a project: named models, numbered versions that point at run folders, and
the aliases ``champion`` (what the service answers with) and ``challenger`` (a candidate under test),
the convention MLflow moved to from its stages.

Everything lives in one folder (``registry/`` by default, ``--registry`` or RUNASSIST_REGISTRY to
change it): ``registry.json`` holds the state *and* its history, so one rename changes both or
neither. Every change happens under an exclusive lock (``.lock``, flock) and is written to a
temporary file that replaces ``registry.json`` atomically: a process killed at any point leaves the
previous state, readable. The feedback store's SQLite file sits beside it (feedback.py).

A reference ``NAME@champion``, ``NAME@challenger``, ``NAME@3`` or ``NAME`` (its champion) resolves
to a run folder; ``registry:NAME@champion`` is how `serve` and `predict` take one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterator

from runassist.atomic import read_json, write_json
from runassist.errors import RunassistError

ENV_REGISTRY = "RUNASSIST_REGISTRY"
DEFAULT_ROOT = "registry"
PREFIX = "registry:"
ALIASES = ("champion", "challenger")
FORMAT = 1


def default_root() -> Path:
    return Path(os.environ.get(ENV_REGISTRY) or DEFAULT_ROOT)


def is_reference(text: str) -> bool:
    return str(text).startswith(PREFIX)


def parse_reference(ref: str) -> tuple[str, str]:
    """``registry:NAME@ALIAS`` / ``NAME@3`` / ``NAME`` -> (name, alias or version number as text)."""
    body = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    name, _, which = body.partition("@")
    if not name:
        raise RunassistError(f"{ref!r}: give a model name, as in registry:NAME@champion")
    return name, which or "champion"


class Registry:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.path = self.root / "registry.json"

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": FORMAT, "models": {}, "history": []}
        try:
            state = read_json(self.path)
        except ValueError as exc:
            raise RunassistError(f"{self.path}: not a registry file ({exc})") from None
        if state.get("format") != FORMAT:
            raise RunassistError(f"{self.path}: registry format {state.get('format')!r}; this runassist reads {FORMAT}")
        return state

    def model(self, name: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        models = (state or self.read())["models"]
        if name not in models:
            known = ", ".join(sorted(models)) or "none yet (runassist registry add NAME RUN)"
            raise RunassistError(f"no model '{name}' in the registry {self.root}; models: {known}")
        return models[name]

    def version(self, name: str, which: str = "champion", state: dict[str, Any] | None = None) -> dict[str, Any]:
        """One version of a model: by alias or by number."""
        model = self.model(name, state)
        if which in ALIASES:
            number = model["aliases"].get(which)
            if number is None:
                raise RunassistError(f"model '{name}' has no {which} yet (runassist promote RUN --to {name})")
        else:
            try:
                number = int(which.lstrip("v"))
            except ValueError:
                raise RunassistError(f"'{name}@{which}': give an alias ({', '.join(ALIASES)}) or a version "
                                     "number") from None
        for version in model["versions"]:
            if version["version"] == number:
                return version
        raise RunassistError(f"model '{name}' has no version {number}; versions: "
                             f"{', '.join(str(v['version']) for v in model['versions'])}")

    def resolve(self, ref: str) -> Path:
        """A reference -> the run folder it points at."""
        name, which = parse_reference(ref)
        return Path(self.version(name, which)["run"])

    def history(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.read()["history"] if name is None or e.get("model") == name]

    # -- changing -------------------------------------------------------------------------------
    def add(self, name: str, run: str | Path, *, alias: str | None = None, note: str = "",
            details: dict[str, Any] | None = None, champion_was: int | None | str = "any") -> int:
        """Register a run folder as the next version of ``name`` (created if new; a run registered before
        keeps its number) and, with ``alias``, point that alias at it, in one change. ``champion_was``:
        refuse if the champion is no longer that version (it changed while a gate was judging)."""
        run = Path(run).resolve()
        if not (run / "model" / "task.json").exists():
            raise RunassistError(f"{run}: not a trained run folder (no model/task.json)")
        if alias is not None and alias not in ALIASES:
            raise RunassistError(f"alias {alias!r}: choose one of {', '.join(ALIASES)}")
        with self._change() as state:
            model = state["models"].setdefault(name, {"versions": [], "aliases": {}, "champions": []})
            if champion_was != "any" and model["aliases"].get("champion") != champion_was:
                raise RunassistError(f"the champion of '{name}' changed to version "
                                     f"{model['aliases'].get('champion')} while this was decided against "
                                     f"{champion_was}; run it again")
            number = next((v["version"] for v in model["versions"] if v["run"] == str(run)), None)
            if number is None:
                number = max((v["version"] for v in model["versions"]), default=0) + 1
                summary = read_json(run / "summary.json") if (run / "summary.json").exists() else {}
                model["versions"].append({"version": number, "run": str(run), "task": summary.get("task"),
                                          "test": summary.get("test"), "added": _now()})
                _event(state, "add", name, version=number, run=str(run), note=note)
            if alias:
                _set_alias(state, name, alias, number, reason=note or "added", details=details)
        return number

    def champion(self, name: str) -> tuple[int, Path] | None:
        """(version, run folder) of the champion; None when the model or its champion does not exist yet."""
        model = self.read()["models"].get(name)
        number = (model or {}).get("aliases", {}).get("champion")
        if number is None:
            return None
        return number, Path(self.version(name, str(number))["run"])

    def set_alias(self, name: str, alias: str, version: int, *, reason: str = "",
                  details: dict[str, Any] | None = None) -> None:
        if alias not in ALIASES:
            raise RunassistError(f"alias {alias!r}: choose one of {', '.join(ALIASES)}")
        with self._change() as state:
            self.version(name, str(version), state)
            _set_alias(state, name, alias, version, reason=reason, details=details)

    def record(self, name: str, kind: str, **fields: Any) -> None:
        """An event with no change of state (a refused promotion and the figures behind it)."""
        with self._change() as state:
            self.model(name, state)
            _event(state, kind, name, **fields)

    def rollback(self, name: str, *, reason: str = "rollback") -> int:
        """Make the previous champion the champion again; returns its version."""
        with self._change() as state:
            model = self.model(name, state)
            if not model["champions"]:
                raise RunassistError(f"model '{name}' has no earlier champion to roll back to")
            previous = model["champions"].pop()
            current = model["aliases"].get("champion")
            model["aliases"]["champion"] = previous
            _event(state, "rollback", name, version=previous, replaced=current, reason=reason)
        return previous

    @contextlib.contextmanager
    def _change(self) -> Iterator[dict[str, Any]]:
        """The state to change, under the lock; written (atomically) only if the block ends normally."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                yield state
                write_json(self.path, state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _set_alias(state: dict[str, Any], name: str, alias: str, version: int, *, reason: str,
               details: dict[str, Any] | None) -> None:
    model = state["models"][name]
    current = model["aliases"].get(alias)
    if alias == "champion" and current is not None and current != version:
        model["champions"].append(current)  # what `rollback` goes back to
    model["aliases"][alias] = version
    if alias == "champion" and model["aliases"].get("challenger") == version:
        model["aliases"].pop("challenger")  # a promoted challenger is no longer one
    _event(state, f"alias:{alias}", name, version=version, replaced=current, reason=reason, details=details)


def _event(state: dict[str, Any], kind: str, name: str, **fields: Any) -> None:
    state["history"].append({"at": _now(), "event": kind, "model": name,
                             **{k: v for k, v in fields.items() if v not in (None, "")}})


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
