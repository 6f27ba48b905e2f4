"""Limits and choices of the app, in one place: the operator's `Settings` (shown in the
UI's help) and the user's `Controls` (the engine settings panel).

    Settings().max_sessions, Settings().models      # limits and the model allowlist
    c = Controls(policy="fifo", budget=128)          # what the user chose; a change restarts the stream
    c.engine_config(), c.policy_params("hermes")     # what hermes.load_engine takes

Environment variables override the defaults, so a Space can tune them without code:
HERMES_MODEL (a model for the allowlist, e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf),
HERMES_MAX_SESSIONS, HERMES_IDLE_TIMEOUT_S, HERMES_MAX_UPLOAD_MB, HERMES_MAX_VIDEO_S.

The controls' defaults are the engine's (`HermesConfig`) and the hermes policy's (its
dataclass), read from there; the app departs from them in two places only (APP_BUDGET, APP_FPS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from hermes import policies
from hermes.backbones import BUNDLED_MODELS
from hermes.config import HermesConfig

DEFAULT_MODEL = "hermes-tiny"
KNOWN_HUB_MODELS = ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf",)
ENGINE = HermesConfig()  # the engine's defaults
HERMES = policies.Hermes()  # the hermes policy's defaults (its dataclass)
POLICY_KNOBS = ("shallow_ratio", "deep_ratio", "smoothing", "summary")  # hermes parameters the panel offers
APP_BUDGET = 256  # the engine's default cache is unbounded; a live demo shows eviction
APP_FPS = 2.0  # the bundled examples are rendered for 2-fps sampling (the engine reads files at 1 fps)
TELEMETRY_QUERIES = ("global", "local")  # the attention map offers both views for every policy (ATTENTION_VIEWS)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _models() -> list[str]:
    """The allowlist the UI offers: the bundled model (random-tiny if it is missing), plus
    HERMES_MODEL when it names a known hub model or an existing local directory."""
    bundled = DEFAULT_MODEL if (BUNDLED_MODELS[DEFAULT_MODEL] / "config.json").exists() else "random-tiny"
    models = [bundled]
    extra = os.environ.get("HERMES_MODEL", "").strip()
    if extra and (extra in KNOWN_HUB_MODELS or os.path.isdir(extra)) and extra not in models:
        models.insert(0, extra)  # the Space's choice is the default
    if "random-tiny" not in models:
        models.append("random-tiny")
    return models


@dataclass(frozen=True)
class Settings:
    models: list[str] = field(default_factory=_models)
    max_sessions: int = field(default_factory=lambda: _env_int("HERMES_MAX_SESSIONS", 8))
    idle_timeout_s: int = field(default_factory=lambda: _env_int("HERMES_IDLE_TIMEOUT_S", 900))
    max_upload_mb: int = field(default_factory=lambda: _env_int("HERMES_MAX_UPLOAD_MB", 200))
    max_video_s: int = field(default_factory=lambda: _env_int("HERMES_MAX_VIDEO_S", 3600))
    max_side_px: int = 4096  # uploads with a larger frame side are refused
    decode_max_side: int = 512  # frames are scaled down to this longer side while decoding
    max_question_chars: int = 500
    max_new_tokens: int = 16
    max_chunks_per_tick: int = 4  # bounds one timer tick's work; the rest is reported as "behind"
    tick_s: float = 0.5
    webcam_size: int = 256  # webcam frames are downscaled to this longer side before ingest

    def help_text(self) -> str:
        return (f"Limits: {self.max_sessions} sessions at once, idle sessions freed after "
                f"{self.idle_timeout_s // 60} min, uploads up to {self.max_upload_mb} MB and "
                f"{self.max_video_s // 60} min and {self.max_side_px} px a side (decoded at most "
                f"{self.decode_max_side} px), questions up to {self.max_question_chars} characters, "
                f"answers up to {self.max_new_tokens} tokens. Models: {', '.join(self.models)}.")


@dataclass(frozen=True)
class Controls:
    """What the user can change; a change restarts the stream."""

    model: str = DEFAULT_MODEL
    policy: str = "hermes"
    compare: str = ""  # a second policy to run side by side ("" = off)
    budget: int = APP_BUDGET
    chunk_frames: int = ENGINE.chunk_frames
    fps: float = APP_FPS
    shallow_ratio: float = HERMES.shallow_ratio
    deep_ratio: float = HERMES.deep_ratio
    smoothing: bool = HERMES.smoothing
    summary: bool = HERMES.summary
    reindex: str = ENGINE.reindex

    def engine_config(self) -> dict[str, Any]:
        """The engine knobs (HermesConfig fields) for hermes.load_engine."""
        return {"budget": self.budget, "chunk_frames": self.chunk_frames, "fps": self.fps, "reindex": self.reindex,
                "telemetry_queries": TELEMETRY_QUERIES}

    def policy_params(self, policy: str) -> dict[str, Any]:
        """The panel's policy parameters that `policy` takes (none for a policy without them);
        an unknown policy raises HermesError."""
        takes = {f.name for f in fields(policies.policy_class(policy))}
        return {name: getattr(self, name) for name in POLICY_KNOBS if name in takes}

    def policy_names(self) -> list[str]:
        """The policy, then the compared one (compare mode)."""
        return [self.policy] + ([self.compare] if self.compare else [])
