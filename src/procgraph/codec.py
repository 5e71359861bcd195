"""Wire format v1: a message <-> a flat map of binary stream-entry fields.

See docs/wire-format.md. Field ``h`` holds UTF-8 JSON (envelope, scalar fields, array
descriptors); field ``a:<name>`` holds the raw bytes of array ``<name>``. Nothing is pickled
and nothing is evaluated.

The reader is strict, since anyone who can write to the broker can write an entry: the header
is at most :data:`MAX_HEADER_BYTES`, UTF-8 only (no UTF-16/32, no lone surrogates, also not as
``\\ud800`` escapes), integers have at most :data:`MAX_INT_DIGITS` digits, there is no NaN or
infinity, the envelope and ``data`` values must have their field's JSON type (``"1"`` or
``true`` is not an int), and a PNG/JPEG header must match the declared shape before the image
is decoded (:mod:`procgraph.imageheader`). Whatever fails raises :class:`CodecError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import cache, lru_cache
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from types import UnionType
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from procgraph.constants import ARRAY_FIELD_PREFIX, HEADER_FIELD, WIRE_VERSION
from procgraph.errors import CodecError
from procgraph.imageheader import check_image
from procgraph.message import Message, known_type
from procgraph.safetext import printable

ENCODINGS = ("raw", "jpeg", "png")
_ALLOWED_DTYPE_KINDS = frozenset("biuf")
_MAX_DIMS = 8
_PLAIN = frozenset({int, float, str, bool, type(None)})
#: dtypes a header may name: numpy type strings such as ``<u2``/``|b1`` or plain names
_DTYPE = re.compile(r"^[<>|=]?(?:[biuf][1248]|bool|u?int(?:8|16|32|64)|float(?:16|32|64))$")
#: an upper bound on any declared array size (elements), far above any real frame
_MAX_ELEMENTS = 2**40
#: the largest header (field ``h``) a reader accepts, in bytes: bulk data belongs in arrays
MAX_HEADER_BYTES = 4 * 1024 * 1024
#: the most digits of an integer in a header (Python's own limit, 4300, would raise ValueError)
MAX_INT_DIGITS = 1000
#: envelope integers (``ts_ns``, a hop's ``in_ns``/``out_ns``/``replica``) lie in 0..2**63-1
_MAX_NS = 2**63 - 1
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: (in a header long enough to hold one) a long digit run: only then are integers parsed one
#: by one, checked (floats always are: headers hold few, and a regex pass over every header
#: for exponents cost more than checking them)
_LONG_DIGITS = re.compile(rf"\d{{{MAX_INT_DIGITS + 1}}}")
_ENVELOPE = ("id", "key", "ts_ns", "trace")

Fields = dict[bytes, bytes | memoryview]


class PayloadStore(Protocol):
    """Keeps array bytes outside the stream; the entry then holds only a reference.

    This is the seam for out-of-band payloads (e.g. shared memory on the same host).
    """

    scheme: str

    def put(self, data: memoryview) -> str:
        """Store ``data`` and return a reference ``<scheme>:<anything>``."""
        ...

    def get(self, ref: str) -> Any:
        """Return the bytes a reference points to (bytes, or a flat ``uint8`` array viewing
        them); raise KeyError or CodecError if they are gone."""
        ...


_stores: dict[str, PayloadStore] = {}


def register_payload_store(store: PayloadStore) -> None:
    """Make a payload store available for decoding references of its scheme."""
    _stores[store.scheme] = store


def _array_bytes(arr: np.ndarray) -> memoryview:
    # a flat uint8 view: memoryview.cast("B") refuses 0-d arrays and shapes with a zero
    flat: Any = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)  # numpy: not a Buffer
    return memoryview(flat)


def _compress(arr: np.ndarray, encoding: str, quality: int) -> bytes:
    import cv2

    if encoding not in ("jpeg", "png"):
        raise CodecError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    dtypes = ("u1",) if encoding == "jpeg" else ("u1", "u2")
    channels = (3,) if encoding == "jpeg" else (3, 4)
    if (arr.dtype.kind + str(arr.dtype.itemsize) not in dtypes or arr.size == 0
            or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in channels))):
        raise CodecError(
            f"{encoding} encoding needs a non-empty {'/'.join(dtypes)} image of shape (h, w) or"
            f" (h, w, {'|'.join(map(str, channels))}), got {arr.dtype} {arr.shape}; use raw"
        )
    ext = ".jpg" if encoding == "jpeg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if encoding == "jpeg" else []
    try:
        ok, buf = cv2.imencode(ext, arr, params)
    except cv2.error as exc:
        raise CodecError(f"cv2 could not {encoding}-encode {arr.dtype} {arr.shape}") from exc
    if not ok:
        raise CodecError(f"cv2 could not {encoding}-encode an array of shape {arr.shape}")
    return buf.tobytes()


def encode(
    msg: Message,
    encodings: Mapping[str, tuple[str, int]] | None = None,
    store: PayloadStore | None = None,
    store_min_bytes: int = 0,
) -> Fields:
    """Turn a message into stream-entry fields.

    ``encodings`` maps an array field to ``(encoding, quality)``; absent fields are raw.
    With a ``store``, raw arrays of at least ``store_min_bytes`` go out of band.
    """
    cls = type(msg)
    try:
        data = (msg.model_dump(mode="json", include=set(cls.scalar_fields))
                if cls.scalar_fields else {})
    except (ValueError, TypeError) as exc:  # e.g. non-UTF-8 bytes, which JSON cannot carry
        raise CodecError(
            f"{cls.__name__}: a scalar field cannot be written as JSON: {exc}; "
            "put binary data in an np.ndarray (uint8) field"
        ) from exc
    header: dict[str, Any] = {
        "v": WIRE_VERSION,
        "type": cls.type_name,
        "type_version": cls.type_version,
        "id": msg.id,
        "key": msg.key,
        "ts_ns": msg.ts_ns,
        "trace": [dict(h.__dict__) for h in msg.trace],
        "data": data,
    }
    fields: Fields = {}
    arrays: dict[str, Any] = {}
    for name in cls.array_fields:
        arr = getattr(msg, name)
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray):
            raise CodecError(f"{cls.__name__}.{name} must be a numpy array, got {type(arr)}")
        encoding, quality = (encodings or {}).get(name, ("raw", 90))
        if encoding != "raw" and not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))  # cv2 ignores the byte order
        desc: dict[str, Any] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
        if encoding == "raw":
            payload: bytes | memoryview = _array_bytes(arr)
        else:
            payload = _compress(arr, encoding, quality)
        desc["encoding"] = encoding
        if (store is not None and isinstance(payload, memoryview)
                and payload.nbytes >= store_min_bytes):
            desc["ref"] = store.put(memoryview(payload))
        else:
            fields[(ARRAY_FIELD_PREFIX + name).encode()] = payload
        arrays[name] = desc
    header["arrays"] = arrays
    try:
        text = _dump_header(header)
    except ValueError as exc:
        raise CodecError(
            f"{cls.__name__}: NaN or infinity (or an integer of over 4300 digits) in a scalar"
            " field cannot travel as JSON; use None, or put the values in a numpy array field"
        ) from exc
    fields[HEADER_FIELD] = text.encode()
    # the header goes first so a reader can inspect it without the payloads
    return {HEADER_FIELD: fields.pop(HEADER_FIELD), **fields}


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if c_make_encoder is not None:
    # what json.dumps(separators=(",", ":"), allow_nan=False) runs, built once instead of per
    # call (half the cost of encoding a small message); no circular-reference bookkeeping:
    # the header is built here from a pydantic dump, which refuses cycles itself
    _HEADER_ENCODER = c_make_encoder(None, _refuse, encode_basestring_ascii, None, ":", ",",
                                     False, False, False)

    def _dump_header(header: dict[str, Any]) -> str:
        return "".join(_HEADER_ENCODER(header, 0))
else:  # pragma: no cover - an interpreter without the C accelerator
    def _dump_header(header: dict[str, Any]) -> str:
        return json.dumps(header, separators=(",", ":"), allow_nan=False)


def _show(value: Any) -> str:
    """A value from an entry, quoted for an error message (escaped and capped)."""
    return printable(value if isinstance(value, str) else repr(value), 80)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise CodecError(f"header has an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CodecError(f"header has a number out of range: {_show(text)}")
    return value


def _parse_constant(text: str) -> float:
    raise CodecError(f"header has {text}: not JSON (NaN and infinities cannot travel)")


_JSON = json.JSONDecoder(parse_float=_parse_float, parse_constant=_parse_constant)
_CHECKED_JSON = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float,
                                 parse_constant=_parse_constant)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def read_header(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """Parse and check the JSON header of an entry, without touching the arrays."""
    return _read_header(fields)[0]


def _read_header(fields: Mapping[bytes, bytes]) -> tuple[dict[str, Any], str]:
    """The header as a dict and as the JSON text it was parsed from."""
    raw = fields.get(HEADER_FIELD)
    if raw is None:
        raise CodecError(f"entry has no {HEADER_FIELD.decode()!r} field: not a procgraph message")
    if len(raw) > MAX_HEADER_BYTES:
        raise CodecError(f"header is {len(raw)} bytes, over the limit of {MAX_HEADER_BYTES}; "
                         "the sender must put bulk data in array fields")
    try:
        text = bytes(raw).decode("utf-8")  # strict: json.loads(bytes) would take UTF-16/32
    except UnicodeDecodeError as exc:
        raise CodecError(f"header is not UTF-8 (byte {exc.start}: {exc.reason})") from exc
    try:
        if len(text) > MAX_INT_DIGITS and _LONG_DIGITS.search(text):
            header = _CHECKED_JSON.decode(text)
        else:  # the common case, at the speed of plain json.loads
            header = _JSON.decode(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CodecError(f"header is not valid JSON: {_show(str(exc))}") from exc
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(header):
        raise CodecError("header has a lone surrogate (\\ud800-\\udfff escape): not Unicode text")
    if not isinstance(header, dict):
        raise CodecError("header must be a JSON object")
    version = header.get("v")
    if type(version) is not int or version != WIRE_VERSION:
        raise CodecError(
            f"wire format version {_show(header.get('v'))} is not supported"
            f" (this is v{WIRE_VERSION})"
        )
    return header, text


def _dtype_of(dtype_str: str) -> np.dtype[Any] | None:
    """The numpy dtype a descriptor names, None unless it is one the wire format allows."""
    return _allowed_dtype(dtype_str) if _DTYPE.match(dtype_str) else None


@lru_cache(maxsize=64)
def _allowed_dtype(dtype_str: str) -> np.dtype[Any] | None:
    """np.dtype of a name the pattern allows (short by construction; the same few come in
    every entry): None for a well-formed but meaningless one, e.g. "f1"."""
    try:
        return np.dtype(dtype_str)
    except TypeError:
        return None


def _decode_array(name: str, desc: Any, fields: Mapping[bytes, bytes]) -> np.ndarray:
    if not isinstance(desc, dict):
        raise CodecError(f"array {name!r}: descriptor must be an object")
    dtype_str, shape_list = desc.get("dtype"), desc.get("shape")
    dtype = _dtype_of(dtype_str) if isinstance(dtype_str, str) else None
    if dtype is None:
        raise CodecError(f"array {_show(name)}: unsupported dtype {_show(dtype_str)}")
    if not isinstance(shape_list, list) or not all(
        type(d) is int and 0 <= d <= _MAX_ELEMENTS for d in shape_list
    ):
        raise CodecError(
            f"array {_show(name)}: shape must be a list of ints >= 0, got {_show(shape_list)}")
    shape = tuple(shape_list)
    if (dtype.kind not in _ALLOWED_DTYPE_KINDS or len(shape) > _MAX_DIMS
            or math.prod(d or 1 for d in shape) > _MAX_ELEMENTS):  # numpy limits empty
        # arrays too: (0, 2**31, 2**31) holds nothing but cannot be created
        raise CodecError(f"array {name!r}: unsupported dtype {dtype} or shape {shape}")
    encoding = desc.get("encoding", "raw")
    if encoding not in ENCODINGS:
        raise CodecError(
            f"array {name!r}: unknown encoding {_show(encoding)}; expected one of {ENCODINGS}")
    if "ref" in desc:
        ref = desc["ref"]
        if not isinstance(ref, str):
            raise CodecError(f"array {name!r}: ref must be a string, got {_show(ref)}")
        scheme = ref.split(":", 1)[0]
        if scheme == "shm" and scheme not in _stores:  # same-host frames (claim-check)
            import procgraph.delivery.shmreader  # noqa: F401  (registers its store)
        store = _stores.get(scheme)
        if store is None:
            raise CodecError(f"array {name!r}: no payload store for reference {_show(ref)} here")
        if encoding != "raw":
            raise CodecError(f"array {name!r}: a referenced array must be raw, not "
                             f"{_show(encoding)}")
        try:
            payload: Any = store.get(ref)
        except KeyError as exc:
            raise CodecError(f"array {name!r}: payload {_show(ref)} is gone") from exc
        except CodecError as exc:  # its kind kept (shmreader.StaleReference)
            raise type(exc)(f"array {name!r}: {exc}") from exc
        if isinstance(payload, np.ndarray):  # a read-only view of shared memory: no copy
            expected = math.prod(shape) * dtype.itemsize
            if payload.nbytes != expected:
                raise CodecError(f"array {name!r}: {payload.nbytes} bytes, expected {expected}"
                                 f" for {dtype} {shape}")
            return payload.view(dtype).reshape(shape)
    else:
        got = fields.get((ARRAY_FIELD_PREFIX + name).encode())
        if got is None:
            raise CodecError(f"array {name!r}: field {ARRAY_FIELD_PREFIX + name!r} is missing")
        payload = got
    if encoding == "raw":
        expected = math.prod(shape) * dtype.itemsize
        if len(payload) != expected:
            raise CodecError(
                f"array {name!r}: {len(payload)} bytes, expected {expected} for {dtype} {shape}"
            )
        return np.frombuffer(payload, dtype=dtype).reshape(shape)
    if encoding in ("jpeg", "png"):
        import cv2

        try:
            check_image(payload, shape, dtype, encoding)  # before anything is decompressed
        except CodecError as exc:
            raise CodecError(f"array {name!r}: {exc}") from exc
        try:
            arr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise CodecError(f"array {name!r}: {encoding} payload does not decode") from exc
        if arr is None or tuple(arr.shape) != shape or arr.dtype != dtype:
            raise CodecError(
                f"array {name!r}: {encoding} payload does not decode to {dtype} {shape}"
            )
        return arr
    raise CodecError(f"array {name!r}: unknown encoding {_show(encoding)}")


def _json_native(tp: Any, seen: set[type]) -> bool:
    """Whether a field of type ``tp``, validated strictly from what ``json.loads`` made,
    accepts and refuses exactly what strict validation from the JSON text does (not so for
    tuples, dates, enums, bytes...: those are strings or arrays in JSON)."""
    if tp in _PLAIN or tp is Any:
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _json_native(args[0], seen)
    if origin in (Union, UnionType):
        return all(_json_native(a, seen) for a in args)
    if origin is Literal:
        return all(type(a) is str for a in args)
    if tp is list or tp is dict:
        return True
    if origin is list:
        return _json_native(args[0], seen)
    if origin is dict:
        return args[0] is str and _json_native(args[1], seen)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and not tp.model_config.get("strict"):
        if tp in seen:
            return True
        seen.add(tp)
        return all(_json_native(f.annotation, seen) for f in tp.model_fields.values())
    return False


@cache
def _strict_from_parsed(cls: type[Message]) -> bool:
    """Whether ``cls`` can be checked in one strict pass over the parsed header (every
    field but the arrays of a JSON-native type), instead of a strict pass over the header
    text and a second, lax one that builds the message."""
    return all(_json_native(f.annotation, {cls}) for name, f in cls.model_fields.items()
               if name not in cls.array_fields)


@cache
def _wire_model(cls: type[Message]) -> type[BaseModel]:
    """The header's envelope and ``data`` of ``cls``, validated strictly from JSON text."""
    config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)
    fields = cls.model_fields
    scalars: dict[str, Any] = {n: (f.annotation, f) for n, f in fields.items()
                               if n in cls.scalar_fields}
    data = create_model(f"{cls.__name__}WireData", __config__=config, **scalars)
    envelope: dict[str, Any] = {n: (fields[n].annotation, fields[n]) for n in _ENVELOPE}
    return create_model(f"{cls.__name__}Wire", __config__=config,
                        data=(data | None, None), **envelope)


