"""Hyperparameter search: ``runassist search CONFIG --trials N`` (``study.search``)."""
