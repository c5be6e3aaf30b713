"""A bounded LRU cache of prepared persons, keyed by the content of the person inputs.

Analysing a person (pose, parse, framing, the 22-channel representation) costs more than the
whole try-on; a shop that sends the same model photo with many garments should pay for it once.
The key is a sha256 over the person image bytes and every supplied annotation, so two requests
share an entry only when their inputs are byte-identical.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

import numpy as np


def person_key(image: bytes, *, parse: Optional[bytes] = None, pose: Optional[np.ndarray] = None,
               mask: Optional[bytes] = None) -> str:
    """Hex sha256 of the person image and its optional parse (bytes), pose (18×3) and mask (bytes).

    Each part is length-prefixed and tagged, so no two different inputs share a key.
    """
    digest = hashlib.sha256()
    for tag, part in (("image", image), ("parse", parse), ("mask", mask),
                      ("pose", None if pose is None
                       else np.ascontiguousarray(pose, dtype="<f8").tobytes())):
        if part is None:
            digest.update(f"{tag}:none;".encode())
        else:
            digest.update(f"{tag}:{len(part)};".encode())
            digest.update(part)
    return digest.hexdigest()


def _nbytes(value: Any) -> int:
    """Memory an entry holds, as the value reports it (``nbytes``); 0 when it does not say."""
    return int(getattr(value, "nbytes", 0))


class PersonCache:
    """Thread-safe LRU mapping of :func:`person_key` to a prepared person.

    Bounded twice: at most ``size`` entries and at most ``max_bytes`` bytes, counted with each
    value's ``nbytes`` (a prepared person counts its arrays and its photo). The least recently
    used entries are dropped to stay within both; a value larger than ``max_bytes`` on its own
    is not stored. ``size`` 0 or ``max_bytes`` 0 disables the cache.
    """

    def __init__(self, size: int, *, max_bytes: int):
        self.size = max(0, int(size))
        self.max_bytes = max(0, int(max_bytes))
        self._items: "OrderedDict[str, tuple[Any, int]]" = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Optional[Any]:
        """The cached value (marked most recently used), or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            self.misses += 1
            return None

    def put(self, key: str, value: Any) -> None:
        """Store ``value``, evicting the least recently used entries beyond either bound."""
        cost = _nbytes(value)
        if self.size == 0 or cost > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self.nbytes -= self._items.pop(key)[1]
            self._items[key] = (value, cost)
            self.nbytes += cost
            while len(self._items) > self.size or self.nbytes > self.max_bytes:
                self.nbytes -= self._items.popitem(last=False)[1][1]

    def get_or_create(self, key: str, create: Callable[[], Any]) -> tuple:
        """``(value, hit)``: the cached value, or ``create()`` stored and returned.

        ``create`` runs outside the lock; errors it raises are not cached.
        """
        value = self.get(key)
        if value is not None:
            return value, True
        value = create()
        self.put(key, value)
        return value, False

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0
