"""The streaming engine: frames in, a bounded per-layer KV cache, answers out in milliseconds.

    import hermes
    engine = hermes.load_engine("random-tiny", policy="fifo", budget=512)
    events = engine.ingest(frames, timestamps)   # uint8 (T, H, W, 3), seconds
    engine.flush()                               # process a partial last chunk
    answer = engine.ask("what is on the screen now ?")
    print(answer.text, answer.ttft_s, engine.cache_lengths())

This module only orchestrates. Per chunk: encode the frames (backbone), append them to
every layer in one forward (hermes.decode), run the pseudo-queries the policy reads
(hermes.queries), cut each layer to its budget (hermes.eviction), re-index positions when
needed (hermes.cache), and report a ChunkEvent (hermes.telemetry). A question is prefilled
on top of the cache, decoded greedily and removed again: asking never scores, evicts or
re-encodes. ``peek`` / ``next_token_logits`` / ``attend`` look without writing.

Failures change nothing. ``ingest`` / ``flush`` refuse frames the model's positions cannot
take before adding them, and run their chunks in one ``HermesCache.transaction()`` with a copy
of the stream state: whatever raises in any chunk (the policy, the decoder, a re-index), the
call leaves the cache, positions, counters, timings and pending frames as they were before it,
and the same frames can be sent again. An answer holds the engine only while it computes a
token: between pieces the lock is free, other threads' calls wait for the answer to end, and
the thread consuming it is refused any call that would write or look past its question. However
the generator ends (exhausted, ``close()`` from any thread, dropped and collected, an exception),
its question and answer leave the cache and the engine is free again.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from hermes import eviction, queries, telemetry
from hermes.backbones import Backbone, dtype_name, load_backbone
from hermes.cache import PREFIX, HermesCache
from hermes.config import HermesConfig
from hermes.decode import Answer, Detokenizer, Peek, append_chunk, greedy, next_logits, run_text
from hermes.errors import HermesError
from hermes.inputs import check_frames, check_max_new, check_question, check_times
from hermes.policies import Policy, get
from hermes.telemetry import ChunkEvent, QuestionEvent, Stopwatch

__all__ = ["Answer", "Peek", "StreamEngine", "load_engine"]
CHUNK_STAGES = ("encode", "prefill", "pseudo", "score", "evict", "telemetry")
_DONE = object()  # the end of a token iterator


@dataclass
class StreamState:
    """The stream's counters and buffers besides the cache."""

    pending: list[torch.Tensor] = field(default_factory=list)  # preprocessed frames (3, S, S) of the partial chunk
    pending_times: list[float] = field(default_factory=list)
    frames_seen: int = 0
    chunks: int = 0
    last_time: float | None = None
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    questions: list[QuestionEvent] = field(default_factory=list)
    last_answer: Answer | None = None
    last_exchange: tuple[str, str] | None = None  # conditions the next pseudo-queries

    def copy(self) -> StreamState:
        """A copy to go back to: the lists and timings copied, their items shared (never edited)."""
        return replace(self, pending=list(self.pending), pending_times=list(self.pending_times),
                       timings=defaultdict(float, self.timings), questions=list(self.questions))


