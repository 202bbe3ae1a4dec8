#!/usr/bin/env python3
"""Converts a bf16 Gemma 4 model folder (e.g. benchmarks/models/reference) into the model card's
FP8 layout: compressed-tensors `float-quantized`, FP8 E4M3 per-tensor symmetric weights on the
Linear layers of the text decoder (W8A16: activations stay bf16), everything in the card's
`ignore` list (vision/audio towers, projector, embeddings, lm_head, per-layer inputs) and every
norm left in bf16. The quantization_config is make_gemma4_dummy.py's FP8_QUANTIZATION_CONFIG,
the one definition of the layout.

Run with a Python that has torch and safetensors (the CPU engine's venv does):

    python benchmarks/models/convert_fp8.py benchmarks/models/reference benchmarks/models/reference-fp8

Each quantized `X.weight` becomes `X.weight` (float8_e4m3fn) + `X.weight_scale` (float32, shape
[1]) with weight ≈ fp8 * scale, scale = max|W| / 448 (the E4M3 maximum). `--check OUT` verifies an
existing folder: layout, the config, and the dequantized weights against the source.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FP8_MAX = 448.0
# The text decoder's Linear weights (checkpoint names of Gemma4ForConditionalGeneration).
DECODER_LINEAR = re.compile(r"^model\.language_model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+_proj\.weight$")


def quantization_config() -> dict:
    spec = importlib.util.spec_from_file_location("make_gemma4_dummy", HERE / "make_gemma4_dummy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FP8_QUANTIZATION_CONFIG


def ignored(name: str, ignore: list[str]) -> bool:
    module = name.rsplit(".", 1)[0]
    for pattern in ignore:
        if pattern.startswith("re:"):
            if re.match(pattern[3:], module):
                return True
        elif module == pattern or module.endswith("." + pattern):
            return True
    return False


def quantize(weight):
    """(fp8 weight, float32 scale of shape [1]) for one tensor, per-tensor symmetric."""
    import torch

    w = weight.float()
    scale = (w.abs().max() / FP8_MAX).clamp(min=1e-12).reshape(1)
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def convert(src: Path, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    config = quantization_config()
    tensors = load_file(src / "model.safetensors")
    result, n_quantized = {}, 0
    for name, tensor in tensors.items():
        if DECODER_LINEAR.match(name) and not ignored(name, config["ignore"]):
            result[name], result[name + "_scale"] = quantize(tensor)
            n_quantized += 1
        else:
            result[name] = tensor
    if n_quantized == 0:
        raise SystemExit(f"{src}: no text-decoder Linear weights found to quantize")
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "config.json", "README.md"):
            shutil.copy2(f, out / f.name)
    data = json.loads((src / "config.json").read_text())
    data["quantization_config"] = config
    (out / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    save_file(result, out / "model.safetensors", metadata={"format": "pt"})
    (out / "README.md").write_text(
        f"# {out.name}\n\nThe model card's FP8 layout of [{src.name}](../{src.name}/README.md), made by\n"
        f"`python benchmarks/models/convert_fp8.py {src.name} {out.name}` (in benchmarks/models/):\n"
        f"compressed-tensors float-quantized, FP8 E4M3 per-tensor symmetric weights on the {n_quantized}\n"
        "Linear layers of the text decoder (W8A16); towers, projector, embeddings, per-layer inputs and\n"
        "norms stay bf16 (`quantization_config.ignore`). Served by vLLM on a GPU (variant\n"
        "`reference-fp8`); the CPU engine has no FP8 W8A16 kernel.\n")
    print(f"wrote {out}: {n_quantized} FP8 tensors")


def check(src: Path, out: Path) -> None:
    """The folder has the card's layout and its weights dequantize to the source within FP8 precision."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((out / "config.json").read_text())
    if config.get("quantization_config") != quantization_config():
        raise SystemExit(f"{out}: quantization_config differs from the model card's layout")
    fp8, ref = load_file(out / "model.safetensors"), load_file(src / "model.safetensors")
    quantized = [n for n in fp8 if fp8[n].dtype == torch.float8_e4m3fn]
    expected = [n for n in ref if DECODER_LINEAR.match(n)]
    if sorted(quantized) != sorted(expected):
        raise SystemExit(f"{out}: quantized tensors {len(quantized)} != text-decoder Linear weights {len(expected)}")
    worst = 0.0
    for name in quantized:
        w = fp8[name].float() * fp8[name + "_scale"].float()
        r = ref[name].float()
        worst = max(worst, float(((w - r).abs().max() / r.abs().max()).item()))
    for name, tensor in ref.items():
        if name not in quantized and not torch.equal(fp8[name], tensor):
            raise SystemExit(f"{out}: {name} should be copied unchanged")
    if worst > 1 / 16:  # E4M3 has 3 mantissa bits: relative rounding error ≤ 2^-4 of the tensor's max
        raise SystemExit(f"{out}: dequantized weights differ from {src} by {worst:.3f} of the max")
    print(f"check: {len(quantized)} FP8 tensors, worst dequantization error {worst:.4f} of each tensor's max")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", action="store_true", help="only verify an existing OUT against SRC")
    a = ap.parse_args()
    if not a.check:
        convert(a.src, a.out)
    check(a.src, a.out)
    sys.exit(0)
