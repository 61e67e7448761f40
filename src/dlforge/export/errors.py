"""Export and package errors (a leaf module so onnx/quantize/package can all raise them)."""

from __future__ import annotations

from dlforge.errors import UserError


class PackageError(UserError, ValueError):
    """A package that cannot be trusted or used; the message names the file or manifest field."""


class ExportError(PackageError):
    """Export produced a model that does not match torch (the message has the numbers)."""


class InputFileError(UserError, ValueError):
    """A file given for prediction that cannot be read as the model's input (names the file and why)."""
