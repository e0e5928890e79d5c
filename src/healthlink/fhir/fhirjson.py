"""FHIR JSON in and out, keeping every decimal as it was written.

FHIR R4 datatypes.html#decimal: the precision of a decimal is significant (``1.00`` is
not ``1.0``), and json.html asks servers to keep it.  A float cannot: ``1.00``, ``1E-22``
and ``66.899999999999991`` would come back as ``1.0``, ``1e-22`` and ``66.89999999999999``
(the official example Observation-decimal.json tests exactly this).  So a number whose
text a float would not reproduce is parsed as :class:`ExactDecimal`, a ``float`` that
remembers its text, and written back as that text.  Everything else stays a plain
``int``/``float``; validation and indexing see ordinary numbers.
"""

from __future__ import annotations

import json

import orjson

_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1


class ExactDecimal(float):
    """A JSON number with the text it arrived as."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> ExactDecimal:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _number(text: str) -> float:
    value = float(text)
    return value if orjson.dumps(value) == text.encode() else ExactDecimal(text)


def _integer(text: str) -> int | float:
    value = int(text)
    return value if _I64_MIN <= value <= _U64_MAX else ExactDecimal(text)


def _default(obj: object) -> object:
    if isinstance(obj, ExactDecimal):
        return orjson.Fragment(obj.text)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# one decoder for every parse (json.loads with parse_float builds a new one per call)
_DECODER = json.JSONDecoder(parse_float=_number, parse_int=_integer)


class TooDeep(ValueError):
    """A body nested deeper than the platform stores (:data:`MAX_DEPTH`)."""


#: orjson reads up to 1024 levels but writes at most 254 (its recursion limit), so a body
#: between the two would pass validation and fail when stored; it is refused on arrival.
MAX_DEPTH = 254


def loads(data: bytes | str) -> object:
    """Parse a request body.  orjson first: it is strict (RFC 8259, UTF-8, no NaN, no lone
    surrogates) and its errors are what clients are told; then the decimal-keeping parse.
    :class:`TooDeep` when nested deeper than :data:`MAX_DEPTH` (found by fuzzing, issue 9)."""
    value = orjson.loads(data)
    try:
        orjson.dumps(value)  # C speed; raises exactly where storing would
    except TypeError:
        raise TooDeep(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    try:
        return parse(data)
    except RecursionError:  # nested deeper than the stdlib parser goes: plain floats then
        return value


def parse(data: bytes | str) -> object:
    """Parse JSON this platform wrote (stored resources), keeping decimals' text."""
    if not isinstance(data, str):  # as json.loads does with bytes
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    return _DECODER.decode(data)


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj, default=_default)


def plain(obj: object) -> object:
    """The same value with ordinary floats (for code that cannot take a float subclass)."""
    return orjson.loads(dumps(obj))
