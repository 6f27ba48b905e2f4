"""Mechanistic study: where does each layer's question attention fall in a FIFO cache?

    python -m analysis.mechanistic                          # hermes-tiny on ShapeStream, ~1 min
    python -m analysis.mechanistic --model DIR --budget 1024 --questions 300
    python -m analysis.mechanistic --quick                  # a few questions, for tests and CI

The paper's first picture (HERMES, section 3): stream a video through a FIFO cache of
`budget` tokens per layer; whenever a question is asked (and the cache is full, so every
distance exists), record the attention of the question's tokens over the cached video
tokens in every layer (mean over heads and question tokens, the engine's `attend`), and
sum it in bins of distance from the newest video token. Averaged over N questions this
gives a layer x distance heatmap (log colour scale) and per layer:

- `video_mass`: the share of the question's attention that lands on video tokens at all
  (the rest goes to the system prompt, newline tokens and the question itself);
- `recent_share`: of the video attention, the share on the newest 10% of video tokens;
- `entropy_bits`: entropy of the video attention (log2 of the tokens' count = spread evenly);
- `anchor_frames`: how many distinct frames the 16 most-attended video tokens come from,
  counting only tokens with more than an even share (0 = attention spread evenly).

Any model the engine loads works the same way (`--model` a local directory or hub id);
ShapeStream streams are rendered for it and their questions asked. Writes
mechanistic.png, mechanistic.csv (per-layer summary), mechanistic.npz (heatmap, bin edges,
per-question profiles) and mechanistic.md (table and a plain-language reading) to --out
(named mechanistic-<model>[-cuda] for another model or on a GPU).
`study_stream` runs the same measurement on any frames and questions (the app's Study tab).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from analysis import result_name
from hermes.backbones import Backbone, load_backbone
from hermes.cache import VIDEO
from hermes.engine import load_engine
from hermes.policies import get
from hermes.synthetic import generate
from hermes.telemetry import CacheAttention

RESULTS = Path(__file__).resolve().parent / "results"
RECENT = 0.1  # "newest 10% of video tokens"
TOP_TOKENS = 16  # anchors: distinct frames among this many most-attended tokens
FPS = 2.0
SEEDS0 = 300  # held-out ShapeStream seeds for this study (training uses >= 1,000,000)


@dataclass
class StudyConfig:
    model: str = "hermes-tiny"
    budget: int = 512  # tokens per layer in the FIFO cache (video and the per-chunk newline tokens)
    questions: int = 200
    bins: int = 32
    seconds: float = 64.0  # ShapeStream stream length
    chunk_frames: int = 16
    out: Path = RESULTS
    quick: bool = False


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
    done = 0
    for t, text in sorted(questions, key=lambda q: q[0]):
        upto = int(np.searchsorted(timestamps, t, side="right"))
        if upto > done:
            engine.ingest(frames[done:upto], timestamps[done:upto])
            engine.flush()
            done = upto
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
    if not profiles:
        raise ValueError("no question was measured: the stream is shorter than the budget, or has no questions")
    stack = np.stack(profiles)  # (Q, L, bins)
    rows = np.stack(summaries)  # (Q, L, 4)
    return Study(heatmap=stack.mean(0), edges=edges, video_mass=rows[..., 0].mean(0),
                 recent_share=np.nanmean(rows[..., 1], 0), entropy_bits=np.nanmean(rows[..., 2], 0),
                 anchor_frames=rows[..., 3].mean(0), tokens_per_frame=tokens_per_frame, n_questions=len(stack),
                 tiers=tiers, profiles=stack)


def run(cfg: StudyConfig) -> Study:
    """Default study: held-out ShapeStream streams until `questions` questions are measured."""
    backbone = load_backbone(cfg.model)
    tiers = hermes_tiers(backbone.n_layers)
    profiles: list[np.ndarray] = []
    summaries: list[np.ndarray] = []
    bar = tqdm(total=cfg.questions, desc="mechanistic", unit="question")
    seed = SEEDS0
    while len(profiles) < cfg.questions and seed < SEEDS0 + 10 * cfg.questions:
        stream = generate(seed, seconds=cfg.seconds, fps=FPS)
        seed += 1
        asked = [(q.time, q.question) for q in stream.questions]
        p, s = study_stream(backbone, stream.frames, stream.timestamps, asked, cfg.budget, cfg.bins,
                            cfg.chunk_frames, limit=cfg.questions - len(profiles))
        profiles += p
        summaries += s
        bar.update(len(p))
    bar.close()
    return summarise(profiles, summaries, distance_edges(cfg.budget, cfg.bins), backbone.tokens_per_frame, tiers)


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


def write(study: Study, cfg: StudyConfig) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / result_name("mechanistic", cfg.model, cfg.quick)
    np.savez_compressed(f"{stem}.npz", heatmap=study.heatmap, edges=study.edges, profiles=study.profiles,
                        video_mass=study.video_mass, recent_share=study.recent_share,
                        entropy_bits=study.entropy_bits, anchor_frames=study.anchor_frames)
    head = ["layer", "tier", "video_mass", "recent_share", "entropy_bits", "anchor_frames"]
    rows = [[i, study.tiers[i] if study.tiers else "", f"{study.video_mass[i]:.4f}", f"{study.recent_share[i]:.4f}",
             f"{study.entropy_bits[i]:.3f}", f"{study.anchor_frames[i]:.2f}"] for i in range(len(study.heatmap))]
    with open(f"{stem}.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([head, *rows])
    lines = ["# Where each layer's question attention falls (FIFO cache)", "",
             f"`python -m analysis.mechanistic{' --quick' if cfg.quick else ''}` with `{cfg.model}`, budget "
             f"{cfg.budget} tokens per layer, {study.n_questions} questions on held-out ShapeStream streams of "
             f"{cfg.seconds:g} s at {FPS:g} fps.", "", "![heatmap](" + Path(f"{stem}.png").name + ")", "",
             reading(study), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    title = f"{cfg.model}, FIFO {cfg.budget} tokens/layer, {study.n_questions} questions"
    plot(study, Path(f"{stem}.png"), title=title)
    print("\n".join(lines))


def plot(study: Study, path: Path, title: str = "") -> None:
    """The paper-style figure: log-scale heatmap layer x distance, and the per-layer summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    n_layers = len(study.heatmap)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.35 * n_layers + 2.2), gridspec_kw={"width_ratios": [3, 1.3]})
    floor = max(float(study.heatmap[study.heatmap > 0].min(initial=1e-6)), 1e-6)
    frames_back = study.edges / max(1, study.tokens_per_frame)
    im = ax.pcolormesh(frames_back, np.arange(n_layers + 1) - 0.5, np.maximum(study.heatmap, floor),
                       norm=LogNorm(vmin=floor, vmax=max(floor * 10, float(study.heatmap.max()))), cmap="magma")
    ax.set_xlabel("distance from the newest video token (frames back)")
    ax.set_ylabel("decoder layer (0 = shallowest)")
    ax.set_title(title or "question attention by distance")
    fig.colorbar(im, ax=ax, label="attention mass per bin (log)")
    layers = np.arange(n_layers)
    ax2.plot(study.recent_share, layers, marker="o", label="share on newest 10%")
    ax2.plot(study.anchor_frames / TOP_TOKENS, layers, marker="s", label=f"anchor frames / {TOP_TOKENS}")
    ax2.plot(study.video_mass, layers, marker="^", label="mass on video")
    ax2.axvline(RECENT, color="gray", linestyle=":", linewidth=1)
    ax2.set_ylim(ax.get_ylim())
    ax2.set_xlim(0, 1.02)
    ax2.set_xlabel("per layer")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    d = StudyConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=d.model, help="hermes-tiny, a local model directory or a hub id")
    parser.add_argument("--budget", type=int, default=d.budget, help="FIFO cache size, tokens per layer")
    parser.add_argument("--questions", type=int, default=d.questions)
    parser.add_argument("--bins", type=int, default=d.bins)
    parser.add_argument("--seconds", type=float, default=d.seconds)
    parser.add_argument("--out", type=Path, default=d.out)
    parser.add_argument("--quick", action="store_true", help="24 questions on 40-s streams (< 1 min)")
    args = parser.parse_args(argv)
    cfg = StudyConfig(**vars(args))
    if cfg.quick:
        cfg.questions, cfg.seconds = min(cfg.questions, 24), min(cfg.seconds, 40.0)
    write(run(cfg), cfg)


if __name__ == "__main__":
    main()
