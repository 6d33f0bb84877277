"""Dynamic batching: concurrent requests gathered into one forward pass, answers kept apart.

Written here rather than taken from LitServe: LitServe batches by running its own server and
worker processes, which would replace the FastAPI app (page, auth, upload checks) rather than
sit behind it, and its batches stack inputs of one size; images of different sizes must be
grouped instead. This is one thread and one bounded queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import torch


class QueueFull(RuntimeError):
    """More requests are waiting than the queue holds: answer 503, retry later."""


@dataclass
class Pending:
    """One request's prepared input and where its answer goes."""

    pixels: torch.Tensor  # [1,C,H,W] uint8, as the network takes it
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Runs ``forward`` on batches of up to ``max_batch`` same-shaped inputs, gathering
    requests for at most ``max_wait_ms`` after the first of a batch arrives.

    Args:
        forward: uint8 [B,C,H,W] -> per-input results [B,...] (a tensor).
        max_batch: the largest batch (1: no batching, one request at a time).
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue: requests waiting beyond this are refused with ``QueueFull``.
        on_batch: called with (batch size, seconds the forward took) after each batch.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 8,
                 max_wait_ms: float = 5.0, max_queue: int = 64,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_ms >= 0")
        self.forward, self.max_batch, self.max_wait = forward, max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Pending] = queue.Queue(max_queue)
        self.on_batch = on_batch
        self.held: list[Pending] = []  # taken from the queue, of another shape than the batch
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="segkit-batcher", daemon=True)
        self.thread.start()

    def submit(self, pixels: torch.Tensor) -> Future:
        """Queue one input ([1,C,H,W]); its future gets that input's result ([...])."""
        item = Pending(pixels)
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            raise QueueFull(f"{self.queue.maxsize} requests already waiting") from None
        return item.future

    def waiting(self) -> int:
        """Requests queued or held, not yet running."""
        return self.queue.qsize() + len(self.held)

    def close(self) -> None:
        """Stop after the batch in flight; waiting requests get an error."""
        self.stopping.set()
        self.thread.join(5)
        for item in self.held + list(self.queue.queue):
            item.future.set_exception(RuntimeError("service stopping"))

    def _next(self, timeout: float | None) -> Pending | None:
        if self.held:
            return self.held.pop(0)
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _gather(self) -> list[Pending]:
        first = self._next(0.1)
        if first is None:
            return []
        batch, shape = [first], first.pixels.shape
        same = [h for h in self.held if h.pixels.shape == shape][: self.max_batch - 1]
        if same:
            batch += same
            self.held = [h for h in self.held if all(h is not s for s in same)]
        deadline = time.perf_counter() + self.max_wait
        others: list[Pending] = []
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            (batch if item.pixels.shape == shape else others).append(item)
        self.held = others + self.held if others else self.held
        return batch

    def _loop(self) -> None:
        while not self.stopping.is_set():
            batch = self._gather()
            if not batch:
                continue
            live = [b for b in batch if b.future.set_running_or_notify_cancel()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                out = self.forward(torch.cat([b.pixels for b in live]))
            except Exception as err:  # noqa: BLE001 - every request of the batch learns why
                for item in live:
                    with contextlib.suppress(InvalidStateError):
                        item.future.set_exception(err)
                continue
            if self.on_batch:
                self.on_batch(len(live), time.perf_counter() - start)
            for item, result in zip(live, out, strict=True):
                with contextlib.suppress(InvalidStateError):
                    item.future.set_result(result)
