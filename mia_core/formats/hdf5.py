"""Values as mia stores them in HDF5 and as h5py gives them back: attributes (JSON text for what
HDF5 cannot hold), UTF-8 strings (bytes on reading), and plain Python values for JSON output."""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

from mia_core.redact import redact

STR_DTYPE = h5py.string_dtype("utf-8")


def encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """HDF5 attributes cannot hold None, dicts or lists of mixed types: store those as JSON text.
    No secret is ever written (``mia_core.redact``)."""
    out = {}
    for key, value in redact(attrs).items():
        if value is None or isinstance(value, (dict, list, tuple)):
            out[key] = json.dumps(value)
        else:
            out[key] = value
    return out


def decode_attr(value: Any) -> Any:
    """An attribute as written by :func:`encode_attrs` (JSON text back to objects, numpy scalars to Python)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in "[{n":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def as_str(value: Any) -> str:
    """An HDF5 string value (h5py returns variable-length UTF-8 strings as bytes) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def as_strings(values: Any) -> np.ndarray:
    """An array of HDF5 string values as an object array of ``str``."""
    return np.array([as_str(v) for v in values], dtype=object)


def plain(value: Any, finite: bool = False) -> Any:
    """A JSON-ready Python value from what h5py/numpy return (arrays and lists element-wise,
    bytes decoded, NaN as None; with ``finite``, ±inf as None too, for files whose readers
    expect strict JSON or an empty CSV cell)."""
    if isinstance(value, np.ndarray):
        return [plain(v, finite) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and (value != value or (finite and value in (float("inf"), float("-inf")))):
        return None
    if isinstance(value, list):
        return [plain(v, finite) for v in value]
    return value

