"""hermes.quant: the decoder's weights in int8 (load_backbone(..., quantize="int8")).

What a user would notice: the model still answers as before (a linear layer's output within
int8's rounding, and hermes-tiny's answers on a held-out stream), it says that it is quantised
(stats, the app's status line, result names), and a wrong setting is refused clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hermes
from app.session import runs_on
from hermes import HermesError
from hermes.backbones import load_backbone
from hermes.quant import KERNEL_ROWS, Int8Linear, is_quantized, quantize_decoder, resolve_quantize
from hermes.shapestream import generate, grade
from hermes.studies.results import result_name


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("rows", [1, 15, KERNEL_ROWS, KERNEL_ROWS + 1, 300], ids=lambda r: f"{r}-rows")
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_int8_linear_is_the_float_layer_within_int8_rounding(rows, bias):
    torch.manual_seed(0)
    linear = nn.Linear(576, 1536, bias=bias)
    q = Int8Linear(linear)
    x = torch.randn(2, rows, 576)  # (batch, rows, in)
    y = q(x)
    assert y.shape == (2, rows, 1536) and y.dtype == torch.float32
    assert relative(y, linear(x).detach()) < 0.02  # int8 weights (+ bfloat16 activations on the kernel path)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() == 127


def test_both_paths_multiply_by_the_same_weights():
    torch.manual_seed(1)
    q = Int8Linear(nn.Linear(256, 512, bias=False))
    x = torch.randn(KERNEL_ROWS, 256)
    kernel = q(x)  # the packed int8 kernel
    dequantised = x @ q.dequantised(torch.float32).T  # what more rows are multiplied by
    assert relative(kernel, dequantised) < 0.01  # only the kernel's bfloat16 rounding apart


def test_quantised_backbone_says_so_and_answers_as_before():
    plain, quantised = load_backbone("hermes-tiny"), load_backbone("hermes-tiny", quantize="int8")
    assert (plain.weights, quantised.weights) == ("float32", "int8")
    assert is_quantized(quantised.model) and not is_quantized(plain.model)
    assert quantize_decoder(quantised.model) == 0  # quantising twice changes nothing
    layer = quantised.language_model.layers[0]
    assert isinstance(layer.mlp.down_proj, Int8Linear) and isinstance(quantised.model.lm_head, Int8Linear)
    assert isinstance(quantised.model.model.multi_modal_projector.linear_1, nn.Linear)  # vision side untouched
    stream = generate(3, seconds=32, fps=2)
    answers = {}
    for bb in (plain, quantised):
        engine = hermes.load_engine(bb, policy="hermes", budget=bb.tokens_for_frames(32, 16), chunk_frames=16,
                                    max_new_tokens=2)
        engine.ingest(stream.frames, stream.timestamps)
        engine.flush()
        last = [q for q in stream.questions if q.time == stream.timestamps[-1]]
        answers[bb.weights] = [grade(engine.ask(q.question).text, q.answer) for q in last]
        assert engine.stats()["weights"] == bb.weights
    assert len(answers["int8"]) >= 5
    assert sum(answers["int8"]) >= sum(answers["float32"]) - 1  # at most one answer lost to int8


def test_quantize_is_checked_and_auto_reads_the_environment(monkeypatch):
    monkeypatch.delenv("HERMES_QUANTIZE", raising=False)
    assert resolve_quantize("auto") == "none" and resolve_quantize("int8") == "int8"
    monkeypatch.setenv("HERMES_QUANTIZE", "int8")
    assert load_backbone("random-tiny", quantize="auto").weights == "int8"  # what the app and the CLI pass
    assert load_backbone("random-tiny").weights == "float32"  # the default: a study never measures int8 unasked
    monkeypatch.setenv("HERMES_QUANTIZE", "int4")
    with pytest.raises(HermesError, match=r"quantize must be .* got 'int4' \(from HERMES_QUANTIZE\)"):
        load_backbone("random-tiny", quantize="auto")
    with pytest.raises(HermesError, match="a loaded Backbone already has them"):
        hermes.load_engine(load_backbone("random-tiny", quantize="none"), quantize="int8")


def test_results_and_the_status_line_name_int8():
    assert result_name("bench_model", "hermes-smol", device="cpu", quantize="int8") == "bench_model-hermes-smol-int8"
    assert result_name("bench_model", "hermes-smol", device="cpu") == "bench_model-hermes-smol"
    st = {"device": "cpu", "dtype": "float32", "weights": "int8"}
    assert runs_on("hermes-smol", st) == "hermes-smol on cpu in float32, int8 weights"
    assert runs_on("hermes-smol", {**st, "weights": "float32"}) == "hermes-smol on cpu in float32"
