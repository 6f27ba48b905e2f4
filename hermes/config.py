"""Engine configuration: one dataclass holding the knobs of the streaming engine.

    from hermes.config import HermesConfig
    cfg = HermesConfig(budget=512, chunk_frames=16)   # validated on construction

Invalid values raise ``HermesError`` naming the field and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from hermes.errors import HermesError

REINDEX_MODES = ("lazy", "eager")


@dataclass(frozen=True)
class HermesConfig:
    """Knobs of a ``StreamEngine``.

    budget: evictable tokens (video, newline, summary) kept per layer; None = unbounded.
    chunk_frames: frames encoded and appended per chunk.
    fps: sampling rate used when the engine reads a video file itself (CLI, app).
    reindex: "lazy" keeps original RoPE positions until they near the model's limit;
        "eager" compacts positions after every eviction.
    reindex_margin: lazy mode compacts once max position > max_position_embeddings - margin.
    max_new_tokens / repetition_penalty: greedy decoding of answers.
    """

    budget: int | None = None
    chunk_frames: int = 16
    fps: float = 1.0
    reindex: str = "lazy"
    reindex_margin: int = 1024
    max_new_tokens: int = 16
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        if self.budget is not None and (not isinstance(self.budget, int) or self.budget < 1):
            raise HermesError(f"budget must be a whole number >= 1 (or None for no limit), got {self.budget!r}")
        if not isinstance(self.chunk_frames, int) or not 1 <= self.chunk_frames <= 256:
            raise HermesError(f"chunk_frames must be a whole number in [1, 256], got {self.chunk_frames!r}")
        if not isinstance(self.fps, (int, float)) or not 0 < self.fps <= 60:
            raise HermesError(f"fps must be in (0, 60], got {self.fps!r}")
        if self.reindex not in REINDEX_MODES:
            raise HermesError(f"reindex must be one of {REINDEX_MODES}, got {self.reindex!r}")
        if not isinstance(self.reindex_margin, int) or self.reindex_margin < 0:
            raise HermesError(f"reindex_margin must be a whole number >= 0, got {self.reindex_margin!r}")
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 1024:
            raise HermesError(f"max_new_tokens must be a whole number in [1, 1024], got {self.max_new_tokens!r}")
        if not isinstance(self.repetition_penalty, (int, float)) or not 1.0 <= self.repetition_penalty <= 10.0:
            raise HermesError(f"repetition_penalty must be in [1, 10], got {self.repetition_penalty!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> HermesConfig:
        """Build a config, rejecting unknown names with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise HermesError(f"unknown config option(s) {unknown}; known options: {sorted(known)}")
        return cls(**kwargs)

    def with_(self, **changes: Any) -> HermesConfig:
        """A validated copy with some fields changed."""
        return replace(self, **changes)
