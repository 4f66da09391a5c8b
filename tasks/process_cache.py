"""Objects built once per process (models, filters, the in-process language-model service):
core, so that any stage or the model client can share it without importing another stage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_LOADED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def load_once(key: tuple, loader: Callable[[], Any]) -> Any:
    """The object ``loader`` builds, built once per process for each key."""
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = loader()
        return _LOADED[key]
