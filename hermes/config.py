"""Engine configuration: the knobs of the streaming engine, one validated dataclass.

    from hermes.config import HermesConfig
    cfg = HermesConfig(budget=512, chunk_frames=16)   # validated on construction

Only engine knobs live here; a policy's parameters live on the policy's dataclass
(``hermes.policies``). Invalid values raise ``HermesError`` naming the field and the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from hermes.errors import HermesError, check_choice, check_flag, check_number

REINDEX_MODES = ("lazy", "eager")
QUERY_NAMES = ("local", "global", "mixed")
PSEUDO_QUERY_STYLES = ("released", "chat")  # see hermes.queries


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
    pseudo_queries: {"local": ..., "global": ...} texts; None = the model's own.
    pseudo_query_style: "released" (as the released HERMES code: raw text, no chat template; after a
        question both texts carry "Question: Q Answer: A") or "chat" (this project's earlier behaviour:
        rendered like a question, the local text carries the question only); see hermes.queries.
    record_question_attention: after each answer, record where the question looked (pooled per frame).
    telemetry_queries: pseudo-queries to run after every chunk for display, on top of those the
        policy's scores read (e.g. ("global",) for a policy that reads none).
    """

    budget: int | None = None
    chunk_frames: int = 16
    fps: float = 1.0
    reindex: str = "lazy"
    reindex_margin: int = 1024
    max_new_tokens: int = 16
    repetition_penalty: float = 1.1
    pseudo_queries: dict[str, str] | None = field(default=None, hash=False)
    pseudo_query_style: str = "released"
    record_question_attention: bool = True
    telemetry_queries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise HermesError(f"budget must be a whole number >= 1 (or None for no limit), got {self.budget!r}")
        check_number("chunk_frames", self.chunk_frames, 1, 256, whole=True)
        check_number("fps", self.fps, 0, 60, low_open=True)
        check_choice("reindex", self.reindex, REINDEX_MODES)
        check_number("reindex_margin", self.reindex_margin, 0, math.inf, whole=True)
        check_number("max_new_tokens", self.max_new_tokens, 1, 1024, whole=True)
        check_number("repetition_penalty", self.repetition_penalty, 1.0, 10.0)
        check_flag("record_question_attention", self.record_question_attention)
        check_choice("pseudo_query_style", self.pseudo_query_style, PSEUDO_QUERY_STYLES)
        queries = self.telemetry_queries
        if not isinstance(queries, (tuple, list)) or not set(queries) <= set(QUERY_NAMES):
            raise HermesError(f"telemetry_queries must be a tuple of {QUERY_NAMES}, got {queries!r}")
        object.__setattr__(self, "telemetry_queries", tuple(queries))
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
            raise HermesError(f"unknown config option(s) {unknown}; known options: {sorted(known)} (a policy's "
                              "parameters go in policy_params)")
        return cls(**kwargs)
