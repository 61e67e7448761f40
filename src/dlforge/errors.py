"""The root of every error a user can cause (a bad config, file, package, request or command line).

A leaf module with no dependencies, so every layer can derive from it. The CLI catches `UserError`
in one place (one `error:` line, exit 2, no traceback) and the server maps its subclasses to 4xx
answers; anything else that escapes is a bug in dlforge, and shows as one.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave dlforge cannot work; the message names the key, file or flag and a fix."""
