"""A predictor that follows a registry alias: `runassist serve registry:NAME@champion`.

``LivePredictor`` stands in for a ``Predictor`` (the app calls it the same way) while a watcher
thread checks the registry every ``poll_s`` seconds. When the alias points at another run, the
new model is loaded beside the old one, in the watcher thread, and then swapped in with one
attribute assignment: a batch already running finishes on the model it started with, the next
one runs on the new model, and no request waits for the load or fails because of it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("runassist.serve")


class LivePredictor:
    def __init__(self, ref: str, registry: Any, load: Callable[[Path], Any], *, poll_s: float = 1.0):
        from runassist.registry import parse_reference

        self.ref, self.registry, self._load, self.poll_s = ref, registry, load, poll_s
        self.name, self.which = parse_reference(ref)
        version = registry.version(self.name, self.which)
        self.current = load(Path(version["run"]))
        self.version = version["version"]
        self.swaps = 0
        self._seen: tuple[int, int, int] | None = None  # the registry file as last read (_stamp)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        # Everything a Predictor has (task, examples, predict_examples, guard, ...), from the model in use.
        if name == "current":
            raise AttributeError(name)
        return getattr(self.current, name)

    def info(self) -> dict[str, Any]:
        return {**self.current.info(), "registry": {"ref": self.ref, "model": self.name, "version": self.version}}

    @property
    def model_version(self) -> str:
        return f"{self.name}@{self.version}"

    # -- following the registry -------------------------------------------------------------------
    def refresh(self) -> bool:
        """Swap in the model the alias points at now, if it changed; True when it did. The registry file
        is parsed only when it was rewritten since the last look (this runs every ``poll_s``)."""
        stamp = self._stamp()
        if stamp is not None and stamp == self._seen:
            return False
        version = self.registry.version(self.name, self.which)
        if version["version"] != self.version:
            fresh = self._load(Path(version["run"]))
            if fresh.task.name != self.current.task.name:
                log.error("%s now points at a %s run (version %s); still serving version %s", self.ref,
                          fresh.task.name, version["version"], self.version)
                self._seen = stamp
                return False
            self.current, self.version = fresh, version["version"]  # the swap: one assignment
            self.swaps += 1
            log.warning("%s: now serving version %s (%s)", self.ref, self.version, Path(version["run"]).name)
            self._seen = stamp
            return True
        self._seen = stamp  # only after a successful look: a failed load is tried again next time
        return False

    def _stamp(self) -> tuple[int, int, int] | None:
        """Which write of registry.json this is: every change renames a new file into place."""
        try:
            st = self.registry.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="runassist-registry-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        failing = False
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
                failing = False
            except Exception as exc:  # noqa: BLE001 -- a half-copied run or a bad edit must not stop serving
                if not failing:
                    log.error("%s: cannot follow the registry (%s: %s); still serving version %s", self.ref,
                              type(exc).__name__, exc, self.version)
                failing = True
