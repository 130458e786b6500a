"""transfer/lookahead.in_order: results in order, a look-ahead bounded by files and bytes, and a
large file at the head does not stop the other workers."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from osmo_store.transfer.lookahead import in_order


def test_futures_come_back_in_item_order_whatever_finishes_first():
    rng = random.Random(7)
    delays = [rng.random() / 200 for _ in range(60)]

    def work(i: int) -> int:
        time.sleep(delays[i])
        return i * i

    with ThreadPoolExecutor(4) as ex:
        got = [(i, f.result()) for i, f in in_order(ex, range(60), work, lambda i: 1)]
    assert got == [(i, i * i) for i in range(60)]


def test_other_files_run_while_the_head_file_is_still_being_worked_on():
    """The head item waits until item 30 has run: with a look-ahead of only a few files (as uploads
    had before), item 30 would never be submitted while the head blocks."""
    reached = threading.Event()

    def work(i: int) -> bool:
        if i == 0:
            return reached.wait(timeout=10)
        if i == 30:
            reached.set()
        return True

    with ThreadPoolExecutor(2) as ex:
        results = [f.result() for _, f in in_order(ex, range(40), work, lambda i: 1000)]
    assert results[0] is True  # the head saw item 30 run: the others did not wait for it


def _max_in_flight(max_files: int, max_bytes: int, sizes: list[int]) -> int:
    """Most items submitted but not yet handed back to the caller."""
    lock = threading.Lock()
    state = {"yielded": 0, "max": 0}
    submitted: set[int] = set()

    def size(i: int) -> int:
        with lock:  # size() is first called right after an item is submitted
            submitted.add(i)
            state["max"] = max(state["max"], len(submitted) - state["yielded"])
        return sizes[i]

    with ThreadPoolExecutor(2) as ex:
        for _, f in in_order(ex, range(len(sizes)), lambda i: i, size, max_files=max_files, max_bytes=max_bytes):
            with lock:
                state["yielded"] += 1
            f.result()
    return state["max"]


def test_look_ahead_is_bounded_by_count():
    assert _max_in_flight(3, 10**9, [1] * 50) == 3


def test_look_ahead_is_bounded_by_bytes_but_always_allows_one_item():
    assert _max_in_flight(100, 100, [60] * 20) == 2  # 120 > 100 bytes: the head goes back first
    assert _max_in_flight(100, 100, [500] * 5) == 1  # an item larger than the bound still runs
