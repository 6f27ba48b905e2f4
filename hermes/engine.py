"""The streaming engine: frames in, a bounded per-layer KV cache, answers out in milliseconds.

    import hermes
    engine = hermes.load_engine("random-tiny", policy="fifo", budget=512)
    events = engine.ingest(frames, timestamps)   # uint8 (T, H, W, 3), seconds
    engine.flush()                               # process a partial last chunk
    answer = engine.ask("what is on the screen now ?")
    print(answer.text, answer.ttft_s, engine.cache_lengths())

Per chunk: encode frames (vision tower + projector + pooling), append them to every layer
of the cache in one forward, let the policy score each layer's tokens and keep the best
``budget``, re-index positions when needed. A question is prefilled on top of the cache,
decoded greedily, and cropped off again: asking never scores, evicts or re-encodes.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hermes import policies
from hermes.attention import record_attention
from hermes.backbones import Backbone, load_backbone
from hermes.cache import NEWLINE, PREFIX, SUMMARY, TEXT, VIDEO, HermesCache
from hermes.config import HermesConfig
from hermes.errors import HermesError
from hermes.policies import LayerContext, Policy
from hermes.policies.base import keep_set, smooth_across_layers
from hermes.telemetry import CacheAttention, ChunkEvent, QuestionEvent, pool_per_frame

MAX_QUESTION_CHARS = 2000


@dataclass
class Answer:
    """A decoded answer and its timing."""

    text: str
    tokens: list[int] = field(default_factory=list)
    ttft_s: float = 0.0  # question arrival -> first decoded token
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.total_s if self.total_s > 0 else 0.0


class StreamEngine:
    """Streaming video QA over a per-layer KV cache. Thread-safe: calls are serialised."""

    def __init__(self, backbone: Backbone, policy: Policy, config: HermesConfig) -> None:
        self.backbone = backbone
        self.policy = policy
        self.config = config
        self._lock = threading.RLock()
        self.reset()

    # ---- lifecycle ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: empty cache with only the prefix, counters at zero."""
        with self._lock:
            self.cache = HermesCache(self.backbone.n_layers, self.backbone.rotate_keys)
            self._pending: list[torch.Tensor] = []  # preprocessed frames (3, S, S) of the partial chunk
            self._pending_times: list[float] = []
            self.frames_seen = 0
            self.chunks = 0
            self.last_time: float | None = None
            self.next_position = 0
            self.timings: dict[str, float] = defaultdict(float)
            self.questions: list[QuestionEvent] = []
            self.last_answer: Answer | None = None
            self.last_exchange: tuple[str, str] | None = None  # conditions the next pseudo-queries
            ids = self.backbone.prefix_ids()
            n = len(ids)
            self._forward(self.backbone.embed_ids(ids), torch.arange(n), torch.full((n,), -1),
                          torch.full((n,), PREFIX))
            self.prefix_tokens = n
            self.next_position = n

    # ---- ingest -------------------------------------------------------------------------
    def ingest(self, frames: np.ndarray, timestamps: Sequence[float] | np.ndarray | None = None) -> list[ChunkEvent]:
        """Add frames (uint8 (T, H, W, 3) or one (H, W, 3)); process every complete chunk.

        timestamps: seconds, increasing; default one frame per 1 / fps after the last. The remainder of a
        partial chunk waits for the next call or ``flush()``."""
        frames = _check_frames(frames)
        with self._lock:
            times = self._check_times(timestamps, len(frames))
            pixels = self.backbone.preprocess(frames)  # (T, 3, S, S)
            self._pending.extend(pixels.unbind(0))
            self._pending_times.extend(times)
            self.last_time = times[-1] if times else self.last_time
            events = []
            while len(self._pending) >= self.config.chunk_frames:
                events.append(self._take_chunk(self.config.chunk_frames))
            return events

    def flush(self) -> list[ChunkEvent]:
        """Process the frames of a partial chunk, if any."""
        with self._lock:
            return [self._take_chunk(len(self._pending))] if self._pending else []

    def _check_times(self, timestamps: Sequence[float] | np.ndarray | None, n: int) -> list[float]:
        if timestamps is None:  # one frame every 1 / fps seconds after the last one
            start = 0.0 if self.last_time is None else self.last_time + 1.0 / self.config.fps
            return [start + i / self.config.fps for i in range(n)]
        times = [float(t) for t in np.asarray(timestamps, dtype=np.float64).reshape(-1)]
        if len(times) != n:
            raise HermesError(f"got {n} frames but {len(times)} timestamps")
        if not all(math.isfinite(t) and t >= 0 for t in times):
            raise HermesError("timestamps must be finite numbers of seconds >= 0")
        prev = [self.last_time] if self.last_time is not None else []
        if any(b <= a for a, b in itertools.pairwise(prev + times)):
            raise HermesError(f"timestamps must increase (stream is at {self.last_time} s, got {times[:4]})")
        return times

    def _take_chunk(self, n_frames: int) -> ChunkEvent:
        pixels = torch.stack(self._pending[:n_frames])  # (T, 3, S, S)
        times = self._pending_times[:n_frames]
        tpf = self.backbone.tokens_per_frame
        n_tokens = n_frames * tpf + 1
        self._make_room(n_tokens)
        t0 = time.perf_counter()
        with torch.no_grad():
            feats = self.backbone.encode_pixels(pixels)  # (1, T * tpf + 1, D)
        t1 = time.perf_counter()
        first = self.frames_seen
        frame_ids = torch.cat([torch.arange(first, first + n_frames).repeat_interleave(tpf),
                               torch.tensor([first + n_frames - 1])])
        kinds = torch.cat([torch.full((n_frames * tpf,), VIDEO), torch.tensor([NEWLINE])])
        positions = self.next_position + torch.arange(n_tokens)
        window = self._prefill_chunk(feats, positions, frame_ids, kinds)
        self.next_position += n_tokens
        self.frames_seen += n_frames
        t2 = time.perf_counter()
        queries = self._pseudo_queries()
        t3 = time.perf_counter()
        present = self._frames_present()
        attention = {name: self._pool(per_layer, present) for name, per_layer in queries.items()}
        t4 = time.perf_counter()
        budgets = self._layer_budgets()
        evicted, score_s = self._evict(budgets, queries, window)
        self._reindex()
        t5 = time.perf_counter()
        kept = self._keep_map(present)
        t6 = time.perf_counter()
        del self._pending[:n_frames], self._pending_times[:n_frames]
        self.chunks += 1
        timings = {"encode": t1 - t0, "prefill": t2 - t1, "pseudo": t3 - t2, "score": score_s,
                   "evict": t5 - t4 - score_s, "telemetry": (t4 - t3) + (t6 - t5), "total": t6 - t0}
        for key, value in timings.items():
            self.timings[key] += value
        n_layers = self.backbone.n_layers
        return ChunkEvent(
            chunk=self.chunks - 1, first_frame=first, n_frames=n_frames, t_start=times[0], t_end=times[-1],
            policy=self.policy.name, tiers=[self.policy.tier(i, n_layers) for i in range(n_layers)],
            layer_budgets=np.array(budgets or [0] * n_layers),
            cache_lengths=np.array(self.cache_lengths()), evicted=evicted, frame_ids=present, kept=kept,
            summary=np.array([int((layer.kinds == SUMMARY).sum()) for layer in self.cache.layers]),
            attention=attention, kv_bytes=self.cache.nbytes(), max_position=self.cache.max_position(),
            timings=timings,
        )

    def _prefill_chunk(self, feats: torch.Tensor, positions: torch.Tensor, frames: torch.Tensor,
                       kinds: torch.Tensor) -> dict[int, torch.Tensor]:
        """Append a chunk to every layer. When the policy needs it, record the attention the
        chunk's queries put on each token (added to ``acc``) and keep the last rows."""
        if "prefill_attention" not in self.policy.needs:
            self._forward(feats, positions, frames, kinds)
            return {}
        with record_attention(keep_rows=max(1, self.policy.observation_rows())) as rec:
            self._forward(feats, positions, frames, kinds)
        for layer_idx, layer in enumerate(self.cache.layers):
            layer.acc = layer.acc + rec.totals[layer_idx].cpu()
        return rec.rows

    def _pseudo_texts(self) -> dict[str, str]:
        texts = dict(self.config.pseudo_queries or self.backbone.pseudo_queries)
        if self.last_exchange:
            question, answer = self.last_exchange
            texts["local"] = f"Find recent details related to: {question}. {texts['local']}"
            texts["global"] = f"Context summary: Question: {question} Answer: {answer}. {texts['global']}"
        texts["mixed"] = f"{texts['local']}; {texts['global']}"
        return texts

    def _pseudo_queries(self) -> dict[str, list[np.ndarray]]:
        """Run the pseudo-queries the policy (or telemetry) needs over the cache without writing
        to it; returns name -> per layer (len(layer),) attention, mean over heads and rows."""
        names = set(self.policy.queries()) if "pseudo_queries" in self.policy.needs else set()
        if self.config.telemetry_queries:
            names.add("global")
        texts = self._pseudo_texts()
        return {name: self._attention_of(self.backbone.question_ids(texts[name])) for name in sorted(names)}

    def _layer_budgets(self) -> list[int] | None:
        if not self.policy.evicts or self.config.budget is None:
            return None
        budgets = list(self.policy.layer_budgets(self.backbone.n_layers, self.config.budget))
        if len(budgets) != self.backbone.n_layers or min(budgets) < 1:
            raise HermesError(f"policy {self.policy.name!r} gave layer budgets {budgets}; need "
                              f"{self.backbone.n_layers} numbers >= 1")
        return budgets

    def _make_room(self, n_tokens: int) -> None:
        """Refuse a chunk (before touching the cache) that would run past the model's positions."""
        if self.next_position + n_tokens + 1 > self.backbone.max_positions:
            self._compact_all()
        if self.next_position + n_tokens + 1 > self.backbone.max_positions:
            raise HermesError(
                f"the cache holds {max(self.cache.lengths())} tokens and cannot take {n_tokens} more within the "
                f"model's {self.backbone.max_positions} positions; use a policy that evicts, with a budget"
            )

    # ---- eviction -----------------------------------------------------------------------
    def _evict(self, budgets: list[int] | None, queries: dict[str, list[np.ndarray]],
               window: dict[int, torch.Tensor]) -> tuple[np.ndarray, float]:
        """Score every layer, smooth across layers, cut each layer to its budget (folding into a
        summary where the policy says so). Returns ((L,) evicted counts, seconds spent scoring)."""
        n_layers = self.backbone.n_layers
        evicted = np.zeros(n_layers, dtype=np.int64)
        index = [self.cache.evictable_index(i) for i in range(n_layers)]
        if budgets is None or all(len(idx) <= b for idx, b in zip(index, budgets, strict=True)):
            return evicted, 0.0
        t0 = time.perf_counter()
        scores = [self._score_layer(i, budgets[i], index[i], queries, window) for i in range(n_layers)]
        scores = smooth_across_layers(scores, [self.policy.smoothing_lam(i, n_layers) for i in range(n_layers)])
        score_s = time.perf_counter() - t0
        for i in range(n_layers):
            n, budget = len(index[i]), budgets[i]
            if n > budget:
                evicted[i] = self._cut_layer(i, index[i], scores[i], budget)
        return evicted, score_s

    def _cut_layer(self, layer_idx: int, index: torch.Tensor, scores: np.ndarray, budget: int) -> int:
        """Keep the top-scoring evictable tokens of one layer; fold the rest into a summary
        token where the policy says so (then the old summary is always folded in again, so
        a layer holds one). Returns how many tokens the layer lost (net of the summary)."""
        layer = self.cache.layers[layer_idx]
        summarize = self.policy.summarize(layer_idx, self.backbone.n_layers)
        n = len(index)
        candidates = np.arange(n)
        if summarize:
            candidates = candidates[layer.kinds[index].numpy() != SUMMARY]
        keep = candidates[keep_set(scores[candidates], budget - 1 if summarize else budget)]
        drop = torch.from_numpy(np.setdiff1d(np.arange(n), keep))
        kept_positions = layer.positions[index[torch.from_numpy(keep)]]  # positions are unique in a layer
        if summarize:
            self.cache.fold(layer_idx, index[drop])  # one summary token, at the smallest folded position
        stays = (layer.kinds == PREFIX) | (layer.kinds == SUMMARY) | torch.isin(layer.positions, kept_positions)
        self.cache.keep(layer_idx, stays.nonzero().flatten())
        return n - len(self.cache.evictable_index(layer_idx))

    def _score_layer(self, layer_idx: int, budget: int, index: torch.Tensor,
                     queries: dict[str, list[np.ndarray]], window: dict[int, torch.Tensor]) -> np.ndarray:
        layer = self.cache.layers[layer_idx]
        idx = index.numpy()
        n = len(idx)
        ctx = LayerContext(
            layer=layer_idx, n_layers=self.backbone.n_layers, budget=budget,
            positions=layer.positions[index].numpy(), frames=layer.frames[index].numpy(),
            kinds=layer.kinds[index].numpy(), frames_seen=self.frames_seen,
            attention={name: per_layer[layer_idx][idx] for name, per_layer in queries.items()} or None,
            accumulated=layer.acc[index].numpy() if "prefill_attention" in self.policy.needs else None,
            window_attention=window[layer_idx][:, : len(layer)][:, index].cpu().numpy() if window else None,
        )
        scores = np.asarray(self.policy.score(ctx), dtype=np.float64).reshape(-1)
        if scores.shape != (n,):
            raise HermesError(f"policy {self.policy.name!r} returned {scores.shape} scores for {n} tokens")
        if not np.isfinite(scores).all():
            raise HermesError(f"policy {self.policy.name!r} returned scores that are not finite numbers")
        return scores

    # ---- telemetry ----------------------------------------------------------------------
    def _frames_present(self) -> np.ndarray:
        """(F,) sorted frame indices held by any layer."""
        frames = torch.cat([layer.frames for layer in self.cache.layers])
        return torch.unique(frames[frames >= 0]).numpy()

    def _pool(self, per_layer: list[np.ndarray], frame_ids: np.ndarray) -> np.ndarray:
        """Per-layer (len(layer),) token values -> (L, F) per-frame sums."""
        return np.stack([pool_per_frame(values, layer.frames.numpy(), frame_ids)
                         for values, layer in zip(per_layer, self.cache.layers, strict=True)])

    def _keep_map(self, frame_ids: np.ndarray) -> np.ndarray:
        """(L, F) tokens of each frame each layer holds."""
        return self._pool([np.ones(len(layer)) for layer in self.cache.layers], frame_ids).astype(np.int64)

    def _reindex(self) -> None:
        lazy_limit = self.backbone.max_positions - self.config.reindex_margin
        if self.config.reindex == "eager" or self.next_position > lazy_limit:
            self._compact_all()

    def _compact_all(self) -> None:
        """Give every layer consecutive positions after the prefix, ending at a common end."""
        end = self.prefix_tokens + max(self.cache.evictable_lengths())
        for layer_idx in range(self.backbone.n_layers):
            self.cache.compact(layer_idx, end)
        self.next_position = end

    # ---- questions ----------------------------------------------------------------------
    def ask(self, question: str, max_new_tokens: int | None = None) -> Answer:
        """Answer a question about everything ingested so far."""
        for _ in self.ask_stream(question, max_new_tokens):
            pass
        assert self.last_answer is not None
        return self.last_answer

    def ask_stream(self, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the answer's text piece by piece; ``last_answer`` holds the result after.
        The engine stays locked until the generator finishes: consume it from one thread."""
        question = check_question(question)
        max_new = self.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if not 1 <= max_new <= 1024:
            raise HermesError(f"max_new_tokens must be in [1, 1024], got {max_new_tokens!r}")
        with self._lock:
            start = time.perf_counter()
            lengths = self.cache.lengths()
            tokens: list[int] = []
            ttft, text = 0.0, ""
            ids = self.backbone.question_ids(question)
            try:
                for token in self._decode(ids, max_new):
                    if not tokens:
                        ttft = time.perf_counter() - start
                    if token is None:
                        break
                    tokens.append(token)
                    new_text = self.backbone.tokenizer.decode(tokens, skip_special_tokens=True)
                    if new_text.startswith(text) and not new_text.endswith("\ufffd"):
                        piece, text = new_text[len(text):], new_text
                        if piece:
                            yield piece
                text = self.backbone.tokenizer.decode(tokens, skip_special_tokens=True)
            finally:
                self.cache.crop(lengths)
            total = time.perf_counter() - start
            self.last_answer = Answer(text=text, tokens=tokens, ttft_s=ttft, total_s=total)
            self.last_exchange = (question, text)
            frame_ids = self._frames_present()
            attention = self._question_attention(ids, frame_ids) if self.config.record_question_attention else None
            self.questions.append(QuestionEvent(question, text, ttft, total, len(tokens), self.frames_seen,
                                                frame_ids, attention))

    def _question_attention(self, ids: list[int], frame_ids: np.ndarray) -> np.ndarray:
        """Where a question looked, (L, F): its attention over the cache pooled per frame.
        Telemetry, computed after the answer so TTFT stays clean."""
        return self._pool(self._attention_of(ids), frame_ids)

    def attend(self, text: str) -> CacheAttention:
        """Where `text`, asked now, would look: its attention over every cached token of every
        layer (mean over heads and its rows). Writes nothing and changes nothing."""
        with self._lock:
            attention = self._attention_of(self.backbone.question_ids(check_question(text)))
            layers = self.cache.layers
            return CacheAttention(
                attention=attention,
                frames=[layer.frames.numpy().copy() for layer in layers],
                kinds=[layer.kinds.numpy().astype(np.int64) for layer in layers],
                positions=[layer.positions.numpy().copy() for layer in layers],
            )

    def _attention_of(self, ids: list[int]) -> list[np.ndarray]:
        """Per layer (len(layer),): the attention the text `ids`, asked now, puts on each cached
        token (mean over heads and its rows); the forward writes nothing."""
        n = len(ids)
        with record_attention() as rec:
            self._forward(self.backbone.embed_ids(ids), self.next_position + torch.arange(n),
                          torch.full((n,), -1), torch.full((n,), TEXT), write=False)
        return [(rec.totals[i][: len(layer)] / n).cpu().numpy() for i, layer in enumerate(self.cache.layers)]

    def _decode(self, ids: list[int], max_new: int) -> Iterator[int | None]:
        """Prefill the question at the next positions, then greedy decode with repetition
        penalty. Yields token ids; None once a stop token is chosen (first yield is timed)."""
        penalty = self.config.repetition_penalty
        stop = self.backbone.stop_ids
        seen = set(ids)
        pos = self.next_position
        hidden = self._forward(self.backbone.embed_ids(ids), pos + torch.arange(len(ids)),
                               torch.full((len(ids),), -1), torch.full((len(ids),), TEXT))
        pos += len(ids)
        for step in range(max_new):
            logits = self.backbone.model.lm_head(hidden[:, -1]).float()[0]  # (V,)
            token = int(_penalise(logits, seen, penalty).argmax())
            if token in stop:
                yield None
                return
            yield token
            seen.add(token)
            if step + 1 < max_new:
                hidden = self._forward(self.backbone.embed_ids([token]), torch.tensor([pos]),
                                       torch.tensor([-1]), torch.tensor([TEXT]))
                pos += 1

    # ---- model --------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, embeds: torch.Tensor, positions: torch.Tensor, frames: torch.Tensor, kinds: torch.Tensor,
                 write: bool = True) -> torch.Tensor:
        """Run the decoder over (1, n, D) embeddings on top of the cache -> (1, n, D) hidden."""
        with self.cache.staged(positions, frames, kinds, write=write):
            out = self.backbone.language_model(
                inputs_embeds=embeds,
                position_ids=positions.view(1, -1).to(embeds.device),
                past_key_values=self.cache,
                attention_mask={"full_attention": None},
                use_cache=True,
            )
        return out.last_hidden_state

    # ---- inspection ---------------------------------------------------------------------
    def cache_lengths(self) -> list[int]:
        """Evictable (video, newline, summary) tokens held by each layer."""
        with self._lock:
            return self.cache.evictable_lengths()

    def stats(self) -> dict:
        """Frames seen, cache size and positions, cumulative timings (seconds)."""
        with self._lock:
            return {
                "model": self.backbone.name,
                "policy": self.policy.name,
                "budget": self.config.budget,
                "frames_seen": self.frames_seen,
                "pending_frames": len(self._pending),
                "chunks": self.chunks,
                "stream_time_s": self.last_time,
                "prefix_tokens": self.prefix_tokens,
                "cache_lengths": self.cache_lengths(),
                "kv_bytes": self.cache.nbytes(),
                "max_position": self.cache.max_position(),
                "next_position": self.next_position,
                "questions": len(self.questions),
                "timings": dict(self.timings),
            }


def _penalise(logits: torch.Tensor, seen: set[int], penalty: float) -> torch.Tensor:
    """HF-style repetition penalty: divide positive, multiply negative logits of seen tokens."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(seen), dtype=torch.long)
    vals = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise HermesError(f"frames must be a numpy uint8 array (T, H, W, 3), got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise HermesError(f"frames must have shape (T, H, W, 3) with T, H, W > 0, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise HermesError(f"frames must be uint8 RGB (0-255), got dtype {frames.dtype}")
    return frames


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise HermesError("the question is empty: type something to ask about the video")
    if len(question) > MAX_QUESTION_CHARS:
        raise HermesError(f"the question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})")
    if any(unicodedata.category(c) == "Cs" for c in question):  # lone surrogates: bytes that were not UTF-8
        raise HermesError("the question is not valid text: it holds bytes that are not UTF-8")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in question):
        raise HermesError("the question holds control characters: type plain text")
    return question.strip()


def load_engine(model: str | Backbone = "hermes-tiny", policy: str | Policy = "hermes", budget: int | None = None,
                *, device: str = "cpu", seed: int = 0, policy_params: dict | None = None,
                **config: object) -> StreamEngine:
    """Build a StreamEngine. `model`: a name / directory / hub id (see hermes.backbones) or an
    already loaded Backbone (engines may share one); `config`: HermesConfig fields. A policy
    parameter named like a config field (e.g. hermes' `summary`) takes the config's value
    unless `policy_params` sets it."""
    cfg = HermesConfig.from_kwargs(budget=budget, **config)
    if isinstance(policy, Policy):
        pol = policy
    else:
        shared = {name: getattr(cfg, name) for name in policies.base.param_names(policy) if hasattr(cfg, name)}
        pol = policies.get(policy, **{**shared, **(policy_params or {})})
    backbone = model if isinstance(model, Backbone) else load_backbone(model, device=device, seed=seed)
    return StreamEngine(backbone, pol, cfg)

