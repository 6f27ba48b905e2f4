"""Fault injection: a chunk that fails anywhere (the policy, the decoder, the model's positions)
leaves the engine exactly as before the call, which then goes on as if it had never happened;
an answer generator, however it ends, frees the engine, and calls made under a suspended
answer on its own thread are refused."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hermes import policies
from hermes.backbones import Backbone, load_backbone
from hermes.decode import run_text
from hermes.engine import StreamEngine
from hermes.errors import HermesError
from tests.conftest import make_engine, random_frames

QUESTION = "what is on the screen now ?"
CHUNK = 4
SETUP = 6  # frames before the failing call: one chunk in the cache, two pending
CALL = 8  # the failing call: with the pending two, chunks 2 and 3; the fault strikes in chunk 3
TIMES = np.arange(SETUP + CALL) * 0.5
FRAMES = random_frames(SETUP + CALL, seed=7)


class FaultInjected(RuntimeError):
    """The failure a test planted."""


class Fault:
    """Counts the calls of the site it is planted at; once armed, lets `after` more pass and
    then raises on every call until disarmed."""

    def __init__(self) -> None:
        self.calls, self.left = 0, None

    def trip(self) -> None:
        self.calls += 1
        if self.left is not None:
            if self.left == 0:
                raise FaultInjected(f"planted failure at call {self.calls}")
            self.left -= 1

    def arm(self, after: int) -> None:
        self.left = after

    def disarm(self) -> None:
        self.left = None


FAULT = Fault()


@dataclass
class FailsScoring(policies.Policy):
    """fifo, whose scoring fails once armed: after the chunk was written, before any cut."""

    def score(self, ctx):
        FAULT.trip()
        return ctx.positions.astype(float)


@dataclass
class FailsAfterEviction(policies.Policy):
    """Keeps the newest tokens, folds the rest (released mode: new keys and moved positions in
    every layer), reads accumulated attention and the chunk's last rows; its telemetry label
    fails once armed: after the cut, the fold and the re-index."""

    reads_accumulated = True

    def score(self, ctx):
        return ctx.positions.astype(float) + 1e-3 * ctx.accumulated + 1e-3 * ctx.window_attention.sum(0)

    def observation_rows(self):
        return 2

    def summarize(self, layer, n_layers):
        return True

    def fold_mode(self):
        return "released"

    def tier(self, layer, n_layers):
        FAULT.trip()
        return "all"


TEST_POLICIES = {"fails-scoring-test": FailsScoring, "fails-after-eviction-test": FailsAfterEviction}


@pytest.fixture(scope="module", autouse=True)
def registered():
    for name, cls in TEST_POLICIES.items():
        policies.register(name)(cls)
    yield
    for name in TEST_POLICIES:
        policies.unregister(name)


@pytest.fixture(scope="module")
def models(backbone) -> dict[str, Backbone]:
    short = load_backbone("random-tiny", seed=0)
    short.model.config.text_config.max_position_embeddings = 200  # as if the stream had run for hours
    return {"fp32": backbone, "bf16": load_backbone("random-tiny", seed=0, dtype="bfloat16"), "short": short}


@pytest.fixture
def decoder_fault(models):
    """FAULT planted after the forward of the middle decoder layer of every model: a chunk's
    forward fails with the lower layers written and the upper ones not."""
    handles = [b.language_model.layers[b.n_layers // 2].register_forward_hook(lambda *_: FAULT.trip())
               for b in models.values()]
    yield
    for handle in handles:
        handle.remove()


def state_of(engine: StreamEngine) -> tuple:
    """Everything a chunk may change: stats (counters, pending frames, positions, bytes, timings,
    questions) and every layer's keys, values and metadata."""
    layers = [tuple(torch.zeros(0) if x is None else x.clone()
                    for x in (layer.keys, layer.values, *layer.meta(slice(None)).values()))
              for layer in engine.cache.layers]
    return engine.stats(), engine.cache.lengths(), layers


