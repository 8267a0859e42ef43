"""Sliding-window inference for `cnnlab predict --window`: the engine's one implementation (cnnlab.engine.windows),
re-exported here where inference has always imported it from."""
from __future__ import annotations

from cnnlab.engine.windows import (
    BLENDS,
    Window,
    check_window,
    sliding_window,
    window_logits,
    window_starts,
    window_weights,
)

__all__ = ["BLENDS", "Window", "check_window", "sliding_window", "window_logits", "window_starts", "window_weights"]