class StreamEngine:
    """Streaming video QA over a per-layer KV cache. Thread-safe: calls are serialised (an
    answer streaming from ``ask_stream`` counts as one call, from its first piece to its end)."""

    def __init__(self, backbone: Backbone, policy: Policy, config: HermesConfig, *,
                 resume: tuple[HermesCache, StreamState] | None = None) -> None:
        """`resume`: start from a cache and stream state made elsewhere (``fork``) instead of
        an empty stream."""
        self.backbone, self.policy, self.config = backbone, policy, config
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)  # notified when a streaming answer ends
        self._answering: int | None = None  # thread consuming a streaming answer (its question is in the cache)
        if resume is None:
            self.reset()
        else:
            self._cache, self._state = resume

    @contextlib.contextmanager
    def _turn(self, call: str | None) -> Iterator[None]:
        """Hold the engine for one call. While an answer streams, other threads wait for its end;
        the thread consuming it is refused `call` (a read, None, goes through: it sees the
        stream, the answer's tokens aside)."""
        with self._idle:
            while self._answering is not None:
                if self._answering != threading.get_ident():
                    self._idle.wait()
                elif call is None:
                    break
                else:
                    raise HermesError(f"{call}() was called while an answer is still streaming on this thread: "
                                      "read the ask_stream generator to its end, or close() it, first")
            yield

    def reset(self) -> None:
        """Forget the stream: empty cache with only the prefix, counters at zero."""
        with self._turn("reset"):
            cache = HermesCache(self.backbone.n_layers, self.backbone.rotate_keys)
            run_text(self.backbone, cache, self.backbone.prefix_ids(), write=True, kind=PREFIX)
            self._cache, self._state = cache, StreamState()

    def fork(self, indices: list[torch.Tensor] | None = None) -> StreamEngine:
        """A new engine on the same backbone, policy and config, holding a copy of this one's
        cache (or, per layer l, only the tokens at ``indices[l]``) and its stream counters."""
        with self._turn("fork"):
            resume = (self._cache.gather(indices), copy.deepcopy(self._state))
            return StreamEngine(self.backbone, self.policy, self.config, resume=resume)

    # ---- read-only views ----------------------------------------------------------------
    cache = property(lambda self: self._cache, doc="The HermesCache (edit it only through its methods).")
    frames_seen = property(lambda self: self._state.frames_seen, doc="Frames ingested into the cache.")
    chunks = property(lambda self: self._state.chunks, doc="Chunks processed.")
    last_time = property(lambda self: self._state.last_time, doc="Timestamp of the newest frame received.")
    pending_frames = property(lambda self: len(self._state.pending), doc="Frames waiting for a chunk to fill.")
    questions = property(lambda self: self._state.questions, doc="QuestionEvents, oldest first.")
    last_answer = property(lambda self: self._state.last_answer, doc="The latest Answer.")
    timings = property(lambda self: dict(self._state.timings), doc="Cumulative seconds per chunk stage.")
    prefix_tokens = property(lambda self: self._cache.prefix_length, doc="Prefix tokens, never evicted.")
    next_position = property(lambda self: self._cache.next_position,
                             doc="Position the next token takes (while an answer decodes: after its tokens).")

    # ---- ingest -------------------------------------------------------------------------
    def ingest(self, frames: np.ndarray, timestamps: Sequence[float] | np.ndarray | None = None) -> list[ChunkEvent]:
        """Add frames (uint8 (T, H, W, 3) or one (H, W, 3)); process every complete chunk.

        timestamps: seconds, increasing; default one frame per 1 / fps after the last. The remainder of a
        partial chunk waits for the next call or ``flush()``. On any error nothing changes (see the
        module docstring): frames the model's positions cannot take are refused before they are added."""
        frames = check_frames(frames)
        with self._turn("ingest"):
            times = check_times(timestamps, len(frames), self._state.last_time, self.config.fps)
            self.check_room(len(frames))
            pixels = self.backbone.preprocess(frames)  # (T, 3, S, S)
            with self._atomic():
                state = self._state
                state.pending.extend(pixels.unbind(0))
                state.pending_times.extend(times)
                state.last_time = times[-1] if times else state.last_time
                events = []
                while len(state.pending) >= self.config.chunk_frames:
                    events.append(self._step(self.config.chunk_frames))
            return events

    def flush(self) -> list[ChunkEvent]:
        """Process the frames of a partial chunk, if any; on an error nothing changes."""
        with self._turn("flush"):
            if not self._state.pending:
                return []
            with self._atomic():
                return [self._step(len(self._state.pending))]

    def check_room(self, n_frames: int) -> None:
        """Refuse `n_frames` new frames (HermesError), before anything is added, when the model's positions
        cannot take them: with a policy that keeps every token, every chunk they complete and the
        partial one a ``flush()`` would process; with one that evicts, the next chunk."""
        chunk, frames = self.config.chunk_frames, len(self._state.pending) + n_frames
        if self.policy.evicts and self.config.budget is not None:
            frames = min(frames, chunk)  # later chunks follow an eviction: _step checks each one (make_room)
        tokens = self.backbone.tokens_for_frames(frames, chunk)
        if not self._cache.fits(tokens, self.backbone.max_positions):
            raise HermesError(f"{n_frames} new frames refused, nothing was added: "
                              f"{self._cache.room_message(tokens, self.backbone.max_positions)}, or reset the stream")

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Whatever raises inside leaves the cache and the stream state as they were on entry."""
        saved = self._state.copy()
        try:
            with self._cache.transaction():
                yield
        except BaseException:
            self._state = saved
            raise

    def _step(self, n_frames: int) -> ChunkEvent:
        """One chunk: encode, append, pseudo-queries, evict, re-index, report."""
        state, cache, backbone, n_layers = self._state, self._cache, self.backbone, self.backbone.n_layers
        first, pixels = state.frames_seen, torch.stack(state.pending[:n_frames])  # (T, 3, S, S)
        cache.make_room(backbone.chunk_tokens(n_frames), backbone.max_positions)
        needs, watch = self.policy.needs(n_layers), Stopwatch()
        with watch.lap("encode"), torch.no_grad():
            feats = backbone.encode_pixels(pixels)  # (1, chunk_tokens(T), D)
        with watch.lap("prefill"):
            frame_ids, kinds = backbone.chunk_layout(first, n_frames)  # (n,) each: where every token comes from
            rows = (needs.observation_rows or 1) if needs.prefill_attention else 0
            window = append_chunk(backbone, cache, feats, frame_ids, kinds, rows)
            state.frames_seen += n_frames
        with watch.lap("pseudo"):
            texts = self.pseudo_texts()
            names = needs.queries | set(self.config.telemetry_queries)
            attention = queries.pseudo_query_attention(backbone, cache, texts, names, self.config.pseudo_query_style)
        with watch.lap("telemetry"):
            present = telemetry.frames_present(cache)
            pooled = {name: telemetry.pool_layers(cache, per_layer, present) for name, per_layer in attention.items()}
        result = eviction.evict(cache, self.policy, self.config.budget, attention, window, state.frames_seen, watch)
        with watch.lap("evict"):
            cache.reindex(self.config.reindex == "eager", backbone.max_positions - self.config.reindex_margin)
        with watch.lap("telemetry"):
            kept = telemetry.keep_map(cache, present)
        times = state.pending_times[:n_frames]
        del state.pending[:n_frames], state.pending_times[:n_frames]
        state.chunks += 1
        timings = watch.timings(CHUNK_STAGES)
        for key, value in timings.items():
            state.timings[key] += value
        return ChunkEvent(
            chunk=state.chunks - 1, first_frame=first, n_frames=n_frames, t_start=times[0], t_end=times[-1],
            policy=self.policy.name, tiers=[self.policy.tier(i, n_layers) for i in range(n_layers)],
            layer_budgets=np.array(result.budgets or [0] * n_layers), evicted=result.evicted, frame_ids=present,
            kept=kept, attention=pooled, timings=timings, layout=backbone.layout, **telemetry.cache_summary(cache))

    def pseudo_texts(self) -> dict[str, str]:
        """The local / global / mixed texts the next chunk's pseudo-queries will use."""
        base = self.config.pseudo_queries or self.backbone.pseudo_queries
        return queries.pseudo_texts(base, self._state.last_exchange, self.config.pseudo_query_style)

    # ---- questions ----------------------------------------------------------------------
    def ask(self, question: str, max_new_tokens: int | None = None) -> Answer:
        """Answer a question about everything ingested so far."""
        for _ in self.ask_stream(question, max_new_tokens):
            pass
        return self._state.last_answer

    def ask_stream(self, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the answer's text piece by piece; ``last_answer`` holds the result after.

        From its first piece to its end the answer is the engine's one call: other threads'
        calls wait for it, and on the thread reading it every call but a read (``stats``,
        ``cache_lengths``) raises HermesError. Read it to the end or ``close()`` it, from any
        thread; a generator dropped unfinished is closed when it is collected. However it ends,
        the question and answer leave the cache."""
        question = check_question(question)
        max_new = check_max_new(max_new_tokens, self.config.max_new_tokens)
        with self._turn("ask"):
            mark, self._answering = self._cache.mark(), threading.get_ident()
        try:
            with self._lock:
                start, ttft = time.perf_counter(), 0.0
                ids, lead = self.backbone.question_ids(question), self.backbone.question_lead()
                detok = Detokenizer(self.backbone.tokenizer)
                tokens = greedy(self.backbone, self._cache, ids, max_new, self.config.repetition_penalty, lead=lead)
            for token in self._locked_steps(tokens):  # writes the question (after its lead) and the answer
                if not detok.tokens and not ttft:
                    ttft = time.perf_counter() - start
                if token is None:
                    break
                if piece := detok.add(token):
                    yield piece
            with self._lock:
                self._cache.rewind(mark)
                self._record_answer(question, ids, lead, detok, start, ttft)
        finally:
            with self._idle:
                self._cache.rewind(mark)
                self._answering = None
                self._idle.notify_all()

    def _locked_steps(self, tokens: Iterator[int | None]) -> Iterator[int | None]:
        """The items of `tokens`, each computed under the lock by the thread that asks for it
        (the lock is free while the caller holds an item)."""
        while True:
            with self._lock:
                self._answering = threading.get_ident()
                token = next(tokens, _DONE)
            if token is _DONE:
                return
            yield token

    def _record_answer(self, question: str, ids: list[int], lead: torch.Tensor | None, detok: Detokenizer,
                       start: float, ttft: float) -> None:
        """``last_answer``, the exchange the next pseudo-queries read, and the QuestionEvent
        (all three, or, if measuring where the question looked raises, none)."""
        total, text, state = time.perf_counter() - start, detok.text, self._state
        frame_ids = telemetry.frames_present(self._cache)
        where = None  # where the question looked, measured after the answer so TTFT stays clean
        if self.config.record_question_attention:
            where = telemetry.pool_layers(self._cache, queries.text_attention(self.backbone, self._cache, ids, lead),
                                          frame_ids)
        state.last_answer = Answer(text=text, tokens=detok.tokens, ttft_s=ttft, total_s=total)
        state.last_exchange = (question, text)
        state.questions.append(QuestionEvent(question, text, ttft, total, len(detok.tokens), state.frames_seen,
                                             frame_ids, where))

    # ---- looking without writing --------------------------------------------------------
    def peek(self, text_or_ids: str | list[int]) -> Peek:
        """Run a text after the stream without writing: a str is rendered like a question (chat
        template, after the backbone's question lead), a list of ids is used as it is."""
        with self._turn("peek"):
            question = isinstance(text_or_ids, str)
            ids = self.backbone.question_ids(check_question(text_or_ids)) if question else list(text_or_ids)
            lead = self.backbone.question_lead() if question else None
            hidden = run_text(self.backbone, self._cache, ids, write=False, lead=lead)  # (1, n, D)
            return Peek(hidden=hidden[0], logits=next_logits(self.backbone, hidden))

    def next_token_logits(self, question: str) -> torch.Tensor:
        """(V,) fp32 logits of the first answer token to `question`; the cache is unchanged."""
        return self.peek(question).logits

    def attend(self, text: str) -> telemetry.CacheAttention:
        """Where `text`, asked now, would look: its attention over every cached token of every
        layer (mean over heads and its rows). Writes nothing and changes nothing."""
        with self._turn("attend"):
            ids, lead = self.backbone.question_ids(check_question(text)), self.backbone.question_lead()
            return telemetry.cache_attention(self._cache, queries.text_attention(self.backbone, self._cache, ids, lead))

    def cache_lengths(self) -> list[int]:
        """Evictable (video, newline, summary) tokens held by each layer."""
        with self._turn(None):
            return self._cache.evictable_lengths()

    def stats(self) -> dict:
        """Frames seen, cache size and positions, cumulative timings (seconds)."""
        with self._turn(None):
            state = self._state
            backbone = self.backbone
            return {"model": backbone.name, "device": str(backbone.device), "dtype": dtype_name(backbone.dtype),
                    "weights": backbone.weights,
                    "layout": backbone.layout, "policy": self.policy.name, "budget": self.config.budget,
                    "frames_seen": state.frames_seen, "pending_frames": len(state.pending), "chunks": state.chunks,
                    "stream_time_s": state.last_time, "prefix_tokens": self.prefix_tokens,
                    "cache_lengths": self.cache_lengths(), "kv_bytes": self._cache.nbytes(),
                    "max_position": self._cache.max_position(), "next_position": self.next_position,
                    "questions": len(state.questions), "timings": dict(state.timings)}


def load_engine(model: str | Backbone = "hermes-tiny", policy: str | Policy = "hermes", budget: int | None = None,
                *, device: str = "auto", dtype: str | torch.dtype = "auto", seed: int = 0, quantize: str = "none",
                policy_params: dict | None = None, **config: object) -> StreamEngine:
    """Build a StreamEngine. `model`: a name / directory / hub id (see hermes.backbones) or an
    already loaded Backbone (engines may share one); `device` ("auto", "cpu", "cuda"), `dtype`
    ("auto", "float32", "bfloat16", "float16") and `quantize` ("none", "int8", "auto") as in
    ``load_backbone``; `policy`: a registered name (with its parameters in `policy_params`) or a
    Policy instance; `config`: HermesConfig fields."""
    cfg = HermesConfig.from_kwargs(budget=budget, **config)
    if isinstance(policy, Policy) and policy_params:
        raise HermesError("policy_params go with a policy name; a Policy instance already has its parameters")
    if isinstance(model, Backbone) and (device, dtype, quantize) != ("auto", "auto", "none"):
        raise HermesError("device, dtype and quantize go with a model name; a loaded Backbone already has them")
    pol = get(policy, **(policy_params or {}))
    backbone = model if isinstance(model, Backbone) else load_backbone(model, device=device, dtype=dtype,
                                                                         seed=seed, quantize=quantize)
    return StreamEngine(backbone, pol, cfg)
