"""JSON values to DynamoDB attribute values, checked against DynamoDB's limits, and back.

One walk both encodes a value and checks it, so an event that DynamoDB would
reject is refused before any request, with the path of the offending value.
The limits below were checked against DynamoDB Local.
"""
from __future__ import annotations

import base64
import math
from decimal import Decimal
from typing import Any, Dict, List, Mapping, Tuple, Union

MAX_ITEM_BYTES = 400 * 1024
# A top-level attribute may hold 31 nested maps or lists; the 32nd is refused.
MAX_NESTED_CONTAINERS = 31
MAX_SIGNIFICANT_DIGITS = 38
# Non-zero numbers must lie in [1E-130, 1E+126).
MAX_ADJUSTED_EXPONENT = 125
MIN_ADJUSTED_EXPONENT = -130
_INT_LIMIT = 10 ** (MAX_ADJUSTED_EXPONENT + 1)
_FLOAT_MIN = 1e-130
_FLOAT_LIMIT = 1e126

AttributeValue = Mapping[str, Any]
PathPart = Union[str, int]


class Unstorable(Exception):
    """A value DynamoDB cannot store; ``path`` is filled in while the walk unwinds."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: List[PathPart] = []  # innermost first

    def field(self, prefix: str) -> str:
        parts = [prefix]
        for part in reversed(self.path):
            parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
        return "".join(parts)


def encode(value: Any, depth: int = 0) -> Tuple[AttributeValue, int]:
    """Return ``(attribute value, approximate stored size in bytes)``.

    ``depth`` counts the maps and lists around ``value`` within its attribute.
    The size follows DynamoDB's documented rules and never overestimates, so
    an item it calls too large is too large.
    """
    if isinstance(value, str):
        return {"S": value}, utf8_length(value)
    if isinstance(value, dict):
        if depth == MAX_NESTED_CONTAINERS:
            raise Unstorable(f"nests more than {MAX_NESTED_CONTAINERS} maps or lists deep")
        members: Dict[str, AttributeValue] = {}
        size = 3
        for name, member in value.items():
            try:
                members[name], member_size = encode(member, depth + 1)
                size += attribute_name_length(name) + member_size + 1
            except Unstorable as error:
                error.path.append(name if isinstance(name, str) else repr(name))
                raise
        return {"M": members}, size
    if isinstance(value, list):
        if depth == MAX_NESTED_CONTAINERS:
            raise Unstorable(f"nests more than {MAX_NESTED_CONTAINERS} maps or lists deep")
        elements: List[AttributeValue] = []
        size = 3
        for index, element in enumerate(value):
            try:
                encoded, element_size = encode(element, depth + 1)
            except Unstorable as error:
                error.path.append(index)
                raise
            elements.append(encoded)
            size += element_size + 1
        return {"L": elements}, size
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return {"BOOL": value}, 1
    if value is None:
        return {"NULL": True}, 1
    if isinstance(value, (int, float, Decimal)):
        text, significant_digits = number_text(value)
        return {"N": text}, (significant_digits + 1) // 2 + 1
    raise Unstorable(f"{type(value).__name__} is not a JSON value")


def attribute_name_length(name: Any) -> int:
    if not isinstance(name, str) or not name:
        raise Unstorable(f"attribute names must be non-empty strings, got {name!r}")
    return utf8_length(name)


def utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise Unstorable(f"is not valid Unicode ({error.reason} at index {error.start})") from None


def number_text(value: Union[int, float, Decimal]) -> Tuple[str, int]:
    """DynamoDB's text for a number, and its count of significant digits.

    A float is written as Python's shortest round-trip repr, which is what the
    JSON held (1.1 stays "1.1", never 1.100000000000000088...).
    """
    if isinstance(value, int):
        # Compare before str(): str() of a huge int is slow, or refused.
        if value >= _INT_LIMIT or value <= -_INT_LIMIT:
            raise Unstorable("is beyond DynamoDB's number range (magnitude below 1E+126)")
        text = str(value)
        digits = text.lstrip("-").rstrip("0")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Unstorable("NaN and Infinity cannot be stored")
        magnitude = abs(value)
        if magnitude and not _FLOAT_MIN <= magnitude < _FLOAT_LIMIT:
            raise Unstorable("is beyond DynamoDB's number range (1E-130 to 1E+126)")
        text = repr(value)
        digits = text.partition("e")[0].replace("-", "").replace(".", "").strip("0")
    else:
        if not value.is_finite():
            raise Unstorable("NaN and Infinity cannot be stored")
        if value and not MIN_ADJUSTED_EXPONENT <= value.adjusted() <= MAX_ADJUSTED_EXPONENT:
            raise Unstorable("is beyond DynamoDB's number range (1E-130 to 1E+126)")
        text = str(value)
        digits = "".join(map(str, value.as_tuple().digits)).strip("0")
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        raise Unstorable(f"has more than {MAX_SIGNIFICANT_DIGITS} significant digits")
    return text, len(digits)


def decode(value: AttributeValue) -> Any:
    """A stored attribute value as a JSON value: numbers as JSON numbers, not strings or Decimals.

    ecs-state stores numbers from JSON, so an integer comes back as the same
    int and a fraction as the same float (its text was the float's repr).
    Sets and binaries, which only other writers store, become lists and base64.
    """
    (kind, inner), = value.items()
    if kind == "S" or kind == "BOOL":
        return inner
    if kind == "N":
        return _number(inner)
    if kind == "M":
        return {name: decode(member) for name, member in inner.items()}
    if kind == "L":
        return [decode(element) for element in inner]
    if kind == "NULL":
        return None
    if kind == "SS":
        return sorted(inner)
    if kind == "NS":
        return sorted(_number(text) for text in inner)
    if kind == "B":
        return _base64(inner)
    if kind == "BS":
        return sorted(_base64(data) for data in inner)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def _number(text: str) -> Union[int, float]:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def _base64(data: Union[bytes, str]) -> str:
    # botocore hands binaries over as bytes; a raw response carries base64 text.
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")
