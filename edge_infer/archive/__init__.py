"""Classifying a hospital's archive on Ray Data (the `ray` extra): the map_batches building
block (`SmearClassifier`, needs no Ray itself) and the `edge-infer archive` command's parts
(sources, storage, store, worker, run: these import pyarrow and Ray)."""

from .block import ARCHIVE_FIELDS, SmearClassifier

__all__ = ["ARCHIVE_FIELDS", "SmearClassifier"]
