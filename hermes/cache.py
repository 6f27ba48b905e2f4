"""The hierarchical KV cache: one object per decoder layer, each with its own tokens.

Every layer stores, for each cached token: key and value (post-RoPE, as the model wrote
them), RoPE position, source frame index (-1 for text) and kind (prefix / video /
newline / summary / text), and the attention it has received so far (``acc``, summed
over recorded queries; what H2O ranks by). Layers may diverge in length and positions: eviction is per
layer, and the attention function (hermes.attention) masks each layer on its own.

A forward writes through ``Cache.update`` (transformers' interface). Token metadata for
the tokens about to be written is staged first:

    with cache.staged(positions, frames, kinds):          # write the new tokens
        lm(inputs_embeds=..., past_key_values=cache, ...)
    with cache.staged(positions, frames, kinds, write=False):  # read-only (pseudo-queries)
        ...

Edit operations: ``keep`` (per layer), ``fold`` (evicted tokens -> one summary token),
``set_positions`` (re-index with key re-rotation), ``crop``, ``nbytes``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Token kinds.
PREFIX, VIDEO, NEWLINE, SUMMARY, TEXT = 0, 1, 2, 3, 4
EVICTABLE_KINDS = (VIDEO, NEWLINE, SUMMARY)

HEADROOM = 256  # spare slots kept after each layer's tokens (question + answer fit without a copy)
RotateFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (keys, delta positions) -> keys


@dataclass
class TokenMeta:
    """Metadata of tokens about to be written: (n,) tensors."""

    positions: torch.Tensor  # long
    frames: torch.Tensor  # long, -1 for text tokens
    kinds: torch.Tensor  # int8, one of the kind codes above

    @property
    def acc(self) -> torch.Tensor:
        return torch.zeros(self.positions.shape, dtype=torch.float32)


META_FIELDS = ("positions", "frames", "kinds", "acc")  # per-token metadata every layer keeps in step


class HermesLayer(DynamicLayer):
    """One decoder layer's cache: keys/values (1, KV, n, Dh) plus per-token metadata (n,).

    Keys and values live in buffers with spare room at the end, so appending a question
    and decoding an answer copy nothing, and cropping them off is only a length change:
    ``keys`` / ``values`` are views of the first n slots."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = torch.zeros(0, dtype=torch.long)
        self.frames = torch.zeros(0, dtype=torch.long)
        self.kinds = torch.zeros(0, dtype=torch.int8)
        self.acc = torch.zeros(0, dtype=torch.float32)
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

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._k = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[-1]))
        self._v = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[-1]))
        self.is_initialized = True

    def _reserve(self, needed: int) -> None:
        """Make room for `needed` tokens, with headroom so questions fit without copying."""
        if self._k.shape[-2] >= needed:
            return
        n = len(self)
        capacity = needed + max(needed // 4, HEADROOM)
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], capacity, old.shape[-1]))
            new[..., :n, :] = old[..., :n, :]
            setattr(self, name, new)

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
        self._k[..., n:n + m, :] = key_states
        self._v[..., n:n + m, :] = value_states
        keys, values = self._k[..., : n + m, :], self._v[..., : n + m, :]
        if self.write:  # otherwise the new slots stay beyond the length: the cache is unchanged
            for name in META_FIELDS:
                setattr(self, name, torch.cat([getattr(self, name), getattr(meta, name)]))
        return keys, values

    def __len__(self) -> int:
        return int(self.positions.numel())

    def meta(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """Per-token metadata of the tokens at `index`."""
        return {name: getattr(self, name)[index] for name in META_FIELDS}

    def select(self, index: torch.Tensor) -> None:
        """Keep the tokens at `index` (long, in the order given), compacted in place at the
        front of the buffers (no new buffer: steady-state eviction allocates nothing big)."""
        m, device_index = len(index), index.to(self.device)
        self._k[..., :m, :] = self._k[..., device_index, :]  # indexing copies first, so overlap is safe
        self._v[..., :m, :] = self._v[..., device_index, :]
        for name, value in self.meta(index).items():
            setattr(self, name, value)

    def set_tokens(self, keys: torch.Tensor, values: torch.Tensor, meta: dict[str, torch.Tensor]) -> None:
        """Replace the layer's content: keys/values (1, KV, n, Dh), metadata (n,) by field name."""
        for name in META_FIELDS:
            setattr(self, name, meta[name])
        self._k, self._v = keys, values
        self._reserve(len(self) + HEADROOM // 2)

    def truncate(self, n: int) -> None:
        """Drop the newest tokens past n: a length change, the buffers stay."""
        for name, value in self.meta(slice(0, n)).items():
            setattr(self, name, value)


class HermesCache(Cache):
    """Per-layer KV cache with positions, frames and kinds; see the module docstring."""

    def __init__(self, n_layers: int, rotate: RotateFn) -> None:
        super().__init__(layers=[HermesLayer() for _ in range(n_layers)])
        self.rotate = rotate

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

    # ---- reading ------------------------------------------------------------------------
    def lengths(self) -> list[int]:
        """Tokens per layer (all kinds)."""
        return [len(layer) for layer in self.layers]

    def evictable_index(self, layer_idx: int) -> torch.Tensor:
        """Indices of a layer's video / newline / summary tokens, cache order."""
        kinds = self.layers[layer_idx].kinds
        mask = torch.zeros_like(kinds, dtype=torch.bool)
        for kind in EVICTABLE_KINDS:
            mask |= kinds == kind
        return mask.nonzero().flatten()

    def evictable_lengths(self) -> list[int]:
        return [int(self.evictable_index(i).numel()) for i in range(len(self.layers))]

    def max_position(self) -> int:
        return max((int(layer.positions.max()) for layer in self.layers if len(layer)), default=-1)

    def nbytes(self) -> int:
        """Bytes held by keys and values over all layers."""
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers if layer.is_initialized)

    # ---- editing ------------------------------------------------------------------------
    def keep(self, layer_idx: int, index: torch.Tensor) -> None:
        """Keep only the tokens at `index` in one layer (sorted to cache order)."""
        self.layers[layer_idx].select(torch.sort(index.long()).values)

    def fold(self, layer_idx: int, index: torch.Tensor) -> None:
        """Replace the tokens at `index` by one summary token.

        The summary sits at the smallest position among them; each folded key is re-rotated
        to that position, then keys and values are averaged (the attention they received is
        summed). Tokens stay in position order."""
        layer = self.layers[layer_idx]
        index = torch.sort(index.long()).values
        if index.numel() == 0:
            return
        positions = layer.positions[index]
        target = positions.min()
        keys = self.rotate(layer.keys[..., index, :], target - positions)  # (1, KV, m, Dh)
        summary_k = keys.mean(dim=-2, keepdim=True)
        summary_v = layer.values[..., index, :].mean(dim=-2, keepdim=True)
        rest = torch.ones(len(layer), dtype=torch.bool)
        rest[index] = False
        before = (rest & (layer.positions < target)).nonzero().flatten()
        after = (rest & (layer.positions > target)).nonzero().flatten()
        summary = {"positions": target.view(1), "frames": torch.tensor([-1]),
                   "kinds": torch.tensor([SUMMARY], dtype=torch.int8), "acc": layer.acc[index].sum().view(1)}
        parts = [layer.meta(before), summary, layer.meta(after)]
        layer.set_tokens(
            torch.cat([layer.keys[..., before, :], summary_k, layer.keys[..., after, :]], dim=-2),
            torch.cat([layer.values[..., before, :], summary_v, layer.values[..., after, :]], dim=-2),
            {name: torch.cat([part[name] for part in parts]) for name in META_FIELDS},
        )

    def set_positions(self, layer_idx: int, positions: torch.Tensor) -> None:
        """Give a layer's tokens new RoPE positions, re-rotating keys by (new - old)."""
        layer = self.layers[layer_idx]
        positions = positions.long()
        delta = positions - layer.positions
        if bool((delta != 0).any()):
            n = len(layer)
            layer._k[..., :n, :] = self.rotate(layer.keys, delta)
        layer.positions = positions

    def compact(self, layer_idx: int, end: int) -> None:
        """Re-index one layer: prefix tokens keep their positions, the others get
        consecutive positions ending at end - 1 (so new tokens at `end` follow on)."""
        layer = self.layers[layer_idx]
        positions = layer.positions.clone()
        rest = (layer.kinds != PREFIX).nonzero().flatten()
        positions[rest] = torch.arange(end - rest.numel(), end, dtype=torch.long)
        self.set_positions(layer_idx, positions)

    def crop(self, lengths: list[int]) -> None:
        """Cut each layer back to the given length (drops the newest tokens)."""
        for layer, n in zip(self.layers, lengths, strict=True):
            layer.truncate(n)
