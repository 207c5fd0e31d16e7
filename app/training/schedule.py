"""The learning-rate schedule both recipes use."""

import math


def warmup_cosine(step: int, *, lr: float, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to floor × lr at step `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))
