"""multipart/form-data bodies (image edits) parsed with python-multipart, within limits.

The whole body is already in memory (the server caps it at max_body_size); this splits it into fields with
bounds of their own, so one oversized file is a 413 and a broken body a 400, never a 500."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from agfast.http.errors import HttpError

# The parser logs each malformed body it meets: a client could fill the log with them; the 400 says enough.
logging.getLogger("python_multipart").setLevel(logging.CRITICAL)
# More parts than any form agfast reads (image, mask, prompt and a handful of options) is not a real client.
MAX_PARTS = 32
# A text field (prompt, size, …): OpenAI's longest prompt is 32,000 characters; UTF-8 needs at most 4 bytes each.
MAX_FIELD_BYTES = 128 * 1024


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray)


def boundary_of(content_type: bytes) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise HttpError(400, "Expected a multipart/form-data body (Content-Type: multipart/form-data).")
    boundary = options.get(b"boundary")
    if not boundary:
        raise HttpError(400, "The multipart/form-data Content-Type has no boundary.")
    return boundary


def parse_form(content_type: bytes, body: bytes, max_file_bytes: int) -> dict[str, list[Part]]:
    """Parts by name, in order (`image[]` repeats). A file over `max_file_bytes` or a text field over
    MAX_FIELD_BYTES → 413; a malformed or truncated body → 400."""
    boundary = boundary_of(content_type)
    parts: list[Part] = []
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    ended = False

    def on_part_begin() -> None:
        headers.clear()
        if len(parts) >= MAX_PARTS:
            raise HttpError(400, f"The form has more than {MAX_PARTS} parts.")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise HttpError(400, 'Each multipart part needs Content-Disposition: form-data; name="…".')
        filename = options.get(b"filename")
        content_type = headers.get(b"content-type", b"text/plain").decode("latin-1")
        parts.append(
            Part(name.decode("utf-8", "replace"), None if filename is None else filename.decode("utf-8", "replace"),
                 content_type)
        )  # fmt: skip

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.data.extend(data[start:end])
        limit = max_file_bytes if part.filename is not None else MAX_FIELD_BYTES
        if len(part.data) > limit:
            what = f"file '{part.name}'" if part.filename is not None else f"field '{part.name}'"
            raise HttpError(413, f"The {what} is larger than {limit} bytes.", param=part.name)

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise HttpError(400, f"Broken multipart/form-data body: {exc}") from None
    if not ended:
        raise HttpError(400, "Broken multipart/form-data body: it ends before its closing boundary.")
    form: dict[str, list[Part]] = {}
    for part in parts:
        form.setdefault(part.name, []).append(part)
    return form
