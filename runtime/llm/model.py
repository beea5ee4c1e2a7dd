"""A small decoder-only transformer in numpy, with a KV cache: the local fleet's generative workload.

No package on the registries this project may use ships small generative weights that load without PyTorch, so the
weights are random from a fixed seed (SpotServe evaluated with random weights too): the text is gibberish, but every
step is a real transformer step (token + position embeddings, pre-norm attention with causal masking over the
cached keys and values, an MLP, tied output projection) and greedy decoding is deterministic — an uninterrupted run
is the exact reference for every interrupted one.

Determinism across a continuation is by construction: the prompt is "prefilled" one token at a time through the
same `step` as decoding, so the cache after prompt+generated tokens is bit-for-bit the cache the first replica had,
whichever replica computes it.

Tokens are printable ASCII characters (plus newline): a token id is `ord(c) - 32` (newline is 95), so text and
token ids convert both ways without loss, as a real tokenizer's ids and text do for the text it produced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

VOCAB = 96
NEWLINE_ID = 95


def encode(text: str) -> list[int]:
    """Text -> token ids. Characters outside the vocabulary become '?' (as an unknown token would)."""
    out = []
    for c in text:
        o = ord(c)
        out.append(NEWLINE_ID if c == "\n" else o - 32 if 32 <= o < 127 else ord("?") - 32)
    return out


def decode(ids: list[int]) -> str:
    return "".join("\n" if i == NEWLINE_ID else chr(i + 32) for i in ids)


@dataclass(frozen=True)
class Shape:
    dim: int = 64
    heads: int = 4
    max_len: int = 16384
    seed: int = 1234


class TinyLM:
    """The weights and one decoding step. A `Cache` holds one sequence's keys and values.

    One attention layer with ALiBi position biases (keys and values depend on the token alone, so a prompt's cache
    is a table lookup and prefill costs one step, as a GPU engine's batched prefill costs little per token), then
    an MLP and the tied output projection. A fixed position-keyed bias on the logits keeps a random model from
    collapsing into one repeated character (greedy decoding stays deterministic)."""

    def __init__(self, shape: Shape = Shape()) -> None:
        self.shape = shape
        rng = np.random.default_rng(shape.seed)
        d = shape.dim

        def w(*dims: int) -> np.ndarray:
            out: np.ndarray = (rng.standard_normal(dims) / np.sqrt(dims[0])).astype(np.float32)
            return out

        self.embed = rng.standard_normal((VOCAB, d)).astype(np.float32)
        self.q, self.kv, self.out, self.up, self.down = w(d, d), w(d, 2 * d), w(d, d), w(d, 4 * d), w(4 * d, d)
        self.slopes = (2.0 ** -np.arange(1, shape.heads + 1)).astype(np.float32)[:, None]  # ALiBi
        self.logit_bias = (rng.standard_normal((1009, VOCAB)) * 3.0).astype(np.float32)
        self._tables()

    def _tables(self) -> None:
        """Keys and values per token (they depend on the token alone: see the class note)."""
        d, heads = self.shape.dim, self.shape.heads
        k, v = np.split(self.embed @ self.kv, 2, axis=1)
        hd = d // heads
        self.k_table = k.reshape(VOCAB, heads, hd).transpose(1, 0, 2).copy()  # (heads, vocab, hd)
        self.v_table = v.reshape(VOCAB, heads, hd).transpose(1, 0, 2).copy()

    WEIGHTS = ("embed", "q", "kv", "out", "up", "down", "logit_bias")

    def save(self, folder: Path) -> None:
        """The weights as a model folder (`model.safetensors`, `config.json`), as an engine loads a checkpoint."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: getattr(self, k) for k in self.WEIGHTS}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"architecture": "spotstack-tiny-lm", **asdict(self.shape)}))

    @classmethod
    def load(cls, folder: Path) -> TinyLM:
        from safetensors.numpy import load_file

        cfg = json.loads((folder / "config.json").read_text())
        cfg.pop("architecture", None)
        m = cls(Shape(**cfg))
        for k, v in load_file(str(folder / "model.safetensors")).items():
            if k not in cls.WEIGHTS or v.shape != getattr(m, k).shape:
                raise ValueError(f"{folder}: unexpected weight {k} {v.shape}")
            setattr(m, k, v)
        m._tables()
        return m

    def new_cache(self) -> Cache:
        return Cache(self.shape.heads, self.shape.dim // self.shape.heads)

    def step(self, cache: Cache, token: int) -> int:
        """Feed one token at the cache's next position; return the greedy next token."""
        return int(np.argmax(self.feed(cache, [token])))

    def prefill(self, cache: Cache, tokens: list[int]) -> int:
        """Feed the prompt; return the greedy first new token."""
        return int(np.argmax(self.feed(cache, tokens)))

    def feed(self, cache: Cache, tokens: list[int]) -> np.ndarray:
        """Append tokens to the sequence; return the logits of the next one. A prompt fed at once leaves the same
        cache and takes the same last step as one fed token by token, so a continuation's tokens are exactly the
        uninterrupted run's."""
        if not tokens:
            tokens = [NEWLINE_ID]  # an empty prompt starts from a newline, as from a BOS token
        self._append(cache, tokens)
        return self._logits(cache, tokens[-1])

    @staticmethod
    def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
        z = logits.astype(np.float64) / max(temperature, 1e-6)
        p = np.exp(z - z.max())
        return int(rng.choice(len(p), p=p / p.sum()))

    def _append(self, cache: Cache, tokens: list[int]) -> None:
        if cache.length + len(tokens) > self.shape.max_len:
            raise ValueError(f"context longer than {self.shape.max_len} tokens")
        ids = np.asarray(tokens, dtype=np.intp)
        cache.reserve(cache.length + len(tokens))
        cache.k[:, cache.length : cache.length + len(tokens)] = self.k_table[:, ids]  # exact copies of the table
        cache.v[:, cache.length : cache.length + len(tokens)] = self.v_table[:, ids]
        cache.length += len(tokens)

    def _logits(self, cache: Cache, token: int) -> np.ndarray:
        s, t = self.shape, cache.length
        hd = s.dim // s.heads
        x = self.embed[token]
        q = (x @ self.q).reshape(s.heads, hd, 1)
        scores = (cache.k[:, :t] @ q)[:, :, 0] * np.float32(1.0 / np.sqrt(hd))  # (heads, t)
        scores -= self.slopes * (t - 1 - np.arange(t, dtype=np.float32))  # ALiBi: nearer tokens weigh more
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        att = (scores[:, None, :] @ cache.v[:, :t]).reshape(s.dim)
        x = x + att @ self.out
        x = x + np.maximum(_norm(x) @ self.up, 0.0) @ self.down
        logits: np.ndarray = (_norm(x) @ self.embed.T) * np.float32(1.0 / np.sqrt(s.dim)) + self.logit_bias[t % 1009]
        return logits


class Cache:
    """One sequence's keys and values, (heads, positions, head dim), grown by doubling."""

    def __init__(self, heads: int, head_dim: int) -> None:
        self.k = np.zeros((heads, 256, head_dim), dtype=np.float32)
        self.v = np.zeros_like(self.k)
        self.length = 0

    def reserve(self, n: int) -> None:
        if n <= self.k.shape[1]:
            return
        size = self.k.shape[1]
        while size < n:
            size *= 2
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], size, old.shape[2]), dtype=np.float32)
            new[:, : self.length] = old[:, : self.length]
            setattr(self, name, new)


def _norm(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = ((x - x.mean()) / np.sqrt(x.var() + 1e-5)).astype(np.float32)
    return out
