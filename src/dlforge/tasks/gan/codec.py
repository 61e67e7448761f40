"""Serving codec of GAN generators (torch-free): `seed` or `latent` [+ `class`] → images in [0, 1].

A seed maps to a latent with NumPy's PCG64 (`default_rng(seed).standard_normal(latent_dim)`), the
same function `dlforge generate` uses, so a seed names the same image everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.preprocessing import GeneratorPreprocessing
from dlforge.serve.protocol import MetadataTensor, ProtocolError
from dlforge.taskapi import Codec

LATENT, SEED, CLASS, IMAGE = "latent", "seed", "class", "image"
MAX_SAMPLES = 1024


def latents_from_seeds(seeds: np.ndarray, latent_dim: int) -> np.ndarray:
    """One standard-normal latent per seed, reproducible on any machine (NumPy's PCG64)."""
    return np.stack([np.random.default_rng(int(s)).standard_normal(latent_dim, dtype=np.float32)
                     for s in seeds.reshape(-1)]).astype(np.float32)


def check_classes(classes: np.ndarray, num_classes: int) -> np.ndarray:
    bad = (classes < 0) | (classes >= num_classes)
    if bad.any():
        raise ProtocolError(f"input '{CLASS}': class {int(classes[bad][0])} is out of range "
                            f"(this generator knows classes 0..{num_classes - 1})")
    return classes.astype(np.int64)


class GeneratorCodec(Codec):
    """Clients send exactly one of `latent` (FP32 [n, latent_dim]) or `seed` (INT64 [n]), plus `class`
    (INT64 [n]) for a conditional generator; they get `image` (FP32 [n, C, H, W] in [0, 1])."""

    def __init__(self, manifest: Any) -> None:
        prep = GeneratorPreprocessing.of(manifest.preprocessing, "a generator codec")
        self.latent_dim, self.conditional = prep.latent_dim, prep.conditional
        self.num_classes = len(manifest.labels)
        self.inputs = [MetadataTensor(name=LATENT, datatype="FP32", shape=[-1, self.latent_dim]),
                       MetadataTensor(name=SEED, datatype="INT64", shape=[-1])]
        if self.conditional:
            self.inputs.append(MetadataTensor(name=CLASS, datatype="INT64", shape=[-1]))
        self.optional = frozenset({LATENT, SEED})  # exactly one of them
        self.outputs = [MetadataTensor(name=o.name, datatype=o.datatype, shape=list(o.shape))
                        for o in manifest.outputs]

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (LATENT in inputs) == (SEED in inputs):
            raise ProtocolError(f"send exactly one of '{LATENT}' (FP32 [n, {self.latent_dim}]) or "
                                f"'{SEED}' (INT64 [n])")
        rows = len(inputs[SEED if SEED in inputs else LATENT])
        if not 0 < rows <= MAX_SAMPLES:  # counted before any latent is built (#29: the cheapest view first)
            raise ProtocolError(f"between 1 and {MAX_SAMPLES} samples per request, got {rows}")
        if SEED in inputs:
            seeds = inputs[SEED].reshape(-1)
            if (seeds < 0).any():
                raise ProtocolError(f"input '{SEED}': seeds must be non-negative")
            latent = latents_from_seeds(seeds, self.latent_dim)
        else:
            latent = inputs[LATENT].astype(np.float32)
            if not np.isfinite(latent).all():
                raise ProtocolError(f"input '{LATENT}': NaN or infinite values")
        graph = {LATENT: latent}
        if self.conditional:
            if CLASS not in inputs:
                raise ProtocolError(f"missing input '{CLASS}': this generator is conditional "
                                    f"(classes 0..{self.num_classes - 1})")
            classes = inputs[CLASS].reshape(-1)
            if len(classes) != len(latent):
                raise ProtocolError(f"'{CLASS}' has {len(classes)} rows but there are {len(latent)} latents/seeds")
            graph[CLASS] = check_classes(classes, self.num_classes)
        return graph
