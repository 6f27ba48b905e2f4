"""Where does each layer's question attention fall in a FIFO cache? (the measurement)

    profiles, summaries = study_stream(backbone, zip(frames, timestamps), [(t, question), ...], budget=512)
    study_stream(backbone, iter_frames("clip.mp4", fps=2), [], 512, every_chunk="what is happening ?")
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

`split` is the one judgement of whether a measurement shows the paper's split (shallow
layers more recency-bound than deep ones): it compares the two tiers' mean recent share,
with a margin, and refuses to call it from fewer than MIN_QUESTIONS questions;
`split_sentence` and `reading` say it in words.

`python -m analysis.mechanistic` runs it on held-out ShapeStream streams and writes the
committed figure and table; the app's Study tab runs it on the session's stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from hermes.backbones import Backbone
from hermes.cache import VIDEO
from hermes.engine import StreamEngine, load_engine
from hermes.policies import get
from hermes.studies.replay import replay_frames
from hermes.telemetry import CacheAttention

RECENT = 0.1  # "newest 10% of video tokens"
TOP_TOKENS = 16  # anchors: distinct frames among this many most-attended tokens
TIERS = ("shallow", "middle", "deep")  # HERMES' layer tiers, shallow first
SPLIT_MARGIN = 0.05  # the paper's split shows when the shallow tier's mean recent share beats the deep tier's by this
MIN_QUESTIONS = 10  # fewer questions than this are too few to call a split either way


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
    asked: str = "question"  # what was measured each time, for the reading ("local pseudo-query" when one stood in)


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


def study_stream(backbone: Backbone, frames: Iterable[tuple[np.ndarray, float]], questions: list[tuple[float, str]],
                 budget: int, bins: int = 32, chunk_frames: int = 16, full_only: bool = True,
                 limit: int | None = None, every_chunk: str | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Stream `frames` ((uint8 (H, W, 3) frame, seconds) pairs in time order, e.g. a decoder's)
    through a FIFO cache of `budget` tokens per layer and measure each (time, text) question
    when the stream reaches its time; with `every_chunk`, that text after every chunk instead.
    Frames are taken as they come and dropped once ingested (memory: the cache and a chunk,
    whatever the stream's length); none is read after the last question or the `limit`th
    measurement. With `full_only`, questions asked before the cache holds `budget` video
    tokens are skipped. Returns per measured question the (L, bins) profiles and (L, 4) summaries."""
    engine = load_engine(backbone, policy="fifo", budget=budget, chunk_frames=chunk_frames,
                         record_question_attention=False)
    edges = distance_edges(budget, bins)
    profiles, summaries = [], []
    asked = replay_frames(engine, frames, questions) if every_chunk is None else _after_every_chunk(
        engine, frames, every_chunk)
    for text in asked:
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


def _after_every_chunk(engine: StreamEngine, frames: Iterable[tuple[np.ndarray, float]], text: str) -> Iterator[str]:
    """`text` each time the frames complete a chunk (a partial last chunk is not asked about)."""
    chunk, held, times = engine.config.chunk_frames, [], []
    for frame, t in frames:
        held.append(frame)
        times.append(float(t))
        if len(held) == chunk:
            engine.ingest(np.stack(held), times)
            held, times = [], []
            yield text


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


