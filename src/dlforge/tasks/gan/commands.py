"""`dlforge generate`: the command the GAN task adds to the CLI (see TaskEntry.commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PackageArg = Annotated[Path, typer.Argument(help="a model package folder (e.g. runs/digits_gan/package)")]


def generate(package: PackageArg,
             n: Annotated[int, typer.Option("--n", help="how many images (1…1024)")] = 64,
             label: Annotated[int | None, typer.Option("--class", help="class index (conditional GANs); "
                                                       "default: cycle through the classes")] = None,
             seed: Annotated[int, typer.Option(help="image i uses seed + i: the same seed, the same images")] = 0,
             out: Annotated[Path, typer.Option("--out", "-o", help="grid PNG to write")] = Path("samples.png"),
             ) -> None:
    """Sample images from a GAN package (ONNX Runtime) into a grid PNG.

    Examples: `dlforge generate runs/digits_gan/package --n 64 --out grid.png`,
    `dlforge generate PKG --n 16 --class 7 --seed 42`
    """
    from dlforge.export.package import load_package
    from dlforge.tasks.gan.generate import write_generated

    path = write_generated(load_package(package), n, label, seed, out)
    from dlforge.console import console

    console.print(f"wrote {n} samples to {path}")


COMMANDS = [generate]
