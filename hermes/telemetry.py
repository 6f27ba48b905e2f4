"""Telemetry events the engine emits: plain dataclasses with numbers and numpy arrays.

The app and the analysis draw from these; nothing here holds a tensor.

    events = engine.ingest(frames, timestamps)
    events[-1].to_dict()   # JSON-ready
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


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


@dataclass
class ChunkEvent:
    """One chunk ingested: what came in, what each layer holds now, what it cost."""

    chunk: int  # 0-based chunk number
    first_frame: int  # stream index of the chunk's first frame
    n_frames: int
    t_start: float  # seconds
    t_end: float
    cache_lengths: np.ndarray  # (L,) evictable tokens per layer after eviction
    evicted: np.ndarray  # (L,) tokens dropped (or folded) per layer by this chunk
    kv_bytes: int
    max_position: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode, prefill, evict, total

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

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"type": "question", **_plain(asdict(self)), "tokens_per_s": self.tokens_per_s}
