"""Application ids: time-ordered, unique under contention, node-tagged."""

from __future__ import annotations

import threading

import pytest

from db.ids import EPOCH_MS, MAX_SEQ, IdGenerator, id_timestamp_ms


def test_ids_increase_and_encode_time() -> None:
    gen = IdGenerator(node_id=7, clock_ms=lambda: EPOCH_MS + 1234)
    ids = [gen.next() for _ in range(3 * (MAX_SEQ + 1))]  # overflows the sequence twice
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert id_timestamp_ms(ids[0]) == EPOCH_MS + 1234
    assert all(0 < i < 2**63 for i in ids)


def test_clock_going_backwards_never_repeats() -> None:
    now = [EPOCH_MS + 10_000]
    gen = IdGenerator(node_id=1, clock_ms=lambda: now[0])
    a = gen.next()
    now[0] -= 5_000
    assert gen.next() > a


def test_unique_across_threads() -> None:
    gen = IdGenerator(node_id=3)
    out: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [gen.next() for _ in range(5000)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 40_000


def test_node_range() -> None:
    with pytest.raises(ValueError):
        IdGenerator(node_id=1024)
