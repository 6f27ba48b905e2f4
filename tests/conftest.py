"""Shared fixtures: one random-tiny backbone per session, small random frame streams."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub
os.environ.setdefault("HERMES_DEVICE", "cpu")  # device="auto" means the CPU in fp32 here, even beside a GPU
os.environ.pop("HERMES_QUANTIZE", None)  # the app's int8 switch (hermes.quant): a test asks for int8 itself

from hermes.backbones import Backbone, load_backbone
from hermes.config import HermesConfig
from hermes.engine import StreamEngine
from hermes.policies import get


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    return load_backbone("random-tiny", seed=0)


def random_frames(n: int, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3) frames with structure (blocks of colour), not white noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 5, 7, 3), dtype=np.uint8)
    rows, cols = np.arange(height) * 5 // height, np.arange(width) * 7 // width
    return small[:, rows][:, :, cols]


def make_engine(backbone: Backbone, policy: str = "full", budget: int | None = None, **config: object
                ) -> StreamEngine:
    return StreamEngine(backbone, get(policy), HermesConfig.from_kwargs(budget=budget, **config))
