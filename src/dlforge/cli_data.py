"""`dlforge data …`: the commands that make data sets (offline, seeded) and pack folders into shards, kept out
of cli.py, which registers them. Each imports what it uses when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlforge.console import console

data_app = typer.Typer(no_args_is_help=True, help="Make demo data sets (offline, seeded) and pack folders into shards.")


@data_app.command("spoken-digits")
def spoken_digits(out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the clips")],
                  voices: Annotated[int, typer.Option(help="eSpeak NG voice variants (speakers)")] = 89,
                  takes: Annotated[int, typer.Option(help="renditions of each digit per voice")] = 8,
                  sample_rate: Annotated[int, typer.Option(help="Hz of the written WAV files")] = 16000,
                  seed: Annotated[int, typer.Option(help="the same seed writes the same files")] = 0,
                  language: Annotated[str, typer.Option(help="the digit words' language: en, de, fr, es, it, nl "
                                                             "or pt")] = "en",
                  exclude_voices: Annotated[list[Path] | None, typer.Option(
                      help="voices.csv of another generated set: none of its voices is used (repeatable)")] = None,
                  workers: Annotated[int, typer.Option(help="voices synthesized at a time")] = 1,
                  voice_timeout: Annotated[float | None, typer.Option(
                      help="seconds one voice may take before it is skipped (default 60 + 2 per clip)")] = None,
                  ) -> None:
    """Synthesize the digit words of a language with eSpeak NG (offline): voices × takes × 10 WAV clips in
    audio_folder layout, `<digit>/<voice>__<take>.wav`, plus voices.csv (each clip's settings). English
    folders are `zero` … `nine`, other languages' `de0_null` … `de9_neun`. A voice that crashes or hangs
    eSpeak is skipped with a warning.

    Example: `dlforge data spoken-digits --out data/spoken_digits && dlforge run examples/spoken_digits.yaml`;
    English by 59 voices, German by the 30 others: `dlforge data spoken-digits --out data/digits_en --voices 59`
    then `dlforge data spoken-digits --out data/digits_de --language de --voices 30 --exclude-voices
    data/digits_en/voices.csv`
    """
    from dlforge.console import err
    from dlforge.data.spoken_digits import GROUP_BY, generate, read_voices

    exclude = set().union(*(read_voices(p) for p in exclude_voices or []))
    done = generate(out, voices, takes, seed, sample_rate, language, exclude, workers, voice_timeout)
    for voice, reason in done.skipped.items():
        err.print(f"warning: voice {voice} skipped ({language}): {reason}", highlight=False)
    console.print(f"wrote {done.clips} clips ({len(done.voices)} voices × {takes} takes × 10 digits, {language}) "
                  f"to {out}; split by voice with data.params.group_by: '{GROUP_BY}'", highlight=False)


@data_app.command("shapes")
def shapes(out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the images")],
           n: Annotated[int, typer.Option("--n", help="how many images (class = index % classes)")] = 10000,
           size: Annotated[int, typer.Option(help="width and height in pixels")] = 128,
           classes: Annotated[int, typer.Option(help="how many shape classes (2 to 12)")] = 10,
           seed: Annotated[int, typer.Option(help="the same seed writes the same files")] = 0,
           quality: Annotated[int, typer.Option(help="JPEG quality, 1 to 100")] = 90,
           workers: Annotated[int | None, typer.Option(help="processes (default: the usable cores)")] = None,
           overwrite: Annotated[bool, typer.Option(help="replace the shapes a previous run wrote to --out "
                                                        "(other files stay)")] = False) -> None:
    """Draw coloured shapes (circle, square, star, …) of random size, rotation, position and colour on
    textured, noisy backgrounds: RGB JPEGs in image_folder layout, `<class>/<index>.jpg`. A load generator
    for benchmarks and tests, not a substitute for your data.

    Example: `dlforge data shapes --out data/shapes --n 100000 --size 128`
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from dlforge.console import err
    from dlforge.data.shapes import ShapesSpec, generate

    spec = ShapesSpec(size=size, classes=classes, seed=seed, quality=quality)
    started = time.perf_counter()
    # no auto-refresh: its thread would be running when the worker processes fork
    with Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                  auto_refresh=False, disable=not err.is_terminal, transient=True) as bar:
        task = bar.add_task("images", total=n)

        def advance(k: int) -> None:
            bar.advance(task, k)
            bar.refresh()

        count = generate(out, n, spec, workers, overwrite, on_progress=advance)
    console.print(f"wrote {count:,} images ({classes} classes, {size}x{size}) to {out} in "
                  f"{time.perf_counter() - started:.1f} s", highlight=False)


@data_app.command("pack")
def pack(src: Annotated[Path, typer.Argument(help="an image or audio folder: SRC/<class>/<file>")],
         out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the shards and index.json")],
         shard_size: Annotated[str, typer.Option(help="at most this many bytes a shard (256MB, 1GB, 512MiB)")]
         = "256MB",
         samples_per_shard: Annotated[int | None, typer.Option(help="at most this many samples a shard")] = None,
         workers: Annotated[int, typer.Option(help="shards written at a time")] = 1,
         kind: Annotated[str | None, typer.Option(help="image or audio (default: what SRC holds more of)")] = None,
         ) -> None:
    """Pack a folder into tar shards (WebDataset layout, the files' own bytes) plus index.json, for the
    `shards` dataset: the same samples as the folder, read from local disk or any fsspec URL.

    Example: `dlforge data pack data/pets --out data/pets-shards` then `data: {dataset: shards, params:
    {path: data/pets-shards, image_size: [64, 64]}}`
    """
    import time

    from dlforge.data.shard_pack import pack as pack_folder
    from dlforge.data.shard_pack import parse_size

    started = time.perf_counter()
    index = pack_folder(src, out, parse_size(shard_size), samples_per_shard, workers, kind,
                        on_shard=lambda s: console.print(f"{s.file}  {s.samples:,} samples  {_size(s.size)}",
                                                         highlight=False, soft_wrap=True))
    shards, total = len(index.shards), _size(sum(s.size for s in index.shards))
    console.print(f"packed {index.samples:,} {index.kind} files ({len(index.classes)} classes) into {shards} "
                  f"shard{'s' * (shards != 1)} ({total}) in {time.perf_counter() - started:.1f} s: "
                  f"{out / 'index.json'}", highlight=False, soft_wrap=True)


def _size(count: int) -> str:
    """Bytes for people: 812 B, 20.5 kB, 256.0 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
