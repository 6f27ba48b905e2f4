"""Why hermes-tiny gets a question template wrong: where it looks, what it brings back, and
whether the answering row knows which shape the question names.

    python -m tiny.diagnostics                    # the bundled model, 24 streams, ~1 min
    python -m tiny.diagnostics --model runs/v5/export --streams 8

For held-out ShapeStream streams (seeds 200+, 64 s at 2 fps, no eviction: one
full-sequence forward in the engine's layout, as training lays it out), per question template:
- answer: the model's first answer word is right;
- mass / top: the share of attention that the retrieval heads of `--layer` (the heads the
  training supervises, tiny.samples.RETRIEVAL_HEADS) put on the tokens that hold the
  evidence, and how often their most-attended token is one of them; for order questions
  "did the X appear before the Y", the first head (attention head 0) must find X and the
  second (attention head 2) Y;
- readout: the first retrieval head's own output, read through the final norm and the word
  embeddings, names the answer among its options (colours, shapes or numbers);
- named shape, per layer: a linear probe, fitted on the answering rows of 70% of the streams
  and tested on the rest, reads which shape the question names first (second, for order questions) from
  that row's hidden state. At chance, the row does not know what it is asked about.

Writes analysis/results/tiny_diagnostics[-model].md; the last printed line is JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from analysis.common import RESULTS, result_name
from hermes.backbones import Backbone, load_backbone
from hermes.shapestream import SHAPES, generate, grade, template_name
from tiny.losses import head_attention, head_output, read_words
from tiny.samples import RETRIEVAL_HEADS, Sample, build_sample


@torch.no_grad()
def stream_rows(bb: Backbone, sample: Sample, questions: list, layer: int) -> tuple[list[dict], torch.Tensor]:
    """Per question: its template and measurements; and (layers + 1, Q, D) hidden states
    of the answering rows."""
    out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                            attention_mask={"full_attention": sample.mask}, use_cache=False,
                            output_hidden_states=True)
    logits = bb.model.lm_head(out.last_hidden_state[0])  # (N, V)
    rows = sample.named_rows.tolist()
    said = bb.tokenizer.convert_ids_to_tokens(logits[rows].argmax(-1).tolist())  # one word per token
    found = [{"template": template_name(q.question), "answer": grade(word, q.answer)}
             for q, word in zip(questions, said, strict=True)]
    x = bb.language_model.layers[layer].input_layernorm(out.hidden_states[layer][0])  # (N, D)
    for k, ((ev_rows, hold), head) in enumerate(zip(sample.evidence, RETRIEVAL_HEADS, strict=True)):
        if not len(ev_rows):
            continue
        logp = head_attention(bb, layer, x, sample, ev_rows, head)  # (Q, N)
        mass = logp.exp().mul(hold).sum(-1)
        top = hold.gather(1, logp.argmax(-1, keepdim=True))[:, 0]
        words = read_words(bb, head_output(bb, layer, x, logp, head), sample.options) if k == 0 else None
        for j, r in enumerate(ev_rows.tolist()):
            row = found[rows.index(r)]
            row[f"mass{k}"], row[f"top{k}"] = mass[j].item(), float(top[j])
            if words is not None and sample.options[j].any():
                row["readout"] = float(words[j].argmax() == sample.targets[r])
    hidden = torch.stack([h[0, sample.named_rows] for h in out.hidden_states])  # (layers + 1, Q, D)
    return found, hidden


def probe_accuracy(hidden: torch.Tensor, labels: torch.Tensor, fit: torch.Tensor, steps: int = 300) -> float:
    """Accuracy on the rows outside `fit` (bool) of a linear probe fitted on the rows in it."""
    torch.manual_seed(0)
    x = F.layer_norm(hidden, hidden.shape[-1:])
    probe = torch.nn.Linear(x.shape[-1], len(SHAPES) + 1)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(probe(x[fit]), labels[fit])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (probe(x[~fit]).argmax(-1) == labels[~fit]).float().mean().item()


def diagnose(model: str, streams: int, seconds: float, layer: int) -> tuple[dict, list[float], float]:
    """(per template: mean of each measurement and the count, per layer: named-shape probe
    accuracy on the rows whose question names a shape (fitted on 70% of the streams, tested
    on the rest), the probe's chance: the score of always naming the commonest shape of
    each slot, first or second name, among the tested rows)."""
    bb = load_backbone(model, device="cpu")  # its result is named for the CPU
    bb.model.set_attn_implementation({"text_config": "sdpa", "vision_config": "sdpa"})
    bb.model.eval()
    found, hidden, named, stream_of = [], [], [], []
    for seed in range(200, 200 + streams):
        stream = generate(seed, seconds=seconds)
        with torch.no_grad():
            sample = build_sample(bb, stream, bb.device)
        rows, h = stream_rows(bb, sample, stream.questions, layer)
        found += rows
        hidden.append(h)
        named.append(sample.named)
        stream_of += [seed] * len(sample.named)
    hidden, named = torch.cat(hidden, 1).float(), torch.cat(named)  # (L + 1, Q, D), (Q, 2)
    # (row, slot) for every shape a row must name: the first named, and for order questions the second;
    # the second name is a different target from the same row, so the slot is a feature too
    index, slot = (named > 0).nonzero().T  # (P,) each
    labels = named[index, slot]
    fit = torch.tensor(stream_of)[index] < 200 + int(0.7 * streams)  # fit and test on different streams
    per_layer = []
    for h in hidden:
        feats = torch.cat([h[index], slot[:, None] * h[index]], -1)  # a probe per slot, fitted jointly
        per_layer.append(probe_accuracy(feats, labels, fit))
    table: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for row in found:
        for key, value in row.items():
            if key != "template":
                table[row["template"]][key].append(float(value))
    summary = {t: {k: (float(np.mean(v)), len(v)) for k, v in cols.items()} for t, cols in table.items()}
    # chance: the best a probe that knows only the slot could score, the commonest shape per slot
    test = ~fit
    chance = sum(labels[test & (slot == k)].bincount().max().item() for k in (0, 1)
                 if (test & (slot == k)).any()) / test.sum().item()
    return summary, per_layer, chance


def write(summary: dict, per_layer: list[float], chance: float, model: str, streams: int, name: str) -> Path:
    columns = ("answer", "mass0", "top0", "mass1", "top1", "readout")
    lines = [f"# hermes-tiny diagnostics: {model}", "",
             f"{streams} held-out streams (seeds 200+), no eviction. `mass0`/`top0`: attention of the first "
             "supervised retrieval head (attention head 0 of the layer) on the evidence for the first object "
             "a question is about; `mass1`/`top1`: the second (attention head 2), for the second object of "
             "an order question; `readout`: the first head's own output names the answer.", "",
             "| template | n | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for t, cols in sorted(summary.items()):
        cells = [f"{cols[c][0]:.2f}" if c in cols else "" for c in columns]
        lines.append(f"| {t} | {cols['answer'][1]} | " + " | ".join(cells) + " |")
    lines += ["", "Named shape read from the answering row by a linear probe (fitted on 70% of the streams, "
              f"tested on the rest; always naming the commonest shape of each slot scores {chance:.2f}). "
              "Column i is the input of decoder layer i; the last column is the final output.",
              "", "| hidden state | " + " | ".join(str(i) for i in range(len(per_layer))) + " |",
              "|---|" + "---|" * len(per_layer),
              "| accuracy | " + " | ".join(f"{a:.2f}" for a in per_layer) + " |", ""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hermes-tiny")
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=64.0)
    parser.add_argument("--layer", type=int, default=6, help="the layer whose retrieval heads training supervises")
    parser.add_argument("--quick", action="store_true", help="4 streams of 32 s")
    args = parser.parse_args()
    streams, seconds = (4, 32.0) if args.quick else (args.streams, args.seconds)
    summary, per_layer, chance = diagnose(args.model, streams, seconds, args.layer)
    name = result_name("tiny_diagnostics", args.model, args.quick, device="cpu")  # load_backbone: CPU
    path = write(summary, per_layer, chance, args.model, streams, name)
    print(path.read_text())
    print(json.dumps({"named_shape_probe_max": round(max(per_layer), 3), "probe_chance": round(chance, 3),
                      "answer": {t: round(c["answer"][0], 3) for t, c in summary.items()}}))


if __name__ == "__main__":
    main()
