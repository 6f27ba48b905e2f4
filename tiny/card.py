"""hermes-tiny's model directory: what training writes for the engine to load.

    save_model(backbone, Path("assets/models/hermes-tiny"), metrics, cfg, "python -m tiny.train")

The standard save_pretrained layout (config.json, model.safetensors, tokenizer files), plus
hermes.json (system prompt, pseudo-query texts and layout, which hermes.backbones reads; what it
was trained on and can answer, which app.model_card reads; held-out metrics) and README.md, the
model card. Loading needs none of this package: hermes.load_backbone("hermes-tiny").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hermes.backbones import HERMES_JSON, TINY_PSEUDO_QUERIES, TINY_SYSTEM_PROMPT, Backbone
from hermes.shapestream import CATEGORIES, TEMPLATES

if TYPE_CHECKING:
    from tiny.train import TrainConfig

MODEL_CARD = """# hermes-tiny

A {params:.2f}M-parameter model of the LLaVA-OneVision architecture (SigLIP-style vision tower
64 px / patch 8, 2x2 pooling -> 16 tokens per frame; projector; Qwen2-style decoder with
12 layers, hidden 128, 4 heads / 2 KV heads), trained from scratch by HERMES Studio on
ShapeStream (hermes/shapestream.py) so the offline demo answers for real. Word-level tokenizer
and chat template built by the project (hermes/tokenizer.py); `hermes.json` holds its
system prompt and pseudo-query texts.

Trained with `{command}` on a 2-core CPU: {vision_steps} vision warm-up steps (vision tower +
projector on independent frames: colour per token, shape per quarter of the screen) then
{qa_steps} question-answering steps (one stream of 16-64 s at 2 fps per step, every question
at each chunk boundary, masked to its time), with auxiliary losses: the dense frame loss,
event probes on the decoder's layer-{event_layer} frame tokens (appearance, first appearance,
appearance rank, colour change and its rank), attention supervision of two heads of layer
{retrieval_layer} that must look, from the token that predicts the answer, at the frame tokens
holding the evidence (`hermes.shapestream.evidence`), and a readout loss (weight {readout}) that
asks the first of those heads' output to name the answer, copy supervision of two heads of
layer {copy_layer} that fetch the shape words a question names into the row that answers it,
and linear probes on that row (the named shapes; for order questions, the appearance rank
each retrieval head brings back). AdamW lr {lr}, seed {seed};
{minutes} minutes in the last run, {qa_done} QA steps done.

Accuracy with no eviction on held-out streams (seeds 200-239, 128 frames, full-sequence
forward, first answer token): {metrics}

It knows ShapeStream's four shapes and colours and its question templates only; it is a
teaching model, not a video LLM.
"""


TRAINED_ON = "ShapeStream"  # hermes/shapestream.py: the only data it sees


def hermes_settings(layout: str, metrics: dict, system_prompt: str = TINY_SYSTEM_PROMPT,
                    pseudo_queries: dict[str, str] = TINY_PSEUDO_QUERIES) -> dict:
    """hermes.json of a model trained here (hermes-tiny's defaults; tiny.smol passes its own
    prompts): the system prompt, pseudo-query texts and chunk layout the engine loads it with,
    what it was trained on and the question templates it was trained to answer (the app's model
    card reads both), and the held-out metrics."""
    return {"system_prompt": system_prompt, "pseudo_queries": pseudo_queries,
            "layout": layout,  # the layout it trains on
            "trained_on": TRAINED_ON, "answers": [t.name for t in TEMPLATES], "metrics": metrics}


def save_model(bb: Backbone, out: Path, metrics: dict, cfg: TrainConfig, command: str) -> None:
    """Write the model directory: save_pretrained weights and tokenizer, hermes.json
    (`hermes_settings`) and README.md, the model card (`command`: how it was trained)."""
    out.mkdir(parents=True, exist_ok=True)
    bb.model.config.text_config._attn_implementation = None  # chosen again at load time
    bb.model.save_pretrained(out)
    bb.tokenizer.save_pretrained(out)
    (out / HERMES_JSON).write_text(json.dumps(hermes_settings(bb.layout, metrics), indent=1))
    (out / "README.md").write_text(MODEL_CARD.format(
        params=sum(p.numel() for p in bb.model.parameters()) / 1e6, command=command, vision_steps=cfg.vision_steps,
        qa_steps=cfg.qa_steps, lr=cfg.lr, seed=cfg.seed, event_layer=cfg.event_layer,
        retrieval_layer=cfg.retrieval_layer, readout=cfg.readout_weight, copy_layer=cfg.copy_layer,
        minutes=metrics.get("train_minutes_this_run"), qa_done=metrics.get("qa_steps_done"),
        metrics=", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in (*CATEGORIES, "all"))))
