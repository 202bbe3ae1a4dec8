#!/usr/bin/env python3
"""Builds the embedded default suite (`data.parquet` beside this file), deterministically.

Every image is drawn here with PIL from a seeded random generator, so each answer is known
exactly. Six task types mirror what public image-to-text suites test:

| task      | like           | question                                  | metric           |
|-----------|----------------|-------------------------------------------|------------------|
| ocr       | TextVQA/OCRBench | the word or code rendered in the image  | anls             |
| chart     | ChartQA        | the value of one bar of a bar chart       | relaxed_accuracy |
| counting  | VQAv2 "how many" | how many shapes of one kind             | vqa_accuracy     |
| colour    | VQAv2 / GQA    | the colour of the shape at a position     | exact_match      |
| document  | DocVQA         | one field of an invoice-like form         | anls             |
| caption   | COCO captions  | one sentence describing the scene         | cider            |
| choice    | MMBench        | which shape is shown, options A-D         | multiple_choice  |

Run: python benchmarks/suites/default/build.py [OUT.parquet]   (tests check the rebuild is
byte-identical to the committed file, for the pinned Pillow / pyarrow of the dev environment)."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

SEED = 20261127
PER_TASK = 24
SIZE = (320, 240)
COLOURS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
           "purple": (130, 50, 170), "orange": (240, 130, 20), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")
WORDS = ("energy", "vision", "model", "answer", "garden", "planet", "silver", "harbor", "window", "rocket",
         "forest", "marble", "candle", "bridge", "violet", "copper")


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def ocr(rng: random.Random, i: int) -> dict:
    text = rng.choice(WORDS) if i % 2 == 0 else f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.randint(100, 9999)}"
    img = Image.new("RGB", SIZE, (250, 250, 245))
    draw = ImageDraw.Draw(img)
    f = font(rng.randint(34, 52))
    w, h = draw.textbbox((0, 0), text, font=f)[2:]
    draw.text(((SIZE[0] - w) // 2, (SIZE[1] - h) // 2), text, fill=(20, 20, 20), font=f)
    return dict(question="What text is written in the image? Answer with the text only.", answers=[text],
                metric="anls", image=img)


def chart(rng: random.Random, i: int) -> dict:
    labels = list("ABCDE")[: rng.randint(3, 5)]
    values = [rng.randint(1, 9) * 10 for _ in labels]
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    f = font(14)
    left, bottom, top = 40, 210, 20
    draw.line([(left, top), (left, bottom), (310, bottom)], fill="black", width=2)
    for tick in range(0, 101, 20):
        y = bottom - (bottom - top) * tick / 100
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((8, y - 7), str(tick), fill="black", font=f)
    width = 240 // len(labels)
    for n, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = left + 10 + n * width
        draw.rectangle([x0, bottom - (bottom - top) * value / 100, x0 + width - 14, bottom], fill=(70, 110, 200))
        draw.text((x0 + width // 2 - 10, bottom + 6), label, fill="black", font=f)
    pick = rng.randrange(len(labels))
    return dict(question=f"What is the value of bar {labels[pick]} in the chart? Answer with a number.",
                answers=[str(values[pick])], metric="relaxed_accuracy", image=img)


def counting(rng: random.Random, i: int) -> dict:
    shape = rng.choice(SHAPES)
    n = rng.randint(1, 9)
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    cells = rng.sample(range(12), n)  # a 4 x 3 grid, one shape per cell: no overlap
    for cell in cells:
        cx, cy = 40 + (cell % 4) * 80, 40 + (cell // 4) * 80
        draw_shape(draw, shape, (cx - 22, cy - 22, cx + 22, cy + 22), COLOURS[rng.choice(list(COLOURS))])
    return dict(question=f"How many {shape}s are there in the image? Answer with a number.", answers=[str(n)],
                metric="vqa_accuracy", image=img)


def colour(rng: random.Random, i: int) -> dict:
    names = rng.sample(list(COLOURS), 2)
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    draw_shape(draw, "square", (30, 70, 130, 170), COLOURS[names[0]])
    draw_shape(draw, "square", (190, 70, 290, 170), COLOURS[names[1]])
    side = rng.choice(("left", "right"))
    answer = names[0] if side == "left" else names[1]
    return dict(question=f"What colour is the square on the {side}? Answer with one word.", answers=[answer],
                metric="exact_match", image=img)


def document(rng: random.Random, i: int) -> dict:
    fields = {
        "Invoice No": f"INV-{rng.randint(10000, 99999)}",
        "Date": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "Customer": rng.choice(("Acme Ltd", "Nordwind AG", "Blue Fox", "Kite & Co", "Orion SA")),
        "Total": f"{rng.randint(10, 999)}.{rng.randint(0, 99):02d} EUR",
    }
    img = Image.new("RGB", SIZE, (252, 252, 252))
    draw = ImageDraw.Draw(img)
    draw.rectangle([8, 8, 311, 231], outline=(90, 90, 90), width=2)
    draw.text((20, 16), "INVOICE", fill="black", font=font(22))
    for n, (key, value) in enumerate(fields.items()):
        y = 60 + n * 40
        draw.text((20, y), f"{key}:", fill=(60, 60, 60), font=font(15))
        draw.text((130, y), value, fill="black", font=font(15))
        draw.line([(128, y + 20), (300, y + 20)], fill=(180, 180, 180))
    key = rng.choice(list(fields))
    return dict(question=f"What is the {key} on this form? Answer with the value only.", answers=[fields[key]],
                metric="anls", image=img)


def caption(rng: random.Random, i: int) -> dict:
    c1, c2 = rng.sample(list(COLOURS), 2)
    s1, s2 = rng.sample(SHAPES, 2)
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    draw_shape(draw, s1, (30, 70, 130, 170), COLOURS[c1])
    draw_shape(draw, s2, (190, 70, 290, 170), COLOURS[c2])
    answers = [f"a {c1} {s1} and a {c2} {s2} on a white background",
               f"a {c1} {s1} on the left and a {c2} {s2} on the right",
               f"two shapes: a {c1} {s1} and a {c2} {s2}"]
    return dict(question="Describe the image in one sentence.", answers=answers, metric="cider", image=img)


def choice(rng: random.Random, i: int) -> dict:
    shape = rng.choice(SHAPES + ("star",))
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    fill = COLOURS[rng.choice(list(COLOURS))]
    if shape == "star":
        import math
        points = [(160 + (60 if k % 2 == 0 else 25) * math.sin(k * math.pi / 5),
                   120 - (60 if k % 2 == 0 else 25) * math.cos(k * math.pi / 5)) for k in range(10)]
        draw.polygon([(round(x), round(y)) for x, y in points], fill=fill)
    else:
        draw_shape(draw, shape, (100, 60, 220, 180), fill)
    options = ["circle", "square", "triangle", "star"]
    rng.shuffle(options)
    letter = "ABCD"[options.index(shape)]
    text = " ".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(options))
    return dict(question=f"Which shape is shown? {text}. Answer with the letter.", answers=[letter],
                metric="multiple_choice", image=img)


TASKS = {"ocr": ocr, "chart": chart, "counting": counting, "colour": colour, "document": document,
         "caption": caption, "choice": choice}


def build() -> pa.Table:
    rng = random.Random(SEED)
    rows = []
    # Interleaved (ocr-000, chart-000, ..., ocr-001, ...) so that `--limit N` covers every task.
    for i in range(PER_TASK):
        for task, make in TASKS.items():
            item = make(rng, i)
            rows.append({"id": f"{task}-{i:03d}", "task": task, "metric": item["metric"],
                         "question": item["question"], "answers": item["answers"],
                         "image": {"bytes": png(item["image"]), "path": None}})
    schema = pa.schema([("id", pa.string()), ("task", pa.string()), ("metric", pa.string()),
                        ("question", pa.string()), ("answers", pa.list_(pa.string())),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))],
                       metadata={"huggingface": '{"info": {"features": {"id": {"dtype": "string", "_type": "Value"}, '
                                 '"task": {"dtype": "string", "_type": "Value"}, "metric": {"dtype": "string", '
                                 '"_type": "Value"}, "question": {"dtype": "string", "_type": "Value"}, "answers": '
                                 '{"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"}, '
                                 '"image": {"_type": "Image"}}}}'})
    return pa.Table.from_pylist(rows, schema=schema)


def write(path: Path) -> None:
    pq.write_table(build(), path, compression="zstd", write_statistics=False)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("data.parquet")
    write(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
