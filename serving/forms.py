"""Strict parsing of multipart and url-encoded request bodies: every malformed form gets a 400
naming the problem instead of BentoML's 500.

BentoML 1.4.39's ``MultipartSerde.parse_request`` lets through, as 500s:
- a multipart body it cannot parse (no boundary in the Content-Type, a garbage body): Starlette
  raises an HTTPException that BentoML's API wrapper does not know;
- a text value in a file field (``image=http://...``): BentoML downloads it as a URL (and fails);
- binary bytes in a text field or under a field name the API does not have (UnicodeDecodeError).

``StrictFormSerde`` replaces it for ``multipart/form-data`` and
``application/x-www-form-urlencoded`` (``install()``, called when the service module is imported,
in every server process). It parses the form itself, rejects unknown fields, non-file parts in
file fields and non-text parts in text fields, and leaves value validation to the API's pydantic
model (BentoML's own 400 for wrong types).
"""

from __future__ import annotations

import json
import typing as t
from http import HTTPStatus

from _bentoml_impl import serde as bentoml_serde
from bentoml.exceptions import BentoMLException
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# Parser bounds (400 over them): text fields are short (enums, small integers); file parts are
# bounded by EMOTION_MAX_FRAMES_PER_REQUEST (install()); a filename must fit a file system's name.
MAX_TEXT_CHARS = 1024
MAX_TEXT_FIELDS = 16
MAX_FILENAME_BYTES = 200
MAX_FILES = 64


class BadForm(BentoMLException):
    """400: BentoML answers ``[{"error": message}]``."""

    def __init__(self, message: str):
        super().__init__(message, error_code=HTTPStatus.BAD_REQUEST)


class StrictFormSerde(bentoml_serde.MultipartSerde):
    async def parse_request(self, request: Request, cls: type[t.Any]) -> t.Any:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() == "multipart/form-data" and "boundary=" not in content_type:
            raise BadForm("the multipart/form-data Content-Type has no boundary parameter "
                          "(let your HTTP client build it, e.g. curl -F image=@photo.jpg)")
        try:
            form = await request.form(max_files=MAX_FILES, max_fields=MAX_TEXT_FIELDS, max_part_size=MAX_TEXT_CHARS)
        except HTTPException as error:  # Starlette's MultiPartException, wrapped
            raise BadForm(f"the multipart/form-data body could not be parsed: {error.detail}") from None
        except (ValueError, UnicodeDecodeError, KeyError) as error:
            raise BadForm(f"the form body could not be parsed: {error}") from None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile) and len((value.filename or "").encode()) > MAX_FILENAME_BYTES:
                raise BadForm(f"field {name[:40]!r}: the filename is {len(value.filename.encode())} bytes, over the "
                              f"limit of {MAX_FILENAME_BYTES}: rename the file")
        accepted = list(cls.model_fields)
        unknown = sorted(set(form.keys()) - set(accepted))
        if unknown:
            named = ", ".join(repr(name[:40]) for name in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise BadForm(f"unknown field(s) {named}: this API takes {', '.join(map(repr, accepted)) or 'no fields'}")
        data: dict[str, t.Any] = {}
        for name in dict.fromkeys(form.keys()):
            values = form.getlist(name)
            if name in cls.multipart_fields:
                for value in values:
                    if not isinstance(value, UploadFile):
                        raise BadForm(f"field {name!r} must be a file upload (a multipart part with a filename), "
                                      "got a text value")
                    # BentoML names the temp file after the client's filename: a fixed name instead,
                    # so no client name or suffix reaches the file system or a decoder
                    value.filename = None
                annotation = cls.model_fields[name].annotation
                if bentoml_serde.is_union_type(annotation):
                    annotation = t.get_args(annotation)[0]
                if not bentoml_serde.is_list_type(annotation) and len(values) > 1:
                    raise BadForm(f"field {name!r} was sent {len(values)} times: this API takes one file")
                data[name] = values if bentoml_serde.is_list_type(annotation) else values[0]
            else:
                if len(values) > 1:
                    raise BadForm(f"field {name!r} was sent {len(values)} times: send it once")
                value = values[0]
                if isinstance(value, UploadFile):
                    # max_part_size bounds only parts without a filename: a text field sent as a file
                    # (-F language=@big.json) is refused by its size, before it is read
                    if value.size is None or value.size > MAX_TEXT_CHARS:
                        raise BadForm(f"field {name!r} is a text field: {value.size or 0:,} bytes is over the "
                                      f"limit of {MAX_TEXT_CHARS:,}")
                    raw = await value.read()
                    try:
                        value = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise BadForm(f"field {name!r} must be text, got {len(raw)} bytes of binary data") from None
                try:
                    data[name] = json.loads(value)
                except json.JSONDecodeError:
                    data[name] = value
                except (ValueError, RecursionError) as error:  # a 5,000-digit integer, 1,000 nested brackets
                    raise BadForm(f"field {name!r} could not be read: {str(error)[:120]}") from None
        return cls.model_validate(data)


def install(max_files: int = MAX_FILES) -> None:
    """Use StrictFormSerde for form bodies in this process (idempotent)."""
    global MAX_FILES
    MAX_FILES = max_files
    for media_type in FORM_MEDIA_TYPES:
        t.cast(dict, bentoml_serde.ALL_SERDE)[media_type] = StrictFormSerde
