"""The HTTP service for a trained run: ``create_app(predictor, settings=...)`` and ``serve(run, ...)``."""

from runassist.serve.app import ServeSettings, create_app, serve

__all__ = ["ServeSettings", "create_app", "serve"]
