"""Limits and choices of the app, in one place: the operator's `Settings` (shown in the
UI's help) and the user's `Controls` (the engine settings panel).

    Settings().max_sessions, Settings().models      # limits and the model allowlist
    c = Controls(policy="fifo", budget_frames=8)     # what the user chose; a change restarts the stream
    c.engine_config(backbone.chunk_tokens), c.policy_params("hermes")   # what hermes.load_engine takes
    c.budget_text(backbone.tokens_per_frame, backbone.chunk_tokens)     # "32 frames = 514 tokens per layer = 16 s ..."

Environment variables override the defaults, so a Space can tune them without code:
HERMES_MODEL (a model for the allowlist, e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf),
HERMES_MAX_SESSIONS, HERMES_MAX_SESSIONS_PER_CLIENT, HERMES_IDLE_TIMEOUT_S, HERMES_MAX_UPLOAD_MB,
HERMES_MAX_VIDEO_S, and HERMES_PROXY_HOPS (how many proxies in front of the app append to
X-Forwarded-For and are trusted: 1 on a Hugging Face Space, where SPACE_ID is set, else 0).
Numbers from the panel or the API pass `panel_number` (finite, whole where a count is meant).

The controls' defaults are the engine's (`HermesConfig`) and the hermes policy's (its
dataclass), read from there; the app departs from them in two places only (APP_BUDGET_FRAMES,
APP_FPS). The budget is set in frames of the loaded model: a layer holds that many frames'
tokens (tokens per frame x frames, plus one newline a chunk where the model's layout has one),
which is that many seconds at the sampling rate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from hermes import policies
from hermes.backbones import BUNDLED_MODELS, DEFAULT_MODEL, bundled_ready, tokens_for_frames
from hermes.config import HermesConfig
from hermes.errors import HermesError, check_number
from hermes.video import MAX_SIZE

BUNDLED_OFFERED = tuple(BUNDLED_MODELS)  # bundled models the UI offers when they can load, DEFAULT_MODEL first
KNOWN_HUB_MODELS = ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf",)
ENGINE = HermesConfig()  # the engine's defaults
HERMES = policies.Hermes()  # the hermes policy's defaults (its dataclass)
POLICY_KNOBS = ("shallow_ratio", "deep_ratio", "smoothing", "summary")  # hermes parameters the panel offers
# the engine's default cache is unbounded; a live demo shows eviction, with room for a long-range
# question: 32 frames a layer (16 s at 2 fps; 6272 tokens of LLaVA-OneVision, the paper's ~6000)
APP_BUDGET_FRAMES = 32
MAX_BUDGET_FRAMES = 128  # 25,088 tokens of LLaVA-OneVision: with a 16-frame chunk on top, within 32,768 positions
# the Study tab's FIFO cache starts at this many frames of the loaded model, as the live one: 16 s at 2 fps
# (514 tokens per layer of hermes-tiny, as its committed study's 512; 6272 of LLaVA-OneVision, the paper's ~6K)
STUDY_FRAMES = APP_BUDGET_FRAMES
APP_FPS = 2.0  # the bundled examples are rendered for 2-fps sampling (the engine reads files at 1 fps)
TELEMETRY_QUERIES = ("global", "local")  # the attention map offers both views for every policy (ATTENTION_VIEWS)


def duration_text(seconds: float) -> str:
    """Whole seconds for a sentence, never rounded away: "15 min", "1 min 30 s", "45 s"."""
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min" + (f" {rest} s" if rest else "")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def panel_number(name: str, value: object, whole: bool = False) -> int | float:
    """A number from the panel or the API: finite (never NaN or infinity), and a whole number
    when `whole`; raises HermesError naming `name` otherwise. Ranges are checked where the
    number is used (Controls, the engine's config, the study)."""
    try:  # check_number's test of a number (not a bool, not NaN), within the finite floats
        check_number(name, value, -sys.float_info.max, sys.float_info.max)
    except HermesError:
        raise HermesError(f"{name} must be a finite number, got {value!r}") from None
    if whole:
        if value != int(value):
            raise HermesError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _models() -> list[str]:
    """The allowlist the UI offers: the bundled models that can load here (the default first;
    random-tiny if none can), plus HERMES_MODEL when it names a known hub model or an existing
    local directory."""
    models = [m for m in BUNDLED_OFFERED if bundled_ready(m)] or ["random-tiny"]
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
    # sessions one client (network address) may hold; 0: a quarter of max_sessions, at least 1
    max_sessions_per_client: int = field(default_factory=lambda: _env_int("HERMES_MAX_SESSIONS_PER_CLIENT", 0))
    # proxies in front of the app trusted to append the client's address to X-Forwarded-For
    proxy_hops: int = field(default_factory=lambda: _env_int("HERMES_PROXY_HOPS", 1 if os.environ.get("SPACE_ID")
                                                             else 0))
    idle_timeout_s: int = field(default_factory=lambda: _env_int("HERMES_IDLE_TIMEOUT_S", 900))
    max_upload_mb: int = field(default_factory=lambda: _env_int("HERMES_MAX_UPLOAD_MB", 200))
    max_video_s: int = field(default_factory=lambda: _env_int("HERMES_MAX_VIDEO_S", 3600))
    upload_claim_s: int = 600  # an upload is registered by the first session within this long of arriving
    max_side_px: int = 4096  # uploads with a larger frame side are refused
    decode_max_size: tuple[int, int] = MAX_SIZE  # (long, short) side: larger frames are scaled down to fit, once
    exports_kept: int = 3  # a session's newest exports kept on disk (older ones, and all at its end, deleted)
    ingest_batch: int = 4  # frames decoded and handed to the engines at a time (bounds full-resolution memory)
    max_question_chars: int = 500
    max_new_tokens: int = 32  # room for a sentence: hermes-smol answers in one
    max_chunks_per_tick: int = 4  # bounds one timer tick's work; the rest is reported as "behind"
    tick_s: float = 0.5
    webcam_size: int = MAX_SIZE[0]  # webcam frames with a longer side are downscaled before ingest
    # glibc malloc arenas for the server (app.py; MALLOC_ARENA_MAX, when set, wins; 0: glibc's own, 8 a core) and
    # whether freed sessions' memory is handed back (malloc_trim): analysis/bench_memory measures both
    malloc_arenas: int = field(default_factory=lambda: _env_int("HERMES_MALLOC_ARENAS", 2))
    trim_memory: bool = field(default_factory=lambda: _env_int("HERMES_TRIM_MEMORY", 1) != 0)

    @property
    def idle_text(self) -> str:
        """The idle timeout for a sentence ("15 min", "1 min 30 s", "45 s")."""
        return duration_text(self.idle_timeout_s)

    @property
    def max_video_text(self) -> str:
        """The longest accepted video for a sentence ("60 min")."""
        return duration_text(self.max_video_s)

    @property
    def client_cap(self) -> int:
        """Sessions one client may hold at once."""
        return self.max_sessions_per_client or max(1, self.max_sessions // 4)

    def help_text(self) -> str:
        return (f"Limits: {self.max_sessions} sessions at once ({self.client_cap} per visitor), idle sessions freed "
                f"after {self.idle_text}, uploads up to {self.max_upload_mb} MB and "
                f"{self.max_video_text} and {self.max_side_px} px a side (decoded at full resolution up to "
                f"{self.decode_max_size[0]}x{self.decode_max_size[1]}, larger frames scaled down to fit), questions "
                f"up to {self.max_question_chars} characters, "
                f"answers up to {self.max_new_tokens} tokens. Models: {', '.join(self.models)}.")


@dataclass(frozen=True)
class Controls:
    """What the user can change; a change restarts the stream."""

    model: str = DEFAULT_MODEL
    policy: str = "hermes"
    compare: str = ""  # a second policy to run side by side ("" = off)
    budget_frames: int = APP_BUDGET_FRAMES  # frames of the loaded model each layer holds
    chunk_frames: int = ENGINE.chunk_frames
    fps: float = APP_FPS
    shallow_ratio: float = HERMES.shallow_ratio
    deep_ratio: float = HERMES.deep_ratio
    smoothing: bool = HERMES.smoothing
    summary: bool = HERMES.summary
    reindex: str = ENGINE.reindex

    def budget_tokens(self, chunk_tokens: Callable[[int], int]) -> int:
        """Tokens per layer that hold `budget_frames` frames ingested in chunks of `chunk_frames`;
        chunk_tokens(n): the tokens a chunk of n frames adds (the backbone's ``chunk_tokens``).
        A budget outside 1..MAX_BUDGET_FRAMES frames, or a bad chunk size or fps, raises HermesError."""
        check_number("budget_frames", self.budget_frames, 1, MAX_BUDGET_FRAMES, whole=True)
        HermesConfig(chunk_frames=self.chunk_frames, fps=self.fps)  # the engine's checks and messages
        return tokens_for_frames(self.budget_frames, self.chunk_frames, chunk_tokens)

    def budget_text(self, tokens_per_frame: int, chunk_tokens: Callable[[int], int]) -> str:
        """The budget in the three units: frames = tokens per layer = seconds at the sampling rate."""
        return (f"{self.budget_frames} frames = {self.budget_tokens(chunk_tokens):,} tokens per layer = "
                f"{self.budget_frames / self.fps:g} s at {self.fps:g} fps ({tokens_per_frame} tokens a frame)")

    def engine_config(self, chunk_tokens: Callable[[int], int]) -> dict[str, Any]:
        """The engine knobs (HermesConfig fields) for hermes.load_engine; chunk_tokens as for
        ``budget_tokens`` (the budget is set in frames)."""
        return {"budget": self.budget_tokens(chunk_tokens), "chunk_frames": self.chunk_frames, "fps": self.fps,
                "reindex": self.reindex, "telemetry_queries": TELEMETRY_QUERIES}

    def policy_params(self, policy: str) -> dict[str, Any]:
        """The panel's policy parameters that `policy` takes (none for a policy without them);
        an unknown policy raises HermesError."""
        takes = {f.name for f in fields(policies.policy_class(policy))}
        return {name: getattr(self, name) for name in POLICY_KNOBS if name in takes}

    def policy_names(self) -> list[str]:
        """The policy, then the compared one (compare mode)."""
        return [self.policy] + ([self.compare] if self.compare else [])
