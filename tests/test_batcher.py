"""Dynamic batching: same-shaped requests share a forward, answers go back to their own
request, a full queue refuses instead of piling up, errors reach every request of a batch."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from segkit.serve.batcher import Batcher, QueueFull


class GatedForward:
    """forward = pixels * 2, held at a gate; records every batch's size."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.sizes: list[int] = []
        self.started = threading.Event()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.started.set()
        self.gate.wait(10)
        self.sizes.append(len(x))
        return x.float() * 2


def _item(value: int, size=(2, 3)) -> torch.Tensor:
    return torch.full((1, 1, *size), value, dtype=torch.uint8)


def _value(future) -> int:
    return int(future.result(5).flatten()[0])


def _held(**settings):
    """A batcher whose forward holds its first request (value 1) at the gate."""
    forward = GatedForward()
    batcher = Batcher(forward, **settings)
    running = batcher.submit(_item(1))
    assert forward.started.wait(5)
    return forward, batcher, running


def test_waiting_requests_of_one_shape_run_together_and_get_their_own_answers() -> None:
    forward = GatedForward()
    batcher = Batcher(forward, max_batch=8, max_wait_ms=50, max_queue=16)
    first = batcher.submit(_item(1))
    assert forward.started.wait(5)  # the first runs alone while the others queue
    same = [batcher.submit(_item(v)) for v in (2, 3, 4)]
    other = batcher.submit(_item(5, size=(4, 4)))
    same.append(batcher.submit(_item(6)))
    forward.gate.set()
    for future, value in zip([first, *same], (1, 2, 3, 4, 6), strict=True):
        out = future.result(5)
        assert out.shape == (1, 2, 3) and (out == 2 * value).all()
    assert (other.result(5) == 10).all() and other.result().shape == (1, 4, 4)
    assert forward.sizes == [1, 4, 1]  # 2, 3, 4, 6 together; the 4x4 one on its own
    batcher.close()


def test_max_batch_one_runs_requests_one_at_a_time() -> None:
    forward = GatedForward()
    forward.gate.set()
    batcher = Batcher(forward, max_batch=1, max_wait_ms=20)
    futures = [batcher.submit(_item(v)) for v in range(5)]
    assert [_value(f) for f in futures] == [0, 2, 4, 6, 8]
    assert forward.sizes == [1] * 5
    batcher.close()


def test_a_full_queue_refuses_at_once() -> None:
    forward, batcher, running = _held(max_batch=1, max_queue=2)
    queued = [batcher.submit(_item(2)), batcher.submit(_item(3))]
    assert batcher.waiting() == 2
    start = time.perf_counter()
    with pytest.raises(QueueFull, match="2 requests already waiting"):
        batcher.submit(_item(4))
    assert time.perf_counter() - start < 0.5
    forward.gate.set()
    assert [_value(f) for f in (running, *queued)] == [2, 4, 6]
    batcher.close()


def test_a_failing_forward_fails_each_request_of_its_batch_and_the_next_batch_runs() -> None:
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return x.float()

    batcher = Batcher(forward, max_batch=4, max_wait_ms=30)
    bad = batcher.submit(_item(1))
    with pytest.raises(RuntimeError, match="out of memory"):
        bad.result(5)
    assert _value(batcher.submit(_item(7))) == 7
    batcher.close()


def test_a_cancelled_request_is_skipped_and_bad_settings_refused() -> None:
    forward, batcher, running = _held(max_batch=4, max_wait_ms=0)
    gone = batcher.submit(_item(2))
    assert gone.cancel()  # the client went away while it waited
    kept = batcher.submit(_item(3))
    forward.gate.set()
    assert _value(running) == 2 and _value(kept) == 6
    assert sum(forward.sizes) == 2
    batcher.close()
    with pytest.raises(ValueError):
        Batcher(forward, max_batch=0)
