"""The losses of hermes-tiny's question-answering stage, on one Sample's forward.

- qa_forward: the answer word and the end-of-turn token after it (the answer loss);
- retrieval_loss: two heads of a middle layer must look, from the row that predicts the answer,
  at the frame tokens holding the evidence, and the first one's output must name the answer;
- copy_loss: two heads of an early layer fetch the shape words a question names into that row.

    loss, acc, states = qa_forward(backbone, sample)
    ret, hit, readout, probe = retrieval_loss(backbone, sample, states[6][0], 6, probes=probes)

head_attention / head_output / read_words write one head's attention out so it can be supervised
(tiny.diagnostics measures with them too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import rotate_half

from hermes.backbones import Backbone
from hermes.shapestream import SHAPES
from tiny.heads import QuestionProbes
from tiny.samples import RETRIEVAL_HEADS, Sample


def head_attention(bb: Backbone, layer: int, x: torch.Tensor, sample: Sample, rows: torch.Tensor, head: int
                   ) -> torch.Tensor:
    """log attention (Q, N) of one head of decoder layer `layer` from `rows`, given the
    layer's normed input x (N, D), with the sample's positions and mask: what the fused
    attention computes, for one head, written out so it can be supervised."""
    attn = bb.language_model.layers[layer].self_attn
    cos, sin = bb.language_model.rotary_emb(x[None], sample.positions)  # (1, N, head_dim)
    cos, sin = cos[0], sin[0]
    n_heads = attn.config.num_attention_heads
    group = n_heads // attn.config.num_key_value_heads
    q = attn.q_proj(x[rows]).view(len(rows), n_heads, attn.head_dim)[:, head]  # (Q, head_dim)
    key = attn.k_proj(x).view(len(x), -1, attn.head_dim)[:, head // group]  # (N, head_dim)
    q = q * cos[rows] + rotate_half(q) * sin[rows]
    key = key * cos + rotate_half(key) * sin
    logits = (q @ key.T * attn.scaling).masked_fill(~sample.mask[0, 0, rows], float("-inf"))  # (Q, N)
    return logits.log_softmax(-1)


def head_output(bb: Backbone, layer: int, x: torch.Tensor, logp: torch.Tensor, head: int) -> torch.Tensor:
    """(Q, D): what one head adds to the residual stream, given its log attention (Q, N)."""
    attn = bb.language_model.layers[layer].self_attn
    group = attn.config.num_attention_heads // attn.config.num_key_value_heads
    values = attn.v_proj(x).view(len(x), -1, attn.head_dim)[:, head // group]  # (N, head_dim)
    w_o = attn.o_proj.weight[:, head * attn.head_dim:(head + 1) * attn.head_dim]  # (D, head_dim)
    return (logp.exp() @ values) @ w_o.T


def read_words(bb: Backbone, out: torch.Tensor, options: torch.Tensor) -> torch.Tensor:
    """(Q, D) head outputs -> (Q, V) word logits through the final norm and the tied
    embeddings, -inf outside each row's options (Q, V) bool."""
    return bb.model.lm_head(bb.language_model.norm(out)).masked_fill(~options, float("-inf"))


