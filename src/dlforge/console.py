"""The command line's two consoles and its one error line, shared by the command modules."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

console = Console()
err = Console(stderr=True, soft_wrap=True)


def print_error(message: object) -> None:
    """The one `error:` line (plus the message's own lines), never parsed as rich markup."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(message)), highlight=False)


def print_warning(message: object) -> None:
    """One `warning:` line on stderr (the command goes on), never parsed as rich markup."""
    err.print(Text.assemble(("warning:", "bold yellow"), " ", str(message)), highlight=False)
