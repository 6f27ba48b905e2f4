"""Limits and choices of the app, in one place (shown in the UI's help).

Environment variables override the defaults, so a Space can tune them without code:
HERMES_MODEL (a model for the allowlist, e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf),
HERMES_MAX_SESSIONS, HERMES_IDLE_TIMEOUT_S, HERMES_MAX_UPLOAD_MB, HERMES_MAX_VIDEO_S.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hermes.backbones import BUNDLED_MODELS

DEFAULT_MODEL = "hermes-tiny"
KNOWN_HUB_MODELS = ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf",)


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
