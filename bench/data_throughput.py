"""How fast the ImageNet data paths and the ImageNet model step run here (issue: ImageNet scale).

    python bench/data_throughput.py [--images 256] [--workers 0,1,2] [--save]

* the streaming loader (``yyfast.train.stream``: ImageFolder + DataLoader workers, both recipes):
  images/s over one epoch, per ``--workers`` count;
* the decode cache (``yyfast.train.cache``): its one-time decode in images/s, then the device-side
  augmentation (``BatchAugment``) of a batch;
* one ``yynet_imagenet`` training step at 224x224 on this device (forward, backward, AdamW), per
  backend, in images/s.

The images are generated JPEGs of ImageNet-like sizes (around 500x375, smooth content so they
compress as photos do), written to a temporary folder; the numbers are this machine's, medians.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (header, markdown_table, pick_device, result_stem, sig, time_fn, write_json,  # noqa: E402
                    write_text)

SIZES = [(500, 375), (375, 500), (500, 333), (640, 480), (400, 400)]


def make_tree(root: Path, images: int, classes: int = 4, seed: int = 0) -> Path:
    """``images`` JPEGs in train/ (and a quarter as many in val/): smooth random content."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", images), ("val", max(classes, images // 4))):
        for k in range(n):
            w, h = SIZES[k % len(SIZES)]
            low = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
            d = root / split / f"c{k % classes}"
            d.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            (d / f"{k:05d}.jpg").write_bytes(buf.getvalue())
    return root


def stream_rate(root: Path, recipe: str, workers: int, batch: int) -> float:
    from yyfast.preprocess import preprocessing
    from yyfast.train.distributed import World
    from yyfast.train.stream import StreamData

    data = StreamData(str(root), preprocessing("yynet_imagenet", recipe), World(), workers=workers)
    loader = data.train_loader(batch, epoch=0, seed=0)
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def cache_rates(root: Path, batch: int, device: torch.device) -> tuple:
    from yyfast.train.augment import BatchAugment
    from yyfast.train.cache import load_dataset

    start = time.perf_counter()
    ds = load_dataset(str(root), ("train",), {}, 224, use_cache=False, log=lambda *a, **k: None)
    decode = len(ds.splits["train"]) / (time.perf_counter() - start)
    images = torch.from_numpy(ds.splits["train"].images[:batch]).to(device)
    aug, gen = BatchAugment(crop=224), torch.Generator().manual_seed(0)
    t = time_fn(lambda: aug.train(images, gen), device, warmup=1, reps=5)
    return decode, images.shape[0] / (t.ms / 1e3)


def step_rate(backend: str, batch: int, device: torch.device, reps: int) -> float:
    import yyfast

    model = yyfast.create_model("yynet_imagenet", backend=backend).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1.8e-4, amsgrad=True)
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return batch / (time_fn(step, device, warmup=1, reps=reps).ms / 1e3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/data_throughput.py", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=256, help="training images generated (default 256)")
    p.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to time (default 0,1,2)")
    p.add_argument("--batch", type=int, default=32, help="loader batch (default 32, the ImageNet recipe's)")
    p.add_argument("--step-batch", type=int, default=8, help="images per timed training step (default 8)")
    p.add_argument("--backends", default="reference,cuda", help="model backends for the training step")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--save", action="store_true", help="write bench/results/<device>-<date>-data.{json,md}")
    args = p.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",")]
        if args.images < args.batch or min(workers) < 0:
            raise ValueError("--images must be at least --batch, and worker counts >= 0")
        device = pick_device(args.device)
    except ValueError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp) / "tree", args.images)
        for recipe in ("paper", "imagenet"):
            for w in workers:
                rate = stream_rate(root, recipe, w, args.batch)
                rows.append([f"stream ({recipe} recipe)", f"{w} worker(s)", sig(rate)])
                results.append({"what": "stream", "recipe": recipe, "workers": w, "images_per_s": sig(rate)})
        decode, aug = cache_rates(root, args.batch, device)
        rows += [["cache: one-time decode", "1 process", sig(decode)], ["cache: batch augmentation", str(device),
                                                                       sig(aug)]]
        results += [{"what": "cache_decode", "images_per_s": sig(decode)},
                    {"what": "cache_augment", "images_per_s": sig(aug)}]
    import yyfast

    for backend in args.backends.split(","):
        if backend != "reference" and device.type not in yyfast.backends()[backend]["devices"]:
            continue
        rate = step_rate(backend, args.step_batch, device, args.reps)
        rows.append([f"yynet_imagenet train step, batch {args.step_batch}", f"backend {backend}", sig(rate)])
        results.append({"what": "train_step", "backend": backend, "batch": args.step_batch, "images_per_s": sig(rate)})
    head = header(device, {"images": args.images, "batch": args.batch, "threads": torch.get_num_threads(),
                           "cpu_count": os.cpu_count()})
    table = markdown_table(["path", "setting", "images/s"], rows)
    md = (f"# Data paths and the ImageNet step, {head['device']}\n\n{head['date']}, commit `{head['commit']}`, "
          f"{torch.get_num_threads()} torch threads, 1-minute load average {head['load_avg_1min']} at the start; "
          f"{args.images} generated JPEGs of ~500x375.\n\n{table}\n\n"
          f"Command: `python bench/data_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(md)
    if args.save:
        stem = result_stem(device, "data")
        write_json(str(stem) + ".json", head, [], [], extra={"rows": results})
        write_text(str(stem) + ".md", md)
        print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
