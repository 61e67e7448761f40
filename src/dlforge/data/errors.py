"""What goes wrong with data, as errors the CLI shows in one `error:` line."""

from __future__ import annotations

from dlforge.errors import UserError


class DataError(UserError, ValueError):
    """Data that cannot be loaded (missing folder, no images, too few samples per class)."""


class SampleError(DataError):
    """A sample that cannot be read, raised in a loader worker; shown to the user without the worker's traceback."""

    def __init__(self, message: str) -> None:
        # torch re-raises a worker's exception as type(exc)("Caught … Original Traceback …\n…Error: <message>")
        if message.startswith("Caught ") and "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)
