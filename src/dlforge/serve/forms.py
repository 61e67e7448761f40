"""Form bodies (`/classify`) read under the one text rule: a text field is UTF-8 without NUL, as a BYTES
tensor must be (tensors.text_of).

Starlette decodes a multipart text field that is not UTF-8 as latin-1, and a url-encoded one with U+FFFD
replacements, so a classifier would rank mojibake and answer 200 where /infer answers 400 for the same
bytes (#29). These parsers keep each text field's raw bytes and decode them with text_of instead.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, unquote_to_bytes

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from dlforge.serve.protocol import shorten
from dlforge.serve.tensors import ProtocolError, text_of


class _Multipart(MultiPartParser):
    raw: list[tuple[str, bytes]]

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            self.raw.append((self._current_part.field_name, bytes(self._current_part.data)))
        super().on_part_end()


class _UrlEncoded(FormParser):
    raw: list[tuple[str, bytes]]

    def on_field_end(self) -> None:
        value = unquote_to_bytes(bytes(self._field_value).replace(b"+", b" "))
        self.raw.append((unquote_plus(self._field_name.decode("latin-1")), value))
        super().on_field_end()


async def read_form(request: Request, max_files: int, max_fields: int) -> FormData:
    """The request's form with every text field decoded by text_of; ProtocolError (400) for a malformed
    body or a field that breaks the text rule. An unknown content type gives an empty form. The caller
    closes the form (its uploads are spooled files)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    parser: _Multipart | _UrlEncoded
    if kind == "multipart/form-data":
        parser = _Multipart(request.headers, request.stream(), max_files=max_files, max_fields=max_fields)
    elif kind == "application/x-www-form-urlencoded":
        parser = _UrlEncoded(request.headers, request.stream(), max_fields=max_fields)
    else:
        return FormData()
    parser.raw = []
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ProtocolError(f"malformed form body: {exc.message}") from None
    try:
        texts = [(name, text_of(raw, f"field '{shorten(name)}'")) for name, raw in parser.raw]
    except ProtocolError:
        await form.close()
        raise
    files = [(name, v) for name, v in form.multi_items() if isinstance(v, UploadFile)]
    return FormData([*texts, *files])
