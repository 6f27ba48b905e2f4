"""Telemetry events the engine emits: plain dataclasses with numbers and numpy arrays.

The app and the analysis draw from these; nothing here holds a tensor. Attention is
pooled to the unit a viewer thinks in, frames: ``attention[name][layer, j]`` is the
attention mass the pseudo-query `name` put on frame ``frame_ids[j]`` in that layer
(mean over heads and query rows, summed over the frame's tokens).

    events = engine.ingest(frames, timestamps)
    events[-1].kept          # (L, F) tokens of each frame each layer kept
    events[-1].to_dict()     # JSON-ready

The helpers that turn the cache into these per-frame views (``frames_present``,
``pool_layers``, ``keep_map``) and the ``Stopwatch`` that fills ``timings`` live here too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hermes.cache import SUMMARY, HermesCache


def process_rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), MiB; 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def pool_per_frame(values: np.ndarray, frames: np.ndarray, frame_ids: np.ndarray) -> np.ndarray:
    """Sum (k,) per-token values into (F,) per-frame totals; tokens of other frames
    (text, summary: frame -1) are left out."""
    out = np.zeros(len(frame_ids), dtype=np.float64)
    if len(frame_ids) == 0:
        return out
    slot = np.searchsorted(frame_ids, frames)
    hit = (slot < len(frame_ids)) & (frame_ids[np.minimum(slot, len(frame_ids) - 1)] == frames)
    np.add.at(out, slot[hit], values[hit])
    return out


def frames_present(cache: HermesCache) -> np.ndarray:
    """(F,) sorted frame indices held by any layer."""
    frames = np.concatenate([layer.frames.numpy() for layer in cache.layers])
    return np.unique(frames[frames >= 0])


def pool_layers(cache: HermesCache, per_layer: Sequence[np.ndarray], frame_ids: np.ndarray) -> np.ndarray:
    """Per-layer (len(layer),) token values -> (L, F) per-frame sums."""
    return np.stack([pool_per_frame(values, layer.frames.numpy(), frame_ids)
                     for values, layer in zip(per_layer, cache.layers, strict=True)])


def keep_map(cache: HermesCache, frame_ids: np.ndarray) -> np.ndarray:
    """(L, F) tokens of each frame each layer holds."""
    return pool_layers(cache, [np.ones(len(layer)) for layer in cache.layers], frame_ids).astype(np.int64)


def cache_attention(cache: HermesCache, attention: list[np.ndarray]) -> CacheAttention:
    """Per-layer token attention with the frames, kinds and positions of those tokens."""
    layers = cache.layers
    return CacheAttention(attention=attention, frames=[layer.frames.numpy().copy() for layer in layers],
                          kinds=[layer.kinds.numpy().astype(np.int64) for layer in layers],
                          positions=[layer.positions.numpy().copy() for layer in layers])


def cache_summary(cache: HermesCache) -> dict:
    """The ChunkEvent fields read off the cache after eviction."""
    return {"cache_lengths": np.array(cache.evictable_lengths()),
            "summary": np.array([int((layer.kinds == SUMMARY).sum()) for layer in cache.layers]),
            "kv_bytes": cache.nbytes(), "max_position": cache.max_position()}


class Stopwatch:
    """Seconds per named stage, summed over laps: ``with watch.lap("encode"): ...``; "total"
    is the wall time since the stopwatch was made."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.laps[name] = self.laps.get(name, 0.0) + time.perf_counter() - start

    def timings(self, stages: Sequence[str]) -> dict[str, float]:
        """The laps of `stages` (0 for a stage that did not run) and the "total" so far."""
        return {**{name: self.laps.get(name, 0.0) for name in stages}, "total": time.perf_counter() - self.started}


@dataclass
class CacheAttention:
    """Where one text looked in the cache, token by token, per layer (numpy, no tensors).

    ``attention[l][i]`` is the softmax mass the text's tokens put on cached token i of layer
    l (mean over heads and over the text's rows; a row's mass on the text itself is left
    out, so each layer sums to <= 1); ``frames``, ``kinds`` and ``positions`` describe those
    tokens (kind codes in hermes.cache: VIDEO 1, NEWLINE 2, SUMMARY 3; frame -1 = not a frame)."""

    attention: list[np.ndarray]  # per layer (n_l,) float
    frames: list[np.ndarray]  # per layer (n_l,) int
    kinds: list[np.ndarray]  # per layer (n_l,) int
    positions: list[np.ndarray]  # per layer (n_l,) int


@dataclass
class ChunkEvent:
    """One chunk ingested: what came in, what each layer attended to and kept, what it cost."""

    chunk: int  # 0-based chunk number
    first_frame: int  # stream index of the chunk's first frame
    n_frames: int
    t_start: float  # seconds
    t_end: float
    policy: str
    tiers: list[str]  # (L,) each layer's role for the policy
    layer_budgets: np.ndarray  # (L,) tokens each layer may keep (0: no limit)
    cache_lengths: np.ndarray  # (L,) evictable tokens per layer after eviction
    evicted: np.ndarray  # (L,) tokens dropped (or folded) per layer by this chunk
    frame_ids: np.ndarray  # (F,) frames present in any layer before eviction
    kept: np.ndarray  # (L, F) tokens of each frame each layer kept
    summary: np.ndarray  # (L,) summary tokens each layer holds
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # query -> (L, F), before eviction
    kv_bytes: int = 0
    max_position: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # s: encode prefill pseudo score evict telemetry total
    layout: str = ""  # the backbone's token layout: "newline-per-chunk" or "newline-before-question"

    def to_dict(self) -> dict:
        return {"type": "chunk", **_plain(asdict(self))}


@dataclass
class QuestionEvent:
    """One question answered from the cache."""

    question: str
    answer: str
    ttft_s: float
    total_s: float
    n_tokens: int
    frames_seen: int
    frame_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (F,)
    attention: np.ndarray | None = None  # (L, F) the question's attention per frame ("where it looked")

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"type": "question", **_plain(asdict(self)), "tokens_per_s": self.tokens_per_s}
