"""`POST /v1/feedback`, and the prediction ids it refers to.

With a feedback store (feedback.py), every prediction the service returns carries an ``id`` and the
``model_version`` that made it, and is stored with its input; inputs the model was unsure of
(``task.confidence`` below ``queue_below``) also go to the label-this-next queue. A correction names
the id and gives the corrected output in the task's own form; it is checked against the stored
input at once (``task.example_from_feedback``), so a malformed correction is a 422 now, not a
surprise at export time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runassist.serve.common import ApiError, read_json

log = logging.getLogger("runassist.serve")


class FeedbackHook:
    """Stamps predictions with ids and stores them (and low-confidence inputs) in the store."""

    def __init__(self, store: Any, predictor: Any, *, queue_below: float | None = None):
        self.store, self.predictor, self.queue_below = store, predictor, queue_below
        self._warned = False

    def version(self) -> tuple[str, str]:
        """(run name, model version) of the model answering now; no file read: this is on every request."""
        run = Path(self.predictor.run).name
        return run, str(getattr(self.predictor, "model_version", None) or run)

    async def stamp(self, inputs: Sequence[Any], answers: Sequence[tuple[dict[str, Any], float | None]]) -> list[dict]:
        run, version = self.version()
        task = self.predictor.task.name
        out, rows, queue = [], [], []
        for item, (prediction, confidence) in zip(inputs, answers):
            pid = uuid.uuid4().hex
            out.append({"id": pid, "model_version": version, **prediction})
            rows.append({"id": pid, "model": run, "version": version, "task": task,
                         "input": item, "output": prediction, "confidence": confidence})
            if self.queue_below is not None and confidence is not None and confidence < self.queue_below:
                queue.append({"input": item, "score": confidence, "reason": "low confidence in service",
                              "prediction_id": pid})
        try:
            await asyncio.to_thread(self._write, rows, queue)
        except Exception as exc:  # noqa: BLE001 -- the answer matters more than its record: logged, not failed
            if not self._warned:
                log.error("feedback store: cannot record predictions (%s: %s); answering without", type(exc).__name__,
                          exc)
                self._warned = True
        return out

    def _write(self, rows: list[dict], queue: list[dict]) -> None:
        self.store.record_predictions(rows)
        if queue:
            self.store.enqueue(queue)


def feedback_routes(hook: FeedbackHook | None, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        if hook is None:
            raise ApiError(404, "no_feedback_store", "this service keeps no feedback store: start it with "
                                                     "--feedback (or on a registry:NAME@champion reference)")
        data = await read_json(request, max_body_bytes)
        items = data.get("corrections") if isinstance(data, dict) and "corrections" in data else [data]
        if not isinstance(items, list) or not items or len(items) > 256:
            raise ApiError(422, "invalid_input", 'send {"id": ..., "output": {...}} or {"corrections": [...]} '
                                                 "(1 to 256 of them)")
        checked = []
        for i, item in enumerate(items):
            where = f"corrections[{i}]: " if len(items) > 1 or "corrections" in data else ""
            if not isinstance(item, dict) or set(item) - {"id", "output", "source"} or \
                    not isinstance(item.get("id"), str) or "output" not in item:
                raise ApiError(422, "invalid_input", f'{where}a correction is {{"id": "<prediction id>", '
                                                     f'"output": <the corrected output>}}')
            stored = await asyncio.to_thread(hook.store.prediction, item["id"])
            if stored is None:
                raise ApiError(404, "unknown_prediction", f"{where}no prediction with id {item['id']!r} in the "
                                                          "feedback store")
            try:
                hook.predictor.task.example_from_feedback(stored["input"], item["output"])
            except ValueError as exc:
                raise ApiError(422, "invalid_correction", f"{where}{exc}") from None
            checked.append(item)
        for item in checked:
            await asyncio.to_thread(hook.store.add_correction, item["id"], item["output"],
                                    source=item.get("source") if isinstance(item.get("source"), str) else None)
        return JSONResponse({"stored": len(checked)})

    return router
