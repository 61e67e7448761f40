"""Images/s of the batched augmentation pipeline against the same ops applied one image at a time.

The per-sample path is what a `Dataset.__getitem__` transform does: one call per op per image,
then the DataLoader stacks the results. Both paths use the very same kornia modules, measured
side by side in one run (interleaved repeats, median).

CPU runs use one torch thread by default: a DataLoader worker has one, and on a small shared
machine OpenMP threads that wait for each other make every op many times slower (--threads 0
keeps torch's default).

    python benchmarks/bench_augment.py [--batch 256] [--repeats 5] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from dlforge.config import ComponentSpec
from dlforge.data.augment import BatchAugmenter, build_augmenter

PIPELINE = [
    {"rotate": 15},
    {"hflip": 0.5},
    {"random_resized_crop": {"scale": [0.5, 1.0]}},
    {"color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}},
    {"gaussian_noise": 0.05},
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="images per measured pass")
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0: default")
    return parser.parse_args()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call; on CUDA, waits for the kernels so the clock sees the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def batched(aug: BatchAugmenter, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    return lambda: aug(x, y)


def per_sample(aug: BatchAugmenter, x: torch.Tensor) -> Callable[[], object]:
    """The same modules, called on one (1, C, H, W) image at a time, then stacked like a collate."""

    def run() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([aug.image_ops(image[None])[0] for image in x])

    return run


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (3, args.size, args.size)
    specs = [ComponentSpec.model_validate(item) for item in PIPELINE]
    aug = build_augmenter(specs, shape, num_classes=10)
    assert aug is not None  # the pipeline above is not empty
    aug = aug.to(device)
    x = torch.rand(args.batch, *shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    paths = {"batched": batched(aug, x, y), "per-sample": per_sample(aug, x)}

    for fn in paths.values():  # warm-up: first calls pay for allocation and lazy set-up
        timed(fn, device)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            seconds[name].append(timed(fn, device))

    rate = {name: args.batch / statistics.median(s) for name, s in seconds.items()}
    print(f"ops: {', '.join(next(iter(item)) for item in PIPELINE)}")
    print(f"{args.batch} images {shape}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"median of {args.repeats} repeats\n")
    print(f"{'path':<12}{'images/s':>12}{'ms/batch':>12}")
    for name, r in rate.items():
        print(f"{name:<12}{r:>12,.0f}{1000 * args.batch / r:>12.1f}")
    print(f"\nbatched / per-sample speed-up: {rate['batched'] / rate['per-sample']:.1f}x")


if __name__ == "__main__":
    main()