def _check_envelope(values: Mapping[str, Any]) -> None:
    """Envelope integers in range (a value of another type is left to pydantic)."""
    ts_ns = values.get("ts_ns", 0)
    if type(ts_ns) is int and not 0 <= ts_ns <= _MAX_NS:
        raise CodecError(f"ts_ns {_show(ts_ns)} is out of range (0 to 2**63-1)")
    trace = values.get("trace", [])
    for hop in trace if isinstance(trace, list) else []:
        for key in ("replica", "in_ns", "out_ns"):
            got = hop.get(key, 0) if isinstance(hop, dict) else 0
            if type(got) is int and not 0 <= got <= _MAX_NS:
                raise CodecError(f"trace {key} {_show(got)} is out of range (0 to 2**63-1)")


def _invalid(exc: ValidationError, target: type[Message], sent_type: Any) -> CodecError:
    first = exc.errors()[0]
    loc = first["loc"]
    if loc and loc[0] in target.scalar_fields:  # where it sits in the header
        loc = ("data", *loc)
    where = ".".join(printable(p, 40) for p in loc)
    return CodecError(
        f"entry does not validate as {target.type_label()}: {where}: {printable(first['msg'])}"
        f" ({exc.error_count()} error(s); sender type {_show(sent_type)})"
    )


