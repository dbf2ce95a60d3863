"""Turns requests into checked domain values, or says what was wrong.

Everything a client sends passes through here before it reaches the encoder
or the store, so that a hostile or careless request is answered with
INVALID_ARGUMENT and a message naming the field and what is allowed, never
with a crash deep inside a backend.
"""

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from indexer.filters import CLUSTER_FIELD, Condition, Filter, Match, Range
from proto.lookalike.v1 import lookalike_pb2
from server.config import ServerConfig

# Results returned when a request leaves top_k unset (0).
DEFAULT_TOP_K = 10
# Bounds that keep one request cheap to check and to translate for the store.
MAX_CONDITIONS = 64
MAX_VALUES_PER_CONDITION = 256
MAX_EXCLUDE_IDS = 1000
MAX_ID_LENGTH = 256


class RequestError(ValueError):
    """A request the service refuses; the message is meant for the client."""


@dataclasses.dataclass(frozen=True)
class FieldSchema:
    """Payload fields a filter may name, by kind, as recorded in the index.

    Keyword fields hold strings and accept only equality; numeric fields
    hold numbers and accept equality on integers and ranges.
    """

    keyword_fields: frozenset[str]
    numeric_fields: frozenset[str]

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> "FieldSchema":
        numeric = set(meta.get("numeric_fields") or ())
        # Every point carries its integer cluster label.
        numeric.add(CLUSTER_FIELD)
        keyword = set(meta.get("keyword_fields") or ()) - numeric
        return cls(frozenset(keyword), frozenset(numeric))

    def describe(self) -> str:
        return ", ".join(sorted(self.keyword_fields | self.numeric_fields))


@dataclasses.dataclass(frozen=True)
class Paging:
    top_k: int
    offset: int


def parse_paging(top_k: int, offset: int, config: ServerConfig) -> Paging:
    """Checks top_k (0 means the default) and offset against the config."""
    if top_k == 0:
        top_k = DEFAULT_TOP_K
    if not 1 <= top_k <= config.max_top_k:
        raise RequestError(
            f"top_k is {top_k}; allowed: 1 to {config.max_top_k} "
            f"(0 means the default, {DEFAULT_TOP_K})"
        )
    if not 0 <= offset <= config.max_offset:
        raise RequestError(
            f"offset is {offset}; allowed: 0 to {config.max_offset}"
        )
    return Paging(top_k=top_k, offset=offset)


def parse_product_id(value: str, *, name: str = "product_id") -> str:
    """Checks one product ID: non-empty and of bounded length."""
    if not value:
        raise RequestError(f"{name} is empty; give a product ID")
    if len(value) > MAX_ID_LENGTH:
        raise RequestError(
            f"{name} is {len(value)} characters long; "
            f"allowed: at most {MAX_ID_LENGTH}"
        )
    return value


def parse_exclude_ids(values: Iterable[str]) -> tuple[str, ...]:
    ids = tuple(values)
    if len(ids) > MAX_EXCLUDE_IDS:
        raise RequestError(
            f"exclude_ids has {len(ids)} entries; "
            f"allowed: at most {MAX_EXCLUDE_IDS}"
        )
    for product_id in ids:
        parse_product_id(product_id, name="an entry of exclude_ids")
    return ids


def parse_filter(
    message: lookalike_pb2.Filter, schema: FieldSchema
) -> Filter | None:
    """Converts a proto Filter; None when it has no conditions."""
    count = len(message.must) + len(message.must_not)
    if count > MAX_CONDITIONS:
        raise RequestError(
            f"filter has {count} conditions; allowed: at most {MAX_CONDITIONS}"
        )
    result = Filter(
        must=tuple(_parse_condition(c, schema) for c in message.must),
        must_not=tuple(_parse_condition(c, schema) for c in message.must_not),
    )
    return result or None


def _parse_condition(
    message: lookalike_pb2.Condition, schema: FieldSchema
) -> Condition:
    field = message.field
    if not field:
        raise RequestError(
            f"a filter condition has no field; allowed: {schema.describe()}"
        )
    if field not in schema.keyword_fields | schema.numeric_fields:
        raise RequestError(
            f"filter field {field[:MAX_ID_LENGTH]!r} is not in the index; "
            f"allowed: {schema.describe()}"
        )
    test = message.WhichOneof("test")
    if test == "any_of":
        return _parse_match(field, message.any_of, schema)
    if test == "range":
        return _parse_range(field, message.range, schema)
    raise RequestError(
        f"filter condition on {field!r} has no test; set any_of or range"
    )


def _parse_match(
    field: str, message: lookalike_pb2.ValueList, schema: FieldSchema
) -> Match:
    if not message.values:
        raise RequestError(
            f"filter any_of on {field!r} is empty; give at least one value"
        )
    if len(message.values) > MAX_VALUES_PER_CONDITION:
        raise RequestError(
            f"filter any_of on {field!r} has {len(message.values)} values; "
            f"allowed: at most {MAX_VALUES_PER_CONDITION}"
        )
    numeric = field in schema.numeric_fields
    values = tuple(
        _numeric_match_value(field, v) if numeric else _keyword_value(field, v)
        for v in message.values
    )
    return Match(field=field, values=values)


def _keyword_value(field: str, message: lookalike_pb2.Value) -> str:
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return message.string_value
    # A command line cannot tell "2011" from 2011; keyword fields hold
    # strings, so an integer means its decimal spelling.
    if kind == "int_value":
        return str(message.int_value)
    raise RequestError(
        f"filter field {field!r} holds text; give string values, "
        f"not {_describe_kind(kind, message)}"
    )


def _numeric_match_value(
    field: str, message: lookalike_pb2.Value
) -> int | float:
    kind = message.WhichOneof("kind")
    if kind == "int_value":
        return message.int_value
    if kind == "double_value" and math.isfinite(message.double_value):
        value = message.double_value
        return int(value) if value.is_integer() else value
    raise RequestError(
        f"filter field {field!r} is numeric; any_of takes finite numbers, "
        f"not {_describe_kind(kind, message)}"
    )


def _describe_kind(kind: str | None, message: lookalike_pb2.Value) -> str:
    if kind == "double_value":
        return f"{message.double_value}"
    return {
        "string_value": "strings",
        "int_value": "integers",
        "bool_value": "booleans",
        None: "empty values",
    }[kind]


def _parse_range(
    field: str, message: lookalike_pb2.Range, schema: FieldSchema
) -> Range:
    if field not in schema.numeric_fields:
        raise RequestError(
            f"filter range on {field!r}, which holds text; ranges apply "
            f"to numeric fields: {', '.join(sorted(schema.numeric_fields))}"
        )
    bounds = {
        name: getattr(message, name) if message.HasField(name) else None
        for name in ("gte", "gt", "lte", "lt")
    }
    for name, bound in bounds.items():
        if bound is not None and not math.isfinite(bound):
            raise RequestError(
                f"filter range on {field!r}: {name} is {bound}; "
                "bounds must be finite numbers"
            )
    if all(bound is None for bound in bounds.values()):
        raise RequestError(
            f"filter range on {field!r} has no bound; "
            "set at least one of gte, gt, lte, lt"
        )
    lower = [b for b in (bounds["gte"], bounds["gt"]) if b is not None]
    upper = [b for b in (bounds["lte"], bounds["lt"]) if b is not None]
    if lower and upper and max(lower) > min(upper):
        raise RequestError(
            f"filter range on {field!r}: lower bound {max(lower)} is above "
            f"upper bound {min(upper)}; no value could match"
        )
    return Range(field=field, **bounds)