def assert_same(a: tuple, b: tuple, timings: bool = True) -> None:
    (stats_a, lengths_a, layers_a), (stats_b, lengths_b, layers_b) = a, b
    if not timings:
        stats_a, stats_b = ({k: v for k, v in s.items() if k != "timings"} for s in (stats_a, stats_b))
    assert stats_a == stats_b
    assert lengths_a == lengths_b
    for la, lb in zip(layers_a, layers_b, strict=True):
        assert all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(la, lb, strict=True))


# name, model, policy, budget, config, where the fault is planted (None: none), which call of
# chunk 3 fails given the calls one chunk makes, what the failing call raises
FAULTS = [
    ("policy-scoring", "fp32", "fails-scoring-test", 40, {}, "policy", lambda n: n // 2, FaultInjected, "planted"),
    ("policy-after-cut-fold-reindex", "fp32", "fails-after-eviction-test", 40, {"reindex": "eager"}, "policy",
     lambda n: n // 2, FaultInjected, "planted"),
    ("policy-after-cut-fold-bf16", "bf16", "fails-after-eviction-test", 40, {}, "policy", lambda n: n - 1,
     FaultInjected, "planted"),
    ("decoder-mid-append", "fp32", "fifo", 40, {}, "decoder", lambda n: 0, FaultInjected, "planted"),
    ("decoder-pseudo-query", "fp32", "hermes", 40, {}, "decoder", lambda n: n - 1, FaultInjected, "planted"),
    ("decoder-mid-append-bf16", "bf16", "hermes", 40, {}, "decoder", lambda n: 0, FaultInjected, "planted"),
    ("positions-mid-call", "short", "fifo", 150, {}, None, None, HermesError,
     r"cannot take 65 more within the model's 200 positions"),
    ("positions-up-front", "short", "full", None, {}, None, None, HermesError,
     r"8 new frames refused, nothing was added: .* cannot take 163 more within the model's 200 positions"),
]


@pytest.mark.parametrize("name, model, policy, budget, config, site, nth, error, message", FAULTS,
                         ids=[row[0] for row in FAULTS])
def test_a_failed_chunk_changes_nothing_and_the_stream_goes_on(models, request, name, model, policy, budget, config,
                                                               site, nth, error, message):
    if site == "decoder":
        request.getfixturevalue("decoder_fault")
    backbone = models[model]
    engine, twin = (make_engine(backbone, policy, budget, chunk_frames=CHUNK, max_new_tokens=6, **config)
                    for _ in range(2))
    FAULT.calls = 0
    engine.ingest(FRAMES[:SETUP], TIMES[:SETUP])
    per_chunk = FAULT.calls  # the setup made one chunk
    twin.ingest(FRAMES[:SETUP], TIMES[:SETUP])
    before = state_of(engine)
    if site is not None:
        FAULT.arm(per_chunk + nth(per_chunk))  # chunk 2 passes, chunk 3 fails
    try:
        with pytest.raises(error, match=message):
            engine.ingest(FRAMES[SETUP:], TIMES[SETUP:])
    finally:
        FAULT.disarm()
    assert_same(state_of(engine), before)
    assert engine.pending_frames == SETUP % CHUNK
    # The stream goes on from where it was, with the very frames and times that were refused:
    # the engine that failed and one that never saw the failure are indistinguishable.
    cont = slice(SETUP, SETUP + 2)
    for e in (engine, twin):
        assert [ev.first_frame for ev in e.ingest(FRAMES[cont], TIMES[cont])] == [CHUNK]
    assert engine.ask(QUESTION).tokens == twin.ask(QUESTION).tokens
    assert_same(state_of(engine), state_of(twin), timings=False)


def test_refused_frames_never_pile_up(models):
    """`full` past the model's positions: tick after tick is refused, nothing waits."""
    engine = make_engine(models["short"], "full", chunk_frames=CHUNK)
    engine.ingest(FRAMES[:8])
    before = state_of(engine)
    for tick in range(3):
        with pytest.raises(HermesError, match="4 new frames refused, nothing was added"):
            engine.ingest(random_frames(4, seed=tick))
    assert_same(state_of(engine), before)
    assert engine.stats()["pending_frames"] == 0


def test_a_failed_flush_keeps_its_frames(models, decoder_fault):
    engine = make_engine(models["fp32"], "fifo", 40, chunk_frames=CHUNK)
    engine.ingest(FRAMES[:SETUP])
    before = state_of(engine)
    FAULT.arm(0)
    try:
        with pytest.raises(FaultInjected):
            engine.flush()
    finally:
        FAULT.disarm()
    assert_same(state_of(engine), before)
    assert [ev.n_frames for ev in engine.flush()] == [SETUP % CHUNK]


def write_text(backbone: Backbone, cache) -> None:
    run_text(backbone, cache, [5, 6, 7], write=True)


# Every operation that edits a cache, on its own inside a transaction: undone exactly when the
# transaction fails, and the same result as outside one when it does not.
CACHE_OPS = [
    ("keep", lambda b, c: [layer.keep(torch.arange(0, len(layer), 2)) for layer in c.layers]),
    ("fold", lambda b, c: [layer.fold(layer.evictable_index()[3:12]) for layer in c.layers]),
    ("fold-at", lambda b, c: [layer.fold(layer.evictable_index()[:5], at=int(layer.positions.max()) + 1)
                              for layer in c.layers]),
    ("shift", lambda b, c: c.shift(7)),
    ("compact_all", lambda b, c: c.compact_all()),
    ("append", write_text),
    ("crop-then-append", lambda b, c: (c.crop(-20), write_text(b, c))),
    ("keep-then-append", lambda b, c: ([layer.keep(torch.arange(len(layer) - 9)) for layer in c.layers],
                                       write_text(b, c))),
    ("reset", lambda b, c: c.reset()),
]


@pytest.mark.parametrize("model", ["fp32", "bf16"])
@pytest.mark.parametrize("name, op", CACHE_OPS, ids=[row[0] for row in CACHE_OPS])
def test_a_failed_cache_transaction_undoes_every_operation(models, model, name, op):
    backbone = models[model]
    engine = make_engine(backbone, "fifo", 40, chunk_frames=CHUNK)
    engine.ingest(FRAMES[:SETUP])
    twin, before = engine.fork(), state_of(engine)
    with pytest.raises(FaultInjected), engine.cache.transaction():
        op(backbone, engine.cache)
        raise FaultInjected("after the operation")
    assert_same(state_of(engine), before)
    assert all(torch.equal(a.references, b.references) for a, b in zip(engine.cache.layers, twin.cache.layers,
                                                                         strict=True))
    with engine.cache.transaction():  # it succeeds: the same as without a transaction
        op(backbone, engine.cache)
    op(backbone, twin.cache)
    assert_same(state_of(engine), state_of(twin), timings=False)
    assert all(a.references is b.references is None or torch.equal(a.references, b.references)
               for a, b in zip(engine.cache.layers, twin.cache.layers, strict=True))


# ---- answer generators ---------------------------------------------------------------------
def within(fn: Callable[[], object], seconds: float = 30.0) -> object:
    """fn() run on another thread; fails the test if it has not returned in time (a held lock)."""
    out: dict[str, object] = {}
    worker = threading.Thread(target=lambda: out.update(value=fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn} still blocked after {seconds} s: the engine is held"
    return out.get("value")


def suspended_answer(engine: StreamEngine):
    """An ask_stream generator holding its first piece, its question in the cache."""
    gen = engine.ask_stream(QUESTION)
    assert next(gen)
    return gen


def closed_from_another_thread(box: list) -> None:
    within(box.pop().close)


def dropped_in_a_cycle(box: list) -> None:
    """Only the collector can free it, and it runs on another thread (as in a server's worker)."""
    gc.disable()
    try:
        cycle = {"gen": box.pop()}
        cycle["self"] = cycle
        del cycle
        within(gc.collect)
    finally:
        gc.enable()


def read_on_another_thread_then_dropped(box: list) -> None:
    within(lambda: next(box[0]))  # that thread reads the next piece (the answer is its now) and ends
    dropped_in_a_cycle(box)


ENDINGS = [closed_from_another_thread, dropped_in_a_cycle, read_on_another_thread_then_dropped]


@pytest.mark.parametrize("end", ENDINGS, ids=[e.__name__ for e in ENDINGS])
def test_an_answer_ended_early_frees_the_engine_and_the_cache(backbone, end):
    engine = make_engine(backbone, "fifo", 40, chunk_frames=CHUNK, max_new_tokens=8)
    engine.ingest(FRAMES[:SETUP])
    before = state_of(engine)
    end([suspended_answer(engine)])
    assert_same(state_of(engine), before)
    assert [ev.first_frame for ev in within(lambda: engine.ingest(FRAMES[SETUP:SETUP + 2]))] == [CHUNK]
    twin = make_engine(backbone, "fifo", 40, chunk_frames=CHUNK, max_new_tokens=8)
    twin.ingest(FRAMES[:SETUP + 2])
    assert engine.ask(QUESTION).tokens == twin.ask(QUESTION).tokens


def test_an_answer_whose_decoder_fails_frees_the_engine_and_the_cache(backbone, decoder_fault):
    engine = make_engine(backbone, "fifo", 40, chunk_frames=CHUNK, max_new_tokens=8)
    engine.ingest(FRAMES[:SETUP])
    before = state_of(engine)
    gen = suspended_answer(engine)
    FAULT.arm(1)  # the next token's forward passes, the one after fails
    try:
        with pytest.raises(FaultInjected):
            list(gen)
    finally:
        FAULT.disarm()
    assert_same(state_of(engine), before)
    within(lambda: engine.ingest(FRAMES[SETUP:SETUP + 2]))


REENTRANT = [
    ("reset", lambda e: e.reset()),
    ("ingest", lambda e: e.ingest(FRAMES[SETUP:SETUP + 2])),
    ("flush", lambda e: e.flush()),
    ("ask", lambda e: e.ask("and now ?")),
    ("ask", lambda e: next(e.ask_stream("and now ?"))),
    ("peek", lambda e: e.next_token_logits("and now ?")),
    ("attend", lambda e: e.attend("and now ?")),
    ("fork", lambda e: e.fork()),
]


@pytest.mark.parametrize("call, fn", REENTRANT, ids=["reset", "ingest", "flush", "ask", "ask_stream",
                                                     "next_token_logits", "attend", "fork"])
def test_calls_under_a_suspended_answer_on_its_thread_are_refused(backbone, call, fn):
    engine, twin = (make_engine(backbone, "fifo", 40, chunk_frames=CHUNK, max_new_tokens=8) for _ in range(2))
    for e in (engine, twin):
        e.ingest(FRAMES[:SETUP])
    before = state_of(engine)
    gen = suspended_answer(engine)
    held = (engine.cache.lengths(), engine.next_position)
    with pytest.raises(HermesError, match=rf"{call}\(\) was called while an answer is still streaming on this thread"):
        fn(engine)
    assert (engine.cache.lengths(), engine.next_position) == held  # the answer's own tokens, nothing else
    assert engine.cache_lengths() == before[0]["cache_lengths"]  # reads go through
    list(gen)
    assert engine.last_answer.tokens == twin.ask(QUESTION).tokens  # the answer was not disturbed
    state = state_of(engine)
    assert state[0]["questions"] == 1
    assert_same(state, state_of(twin), timings=False)


def test_other_threads_wait_for_a_streaming_answer_then_run(backbone):
    engine = make_engine(backbone, "fifo", 40, chunk_frames=CHUNK, max_new_tokens=8)
    engine.ingest(FRAMES[:SETUP])
    gen = suspended_answer(engine)
    lengths = engine.cache.lengths()
    worker = threading.Thread(target=lambda: engine.ingest(FRAMES[SETUP:SETUP + 2]), daemon=True)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and engine.frames_seen == CHUNK  # it waits: nothing runs under the answer
    next(gen)
    assert all(a > b for a, b in zip(engine.cache.lengths(), lengths, strict=True))  # the answer goes on
    list(gen)
    worker.join(30)
    assert not worker.is_alive() and engine.frames_seen == 2 * CHUNK
