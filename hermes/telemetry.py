"""Telemetry events the engine emits: plain dataclasses with numbers and numpy arrays.

The app and the analysis draw from these; nothing here holds a tensor. Attention is
pooled to the unit a viewer thinks in, frames: ``attention[name][layer, j]`` is the
attention mass the pseudo-query `name` put on frame ``frame_ids[j]`` in that layer
(mean over heads and query rows, summed over the frame's tokens).

    events = engine.ingest(frames, timestamps)
    events[-1].kept          # (L, F) tokens of each frame each layer kept
    events[-1].to_dict()     # JSON-ready
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


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