def tier_layers(tiers: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """The layers of each tier present, in TIERS order (an untiered study is all "middle")."""
    names = np.array(tiers, dtype=str)
    return {name: np.flatnonzero(names == name) for name in TIERS if (names == name).any()}


def layers_text(idx: np.ndarray | list[int]) -> str:
    """"layer 3", "layers 1-7" or "layers 1, 4, 6"."""
    idx = [int(i) for i in idx]
    if len(idx) == 1:
        return f"layer {idx[0]}"
    return f"layers {idx[0]}-{idx[-1]}" if idx == list(range(idx[0], idx[-1] + 1)) else "layers " + ", ".join(
        map(str, idx))


def tier_mean(values: np.ndarray, idx: np.ndarray) -> float:
    """The mean of a tier's measured layers (NaN layers, never measured, left out; NaN if none was)."""
    measured = np.asarray(values, dtype=np.float64)[idx]
    measured = measured[~np.isnan(measured)]
    return float(measured.mean()) if len(measured) else float("nan")


def split(recent_share: np.ndarray | tuple[float, ...], tiers: list[str] | tuple[str, ...],
          n_questions: int) -> str | None:
    """Does a measurement show the paper's layer split? "paper" (the shallow tier's mean recent
    share beats the deep tier's by more than SPLIT_MARGIN), "reversed" (the deep tier's beats the
    shallow's by that), "none" (within it), "few" (fewer than MIN_QUESTIONS questions: too few to
    call it either way); None without a measured shallow and deep tier. The one judgement the
    Study tab's reading and the app's finding under the attention map both state."""
    groups = tier_layers(tiers)
    if "shallow" not in groups or "deep" not in groups:
        return None
    shallow, deep = (tier_mean(recent_share, groups[name]) for name in ("shallow", "deep"))
    if np.isnan(shallow) or np.isnan(deep):
        return None
    if n_questions < MIN_QUESTIONS:
        return "few"
    return "paper" if shallow > deep + SPLIT_MARGIN else "reversed" if deep > shallow + SPLIT_MARGIN else "none"


def counted(n: int, noun: str) -> str:
    """"1 question", "7 questions", "2 local pseudo-queries"."""
    return f"{n} {noun if n == 1 else noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def split_sentence(recent_share: np.ndarray | tuple[float, ...], tiers: list[str] | tuple[str, ...],
                   n_questions: int, asked: str = "question") -> str:
    """The verdict of `split` in one sentence, stating the two tier means it compares (`asked`:
    what was measured each time, as Study.asked)."""
    verdict = split(recent_share, tiers, n_questions)
    if verdict is None:
        return ("With no measured shallow and deep tier both present, the measurement cannot be set against the "
                "paper's split; compare the layers directly.")
    groups = tier_layers(tiers)
    shallow, deep = (tier_mean(recent_share, groups[name]) for name in ("shallow", "deep"))
    means = f"Shallow tier {shallow:.0%} on the newest {RECENT:.0%} vs deep tier {deep:.0%}"
    margin = f"{SPLIT_MARGIN * 100:g} points"
    return {
        "few": f"{means}, from {counted(n_questions, asked)}: too few to call a split "
               f"either way (at least {MIN_QUESTIONS} are needed).",
        "paper": f"{means}: the paper's direction (the shallow tier ahead by more than {margin}).",
        "reversed": f"{means}: the reverse of the split the paper reports (the deep tier ahead by more than "
                    f"{margin}).",
        "none": f"{means}: within {margin} of each other, so not the split the paper reports.",
    }[verdict]


def reading(study: Study) -> str:
    """A plain-language account of what the numbers show, for a reader who has not read the paper:
    how many questions it rests on, per tier what share of the video attention is on the newest
    tokens, and `split_sentence` (which refuses to call a split from fewer than MIN_QUESTIONS)."""
    groups = tier_layers(study.tiers or ["middle"] * len(study.recent_share))
    budget = int(study.edges[-1])
    top = float(np.log2(max(2, budget)))
    parts = [f"Over {counted(study.n_questions, study.asked)} on a FIFO cache of {budget} "
             f"tokens per layer (evenly spread attention: {RECENT:.0%} on the newest {RECENT:.0%} of tokens, entropy "
             f"about {top:.1f} bits):", ""]
    for name, idx in groups.items():
        unmeasured = [int(i) for i in idx if np.isnan(study.recent_share[i])]
        if len(unmeasured) == len(idx):
            parts.append(f"- {name} {layers_text(idx)}: not measured (no attention reached their video tokens).")
            continue
        parts.append(
            f"- {name} {layers_text(idx)}: {tier_mean(study.recent_share, idx):.0%} of the video attention on the "
            f"newest {RECENT:.0%} of tokens, entropy {tier_mean(study.entropy_bits, idx):.1f} bits, "
            f"{tier_mean(study.anchor_frames, idx):.1f} distinct anchor frames among the {TOP_TOKENS} most-attended "
            "tokens" + (f" (left out, never measured: {layers_text(unmeasured)})" if unmeasured else "") + ".")
    last = split_sentence(study.recent_share, study.tiers, study.n_questions, study.asked)
    if (~np.isnan(study.recent_share)).any():
        most, spread = int(np.nanargmax(study.recent_share)), int(np.nanargmax(study.entropy_bits))
        last = (f"The most recency-bound layer is {most} ({study.recent_share[most]:.0%} on the newest "
                f"{RECENT:.0%}); the most spread out is {spread} ({study.entropy_bits[spread]:.1f} bits). {last}")
    return "\n".join([*parts, "", last])
