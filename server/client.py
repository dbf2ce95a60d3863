"""A small client for the service, used by `lookalike query` and tests.

Filters on the command line read as one condition per argument:

    articleType=Shirts          equality
    baseColour=Blue|Black       any of several values
    year>=2011  year<2015       ranges (>=, >, <=, <) on numeric fields
    !gender=Men                 a leading ! excludes what the rest matches

Values that read as integers or decimal numbers are sent as numbers.
"""

import math
import re
from collections.abc import Iterable, Sequence

import grpc

from proto.lookalike.v1 import lookalike_pb2, lookalike_pb2_grpc

# Comfortably above the server's default 10 MiB image cap, so that the
# server, not the client, decides what is too large.
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024

# field, operator, value; the field may hold any characters but !=<>.
_CONDITION = re.compile(
    r"^(?P<field>[^!=<>]+?)\s*(?P<op>>=|<=|>|<|=)(?P<value>.*)$"
)
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_RANGE_BOUNDS = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}


class LookalikeClient:
    """Talks to a Lookalike server at target ("host:port").

    Every call has a deadline of ``timeout`` seconds; failures raise
    grpc.RpcError with the server's status code and message.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        # The raw stub, for requests the helpers below do not build.
        self.stub = lookalike_pb2_grpc.LookalikeStub(self._channel)

    def query_by_image(
        self,
        image_bytes: bytes,
        *,
        top_k: int = 10,
        offset: int = 0,
        filter: lookalike_pb2.Filter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> lookalike_pb2.QueryResponse:
        request = lookalike_pb2.QueryByImageRequest(
            image=image_bytes,
            top_k=top_k,
            offset=offset,
            filter=filter,
            exclude_ids=exclude_ids,
        )
        return self.stub.QueryByImage(request, timeout=self.timeout)

    def query_by_id(
        self,
        product_id: str,
        *,
        top_k: int = 10,
        offset: int = 0,
        filter: lookalike_pb2.Filter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> lookalike_pb2.QueryResponse:
        request = lookalike_pb2.QueryByIdRequest(
            product_id=product_id,
            top_k=top_k,
            offset=offset,
            filter=filter,
            exclude_ids=exclude_ids,
        )
        return self.stub.QueryById(request, timeout=self.timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "LookalikeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parse_filter_args(args: Iterable[str] | None) -> lookalike_pb2.Filter:
    """Builds a Filter from command-line conditions (see the module doc).

    Raises ValueError naming the argument and the accepted forms.
    """
    query_filter = lookalike_pb2.Filter()
    # Required ranges on one field merge into one range (year>=2011
    # year<2015 is one interval), so that an empty interval is refused by
    # the server rather than silently matching nothing. Excluded ranges do
    # not merge: excluding each is not excluding their intersection.
    ranges: dict[str, lookalike_pb2.Range] = {}
    for arg in args or ():
        negated = arg.startswith("!")
        condition = _parse_condition(arg[1:] if negated else arg, arg)
        if negated:
            query_filter.must_not.append(condition)
        elif condition.HasField("range") and condition.field in ranges:
            _merge_range(ranges[condition.field], condition.range, arg)
        else:
            query_filter.must.append(condition)
            if condition.HasField("range"):
                ranges[condition.field] = query_filter.must[-1].range
    return query_filter


def _merge_range(
    target: lookalike_pb2.Range, extra: lookalike_pb2.Range, arg: str
) -> None:
    for bound in ("gte", "gt", "lte", "lt"):
        if extra.HasField(bound):
            if target.HasField(bound):
                raise ValueError(
                    f"filter {arg!r} repeats a bound already given for "
                    "this field; give each of >=, >, <=, < at most once"
                )
            setattr(target, bound, getattr(extra, bound))


def _parse_condition(text: str, arg: str) -> lookalike_pb2.Condition:
    match = _CONDITION.match(text.strip())
    if match is None or not match["field"].strip():
        raise ValueError(
            f"filter {arg!r} is not understood; write field=value, "
            "field=a|b, field>=number (also >, <=, <), with a leading ! "
            "to exclude"
        )
    field, op = match["field"].strip(), match["op"]
    value = match["value"].strip()
    if value[:1] in ("=", "<", ">"):
        raise ValueError(
            f"filter {arg!r} has a misplaced operator; ranges are written "
            f"{field}>=value (also >, <=, <)"
        )
    if op == "=":
        parts = [part.strip() for part in value.split("|")]
        if not all(parts):
            raise ValueError(
                f"filter {arg!r} has an empty value; write {field}=value "
                f"or {field}=a|b"
            )
        return lookalike_pb2.Condition(
            field=field,
            any_of=lookalike_pb2.ValueList(values=[_value(p) for p in parts]),
        )
    number = _number(value)
    if number is None:
        raise ValueError(
            f"filter {arg!r} compares with {value!r}, which is not a "
            f"number; ranges need one, as in {field}{op}2011"
        )
    range_ = lookalike_pb2.Range(**{_RANGE_BOUNDS[op]: float(number)})
    return lookalike_pb2.Condition(field=field, range=range_)


def _number(text: str) -> int | float | None:
    if _INTEGER.match(text):
        return int(text)
    if _DECIMAL.match(text) and math.isfinite(float(text)):
        return float(text)
    return None


def _value(text: str) -> lookalike_pb2.Value:
    number = _number(text)
    if isinstance(number, int) and -(2**63) <= number < 2**63:
        return lookalike_pb2.Value(int_value=number)
    if isinstance(number, float):
        return lookalike_pb2.Value(double_value=number)
    return lookalike_pb2.Value(string_value=text)


def format_results(
    response: lookalike_pb2.QueryResponse,
    *,
    max_attributes: int = 3,
    offset: int = 0,
) -> str:
    """A readable table: rank, product ID, distance, cluster, attributes.

    Ranks continue from ``offset``, so a second page starts where the first
    ended.
    """
    lines = [f"query cluster: {response.query_cluster}"]
    if not response.results:
        lines.append("no results")
        return "\n".join(lines)
    rows = [("rank", "product_id", "distance", "cluster", "attributes")]
    for rank, result in enumerate(response.results, start=offset + 1):
        attributes = ", ".join(
            f"{key}={_format_value(result.attributes[key])}"
            for key in sorted(result.attributes)[:max_attributes]
        )
        rows.append(
            (
                str(rank),
                result.product_id,
                f"{result.distance:.4f}",
                str(result.cluster),
                attributes,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


def _format_value(value: lookalike_pb2.Value) -> str:
    kind = value.WhichOneof("kind")
    return "" if kind is None else str(getattr(value, kind))
