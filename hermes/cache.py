"""The hierarchical KV cache: one object per decoder layer, each owning its tokens.

Every layer (``HermesLayer``) stores, for each cached token: key and value (post-RoPE, at
the token's current position), RoPE position, source frame index (-1 for text) and kind
(prefix / video / newline / summary / text), the attention it has received so far (``acc``,
summed over recorded queries; what H2O ranks by), and the position its reference key is
rotated for (``origins``).

Layers diverge in length and positions: eviction is per layer, and the attention function
(hermes.attention) masks each layer on its own. The operations on a layer's tokens are its
methods: ``evictable_index``, ``keep``, ``fold`` (tokens -> one summary token),
``set_positions`` / ``compact`` (re-index with key re-rotation), ``gather`` (a copy of some
tokens), and transformers' ``crop(-n)`` / ``reset``, which keep the metadata in step with
the keys.

Re-indexing does not accumulate rounding. In bf16 / fp16 a layer also keeps each token's
reference key: the key as the model wrote it (``origins`` is then its write position), or
for a summary token the fp32 mean of the folded tokens' references rotated to the summary's
position. Every re-rotation (``set_positions``, ``fold``) starts from the reference, in
fp32, and casts once, so after any number of re-indexes a key carries the rounding of one
(bf16, 200 re-indexes: 0.4% max error instead of 18%). The reference costs KV x Dh x 2
bytes per token per layer, half of K + V (256 B for Qwen2-0.5B: 24 layers x 264 B with the
origin = 6.2 KiB a token, on top of 12 KiB of K + V). In fp32 the keys are their own
reference (``origins`` follows ``positions``): re-rotation is in place by (new - old), as
before, and only the 8-byte origin is added. ``nbytes()`` counts all of it.

``HermesCache`` fans out over the layers and owns the stream's positions: the prefix
length, the next position new tokens take, room checks and re-indexing. A forward writes
through ``Cache.update`` (transformers' interface); the metadata of the tokens about to be
written is staged first:

    positions = cache.next_positions(n)
    with cache.staged(positions, frames, kinds):               # write the new tokens
        lm(inputs_embeds=..., past_key_values=cache, ...)
    cache.advance(n)                                           # they are part of the stream now
    with cache.staged(positions, frames, kinds, write=False):  # read-only (pseudo-queries)
        ...
    with cache.scratch():                                      # questions: removed again on exit
        ...
    with cache.transaction():                                  # a chunk: undone if anything raises
        ...

``transaction()`` copies nothing up front. Each layer sets its buffers and metadata aside
(references only: metadata tensors are never written in place, they are replaced), and while
they are set aside an operation that would overwrite their tokens in place (``keep``,
``set_positions``, an append over a truncated end) writes a new buffer instead: one
allocation, for the copy the operation makes anyway. On an exception every layer takes its
set-aside buffers and metadata back, and the next position is restored; otherwise they are
dropped. The cost is memory, not time: until the transaction ends, a layer that was cut or
re-indexed holds its old buffers as well as its new ones.

Batch size is 1: the batch and beam operations of transformers' ``Cache`` raise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

from hermes.errors import HermesError

# Token kinds.
PREFIX, VIDEO, NEWLINE, SUMMARY, TEXT = 0, 1, 2, 3, 4
EVICTABLE_KINDS = (VIDEO, NEWLINE, SUMMARY)

HEADROOM = 256  # spare slots kept after each layer's tokens (question + answer fit without a copy)
RotateFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (keys, delta positions) -> keys
META_FIELDS = ("positions", "frames", "kinds", "acc", "origins")  # per-token metadata every layer keeps in step
META_BYTES = 8 + 8 + 1 + 4 + 8  # bytes per token of those fields (long, long, int8, float32, long)
BUFFERS = ("_k", "_v", "_r")  # keys, values, reference keys: written in place, so a checkpoint guards them
CHECKPOINT_FIELDS = (*BUFFERS, "is_initialized", *META_FIELDS)  # what a layer sets aside (see checkpoint)


def keeps_reference(dtype: torch.dtype) -> bool:
    """Whether a layer holding keys of `dtype` keeps reference keys (reduced precision)."""
    return dtype.is_floating_point and torch.finfo(dtype).bits < 32


@dataclass
class TokenMeta:
    """Metadata of tokens about to be written: (n,) tensors."""

    positions: torch.Tensor  # long
    frames: torch.Tensor  # long, -1 for text tokens
    kinds: torch.Tensor  # int8, one of the kind codes above

    @property
    def acc(self) -> torch.Tensor:
        return torch.zeros(self.positions.shape, dtype=torch.float32)

    @property
    def origins(self) -> torch.Tensor:  # new keys are their own reference, at the position written
        return self.positions


def _single_batch(operation: str) -> HermesError:
    return HermesError(f"HermesCache holds one stream (batch size 1): {operation} is not supported")


class HermesLayer(DynamicLayer):
    """One decoder layer's cache: keys/values (1, KV, n, Dh) plus per-token metadata (n,).

    Keys and values live in buffers with spare room at the end, so appending a question
    and decoding an answer copy nothing, and cropping them off is only a length change:
    ``keys`` / ``values`` are views of the first n slots. In bf16 / fp16 a third buffer of
    the same shape holds the reference keys (see the module docstring)."""

    def __init__(self, rotate: RotateFn) -> None:
        super().__init__()
        self.rotate = rotate
        self._saved: dict[str, object] | None = None  # what checkpoint() set aside
        self._clear()

    def _clear(self) -> None:
        self._k = self._v = self._r = None  # keys, values, reference keys (reduced precision only)
        self.is_initialized = False
        self.positions = torch.zeros(0, dtype=torch.long)
        self.frames = torch.zeros(0, dtype=torch.long)
        self.kinds = torch.zeros(0, dtype=torch.int8)
        self.acc = torch.zeros(0, dtype=torch.float32)
        self.origins = torch.zeros(0, dtype=torch.long)
        self.pending: TokenMeta | None = None
        self.write = True

    # keys / values: views of the first n slots of the buffers
    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[..., : len(self), :]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        self._k = value

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[..., : len(self), :]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self._v = value

    def __len__(self) -> int:
        return int(self.positions.numel())

    # ---- transformers' layer contract ---------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._k = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[-1]))
        self._v = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[-1]))
        self._r = torch.empty_like(self._k) if keeps_reference(self.dtype) else None
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
               ) -> tuple[torch.Tensor, torch.Tensor]:
        meta = self.pending
        m = key_states.shape[-2]
        if meta is None or meta.positions.numel() != m:
            raise RuntimeError("HermesCache: stage the new tokens' metadata (cache.staged(...)) before a forward")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = len(self)
        self._reserve(n + m)
        self._own("_k", n)[..., n:n + m, :] = key_states
        self._own("_v", n)[..., n:n + m, :] = value_states
        keys, values = self._k[..., : n + m, :], self._v[..., : n + m, :]
        if self.write:  # otherwise the new slots stay beyond the length: the cache is unchanged
            if self._r is not None:
                self._own("_r", n)[..., n:n + m, :] = key_states
            for name in META_FIELDS:
                setattr(self, name, torch.cat([getattr(self, name), getattr(meta, name)]))
        return keys, values

    def crop(self, tokens_to_remove: int) -> None:
        """transformers' meaning: a negative number drops that many of the newest tokens."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        self.truncate(max(0, len(self) + tokens_to_remove))

    def reset(self) -> None:
        """Drop every token and its metadata."""
        self._clear()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise _single_batch("reorder_cache (beam search)")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise _single_batch("batch_repeat_interleave")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise _single_batch("batch_select_indices")

    def offload(self) -> None:
        super().offload()  # keys / values: the first n slots, to the CPU
        if self._r is not None:
            self._r = self._r[..., : len(self), :].to("cpu", non_blocking=True)

    def prefetch(self) -> None:
        super().prefetch()
        if self._r is not None and self._r.device != self.device:
            self._r = self._r.to(self.device, non_blocking=True)

    # ---- reading ------------------------------------------------------------------------
    def meta(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """Per-token metadata of the tokens at `index`."""
        return {name: getattr(self, name)[index] for name in META_FIELDS}

    def evictable_index(self) -> torch.Tensor:
        """(m,) indices of the video / newline / summary tokens, cache order."""
        return torch.isin(self.kinds, torch.tensor(EVICTABLE_KINDS, dtype=torch.int8)).nonzero().flatten()

    @property
    def references(self) -> torch.Tensor | None:
        """(1, KV, n, Dh) reference keys, at ``origins`` (the keys themselves in fp32)."""
        if not self.is_initialized:
            return None
        return self.keys if self._r is None else self._r[..., : len(self), :]

    def nbytes(self) -> int:
        """Bytes this layer holds for its tokens: keys, values, reference keys where kept
        (bf16 / fp16), and the per-token metadata (``META_BYTES`` a token)."""
        if not self.is_initialized:
            return 0
        tensors = self.keys.nbytes + self.values.nbytes + (0 if self._r is None else self.references.nbytes)
        return tensors + len(self) * META_BYTES

    def gather(self, index: torch.Tensor) -> HermesLayer:
        """A new layer holding copies of the tokens at `index` (long, cache order)."""
        layer = HermesLayer(self.rotate)
        if self.is_initialized:
            layer.dtype, layer.device, layer.is_initialized = self.dtype, self.device, True
            device_index = index.to(self.device)
            references = None if self._r is None else self.references[..., device_index, :].clone()
            layer.set_tokens(self.keys[..., device_index, :].clone(), self.values[..., device_index, :].clone(),
                             {name: value.clone() for name, value in self.meta(index).items()}, references)
        return layer

    def _rotated_references(self, index: torch.Tensor | slice, positions: torch.Tensor) -> torch.Tensor:
        """fp32 keys of the tokens at `index`, rotated from their references to `positions`."""
        return self.rotate(self.references[..., index, :].float(), positions - self.origins[index])

    # ---- checkpoints ----------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Set the layer's content aside until ``restore()`` or ``release()``: references only,
        nothing is copied (see the module docstring and ``HermesCache.transaction``)."""
        if self._saved is not None:
            raise RuntimeError("HermesLayer: a checkpoint is already open (transactions do not nest)")
        self._saved = {name: getattr(self, name) for name in CHECKPOINT_FIELDS}

    def restore(self) -> None:
        """Back to the content set aside by ``checkpoint()``: buffers, metadata, length."""
        for name, value in self._saved.items():
            setattr(self, name, value)
        self._saved = None

    def release(self) -> None:
        """Drop what ``checkpoint()`` set aside: the layer keeps its present content."""
        self._saved = None

    def _own(self, name: str, keep: int) -> torch.Tensor:
        """Buffer `name`, ready to be written in place from slot `keep` on. Where a checkpoint
        holds this buffer and the write would reach its tokens, the layer gets a new buffer of
        the same size first, holding a copy of the first `keep` slots only."""
        buffer, saved = getattr(self, name), self._saved
        if saved is None or buffer is not saved[name] or keep >= len(saved["positions"]):
            return buffer
        new = torch.empty_like(buffer)
        new[..., :keep, :] = buffer[..., :keep, :]
        setattr(self, name, new)
        return new

    # ---- editing ------------------------------------------------------------------------
    def _reserve(self, needed: int) -> None:
        """Make room for `needed` tokens, with headroom so questions fit without copying."""
        if self._k.shape[-2] >= needed:
            return
        n = len(self)
        capacity = needed + max(needed // 4, HEADROOM)
        for name in BUFFERS:
            old = getattr(self, name)
            if old is None:
                continue
            new = old.new_empty((*old.shape[:2], capacity, old.shape[-1]))
            new[..., :n, :] = old[..., :n, :]
            setattr(self, name, new)

    def set_tokens(self, keys: torch.Tensor, values: torch.Tensor, meta: dict[str, torch.Tensor],
                   references: torch.Tensor | None = None) -> None:
        """Replace the layer's content: keys/values (1, KV, n, Dh), metadata (n,) by field name.
        In bf16 / fp16, `references` are the reference keys at ``meta["origins"]``; without
        them (or without origins) the keys are their own reference, at ``meta["positions"]``."""
        if references is None or "origins" not in meta:
            meta, references = {**meta, "origins": meta["positions"].clone()}, None
        for name in META_FIELDS:
            setattr(self, name, meta[name])
        self._k, self._v = keys, values
        self._r = None if not keeps_reference(keys.dtype) else keys.clone() if references is None else references
        self._reserve(len(self) + HEADROOM // 2)

    def truncate(self, n: int) -> None:
        """Keep the oldest n tokens: a length change, the buffers stay."""
        for name, value in self.meta(slice(0, n)).items():
            setattr(self, name, value)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the tokens at `index` (sorted to cache order), compacted in place at the
        front of the buffers (no new buffer: steady-state eviction allocates nothing big; inside
        a transaction, one new buffer per layer and transaction)."""
        index = torch.sort(index.long()).values
        m, device_index = len(index), index.to(self.device)
        for name in BUFFERS:
            if (buffer := getattr(self, name)) is None:
                continue
            if (target := self._own(name, 0)) is buffer:
                buffer[..., :m, :] = buffer[..., device_index, :]  # indexing copies first, so overlap is safe
            else:  # a checkpoint holds the buffer: gather straight into the new one
                torch.index_select(buffer, -2, device_index, out=target[..., :m, :])
        for name, value in self.meta(index).items():
            setattr(self, name, value)

    def fold(self, index: torch.Tensor, at: int | None = None) -> None:
        """Replace the tokens at `index` by one summary token.

        The summary sits at position `at` (default: the smallest position among them; `at` must
        not be the position of a token that stays); each folded key is rotated from its
        reference to that position (in fp32), then keys and values are averaged (the attention
        they received is summed). The average is the summary's reference, at `at`. Tokens stay
        in position order."""
        index = torch.sort(index.long()).values
        if index.numel() == 0:
            return
        positions = self.positions[index]
        target = positions.min() if at is None else torch.tensor(int(at))
        summary_k = self._rotated_references(index, target.expand(len(index))).mean(dim=-2, keepdim=True)
        summary_k = summary_k.to(self.dtype)
        summary_v = self.values[..., index, :].float().mean(dim=-2, keepdim=True).to(self.dtype)
        rest = torch.ones(len(self), dtype=torch.bool)
        rest[index] = False
        before = (rest & (self.positions < target)).nonzero().flatten()
        after = (rest & (self.positions > target)).nonzero().flatten()
        summary = {"positions": target.view(1), "frames": torch.tensor([-1]),
                   "kinds": torch.tensor([SUMMARY], dtype=torch.int8), "acc": self.acc[index].sum().view(1),
                   "origins": target.view(1)}
        parts = [self.meta(before), summary, self.meta(after)]

        def around(tensor: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
            return torch.cat([tensor[..., before, :], middle, tensor[..., after, :]], dim=-2)

        self.set_tokens(around(self.keys, summary_k), around(self.values, summary_v),
                        {name: torch.cat([part[name] for part in parts]) for name in META_FIELDS},
                        None if self._r is None else around(self.references, summary_k))

    def add_attention(self, received: torch.Tensor) -> None:
        """Add (n,) attention the tokens received from new queries to ``acc``."""
        self.acc = self.acc + received[: len(self)]

    def set_positions(self, positions: torch.Tensor) -> None:
        """Give the tokens new RoPE positions (n,): each key is rotated from its reference
        (in fp32) and cast once. In fp32 that is a rotation of the keys by (new - old)."""
        positions = positions.long()
        if bool((positions != self.positions).any()):
            keys = self._rotated_references(slice(None), positions).to(self.dtype)
            self._own("_k", 0)[..., : len(self), :] = keys
        self.positions = positions
        if self._r is None:  # the keys are their own reference
            self.origins = positions

    def compact(self, end: int) -> None:
        """Re-index: prefix tokens keep their positions, the others get consecutive
        positions ending at end - 1 (so new tokens at `end` follow on)."""
        positions = self.positions.clone()
        rest = (self.kinds != PREFIX).nonzero().flatten()
        positions[rest] = torch.arange(end - rest.numel(), end, dtype=torch.long)
        self.set_positions(positions)


@dataclass(frozen=True)
class CacheMark:
    """Where the cache stood: tokens per layer and the next position (see ``HermesCache.mark``)."""

    lengths: tuple[int, ...]
    next_position: int


class HermesCache(Cache):
    """Per-layer KV cache that owns the stream's positions; see the module docstring."""

    def __init__(self, n_layers: int, rotate: RotateFn) -> None:
        super().__init__(layers=[HermesLayer(rotate) for _ in range(n_layers)])
        self.rotate = rotate
        self._next_position = 0

    # ---- positions ----------------------------------------------------------------------
    @property
    def next_position(self) -> int:
        """The position the next token of the stream takes."""
        return self._next_position

    @property
    def prefix_length(self) -> int:
        """Prefix tokens (never evicted), the same in every layer."""
        return int((self.layers[0].kinds == PREFIX).sum())

    def next_positions(self, n: int) -> torch.Tensor:
        """(n,) positions of n tokens placed after the stream."""
        return self._next_position + torch.arange(n)

    def advance(self, n: int) -> None:
        """The n tokens just written at ``next_positions(n)`` are part of the stream now."""
        self._next_position += n

    def room_for(self, n: int, max_positions: int) -> bool:
        """Whether n more tokens (and one question token) fit within the model's positions."""
        return self._next_position + n + 1 <= max_positions

    def fits(self, n: int, max_positions: int) -> bool:
        """Whether n more tokens (and one question token) fit, re-indexing first if need be."""
        return self.prefix_length + max(self.evictable_lengths(), default=0) + n + 1 <= max_positions

    def room_message(self, n: int, max_positions: int) -> str:
        """Why n more tokens do not fit (when ``fits`` is False)."""
        return (f"the cache holds {max(self.evictable_lengths(), default=0)} evictable tokens and cannot take {n} "
                f"more within the model's {max_positions} positions; use a policy that evicts, with a budget")

    def make_room(self, n: int, max_positions: int) -> None:
        """Re-index if n tokens would run past the model's positions; refuse, before touching
        anything, when even that is not enough."""
        if self.room_for(n, max_positions):
            return
        if not self.fits(n, max_positions):
            raise HermesError(self.room_message(n, max_positions))
        self.compact_all()

    def reindex(self, eager: bool, limit: int) -> None:
        """Compact every layer when `eager`, or once the next position is past `limit` (lazy)."""
        if eager or self._next_position > limit:
            self.compact_all()

    def compact_all(self) -> None:
        """Give every layer consecutive positions after the prefix, ending at a common end."""
        end = self.prefix_length + max(self.evictable_lengths())
        for layer in self.layers:
            layer.compact(end)
        self._next_position = end

    def shift(self, delta: int) -> None:
        """Move every token of every layer, and the stream's next position, by `delta`
        positions (keys re-rotated). RoPE is relative: answers do not change."""
        for layer in self.layers:
            layer.set_positions(layer.positions + delta)
        self._next_position += delta

    # ---- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def staged(self, positions: torch.Tensor, frames: torch.Tensor, kinds: torch.Tensor, write: bool = True
               ) -> Iterator[None]:
        """Stage metadata for the next forward's tokens; write=False leaves the cache unchanged."""
        meta = TokenMeta(positions.long(), frames.long(), kinds.to(torch.int8))
        for layer in self.layers:
            layer.pending, layer.write = meta, write
        try:
            yield
        finally:
            for layer in self.layers:
                layer.pending, layer.write = None, True

    def mark(self) -> CacheMark:
        return CacheMark(tuple(self.lengths()), self._next_position)

    def rewind(self, mark: CacheMark) -> None:
        """Back to `mark`: each layer cut to its length then, the next position restored."""
        for layer, n in zip(self.layers, mark.lengths, strict=True):
            layer.truncate(n)
        self._next_position = mark.next_position

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """If anything inside raises, every layer's tokens (keys, values, metadata) and the next
        position are as they were on entry; copies nothing up front (see the module docstring).
        Transactions do not nest."""
        next_position = self._next_position
        for layer in self.layers:
            layer.checkpoint()
        try:
            yield
        except BaseException:
            for layer in self.layers:
                layer.restore()
            self._next_position = next_position
            raise
        finally:
            for layer in self.layers:
                layer.release()

    @contextlib.contextmanager
    def scratch(self) -> Iterator[None]:
        """Whatever is written inside (a question and its answer) is gone on exit."""
        mark = self.mark()
        try:
            yield
        finally:
            self.rewind(mark)

    def crop(self, tokens_to_remove: int) -> None:
        """transformers' meaning (drop the newest -n tokens of every layer). The stream's next
        position stays: positions are never reused (lazy re-indexing leaves gaps too)."""
        super().crop(tokens_to_remove)

    def reset(self) -> None:
        super().reset()
        self._next_position = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise _single_batch("reorder_cache (beam search)")

    # ---- reading ------------------------------------------------------------------------
    def lengths(self) -> list[int]:
        """Tokens per layer (all kinds)."""
        return [len(layer) for layer in self.layers]

    def evictable_lengths(self) -> list[int]:
        return [int(layer.evictable_index().numel()) for layer in self.layers]

    def max_position(self) -> int:
        return max((int(layer.positions.max()) for layer in self.layers if len(layer)), default=-1)

    def nbytes(self) -> int:
        """Bytes held over all layers: keys, values, reference keys, metadata (``HermesLayer.nbytes``)."""
        return sum(layer.nbytes() for layer in self.layers)

    def gather(self, indices: list[torch.Tensor] | None = None) -> HermesCache:
        """A new cache holding copies of every layer's tokens (or those at ``indices[l]``),
        with the same next position."""
        out = HermesCache(len(self.layers), self.rotate)
        out.layers = [layer.gather(torch.arange(len(layer)) if indices is None else idx.long())
                      for layer, idx in zip(self.layers, indices or [None] * len(self.layers), strict=True)]
        out.advance(self._next_position)
        return out
