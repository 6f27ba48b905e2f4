"""Engine configuration: one dataclass holding the knobs of the streaming engine.

    from hermes.config import HermesConfig
    cfg = HermesConfig(budget=512, chunk_frames=16)   # validated on construction

Invalid values raise ``HermesError`` naming the field and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hermes.errors import HermesError

REINDEX_MODES = ("lazy", "eager")
SCHEDULES = ("code", "paper")
QUERY_MODES = ("tiered", "single")
TIER_MODES = ("hierarchical", "uniform")


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

    HERMES policy (DESIGN section 1; the `hermes` policy reads these by name):
    shallow_ratio / deep_ratio: layers < int(shallow_ratio * L) are shallow, >= int(deep_ratio * L) deep.
    schedule: "code" (released code: middle alpha = 1 - alpha_drop * p, k = k_shallow - (k_shallow - k_deep_end) * p)
        or "paper" (attention weight w = w0 - gamma * p, k as in "code").
    lams: cross-layer smoothing weight for (shallow, middle, deep) layers.
    smoothing / summary: ablation switches (cross-layer smoothing; deep-layer summary token).
    query_mode: "tiered" (local / mixed / global per tier) or "single" (global query everywhere).
    tier_mode: "hierarchical" (three tiers) or "uniform" (one middle tier spanning all layers).
    pseudo_queries: {"local": ..., "global": ...} texts; None = the model's own.

    Telemetry: record_question_attention (per-layer attention of each question, pooled per
    frame) and telemetry_queries (run the global pseudo-query after every chunk for display
    even when the policy needs none).
    """

    budget: int | None = None
    chunk_frames: int = 16
    fps: float = 1.0
    reindex: str = "lazy"
    reindex_margin: int = 1024
    max_new_tokens: int = 16
    repetition_penalty: float = 1.1
    shallow_ratio: float = 0.1
    deep_ratio: float = 0.7
    schedule: str = "code"
    k_shallow: float = 20.0
    k_deep_end: float = 0.5
    alpha_drop: float = 0.9
    w0: float = 0.75
    gamma: float = 0.6
    lams: tuple[float, float, float] = (0.1, 0.3, 0.4)
    smoothing: bool = True
    summary: bool = True
    query_mode: str = "tiered"
    tier_mode: str = "hierarchical"
    pseudo_queries: dict[str, str] | None = field(default=None, hash=False)
    record_question_attention: bool = True
    telemetry_queries: bool = False

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
        for name in ("shallow_ratio", "deep_ratio", "alpha_drop", "w0", "gamma"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if self.shallow_ratio > self.deep_ratio:
            raise HermesError(f"shallow_ratio ({self.shallow_ratio}) must be <= deep_ratio ({self.deep_ratio})")
        if self.w0 - self.gamma < 0:
            raise HermesError(f"w0 - gamma must be >= 0 so the attention weight stays in [0, 1], got {self.w0} - "
                              f"{self.gamma}")
        for name in ("k_shallow", "k_deep_end"):
            _check_range(name, getattr(self, name), 0.0, 100.0)
        if not isinstance(self.lams, (tuple, list)) or len(self.lams) != 3:
            raise HermesError(f"lams must be three numbers (shallow, middle, deep) in [0, 1], got {self.lams!r}")
        for lam in self.lams:
            _check_range("lams", lam, 0.0, 1.0)
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        for name, allowed in (("schedule", SCHEDULES), ("query_mode", QUERY_MODES), ("tier_mode", TIER_MODES)):
            if getattr(self, name) not in allowed:
                raise HermesError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("smoothing", "summary", "record_question_attention", "telemetry_queries"):
            if not isinstance(getattr(self, name), bool):
                raise HermesError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.pseudo_queries is not None:
            texts = self.pseudo_queries
            if not isinstance(texts, dict) or set(texts) != {"local", "global"} or not all(
                    isinstance(t, str) and t.strip() for t in texts.values()):
                raise HermesError("pseudo_queries must be {'local': text, 'global': text} with non-empty texts, "
                                  f"got {texts!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> HermesConfig:
        """Build a config, rejecting unknown names with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise HermesError(f"unknown config option(s) {unknown}; known options: {sorted(known)}")
        return cls(**kwargs)



def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise HermesError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
