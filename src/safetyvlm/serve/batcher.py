"""Adaptive batching in the model process: concurrent requests share one forward pass.

Why not BentoML's own batcher (`batchable=True`): it dispatches whatever is queued the moment the model is
free. Clients that send their next image as soon as an answer is back then split into two halves that take
turns: one half's requests queue while the other half's batch runs and are dispatched alone, and the half
that just got its answers arrives a few milliseconds later and waits for the next pass (measured: batches of
exactly 4.0 at 8 clients and 16.0 at 32, about half the images/s of full batches on a GPU; docs/serving.md).

Here, when the model comes free, the next batch waits for as many requests as were in the system when the
last batch ended (its own and those queued behind it), so returning clients join: as long as each comes
within `wait_s` of the one before (on a loaded machine they trickle back one by one). At one client nothing
is waited for, and after an idle spell the first request goes at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable


class Batcher:
    """`await submit(item)` -> `run`'s answer for that item. `run(items) -> answers` (same order, same
    length) runs in a worker thread, one batch at a time; an exception it raises goes to every request of
    that batch. A request cancelled while queued (its client left, a timeout) is dropped before dispatch."""

    def __init__(self, run: Callable[[list], list], max_batch_size: int, wait_s: float):
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError(f"max_batch_size must be >= 1 and wait_s >= 0, got {max_batch_size}, {wait_s}")
        self.run, self.max_batch_size, self.wait_s = run, max_batch_size, wait_s
        self.queue: list[tuple[Any, asyncio.Future]] = []
        self.expect = 0                     # requests in the system when the last batch ended
        self.freed_at = float("-inf")       # when the model last came free
        self.arrived_at = float("-inf")     # when the latest request came
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._serve())
        future = loop.create_future()
        self.queue.append((item, future))
        self.arrived_at = time.monotonic()
        self._arrived.set()
        return await future

    def _live(self) -> int:
        self.queue = [(i, f) for i, f in self.queue if not f.cancelled()]
        return len(self.queue)

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        while not self._live():
            self._arrived.clear()
            await self._arrived.wait()
        target = min(self.max_batch_size, self.expect)
        if time.monotonic() > self.freed_at + self.wait_s and self.arrived_at > self.freed_at + self.wait_s:
            target = 0  # the model sat idle: whoever comes now comes alone or with its own company
        while self._live() < target:
            left = max(self.freed_at, self.arrived_at) + self.wait_s - time.monotonic()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                break
        batch, self.queue = self.queue[:self.max_batch_size], self.queue[self.max_batch_size:]
        return batch

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                answers = await asyncio.to_thread(self.run, [item for item, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"the model answered {len(answers)} of {len(batch)} requests")
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
            else:
                for (_, future), answer in zip(batch, answers):
                    if not future.done():
                        future.set_result(answer)
            self.expect = len(batch) + self._live()
            self.freed_at = time.monotonic()
