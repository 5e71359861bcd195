"""Wire format v1: a message <-> a flat map of binary stream-entry fields.

See docs/wire-format.md. Field ``h`` holds UTF-8 JSON (envelope, scalar fields, array
descriptors); field ``a:<name>`` holds the raw bytes of array ``<name>``. Nothing is pickled
and nothing is evaluated.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from procgraph.constants import ARRAY_FIELD_PREFIX, HEADER_FIELD, WIRE_VERSION
from procgraph.errors import CodecError
from procgraph.message import Message, known_type

ENCODINGS = ("raw", "jpeg", "png")
_ALLOWED_DTYPE_KINDS = frozenset("biuf")
_MAX_DIMS = 8
_PLAIN = frozenset({int, float, str, bool, type(None)})
#: dtypes a header may name: numpy type strings such as ``<u2``/``|b1`` or plain names
_DTYPE = re.compile(r"^[<>|=]?(?:[biuf][1248]|bool|u?int(?:8|16|32|64)|float(?:16|32|64))$")
#: an upper bound on any declared array size (elements), far above any real frame
_MAX_ELEMENTS = 2**40

Fields = dict[bytes, bytes | memoryview]


class PayloadStore(Protocol):
    """Keeps array bytes outside the stream; the entry then holds only a reference.

    This is the seam for out-of-band payloads (e.g. shared memory on the same host).
    """

    scheme: str

    def put(self, data: memoryview) -> str:
        """Store ``data`` and return a reference ``<scheme>:<anything>``."""
        ...

    def get(self, ref: str) -> bytes:
        """Return the bytes a reference points to; raise KeyError if they are gone."""
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
        text = json.dumps(header, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise CodecError(
            f"{cls.__name__}: NaN or infinity in a scalar field cannot travel as JSON; "
            "use None, or put the values in a numpy array field"
        ) from exc
    fields[HEADER_FIELD] = text.encode()
    # the header goes first so a reader can inspect it without the payloads
    return {HEADER_FIELD: fields.pop(HEADER_FIELD), **fields}


def read_header(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """Parse and check the JSON header of an entry, without touching the arrays."""
    raw = fields.get(HEADER_FIELD)
    if raw is None:
        raise CodecError(f"entry has no {HEADER_FIELD.decode()!r} field: not a procgraph message")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CodecError(f"header is not valid UTF-8 JSON: {exc!r}") from exc
    if not isinstance(header, dict):
        raise CodecError("header must be a JSON object")
    version = header.get("v")
    if type(version) is not int or version != WIRE_VERSION:
        raise CodecError(
            f"wire format version {header.get('v')!r} is not supported (this is v{WIRE_VERSION})"
        )
    return header


def _decode_array(name: str, desc: Any, fields: Mapping[bytes, bytes]) -> np.ndarray:
    if not isinstance(desc, dict):
        raise CodecError(f"array {name!r}: descriptor must be an object")
    dtype_str, shape_list = desc.get("dtype"), desc.get("shape")
    if not isinstance(dtype_str, str) or not _DTYPE.match(dtype_str):
        raise CodecError(f"array {name!r}: unsupported dtype {dtype_str!r}")
    if not isinstance(shape_list, list) or not all(
        type(d) is int and 0 <= d <= _MAX_ELEMENTS for d in shape_list
    ):
        raise CodecError(f"array {name!r}: shape must be a list of ints >= 0, got {shape_list!r}")
    try:
        dtype = np.dtype(dtype_str)
    except TypeError as exc:  # well-formed but meaningless, e.g. "f1"
        raise CodecError(f"array {name!r}: unsupported dtype {dtype_str!r}") from exc
    shape = tuple(shape_list)
    if (dtype.kind not in _ALLOWED_DTYPE_KINDS or len(shape) > _MAX_DIMS
            or math.prod(d or 1 for d in shape) > _MAX_ELEMENTS):  # numpy limits empty
        # arrays too: (0, 2**31, 2**31) holds nothing but cannot be created
        raise CodecError(f"array {name!r}: unsupported dtype {dtype} or shape {shape}")
    encoding = desc.get("encoding", "raw")
    if "ref" in desc:
        ref = str(desc["ref"])
        store = _stores.get(ref.split(":", 1)[0])
        if store is None:
            raise CodecError(f"array {name!r}: no payload store for reference {ref!r} here")
        try:
            payload: bytes = store.get(ref)
        except KeyError as exc:
            raise CodecError(f"array {name!r}: payload {ref!r} is gone") from exc
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
            arr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise CodecError(f"array {name!r}: {encoding} payload does not decode") from exc
        if arr is None or tuple(arr.shape) != shape or arr.dtype != dtype:
            raise CodecError(
                f"array {name!r}: {encoding} payload does not decode to {dtype} {shape}"
            )
        return arr
    raise CodecError(f"array {name!r}: unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def decode(fields: Mapping[bytes, bytes], cls: type[Message]) -> Message:
    """Turn stream-entry fields back into a message of type ``cls`` (or a known subclass)."""
    header = read_header(fields)
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
    for name, desc in arrays.items():
        if name in target.array_fields:
            values[name] = _decode_array(name, desc, fields)
    for name in ("id", "key", "ts_ns", "trace"):
        if name in header:
            values[name] = header[name]
    try:
        return target.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CodecError(
            f"entry does not validate as {target.type_label()}: {where}: {first['msg']}"
            f" ({exc.error_count()} error(s); sender type {sent_type!r})"
        ) from exc
