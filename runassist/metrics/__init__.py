"""Scoring: entity-level NER P/R/F1 (conlleval-compatible and strict), classification
metrics, and a paired bootstrap for telling whether two runs really differ.

Everything here works on plain Python lists of labels (words, not sub-tokens) and returns
JSON-ready dicts, so run folders, the CLI and the server can store and show them as-is.
"""
