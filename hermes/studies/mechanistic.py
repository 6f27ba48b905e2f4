"""Where does each layer's question attention fall in a FIFO cache? (the measurement)

    profiles, summaries = study_stream(backbone, frames, timestamps, [(t, question), ...], budget=512)
    study = summarise(profiles, summaries, distance_edges(512, 32), backbone.tokens_per_frame,
                      hermes_tiers(backbone.n_layers))
    print(reading(study))

The paper's first picture (HERMES, section 3): stream a video through a FIFO cache of
`budget` tokens per layer; whenever a question is asked (and the cache is full, so every
distance exists), record the attention of the question's tokens over the cached video
tokens in every layer (mean over heads and question tokens, the engine's `attend`), and
sum it in bins of distance from the newest video token. Averaged over N questions this
gives a layer x distance heatmap and per layer:

- `video_mass`: the share of the question's attention that lands on video tokens at all
  (the rest goes to the system prompt, newline tokens and the question itself);
- `recent_share`: of the video attention, the share on the newest 10% of video tokens;
- `entropy_bits`: entropy of the video attention (log2 of the tokens' count = spread evenly);
- `anchor_frames`: how many distinct frames the 16 most-attended video tokens come from,
  counting only tokens with more than an even share (0 = attention spread evenly).

`python -m analysis.mechanistic` runs it on held-out ShapeStream streams and writes the
committed figure and table; the app's Study tab runs it on the session's stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hermes.backbones import Backbone
from hermes.cache import VIDEO
from hermes.engine import load_engine
from hermes.policies import get
from hermes.studies.replay import replay
from hermes.telemetry import CacheAttention

RECENT = 0.1  # "newest 10% of video tokens"
TOP_TOKENS = 16  # anchors: distinct frames among this many most-attended tokens


@dataclass
class Study:
    """The measurement, numpy only: what the figure, the table and the app draw."""

    heatmap: np.ndarray  # (L, bins) mean attention mass per distance bin; each row sums to <= 1
    edges: np.ndarray  # (bins + 1,) distance bin edges in tokens from the newest video token
    video_mass: np.ndarray  # (L,)
    recent_share: np.ndarray  # (L,)
    entropy_bits: np.ndarray  # (L,)
    anchor_frames: np.ndarray  # (L,)
    tokens_per_frame: int
    n_questions: int
    tiers: list[str] = field(default_factory=list)
    profiles: np.ndarray | None = None  # (Q, L, bins) per question


def distance_profile(attention: np.ndarray, kinds: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(bins,) attention mass on video tokens summed by distance from the newest video token.

    attention, kinds: (n,) one layer's cached tokens oldest first; edges: (bins + 1,)
    increasing token distances, the newest video token at distance 0; bin b holds
    edges[b] <= d < edges[b + 1]; tokens beyond the last edge are left out."""
    video = attention[kinds == VIDEO]  # (m,)
    distance = np.arange(len(video))[::-1]  # newest = 0
    b = np.searchsorted(edges, distance, side="right") - 1
    inside = (b >= 0) & (b < len(edges) - 1)
    return np.bincount(b[inside], weights=video[inside], minlength=len(edges) - 1)[: len(edges) - 1]


def layer_summary(attention: np.ndarray, kinds: np.ndarray, frames: np.ndarray) -> tuple[float, float, float, int]:
    """(video mass, share of it on the newest 10% of video tokens, entropy in bits, distinct
    frames among the TOP_TOKENS most-attended video tokens that get more than an even share)
    for one layer."""
    is_video = kinds == VIDEO
    video = attention[is_video]
    mass = float(video.sum())
    if len(video) == 0 or mass <= 0:
        return 0.0, float("nan"), float("nan"), 0
    p = video / mass
    newest = max(1, round(RECENT * len(video)))
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    top = np.argsort(-p, kind="stable")[:TOP_TOKENS]
    top = top[p[top] > 1.0 / len(p) * (1 + 1e-6)]
    return mass, float(p[-newest:].sum()), entropy, len(np.unique(frames[is_video][top]))