def retrieval_loss(bb: Backbone, sample: Sample, hidden: torch.Tensor, layer: int, readout: bool = True,
                   probes: QuestionProbes | None = None) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Attention supervision: at decoder layer `layer` (input hidden (N, D)), head
    RETRIEVAL_HEADS[k] of each answer-predicting row should put its attention on the tokens
    that hold the evidence for the k-th object its question is about (hermes.shapestream.evidence).
    Returns (-log attention mass on the evidence, share of rows whose top key is evidence,
    readout loss (zero when `readout` is off), question-probe loss (zero without `probes`)).

    It is the answer-only signal made dense: a question learns where to look directly,
    instead of through a softmax over thousands of frame tokens from one answer word. The
    readout loss asks the first head's own output, read through the final norm and the
    tied word embeddings, to name the answer among its options (colours, shapes or
    numbers): looking in the right place is no use if what the head brings back is not
    the answer. The probes (QuestionProbes) are what order questions need on top."""
    x = bb.language_model.layers[layer].input_layernorm(hidden)  # (N, D)
    losses, hits, read = [], [], hidden.new_zeros(())
    probe = probes.named_loss(x, sample) if probes is not None else hidden.new_zeros(())
    for k, ((rows, hold), head) in enumerate(zip(sample.evidence, RETRIEVAL_HEADS, strict=True)):
        if not len(rows):
            continue
        logp = head_attention(bb, layer, x, sample, rows, head)  # (Q, N)
        losses.append(-torch.logsumexp(logp.masked_fill(~hold, float("-inf")), -1))
        hits.append(hold.gather(1, logp.argmax(-1, keepdim=True)).float())
        if not readout and probes is None:
            continue
        out = head_output(bb, layer, x, logp, head)  # (Q, D)
        if probes is not None:
            probe = probe + probes.rank_loss(k, out, sample.ranks[k])
        if readout and k == 0 and sample.options.any():
            has = sample.options.any(-1)
            read = F.cross_entropy(read_words(bb, out[has], sample.options[has]), sample.targets[rows[has]])
    if not losses:
        return hidden.new_zeros(()), float("nan"), read, probe
    return torch.cat(losses).mean(), torch.cat(hits).mean().item(), read, probe


COPY_HEADS = (0, 2)  # at copy_layer: one head per shape a question names, first and second


def copy_loss(bb: Backbone, sample: Sample, hidden: torch.Tensor, layer: int) -> tuple[torch.Tensor, float]:
    """Attention supervision inside the question: at decoder layer `layer` (input hidden
    (N, D)), head COPY_HEADS[k] of each answer-predicting row should look at the k-th shape
    word its question names, and its output should name that shape. Returns (the mean, over
    rows and both terms, of -log attention on the word and of the readout cross-entropy;
    share of rows whose top key is the word).

    Why: trained on answers alone, hermes-tiny v4 never learned to carry the shape a
    question names to the row that answers it (a linear probe on that row reads the named
    shape at chance in every layer), so "what colour is the X now" was answered from
    whatever shape was on screen, and "did the X appear before the Y" at chance. The
    retrieval heads can only look for X once the row knows X."""
    x = bb.language_model.layers[layer].input_layernorm(hidden)  # (N, D)
    shape_ids = torch.tensor([bb.tokenizer.convert_tokens_to_ids(w) for w in SHAPES], device=x.device)
    options = torch.zeros(bb.language_model.config.vocab_size, dtype=torch.bool, device=x.device)
    options[shape_ids] = True
    losses, hits = [], []
    for k, head in enumerate(COPY_HEADS):
        has = sample.named[:, k] > 0
        if not has.any():
            continue
        rows, at = sample.named_rows[has], sample.named_at[has, k]  # (Q,), (Q,)
        logp = head_attention(bb, layer, x, sample, rows, head)  # (Q, N)
        words = read_words(bb, head_output(bb, layer, x, logp, head), options.expand(len(rows), -1))
        losses += [-logp.gather(1, at[:, None])[:, 0], F.cross_entropy(words, shape_ids[sample.named[has, k] - 1],
                                                                       reduction="none")]
        hits.append((logp.argmax(-1) == at).float())
    if not losses:
        return hidden.new_zeros(()), float("nan")
    return torch.cat(losses).mean(), torch.cat(hits).mean().item()


def qa_forward(bb: Backbone, sample: Sample) -> tuple[torch.Tensor, float, tuple]:
    """(answer loss, answer accuracy, hidden states: the input of every decoder layer, then
    the final output, each (1, N, D)) for one sample."""
    out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                            attention_mask={"full_attention": sample.mask}, use_cache=False,
                            output_hidden_states=True)
    logits = bb.model.lm_head(out.last_hidden_state[0])  # (N, V)
    # targets[i] is the token that should follow position i
    loss = F.cross_entropy(logits.float(), sample.targets, ignore_index=-100)
    hit = sample.targets != -100
    word = hit.clone()
    word[hit.nonzero().flatten()[1::2]] = False  # even hits: the answer words
    acc = (logits[word].argmax(-1) == sample.targets[word]).float().mean().item()
    return loss, acc, out.hidden_states
