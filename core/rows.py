"""Dataclass records from SQLite rows, for the stores that keep one table per record
type (the intake's incidents, the notification outbox)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_row(
    cls: type[T],
    row: sqlite3.Row,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    columns: Mapping[str, str] | None = None,
) -> T:
    """Builds ``cls`` from ``row``: each field from the column of its name (or
    ``columns[field]``), passed through ``convert[field]`` when given (SQLite stores
    booleans as integers, datetimes and documents as text).

    Raises:
        IndexError: the row lacks a field's column (the query selected too little).
    """
    convert = convert or {}
    columns = columns or {}
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = row[columns.get(f.name, f.name)]
        values[f.name] = convert[f.name](value) if f.name in convert else value
    return cls(**values)
