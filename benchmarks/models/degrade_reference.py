#!/usr/bin/env python3
"""Writes a deliberately degraded copy of a model folder: Gaussian noise added to every weight
matrix (vision tower, projector, embeddings = tied lm_head, text decoder), noise std = --noise x
that tensor's own RMS (seeded, so the copy is the same on every machine); norms stay intact. The
gate's FAIL test serves it against the reference model: a variant whose true quality ratio is
far below 0.8. (Noise on the decoder's projections alone is not enough: at 1 x RMS the reference
kept 85 % of its score, since much of it comes from answer formats the embeddings carry.)

    python benchmarks/models/degrade_reference.py benchmarks/models/reference OUT --noise 0.5

Run with a Python that has torch and safetensors (the CPU engine's venv does).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def degrade(src: Path, out: Path, noise: float, seed: int) -> int:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(src / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    n = 0
    for name in sorted(tensors):
        if tensors[name].ndim >= 2 and tensors[name].is_floating_point():
            w = tensors[name].float()
            rms = w.pow(2).mean().sqrt()
            tensors[name] = (w + noise * rms * torch.randn(w.shape, generator=gen)).to(tensors[name].dtype)
            n += 1
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "README.md"):
            shutil.copy2(f, out / f.name)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "DEGRADED.json").write_text(json.dumps({"source": str(src), "noise_rms_fraction": noise, "seed": seed,
                                                   "tensors": n}, indent=1) + "\n")
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--noise", type=float, default=0.5, help="noise std as a fraction of each tensor's RMS")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    count = degrade(a.src, a.out, a.noise, a.seed)
    print(f"wrote {a.out}: noise {a.noise} x RMS on {count} tensors")