def measure(seen: CacheAttention, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One question: ((L, bins) distance profile, (L, 4) summary rows)."""
    profile = np.stack([distance_profile(a, k, edges) for a, k in zip(seen.attention, seen.kinds, strict=True)])
    summary = np.array([layer_summary(a, k, f) for a, k, f in zip(seen.attention, seen.kinds, seen.frames,
                                                                   strict=True)], dtype=np.float64)
    return profile, summary


def study_stream(backbone: Backbone, frames: np.ndarray, timestamps: np.ndarray, questions: list[tuple[float, str]],
                 budget: int, bins: int = 32, chunk_frames: int = 16, full_only: bool = True,
                 limit: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Stream `frames` (uint8 (T, H, W, 3)) through a FIFO cache of `budget` tokens per layer
    and measure each (time, text) question when the stream reaches its time. With
    `full_only`, questions asked before the cache holds `budget` video tokens are skipped.
    Returns per measured question the (L, bins) profiles and (L, 4) summaries."""
    engine = load_engine(backbone, policy="fifo", budget=budget, chunk_frames=chunk_frames,
                         record_question_attention=False)
    edges = distance_edges(budget, bins)
    profiles, summaries = [], []
    for text in replay(engine, frames, timestamps, questions):
        if not engine.frames_seen:
            continue
        seen = engine.attend(text)
        if full_only and int((seen.kinds[0] == VIDEO).sum()) < int(0.9 * budget):
            continue
        profile, summary = measure(seen, edges)
        profiles.append(profile)
        summaries.append(summary)
        if limit is not None and len(profiles) >= limit:
            break
    return profiles, summaries


def hermes_tiers(n_layers: int, **ratios: float) -> list[str]:
    """The tier HERMES gives each layer ("shallow", "middle", "deep"); ratios: shallow_ratio, deep_ratio."""
    tiering = get("hermes", **ratios)
    return [tiering.tier(i, n_layers) for i in range(n_layers)]


def distance_edges(budget: int, bins: int) -> np.ndarray:
    """(bins + 1,) equal-width token-distance edges covering a cache of `budget` tokens."""
    return np.linspace(0, budget, bins + 1).round().astype(np.int64)


def summarise(profiles: list[np.ndarray], summaries: list[np.ndarray], edges: np.ndarray, tokens_per_frame: int,
              tiers: list[str]) -> Study:
    """Average the per-question profiles and summary rows into one Study (ValueError when empty)."""
    if not profiles:
        raise ValueError("no question was measured: the stream is shorter than the budget, or has no questions")
    stack = np.stack(profiles)  # (Q, L, bins)
    rows = np.stack(summaries)  # (Q, L, 4)
    return Study(heatmap=stack.mean(0), edges=edges, video_mass=rows[..., 0].mean(0),
                 recent_share=np.nanmean(rows[..., 1], 0), entropy_bits=np.nanmean(rows[..., 2], 0),
                 anchor_frames=rows[..., 3].mean(0), tokens_per_frame=tokens_per_frame, n_questions=len(stack),
                 tiers=tiers, profiles=stack)


def reading(study: Study) -> str:
    """A plain-language account of what the numbers show, for a reader who has not read the paper."""
    tiers = np.array(study.tiers) if study.tiers else np.array(["middle"] * len(study.recent_share))
    groups = {name: np.flatnonzero(tiers == name) for name in ("shallow", "middle", "deep")}
    groups = {k: v for k, v in groups.items() if len(v)}

    def span(idx: np.ndarray) -> str:
        return f"layer {idx[0]}" if len(idx) == 1 else f"layers {idx[0]}-{idx[-1]}"

    top = float(np.log2(max(2, int(study.edges[-1]))))
    parts = [f"Over {study.n_questions} questions on a FIFO cache of {int(study.edges[-1])} tokens per layer "
             f"(evenly spread attention: 10% on the newest 10% of tokens, entropy about {top:.1f} bits):", ""]
    for name, idx in groups.items():
        parts.append(
            f"- {name} {span(idx)}: {study.recent_share[idx].mean():.0%} of the video attention on the newest 10% "
            f"of tokens, entropy {study.entropy_bits[idx].mean():.1f} bits, {study.anchor_frames[idx].mean():.1f} "
            f"distinct anchor frames among the {TOP_TOKENS} most-attended tokens.")
    most = int(np.argmax(study.recent_share))
    spread = int(np.argmax(study.entropy_bits))
    parts += ["", f"The most recency-bound layer is {most} ({study.recent_share[most]:.0%} on the newest 10%); "
              f"the most spread out is {spread} ({study.entropy_bits[spread]:.1f} bits)."]
    if not {"shallow", "deep"} <= set(groups):
        parts.append("(With no shallow and deep tier both present, compare the rows of the heatmap directly.)")
        return "\n".join(parts[:-1]) + " " + parts[-1]
    shallow_recent = study.recent_share[groups["shallow"]].mean()
    deep_recent = study.recent_share[groups["deep"]].mean()
    if shallow_recent > deep_recent + 0.05:
        parts.append("As in the paper, the shallow layers look mostly at the latest frames while the deep layers "
                     "spread over older anchors: recency is the right memory for the first, attention for the last.")
    elif deep_recent > shallow_recent + 0.05:
        parts.append("Unlike the paper's models, here the deep layers are the ones focused on the latest frames "
                     "and the shallow layers look further back.")
    else:
        parts.append("Here shallow and deep layers look about as far back as each other: this model does not show "
                     "the paper's split between a short-term and a long-term memory.")
    return "\n".join(parts[:-1]) + " " + parts[-1]
