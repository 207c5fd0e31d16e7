"""Trace arrays -> compact JSON payloads.

Every array travels as {"shape": [...], "dtype": "float16", "data": base64}: 2 bytes per value
(plus base64's 4/3), little-endian, C order. float16 keeps attention probabilities to about three
significant digits (relative error < 0.05 %), more than a heatmap can show; -inf (the causal mask)
survives as float16 -inf.
"""

from __future__ import annotations

import base64

import numpy as np
from pydantic import BaseModel


class Array(BaseModel):
    shape: list[int]
    dtype: str = "float16"
    data: str  # base64 of little-endian float16, C order


def encode(a: np.ndarray) -> Array:
    h = np.ascontiguousarray(a, dtype="<f2")
    return Array(shape=list(h.shape), data=base64.b64encode(h.tobytes()).decode("ascii"))


def decode(arr: Array | dict) -> np.ndarray:
    """The inverse of encode (for tests and notebook users)."""
    if isinstance(arr, dict):
        arr = Array(**arr)
    return np.frombuffer(base64.b64decode(arr.data), dtype="<f2").astype(np.float32).reshape(arr.shape)


def pool(m: np.ndarray, size: int) -> np.ndarray:
    """Average-pool the last two axes down to at most size × size, for thumbnails (the all-heads
    grid), so a 512-token text does not ship L·H·512² values at once. Rows still sum to 1."""
    T = m.shape[-1]
    if T <= size:
        return m
    edges = np.linspace(0, T, size + 1).round().astype(int)
    rows = np.stack([m[..., a:b, :].mean(axis=-2) for a, b in zip(edges[:-1], edges[1:])], axis=-2)
    return np.stack([rows[..., a:b].sum(axis=-1) for a, b in zip(edges[:-1], edges[1:])], axis=-1)
