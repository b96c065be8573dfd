"""Batching (daemon/batching.py): every caller gets its own result, writes are shared."""

import threading
import time

import pytest

from daemon.batching import Batcher


def _run_threads(count: int, target) -> list:
    results = [None] * count
    gate = threading.Barrier(count)

    def run(index):
        gate.wait()
        try:
            results[index] = target(index)
        except Exception as error:  # collected for the assertions
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return results


def test_concurrent_submissions_share_writes_and_each_gets_its_own_result():
    batches = []

    def write(items):
        batches.append(list(items))
        time.sleep(0.005)  # an fsync: the others queue meanwhile
        return [item * 10 for item in items]

    group = Batcher(write)
    results = _run_threads(32, group.submit)
    assert results == [i * 10 for i in range(32)]
    assert sorted(item for batch in batches for item in batch) == list(range(32))
    assert len(batches) < 32  # some writes carried several submissions


def test_a_failed_write_fails_its_whole_batch_and_the_next_submissions_still_work():
    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            time.sleep(0.01)
            raise OSError("disk full")
        return list(items)

    group = Batcher(write)
    first = _run_threads(8, group.submit)
    failed = [r for r in first if isinstance(r, OSError)]
    assert len(failed) == len(calls[0]) >= 1
    assert all(r == i for i, r in enumerate(first) if not isinstance(r, OSError))
    assert group.submit(99) == 99  # leadership was handed back


def test_a_write_that_returns_the_wrong_number_of_results_is_an_error():
    group = Batcher(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1"):
        group.submit("x")


def _two_arrivals_apart(group: Batcher) -> list:
    """Submit "a", then "b" 20 ms later, each from its own thread; their results."""
    results = {}

    def submit(item):
        results[item] = group.submit(item)

    threads = [threading.Thread(target=submit, args=(item,)) for item in "ab"]
    threads[0].start()
    time.sleep(0.02)  # arrival order, not a due time: "b" comes after "a"'s leader began
    threads[1].start()
    for thread in threads:
        thread.join(timeout=10)
    return [results["a"], results["b"]]


def test_a_gathering_leader_waits_for_company_before_it_writes():
    batches = []

    def write(items):
        batches.append(list(items))
        return [item.upper() for item in items]

    assert _two_arrivals_apart(Batcher(write)) == ["A", "B"]
    assert batches == [["a"], ["b"]]  # without gathering, the first wrote alone at once
    batches.clear()
    assert _two_arrivals_apart(Batcher(write, gather=0.5)) == ["A", "B"]
    assert batches == [["a", "b"]]
