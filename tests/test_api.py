"""The public API: load_engine, bad input with clear errors that lose nothing, policy registry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import hermes
from hermes import HermesError, policies
from hermes.backbones import load_backbone
from tests.conftest import make_engine, random_frames


def test_load_engine_with_public_names(backbone):
    engine = hermes.load_engine(backbone, policy="fifo", budget=64, chunk_frames=4)
    engine.ingest(random_frames(4))
    assert engine.cache_lengths() == [64] * backbone.n_layers
    assert isinstance(engine.ask("what is on the screen now ?", max_new_tokens=2), hermes.Answer)
    assert {"full", "fifo"} <= set(hermes.policies.available())


@pytest.mark.parametrize("kwargs, message", [
    ({"policy": "nope"}, r"unknown policy 'nope'; available: .*fifo"),
    ({"policy": "fifo", "budget": 0}, r"budget must be a whole number >= 1"),
    ({"policy": "fifo", "chunk_frames": 0}, r"chunk_frames must be a whole number in \[1, 256\]"),
    ({"policy": "fifo", "fps": -1}, r"fps must be a number in \(0, 60\]"),
    ({"policy": "fifo", "reindex": "sometimes"}, r"reindex must be one of \('lazy', 'eager'\)"),
    ({"policy": "fifo", "colour": "red"}, r"unknown config option\(s\) \['colour'\]"),
    ({"policy": "fifo", "policy_params": {"window": 3}}, r"policy 'fifo' has no parameter\(s\) \['window'\]"),
])
def test_bad_engine_options(backbone, kwargs, message):
    with pytest.raises(HermesError, match=message):
        hermes.load_engine(backbone, **kwargs)


BAD_INGEST = [
    ("list", lambda: [[1, 2, 3]], None, r"numpy uint8 array"),
    ("float", lambda: np.zeros((2, 8, 8, 3), np.float32), None, r"uint8 RGB"),
    ("gray", lambda: np.zeros((2, 8, 8), np.uint8), None, r"shape \(T, H, W, 3\)"),
    ("empty", lambda: np.zeros((0, 8, 8, 3), np.uint8), None, r"T, H, W > 0"),
    ("n_times", lambda: np.zeros((2, 8, 8, 3), np.uint8), [1.0], r"got 2 frames but 1 timestamps"),
    ("backwards", lambda: np.zeros((2, 8, 8, 3), np.uint8), [100.0, 99.0], r"timestamps must increase"),
    ("past", lambda: np.zeros((2, 8, 8, 3), np.uint8), [1.0, 2.0], r"timestamps must increase \(stream is at"),
    ("nan", lambda: np.zeros((1, 8, 8, 3), np.uint8), [float("nan")], r"finite"),
]


@pytest.mark.parametrize("name, frames, times, message", BAD_INGEST, ids=[c[0] for c in BAD_INGEST])
def test_bad_ingest_is_refused_and_loses_nothing(backbone, name, frames, times, message):
    engine = make_engine(backbone, "fifo", budget=40, chunk_frames=4)
    engine.ingest(random_frames(6), timestamps=np.arange(6) * 1.0)
    before = (engine.frames_seen, engine.pending_frames, engine.cache.lengths(), engine.stats()["kv_bytes"])
    with pytest.raises(HermesError, match=message):
        engine.ingest(frames(), times)
    assert (engine.frames_seen, engine.pending_frames, engine.cache.lengths(), engine.stats()["kv_bytes"]) == before
    engine.ingest(random_frames(2), timestamps=[6.0, 7.0])  # the stream goes on
    assert engine.frames_seen == 8


@pytest.mark.parametrize("question, message", [
    ("", "the question is empty"), ("   ", "the question is empty"), (None, "the question is empty"),
    ("why " * 600, "the question is too long"),
])
def test_bad_questions(backbone, question, message):
    engine = make_engine(backbone, "fifo", budget=40, chunk_frames=4)
    engine.ingest(random_frames(4))
    lengths = engine.cache.lengths()
    with pytest.raises(HermesError, match=message):
        engine.ask(question)
    assert engine.cache.lengths() == lengths


def test_full_policy_refuses_a_chunk_past_the_model_positions():
    short = load_backbone("random-tiny")
    short.model.config.text_config.max_position_embeddings = 200  # as if the stream had run for hours
    engine = make_engine(short, "full", chunk_frames=4)
    engine.ingest(random_frames(8))
    lengths = engine.cache.lengths()
    with pytest.raises(HermesError, match="cannot take 65 more within the model's 200 positions; use a policy"):
        engine.ingest(random_frames(4))
    assert engine.frames_seen == 8 and engine.cache.lengths() == lengths


@pytest.fixture
def scratch_registry():
    """Policies registered by a test vanish after it."""
    before = set(policies.available())
    yield
    for name in set(policies.available()) - before:
        policies.unregister(name)


def test_user_policy_plugs_in_without_touching_the_engine(backbone, scratch_registry):
    @policies.register("oldest-first-test")
    @dataclass
    class KeepOldest(policies.Policy):
        def score(self, ctx):
            return -ctx.positions.astype(float)

    engine = hermes.load_engine(backbone, policy="oldest-first-test", budget=32, chunk_frames=4)
    engine.ingest(random_frames(12))
    kept = engine.cache.layers[4].frames[engine.cache.layers[4].evictable_index()]
    assert kept.tolist() == [0] * 16 + [1] * 16  # the first two frames survive
    assert "oldest-first-test" in policies.available()


def test_policy_returning_wrong_shape_is_reported(backbone, scratch_registry):
    @policies.register("broken-test")
    @dataclass
    class Broken(policies.Policy):
        def score(self, ctx):
            return np.ones(3)

    engine = hermes.load_engine(backbone, policy="broken-test", budget=8, chunk_frames=2)
    with pytest.raises(HermesError, match="returned \\(3,\\) scores for 33 tokens"):
        engine.ingest(random_frames(2))


def test_a_policy_written_for_the_old_interface_is_refused_at_registration(scratch_registry):
    with pytest.raises(HermesError, match=r"queries\(self, n_layers\)"):
        @policies.register("old-style-test")
        @dataclass
        class OldStyle(policies.Policy):
            needs = frozenset({"pseudo_queries"})

            def score(self, ctx):
                return np.ones(ctx.n)
    assert "old-style-test" not in policies.available()


def test_policy_parameters_go_with_a_name_not_with_an_instance(backbone):
    with pytest.raises(HermesError, match="policy_params go with a policy name"):
        hermes.load_engine(backbone, policy=policies.get("fifo"), policy_params={"x": 1})
    engine = hermes.load_engine(backbone, policy="streaming_llm", policy_params={"sinks": np.int64(2)})
    assert engine.policy.sinks == 2