def decode(fields: Mapping[bytes, bytes], cls: type[Message]) -> Message:
    """Turn stream-entry fields back into a message of type ``cls`` (or a known subclass)."""
    header, text = _read_header(fields)
    target = cls
    sent_type = header.get("type")
    known = known_type(sent_type) if isinstance(sent_type, str) else None
    if known is not None and known is not cls and issubclass(known, cls):
        target = known
    data = header.get("data", {})
    arrays = header.get("arrays", {})
    if not isinstance(data, dict) or not isinstance(arrays, dict):
        raise CodecError("header 'data' and 'arrays' must be JSON objects")
    values: dict[str, Any] = {k: v for k, v in data.items() if k in target.scalar_fields}
    for name in _ENVELOPE:
        if name in header:
            values[name] = header[name]
    one_pass = _strict_from_parsed(target)  # one strict pass over the values parsed above
    if not one_pass:  # strict JSON types from the text first: no "1" or true for an int
        try:
            _wire_model(target).model_validate_json(text, strict=True)
        except ValidationError as exc:
            raise _invalid(exc, target, sent_type) from exc
    _check_envelope(values)
    for name, desc in arrays.items():
        if name in target.array_fields:
            values[name] = _decode_array(name, desc, fields)
    try:
        return target.model_validate(values, strict=one_pass)
    except ValidationError as exc:
        raise _invalid(exc, target, sent_type) from exc
