"""Application-generated, time-ordered 64-bit ids.

Rows written from the voice path are batched by the write-behind writer, so their ids must exist
before the database sees them, and a replayed write must carry the same id (that is what makes it
idempotent). Layout, most significant first (63 bits, always positive in a signed BIGINT):
41 bits of milliseconds since 2024-01-01 UTC (good until 2093), 10 bits of node id, 12 bits of
sequence within the millisecond.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQ_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQ = (1 << SEQ_BITS) - 1


class IdGenerator:
    """Thread-safe generator of strictly increasing ids for one node."""

    def __init__(self, node_id: int | None = None, clock_ms: Callable[[], int] | None = None):
        if node_id is None:
            # Workers sharing one database need distinct node ids; a random one can collide
            # (birthday odds over 1024 values), so production sets `server.node_id`.
            node_id = int.from_bytes(os.urandom(2), "big") & MAX_NODE
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node_id must be in 0..{MAX_NODE}, got {node_id}")
        self.node_id = node_id
        self._clock = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._seq = 0

    def next(self) -> int:
        with self._lock:
            now = max(self._clock() - EPOCH_MS, self._last_ms)  # never go backwards
            if now == self._last_ms:
                self._seq += 1
                if self._seq > MAX_SEQ:
                    # 4096 ids in one millisecond: borrow the next millisecond.
                    now += 1
                    self._seq = 0
            else:
                self._seq = 0
            self._last_ms = now
            return (now << (NODE_BITS + SEQ_BITS)) | (self.node_id << SEQ_BITS) | self._seq


def id_timestamp_ms(value: int) -> int:
    """Unix milliseconds encoded in an id."""
    return (value >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS


_default: IdGenerator | None = None


def set_node_id(node_id: int | None) -> None:
    """Pick this process's node id (from config, at start-up); None means random."""
    global _default
    _default = IdGenerator(node_id)


def current_node_id() -> int:
    """The node id this process's ids carry now."""
    global _default
    if _default is None:
        _default = IdGenerator()
    return _default.node_id


def new_id() -> int:
    """A fresh id from the process-wide generator."""
    global _default
    if _default is None:
        _default = IdGenerator()
    return _default.next()
