"""Splits: deterministic per image, balanced classes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from safetyvlm.data.records import SourceExample
from safetyvlm.data.render.config import RenderConfig
from safetyvlm.data.render.scene import render_scene
from safetyvlm.schema import CATEGORIES

_M64 = (1 << 64) - 1


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def image_seed(seed: int, i: int) -> np.random.SeedSequence:
    """The seed of image i of a split rendered with `seed`: pass it to `render_scene`."""
    return np.random.SeedSequence([_check_seed(seed), int(i), 0x1A6E])


def _counts(seed: int, n: int, cfg: RenderConfig) -> np.ndarray:
    """Number of tools of images 0..n-1 (a counter-based hash of (seed, i), vectorised)."""
    span = cfg.max_tools - cfg.min_tools + 1
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x7F4A7C15) & _M64)
        z = x * np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(31)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(29)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(32)
    return (cfg.min_tools + (z % np.uint64(span))).astype(np.int64)


def _block_base(cfg: RenderConfig) -> list[int]:
    """The multiset of class indices one balanced block holds."""
    w = cfg.weights()
    active = np.flatnonzero(w > 0)
    if np.allclose(w[active], w[active][0]):
        return [int(i) for i in active]
    B = 200
    raw = w * B
    q = np.floor(raw).astype(int)
    rest = B - q.sum()
    for i in np.argsort(-(raw - q), kind="stable")[:rest]:
        q[i] += 1
    return [int(i) for i in range(len(w)) for _ in range(q[i])]


class _ClassStream:
    def __init__(self, seed: int, cfg: RenderConfig):
        self.seed, self.base = seed, _block_base(cfg)
        self.cache: dict[int, list[int]] = {}

    def block(self, b: int) -> list[int]:
        if b not in self.cache:
            if len(self.cache) > 64:
                self.cache.clear()
            rng = np.random.default_rng([self.seed, b, 0xB10C])
            self.cache[b] = [self.base[int(k)] for k in rng.permutation(len(self.base))]
        return self.cache[b]

    def take(self, start: int, n: int) -> list[str]:
        L = len(self.base)
        return [CATEGORIES[self.block((start + k) // L)[(start + k) % L]] for k in range(n)]


def image_classes(seed: int, i: int, cfg: RenderConfig) -> list[str] | None:
    """The classes forced on image i of a balanced split (None when cfg.balanced is off)."""
    if not cfg.balanced:
        return None
    seed = _check_seed(seed)
    counts = _counts(seed, i + 1, cfg)
    start = int(counts[:i].sum())
    return _ClassStream(seed, cfg).take(start, int(counts[i]))


def _example(i: int, seed: int, cfg: RenderConfig, split: str, classes) -> SourceExample:
    img, tools = render_scene(image_seed(seed, i), cfg, classes=classes)
    name = f"synthetic-{split}-{i:06d}.png"
    return SourceExample(image_name=name, split=split, image=img, instances=tools, where=name)


def render_example(seed: int, i: int, cfg: RenderConfig | None = None, split: str = "train") -> SourceExample:
    """Image i of `render_examples(n, seed, cfg, split)`, re-rendered alone (identical pixels)."""
    cfg = cfg or RenderConfig()
    return _example(i, _check_seed(seed), cfg, split, image_classes(seed, i, cfg))


def render_examples(n: int, seed: int, cfg: RenderConfig | None = None, split: str = "train",
                    start: int = 0) -> Iterator[SourceExample]:
    """Images start..start+n-1 of the split defined by (seed, cfg), deterministic per image."""
    cfg = cfg or RenderConfig()
    seed = _check_seed(seed)
    if cfg.balanced:
        counts = _counts(seed, start + n, cfg)
        pos = int(counts[:start].sum())
        stream = _ClassStream(seed, cfg)
    for i in range(start, start + n):
        classes = None
        if cfg.balanced:
            classes = stream.take(pos, int(counts[i]))
            pos += int(counts[i])
        yield _example(i, seed, cfg, split, classes)
