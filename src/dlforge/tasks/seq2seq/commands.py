"""`dlforge translate`: the command seq2seq adds to the CLI (see TaskEntry.commands)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

PackageArg = Annotated[Path, typer.Argument(help="a model package folder (e.g. runs/translate_numbers/package)")]


def translate(package: PackageArg,
              texts: Annotated[list[str] | None, typer.Argument(help="sentences to translate")] = None,
              file: Annotated[Path | None, typer.Option("--file", "-f",
                                                        help="a UTF-8 file, one sentence a line")] = None,
              beam: Annotated[int | None, typer.Option(min=1, max=64,
                                                       help="beam size (1 = greedy); default: the package's")] = None,
              runtime: Annotated[str, typer.Option(help="onnx (ONNX Runtime) or torch")] = "onnx") -> None:
    """Translate sentences with a seq2seq package, one translation a line (the server's decoding, no server).

    Examples: `dlforge translate runs/translate_numbers/package "four hundred and twenty-one"`,
    `dlforge translate PKG --file sentences.txt --beam 1`
    """
    from dlforge.console import print_warning
    from dlforge.export.errors import PackageError
    from dlforge.export.package import load_package
    from dlforge.tasks.seq2seq.codec import translate_lines

    lines = list(texts or [])
    if file is not None:
        try:
            lines += file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageError(f"--file {file}: cannot read it as UTF-8 text ({exc})") from None
    if not lines:
        raise PackageError('nothing to translate: give sentences or --file FILE, e.g. dlforge translate PKG "one"')
    warnings: list[str] = []
    for line in translate_lines(load_package(package), lines, runtime, beam, warnings=warnings):
        sys.stdout.write(line + "\n")
    for warning in warnings:
        print_warning(warning)


COMMANDS = [translate]
