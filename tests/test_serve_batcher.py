"""The service's adaptive batcher (serve/batcher.py) with a model that only sleeps: the timing of a batch
is what the batcher reacts to, so a sleeping `run` exercises it exactly; the real model goes through it in
tests/test_serve.py and tests/test_serve_load.py."""

import asyncio
import threading
import time

import pytest

from safetyvlm.serve.batcher import Batcher

PASS_S = 0.05  # one forward pass, whatever its size (a GPU's decoding reads the weights once a step)


class SleepingModel:
    def __init__(self, fail_on=None):
        self.sizes, self.fail_on, self.threads = [], fail_on, set()

    def __call__(self, items):
        self.threads.add(threading.get_ident())
        self.sizes.append(len(items))
        time.sleep(PASS_S)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [i * 10 for i in items]


async def closed_loop(batcher, clients: int, rounds: int, think_s: float = 0.002, stagger_s: float = 0.004):
    """Each client sends its next request a moment after its answer is back, as locust's users do; they
    start a few milliseconds apart, so the first pass begins with only some of them."""
    async def client(c):
        await asyncio.sleep(c * stagger_s)
        for r in range(rounds):
            assert await batcher.submit(c * 1000 + r) == (c * 1000 + r) * 10
            await asyncio.sleep(think_s)
    await asyncio.gather(*(client(c) for c in range(clients)))


@pytest.mark.parametrize("clients", [8, 32])
def test_returning_clients_join_the_next_batch(clients):
    model = SleepingModel()
    asyncio.run(closed_loop(Batcher(model, max_batch_size=clients, wait_s=0.03), clients, rounds=8))
    # the first passes take whoever has come (they start 4 ms apart); once all are in, every pass holds
    # every client until the first ones run out of rounds
    assert sum(model.sizes) == clients * 8
    assert model.sizes.count(clients) >= 5, model.sizes


def test_without_the_wait_the_clients_split_into_halves_that_take_turns():
    """What BentoML's batcher did to the service (docs/serving.md): no wait, and a pass that starts while
    the last one's clients are on their way back holds only part of them."""
    model = SleepingModel()
    asyncio.run(closed_loop(Batcher(model, max_batch_size=8, wait_s=0.0), 8, rounds=6))
    assert max(model.sizes) < 8, model.sizes


def test_one_client_never_waits():
    model = SleepingModel()
    batcher = Batcher(model, max_batch_size=8, wait_s=1.0)

    async def go():
        t0 = time.perf_counter()
        for i in range(5):
            await batcher.submit(i)
        return time.perf_counter() - t0

    elapsed = asyncio.run(go())
    assert model.sizes == [1] * 5
    assert elapsed < 5 * PASS_S + 0.5  # a 1 s wait on any of them would show


def test_after_an_idle_spell_the_first_request_goes_at_once():
    model = SleepingModel()
    batcher = Batcher(model, max_batch_size=8, wait_s=1.0)

    async def go():
        await closed_loop(batcher, 8, rounds=2)  # the batcher now expects 8
        await asyncio.sleep(1.1)                 # ... but the wait after that batch has run out
        t0 = time.perf_counter()
        await batcher.submit(1)
        return time.perf_counter() - t0

    assert asyncio.run(go()) < PASS_S + 0.5
    assert model.sizes[-1] == 1


def test_clients_that_stop_cost_one_wait_at_most():
    model = SleepingModel()
    batcher = Batcher(model, max_batch_size=8, wait_s=0.3)

    async def go():
        await closed_loop(batcher, 8, rounds=3)
        t0 = time.perf_counter()
        await batcher.submit(1)  # only this one comes back; the batcher expected 8
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        await batcher.submit(2)  # now it expects 1
        return first, time.perf_counter() - t0

    first, second = asyncio.run(go())
    assert first < 0.3 + PASS_S + 0.2 and second < PASS_S + 0.2, (first, second)


def test_batches_never_exceed_the_limit_and_answers_keep_their_order():
    model = SleepingModel()

    async def go():
        batcher = Batcher(model, max_batch_size=4, wait_s=0.01)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(go()) == [i * 10 for i in range(10)]
    assert max(model.sizes) == 4 and sum(model.sizes) == 10
    assert len(model.threads) == 1 and threading.get_ident() not in model.threads  # off the event loop


def test_an_error_reaches_every_request_of_its_batch_and_the_batcher_goes_on():
    model = SleepingModel(fail_on=3)

    async def go():
        batcher = Batcher(model, max_batch_size=8, wait_s=0.0)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        return first, await batcher.submit(7)

    first, after = asyncio.run(go())
    assert all(isinstance(e, ValueError) and "bad item 3" in str(e) for e in first), first
    assert after == 70


def test_a_request_cancelled_while_queued_never_reaches_the_model():
    model = SleepingModel()

    async def go():
        batcher = Batcher(model, max_batch_size=1, wait_s=0.0)
        running = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)                # 1 is in the model now
        queued = asyncio.ensure_future(batcher.submit(2))
        kept = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        queued.cancel()                          # its client left (a timeout, a disconnect)
        return await running, await kept

    assert asyncio.run(go()) == (10, 30)
    assert model.sizes == [1, 1]  # 1 and 3: 2 was dropped before its pass


def test_a_model_answering_the_wrong_number_fails_its_batch_loudly():
    async def go():
        batcher = Batcher(lambda items: items[:-1], max_batch_size=4, wait_s=0.0)
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    errors = asyncio.run(go())
    assert all(isinstance(e, RuntimeError) and "answered" in str(e) for e in errors), errors


@pytest.mark.parametrize("size, wait", [(0, 0.0), (4, -1.0)])
def test_bad_limits_are_refused(size, wait):
    with pytest.raises(ValueError):
        Batcher(lambda items: items, max_batch_size=size, wait_s=wait)
