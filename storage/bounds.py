"""Bounds on what a request can send: every string, list and number of a request model is
one of these types, so its limit shows in ``/openapi.json`` and a value past it answers
422 before anything runs or is written.

Why each bound exists: a list becomes a predicate the engine plans recursively (30,000
names overflowed deltalake's predicate builder and killed the process), a string is
written to Delta and JSON (a lone surrogate cannot be encoded as UTF-8 and failed after
rows were written), and a number reaches SQL text (``nan`` and ``inf`` are no literals).

The names (:data:`MAX_NAMES`, ...) are the documented limits; the ``Annotated`` types
carry them for pydantic models, and :func:`utf8_text` is the check for code that
validates by hand (job parameters, form fields).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = [
    "DATASET_NAME",
    "MAX_BASKET",
    "MAX_CURSOR",
    "MAX_ID",
    "MAX_NAME",
    "MAX_NAMES",
    "MAX_QUERY_TEXT",
    "MAX_SPEED",
    "MAX_TEXT",
    "MAX_VERSION",
    "ClipId",
    "Name",
    "QueryText",
    "Speed",
    "Text",
    "utf8_text",
]

MAX_NAMES = 256
"""Items of a list of names (vehicles, events, tags): a person's selection, not a table."""
MAX_BASKET = 10_000
"""Clip ids of a reviewer's basket; the engine sees them as a join, never an IN chain."""
MAX_NAME = 128
"""Characters of a name (vehicle, event, camera, tag, model reference)."""
MAX_ID = 200
"""Characters of an id (clip, drive, group)."""
MAX_TEXT = 4000
"""Characters of free text (a review's note)."""
MAX_QUERY_TEXT = 1000
"""Characters of words a text-image model reads (a text query, a tag's prompt): far past
what its tokenizer keeps (CLIP's 77 tokens), short enough that tokenizing one costs
nothing. :data:`mining.encoders.text_image.MAX_TEXT_CHARS` is this number."""
MAX_CURSOR = 2048
"""Characters of an opaque page cursor (a key of :data:`MAX_ID` characters, encoded, fits)."""
MAX_SPEED = 1000.0
"""m/s either way: far past any vehicle, well within what a float literal prints exactly."""
MAX_VERSION = 2**31 - 1
"""A dataset version: what the ``datasets`` table's int column holds."""
DATASET_NAME = r"^[A-Za-z0-9_-]{1,100}$"
"""A dataset's name (as ``POST /v1/datasets`` takes it): it becomes a folder and a URL part."""


def utf8_text(value: str) -> str:
    """``value`` unchanged when it encodes as UTF-8 (no lone surrogate such as ``\\ud800``,
    which JSON escapes can carry); ValueError (pydantic: 422) without echoing it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text (a lone surrogate)") from None
    return value


Name = Annotated[str, Field(max_length=MAX_NAME), AfterValidator(utf8_text)]
ClipId = Annotated[str, Field(max_length=MAX_ID), AfterValidator(utf8_text)]
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(utf8_text)]
QueryText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_TEXT,
        pattern=r"\S",  # not blank: a tokenizer makes nothing of whitespace alone
        description="what the clips show, in words (the text side's own tokenizer cuts it)",
    ),
    AfterValidator(utf8_text),
]
"""Words to search by: 1..:data:`MAX_QUERY_TEXT` characters, at least one not a space, UTF-8."""
Speed = Annotated[float, Field(ge=-MAX_SPEED, le=MAX_SPEED, allow_inf_nan=False)]
