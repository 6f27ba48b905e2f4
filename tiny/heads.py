"""The auxiliary modules trained alongside hermes-tiny and thrown away after training.

- AuxHeads: per frame token, the shape and colour it shows (the dense frame loss);
- EventHeads: per frame token at a decoder layer, what happened there (appearance, rank, colour change);
- QuestionProbes: the answering row names the shapes its question names; for order questions each
  retrieval head's output names its object's appearance rank.

    heads = AuxHeads(backbone); loss, acc = heads.loss(tokens, shapes, colours, embed)

None of them is saved with the model (tiny.card writes only the backbone).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hermes.backbones import Backbone
from hermes.shapestream import COLOURS, QUADRANTS, SHAPES
from tiny.labels import EVENT_CLASSES, quadrant_cells
from tiny.samples import RETRIEVAL_HEADS, Sample


class AuxHeads(torch.nn.Module):
    """Per-token shape and colour classifiers for the dense frame loss (training only).

    A frame token is scored against the language model's own word embeddings of the shape
    and colour names (plus a learned "nothing" vector each): frame tokens that show a red
    triangle are pulled towards embed("red") + embed("triangle"), which the question words
    and the tied output head can match directly."""

    def __init__(self, bb: Backbone) -> None:
        super().__init__()
        ids = [bb.tokenizer.convert_tokens_to_ids(w) for w in (*SHAPES, *COLOURS)]
        self.register_buffer("shape_ids", torch.tensor(ids[: len(SHAPES)]))
        self.register_buffer("colour_ids", torch.tensor(ids[len(SHAPES):]))
        hidden = bb.language_model.config.hidden_size
        self.none_shape = torch.nn.Parameter(torch.zeros(hidden))
        self.none_colour = torch.nn.Parameter(torch.zeros(hidden))
        self.register_buffer("quarters", torch.tensor(np.stack([quadrant_cells(q, 4) for q in QUADRANTS])),
                             persistent=False)  # (4, 4) token indices of each quarter

    def loss(self, tokens: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor, embed: torch.Tensor
             ) -> tuple[torch.Tensor, float]:
        """tokens (T, 16, D), labels (T, 16), embed (V, D) -> (loss, accuracy of both labels).

        Colour is scored per token; shape on the mean of each quarter's four tokens (a shape
        spans its quarter, and one token holds only a piece of its outline)."""
        quarters = self.quarters
        ls = tokens @ torch.cat([self.none_shape[None], embed[self.shape_ids]]).T  # (T, 16, 1 + shapes)
        lc = tokens @ torch.cat([self.none_colour[None], embed[self.colour_ids]]).T  # (T, 16, 1 + colours)
        ls = ls[:, quarters].mean(2)  # (T, 4, 1 + shapes)
        shapes = shapes[:, quarters[:, 0]]  # (T, 4)
        loss = F.cross_entropy(ls.flatten(0, 1), shapes.flatten()) + F.cross_entropy(lc.flatten(0, 1),
                                                                                     colours.flatten())
        acc = ((ls.argmax(-1) == shapes).float().mean() * (lc.argmax(-1) == colours).float().mean()).item()
        return loss, acc


class EventHeads(torch.nn.Module):
    """Linear probes on the decoder's hidden state of each frame token after `layer` layers,
    trained on ShapeStream's per-cell event labels (tiny.labels.event_labels).

    They teach the decoder to write what happened in a frame (an appearance and its rank,
    a colour change and its rank) into that frame's own tokens, so a question later finds
    the evidence by attending to the moment it happened, and loses it when that moment is
    evicted."""

    WEIGHTS = (0.5, 0.5, 4.0, 4.0, 4.0)  # events are rare next to "nothing" and "steady"

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.event = torch.nn.Linear(hidden, len(EVENT_CLASSES))
        self.ordinal = torch.nn.Linear(hidden, len(SHAPES))
        self.change = torch.nn.Linear(hidden, 2)
        self.register_buffer("weights", torch.tensor(self.WEIGHTS))

    def loss(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """hidden (N, D) frame tokens, labels (N,) each -> (loss, accuracy on event cells)."""
        ev = self.event(hidden)
        loss = F.cross_entropy(ev, labels["event"], weight=self.weights)
        for name in ("ordinal", "change"):
            if (labels[name] != -100).any():
                loss = loss + F.cross_entropy(getattr(self, name)(hidden), labels[name], ignore_index=-100)
        rare = labels["event"] >= 2
        acc = (ev[rare].argmax(-1) == labels["event"][rare]).float().mean().item() if rare.any() else float("nan")
        return loss, acc


class QuestionProbes(torch.nn.Module):
    """Linear probes on the question rows of the retrieval layer (training only).

    An order question ("did the X appear before the Y ?") needs one head to find X's
    appearance and the other Y's, and the two heads' outputs to say how early each was.
    hermes-tiny v4 put only 0.38 / 0.40 of the two heads' attention on their own object's
    appearance (head 0 put as much on Y's as on X's) and answered at chance: nothing told
    the question row which shape was named first. So:
    - `named`: the retrieval layer's input at every answer-predicting row must name the
      shapes its question names, first and second, as separate classes; the two heads'
      queries can then pick one each;
    - `rank`: for order questions, each retrieval head's output (after its slice of o_proj)
      must name the appearance rank of the object it found, so the comparison downstream
      has two ranks to compare."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.named = torch.nn.Linear(hidden, 2 * (1 + len(SHAPES)))
        self.rank = torch.nn.ModuleList(torch.nn.Linear(hidden, len(SHAPES)) for _ in RETRIEVAL_HEADS)

    def named_loss(self, x: torch.Tensor, sample: Sample) -> torch.Tensor:
        """x (N, D) normed input of the retrieval layer -> cross-entropy on both named shapes."""
        logits = self.named(x[sample.named_rows]).view(-1, 1 + len(SHAPES))  # (R * 2, 1 + shapes)
        return F.cross_entropy(logits, sample.named.flatten())

    def rank_loss(self, k: int, out: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """out (Q, D) head k's output rows, ranks (Q,) -> cross-entropy where a rank applies."""
        if not (ranks != -100).any():
            return out.new_zeros(())
        return F.cross_entropy(self.rank[k](out), ranks, ignore_index=-100)
