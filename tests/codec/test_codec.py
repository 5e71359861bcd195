"""Wire codec v1: property tests of the round trip, and garbage that must raise CodecError."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel

from procgraph import Message, codec
from procgraph.constants import ARRAY_FIELD_PREFIX, HEADER_FIELD, WIRE_VERSION
from procgraph.errors import CodecError

# When a property fails, hypothesis' pytest plugin imports libcst to suggest a patch, and
# libcst triggers a DeprecationWarning (mypy_extensions) that -W error turns into a pytest
# INTERNALERROR hiding the failure. Import it once here, quietly.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    with contextlib.suppress(ImportError):  # without libcst the plugin makes no patch
        import hypothesis.extra._patching  # noqa: F401

SRC = Path(__file__).resolve().parents[2] / "src"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GARBAGE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- message types (names prefixed so they cannot collide in the global type registry) -------
class CdcInner(BaseModel):
    label: str
    score: float
    tags: list[str] = []


class CdcScalars(Message):
    i: int
    f: float
    s: str
    b: bool
    inner: CdcInner
    items: list[int]
    mapping: dict[str, float]
    opt: int | None = None
    opt_inner: CdcInner | None = None


class CdcArrays(Message):
    a: np.ndarray
    b: np.ndarray | None = None


class CdcImage(Message):
    image: np.ndarray
    frame: int = 0


class CdcBase(Message):
    x: int = 0


class CdcSub(CdcBase):
    extra: str = ""
    pixels: np.ndarray | None = None


class CdcOther(Message):
    x: int = 0


def wire(fields: dict[bytes, Any]) -> dict[bytes, bytes]:
    """What a Redis client hands back: every value as plain bytes."""
    return {k: bytes(v) for k, v in fields.items()}


def roundtrip(msg: Message, cls: type[Message] | None = None, **kw: Any) -> Message:
    return codec.decode(wire(codec.encode(msg, **kw)), cls or type(msg))


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN and -0.0 differs from 0.0 (like the wire)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def header_of(fields: dict[bytes, Any]) -> dict[str, Any]:
    return json.loads(bytes(fields[HEADER_FIELD]))


# -- scalar round trip ------------------------------------------------------------------------
# JSON has no NaN or infinity: the codec refuses them in scalars (arrays carry them fine)
any_float = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
     -1.7976931348623157e308])
any_int = st.integers() | st.sampled_from([0, -1, 2**31, -(2**31), 2**63 - 1, -(2**63), 2**64])
any_text = st.text() | st.sampled_from(["", "é", "😀", "\x00", "\u2028", "a\"b\\c", "日本語"])
inners = st.builds(CdcInner, label=any_text, score=any_float, tags=st.lists(any_text, max_size=3))


@FAST
@given(
    i=any_int, f=any_float, s=any_text, b=st.booleans(), inner=inners,
    items=st.lists(any_int, max_size=5),
    mapping=st.dictionaries(any_text, any_float, max_size=4),
    opt=st.none() | any_int, opt_inner=st.none() | inners,
    key=any_text,
)
def test_scalar_fields_round_trip(**kw: Any) -> None:
    key = kw.pop("key")
    msg = CdcScalars(key=key, **kw)
    out = roundtrip(msg)
    assert type(out) is CdcScalars
    assert same(out.model_dump(), msg.model_dump())
    assert (out.id, out.key, out.ts_ns, out.trace) == (msg.id, msg.key, msg.ts_ns, msg.trace)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["f", "inner", "mapping", "opt_inner"])
def test_nan_and_infinity_in_scalars_are_refused(bad: float, where: str) -> None:
    good = {"i": 1, "f": 0.5, "s": "", "b": False, "inner": CdcInner(label="", score=0),
            "items": [], "mapping": {}}
    value: Any = {"f": bad, "inner": CdcInner(label="", score=bad), "mapping": {"x": bad},
                  "opt_inner": CdcInner(label="", score=1, tags=[]).model_copy(
                      update={"score": bad})}[where]
    with pytest.raises(CodecError, match="NaN or infinity"):
        codec.encode(CdcScalars(**{**good, where: value}))


def test_header_is_plain_json_with_version_and_type() -> None:
    msg = CdcScalars(i=1, f=0.5, s="x", b=True, inner=CdcInner(label="l", score=1), items=[],
                     mapping={}, key="part-7")
    fields = codec.encode(msg)
    assert next(iter(fields)) == HEADER_FIELD  # header first
    h = header_of(fields)
    assert h["v"] == WIRE_VERSION
    assert (h["type"], h["type_version"], h["key"]) == ("CdcScalars", 1, "part-7")
    assert h["data"]["inner"] == {"label": "l", "score": 1.0, "tags": []}
    assert h["arrays"] == {}


# -- array round trip -------------------------------------------------------------------------
DTYPES = [f"{order}{code}" for code in ("u2", "i4", "f4", "f8") for order in "<>"]
DTYPES += ["|u1", "|b1"]


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    arr = draw(hnp.arrays(dtype, shape))
    view = draw(st.sampled_from(["plain", "step", "transpose", "reverse"]))
    if view == "step" and arr.ndim >= 1:
        arr = arr[::2]
    elif view == "transpose" and arr.ndim >= 2:
        arr = arr.T
    elif view == "reverse" and arr.ndim >= 1:
        arr = arr[..., ::-1]
    return arr


def assert_same_array(out: np.ndarray, arr: np.ndarray) -> None:
    assert out.dtype == arr.dtype, (out.dtype, arr.dtype)
    assert out.shape == arr.shape
    assert np.array_equal(out, arr, equal_nan=arr.dtype.kind == "f")
    assert out.tobytes() == np.ascontiguousarray(arr).tobytes()  # bit-exact, incl. -0.0/NaN


@FAST
@given(a=arrays(), b=st.none() | arrays())
def test_array_fields_round_trip(a: np.ndarray, b: np.ndarray | None) -> None:
    msg = CdcArrays(a=a, b=b, key="k")
    fields = codec.encode(msg)
    h = header_of(fields)
    assert h["arrays"]["a"]["dtype"] == a.dtype.str
    assert h["arrays"]["a"]["shape"] == list(a.shape)
    out = codec.decode(wire(fields), CdcArrays)
    assert isinstance(out, CdcArrays)
    assert_same_array(out.a, a)
    if b is None:
        assert out.b is None
        assert "b" not in h["arrays"]
    else:
        assert out.b is not None
        assert_same_array(out.b, b)


@pytest.mark.parametrize(
    "arr",
    [
        np.array(7, dtype=">i4"),
        np.array(True),
        np.zeros((0,), "f4"),
        np.zeros((0, 3), "<u2"),
        np.zeros((2, 0, 3), ">f8"),
        np.arange(60, dtype="<f4").reshape(3, 4, 5)[:, ::2, 1:4],
        np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4)),
        np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324], ">f8"),
    ],
    ids=["0d-big", "0d-bool", "empty-1d", "empty-2d", "empty-3d", "strided", "fortran",
         "float-edges"],
)
def test_array_edge_cases_round_trip(arr: np.ndarray) -> None:
    assert_same_array(roundtrip(CdcArrays(a=arr)).a, arr)  # type: ignore[attr-defined]


def test_non_array_value_in_array_field_is_a_codec_error() -> None:
    msg = CdcArrays.model_construct(a=[1, 2, 3])
    with pytest.raises(CodecError, match="numpy array"):
        codec.encode(msg)


def test_non_utf8_bytes_field_is_a_codec_error_with_a_fix() -> None:
    class CdcBlob(Message):
        blob: bytes = b""

    assert roundtrip(CdcBlob(blob=b"text")).blob == b"text"  # type: ignore[attr-defined]
    with pytest.raises(CodecError, match="ndarray"):
        codec.encode(CdcBlob(blob=b"\xff\x00"))


# -- compressed encodings ---------------------------------------------------------------------
plane = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)
images = st.one_of(
    hnp.arrays(np.uint8, plane),
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([3, 4])
                                   )),
    hnp.arrays(np.dtype("<u2"), plane),
    hnp.arrays(np.dtype(">u2"), plane),
)


@FAST
@given(image=images)
def test_png_is_lossless(image: np.ndarray) -> None:
    fields = codec.encode(CdcImage(image=image, frame=3), {"image": ("png", 0)})
    assert header_of(fields)["arrays"]["image"]["encoding"] == "png"
    assert bytes(fields[(ARRAY_FIELD_PREFIX + "image").encode()]).startswith(b"\x89PNG")
    out = codec.decode(wire(fields), CdcImage)
    assert out.image.dtype == image.dtype.newbyteorder("=")  # type: ignore[attr-defined]
    assert out.image.shape == image.shape  # type: ignore[attr-defined]
    assert np.array_equal(out.image, image)  # type: ignore[attr-defined]
    assert out.frame == 3  # type: ignore[attr-defined]


@FAST
@given(image=hnp.arrays(np.uint8, st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3)))),
    quality=st.integers(1, 100))
def test_jpeg_keeps_shape_and_dtype(image: np.ndarray, quality: int) -> None:
    fields = codec.encode(CdcImage(image=image), {"image": ("jpeg", quality)})
    assert bytes(fields[(ARRAY_FIELD_PREFIX + "image").encode()]).startswith(b"\xff\xd8")
    out = codec.decode(wire(fields), CdcImage)
    assert out.image.shape == image.shape  # type: ignore[attr-defined]
    assert out.image.dtype == np.uint8  # type: ignore[attr-defined]


def test_jpeg_is_smaller_than_raw_for_a_smooth_image() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    raw = codec.encode(CdcImage(image=ramp))
    jpg = codec.encode(CdcImage(image=ramp), {"image": ("jpeg", 80)})
    size = len(bytes(jpg[b"a:image"]))
    assert size < len(bytes(raw[b"a:image"])) / 4
    out = codec.decode(wire(jpg), CdcImage).image  # type: ignore[attr-defined]
    assert np.abs(out.astype(int) - ramp.astype(int)).mean() < 4


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4), "f4"), np.zeros((4, 4), "i4"), np.zeros((0, 4), "u1"), np.zeros(8, "u1"),
     np.zeros((4, 4, 2), "u1"), np.zeros((2, 2, 2, 2), "u1")],
    ids=["f4", "i4", "empty", "1d", "2-channels", "4d"],
)
def test_compressed_encoding_refuses_what_it_cannot_carry(encoding: str, image: np.ndarray) -> None:
    with pytest.raises(CodecError, match="use raw"):
        codec.encode(CdcImage(image=image), {"image": (encoding, 90)})


def test_jpeg_refuses_uint16_and_alpha() -> None:
    for image in (np.zeros((4, 4), "u2"), np.zeros((4, 4, 4), "u1")):
        with pytest.raises(CodecError):
            codec.encode(CdcImage(image=image), {"image": ("jpeg", 90)})


def test_unknown_encoding_is_refused_when_encoding() -> None:
    with pytest.raises(CodecError, match="unknown encoding"):
        codec.encode(CdcImage(image=np.zeros((4, 4), "u1")), {"image": ("gif", 90)})


def test_png_payload_that_decodes_to_another_dtype_is_refused() -> None:
    fields = wire(codec.encode(CdcImage(image=np.zeros((4, 4), "u1")), {"image": ("png", 0)}))
    h = json.loads(fields[HEADER_FIELD])
    h["arrays"]["image"]["dtype"] = "<u2"
    fields[HEADER_FIELD] = json.dumps(h).encode()
    with pytest.raises(CodecError, match="does not decode"):
        codec.decode(fields, CdcImage)


# -- subclass decoding ------------------------------------------------------------------------
def test_reader_of_base_type_receives_the_subclass() -> None:
    msg = CdcSub(x=4, extra="more", pixels=np.arange(6, dtype="u1").reshape(2, 3), key="p1")
    out = roundtrip(msg, CdcBase)
    assert type(out) is CdcSub
    assert (out.x, out.extra, out.key) == (4, "more", "p1")  # type: ignore[attr-defined]
    assert np.array_equal(out.pixels, msg.pixels)  # type: ignore[attr-defined]


def test_reader_of_subclass_does_not_get_an_unrelated_type() -> None:
    out = roundtrip(CdcOther(x=2), CdcBase)
    assert type(out) is CdcBase
    assert out.x == 2  # type: ignore[attr-defined]


def test_reader_of_sub_type_receiving_base_fills_defaults() -> None:
    out = roundtrip(CdcBase(x=9), CdcSub)
    assert type(out) is CdcSub
    assert (out.x, out.extra, out.pixels) == (9, "", None)  # type: ignore[attr-defined]


def test_unknown_sender_type_decodes_as_reader_type() -> None:
    fields = wire(codec.encode(CdcBase(x=1)))
    h = json.loads(fields[HEADER_FIELD])
    h["type"] = "NeverDefinedAnywhere"
    fields[HEADER_FIELD] = json.dumps(h).encode()
    assert type(codec.decode(fields, CdcBase)) is CdcBase


# -- out-of-band payloads ---------------------------------------------------------------------
class DictStore:
    """A payload store backed by a dict (the seam a shared-memory store plugs into)."""

    scheme = "pgtest-dict"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._ids = itertools.count()

    def put(self, data: memoryview) -> str:
        ref = f"{self.scheme}:{next(self._ids)}"
        self.blobs[ref] = bytes(data)
        return ref

    def get(self, ref: str) -> bytes:
        return self.blobs[ref]


@pytest.fixture
def store() -> DictStore:
    s = DictStore()
    codec.register_payload_store(s)
    return s


def test_large_arrays_go_out_of_band_and_come_back(store: DictStore) -> None:
    big = np.arange(1000, dtype=">f8").reshape(10, 100)[:, ::3]
    small = np.arange(4, dtype="u1")
    fields = codec.encode(CdcArrays(a=big, b=small), store=store, store_min_bytes=64)
    h = header_of(fields)
    assert h["arrays"]["a"]["ref"].startswith("pgtest-dict:")
    assert b"a:a" not in fields  # the big payload is not in the entry
    assert b"a:b" in fields and "ref" not in h["arrays"]["b"]
    out = codec.decode(wire(fields), CdcArrays)
    assert_same_array(out.a, big)  # type: ignore[attr-defined]
    assert_same_array(out.b, small)  # type: ignore[attr-defined]


def test_missing_out_of_band_payload_is_a_codec_error(store: DictStore) -> None:
    fields = wire(codec.encode(CdcArrays(a=np.zeros(100)), store=store))
    store.blobs.clear()
    with pytest.raises(CodecError, match="gone"):
        codec.decode(fields, CdcArrays)


def test_reference_to_an_unregistered_store_is_a_codec_error() -> None:
    fields = wire(codec.encode(CdcArrays(a=np.zeros(3))))
    h = json.loads(fields.pop(b"a:a") and fields[HEADER_FIELD])
    h["arrays"]["a"]["ref"] = "no-such-scheme:1"
    fields[HEADER_FIELD] = json.dumps(h).encode()
    with pytest.raises(CodecError, match="no payload store"):
        codec.decode(fields, CdcArrays)


# -- garbage in: CodecError, never another exception, no hang, no huge allocation -------------
def must_reject(fields: dict[bytes, bytes], cls: type[Message] = CdcArrays) -> CodecError:
    t0 = time.monotonic()
    with pytest.raises(CodecError) as info:
        codec.decode(fields, cls)
    assert time.monotonic() - t0 < 5.0
    return info.value


def may_decode(fields: dict[bytes, bytes], cls: type[Message]) -> None:
    t0 = time.monotonic()
    try:
        out = codec.decode(fields, cls)
    except CodecError:
        pass
    else:
        assert isinstance(out, cls)
    assert time.monotonic() - t0 < 5.0


@GARBAGE
@given(st.dictionaries(st.binary(max_size=6), st.binary(max_size=64), max_size=5))
def test_arbitrary_byte_maps_raise_codec_error(fields: dict[bytes, bytes]) -> None:
    fields.pop(HEADER_FIELD, None)
    must_reject(fields)


@GARBAGE
@given(header=st.binary(max_size=200), rest=st.dictionaries(st.binary(max_size=6),
                                                             st.binary(max_size=32), max_size=3))
def test_arbitrary_header_bytes_raise_codec_error(header: bytes, rest: dict[bytes, bytes]) -> None:
    must_reject({**rest, HEADER_FIELD: header})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4),
    max_leaves=12,
)


@GARBAGE
@given(json_values)
def test_random_json_headers_raise_codec_error(value: Any) -> None:
    must_reject({HEADER_FIELD: json.dumps(value).encode()})


BAD_DTYPES = ["O", "V8", "<M8", "<m8", "S4", "U2", "c8", "<c16", "(2,)f4", "f4,i4", "a", "b",
              "?", "int", "object", "<f4 ", "", "u1\x00", "float128", "<f16", "|V0", "f1",
              "b8", ">b2"]


@st.composite
def descriptors(draw: st.DrawFn) -> Any:
    dtype = draw(st.sampled_from([*DTYPES, *BAD_DTYPES]) | json_values)
    shape = draw(
        st.lists(st.integers(-3, 6) | st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64,
                                                        10**30, -(2**63)]), max_size=10)
        | json_values
        | st.lists(st.floats() | st.booleans() | st.text(max_size=2), max_size=3)
    )
    desc: dict[str, Any] = {"dtype": dtype, "shape": shape}
    enc = draw(st.none() | st.sampled_from(["raw", "jpeg", "png", "gif", "", 3]))
    if enc is not None:
        desc["encoding"] = enc
    if draw(st.booleans()):
        desc["ref"] = draw(st.sampled_from(["pgtest-dict:404", "nope:1", "", 5]))
    return draw(st.just(desc) | json_values)


@GARBAGE
@given(
    v=st.sampled_from([WIRE_VERSION, WIRE_VERSION]) | json_values,
    desc=descriptors(),
    payload=st.none() | st.binary(max_size=80),
    drop=st.sets(st.sampled_from(["id", "key", "ts_ns", "trace", "data", "arrays", "type"])),
    data=st.dictionaries(st.sampled_from(["x", "extra", "a", "b"]) | st.text(max_size=3),
                         json_values, max_size=3),
    trace=st.sampled_from([[], [{"agent": "a", "in_ns": 1, "out_ns": 2}]]) | json_values,
)
def test_mutated_headers_raise_codec_error_or_decode(
    v: Any, desc: Any, payload: bytes | None, drop: set[str], data: Any, trace: Any
) -> None:
    header: dict[str, Any] = {"v": v, "type": "CdcArrays", "type_version": 1, "id": "i",
                              "key": "", "ts_ns": 1, "trace": trace, "data": data,
                              "arrays": {"a": desc}}
    for k in drop:
        header.pop(k)
    fields = {HEADER_FIELD: json.dumps(header).encode()}
    if payload is not None:
        fields[b"a:a"] = payload
    may_decode(fields, CdcArrays)
    may_decode(fields, CdcBase)


big_dims = st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64, 10**30, -(2**63), -1])


@GARBAGE
@given(
    dtype=st.sampled_from(DTYPES) | st.sampled_from(BAD_DTYPES),
    shape=st.lists(st.integers(0, 4) | big_dims, max_size=9),
    encoding=st.sampled_from(["raw", "jpeg", "png"]),
    payload=st.binary(max_size=64),
)
def test_mutated_descriptors_raise_codec_error_or_decode(
    dtype: str, shape: list[int], encoding: str, payload: bytes
) -> None:
    header = {"v": WIRE_VERSION, "type": "CdcArrays", "type_version": 1, "id": "i", "key": "",
              "ts_ns": 1, "trace": [], "data": {},
              "arrays": {"a": {"dtype": dtype, "shape": shape, "encoding": encoding}}}
    fields = {HEADER_FIELD: json.dumps(header).encode(), b"a:a": payload}
    may_decode(fields, CdcArrays)


def good_fields(arr: np.ndarray | None = None) -> dict[bytes, bytes]:
    return wire(codec.encode(CdcArrays(a=np.arange(6, dtype="<u2") if arr is None else arr)))


def with_header(fields: dict[bytes, bytes], **changes: Any) -> dict[bytes, bytes]:
    h = json.loads(fields[HEADER_FIELD])
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = h
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return {**fields, HEADER_FIELD: json.dumps(h).encode()}


@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_unsupported_dtypes_raise_codec_error(dtype: str) -> None:
    err = must_reject(with_header(good_fields(), arrays__a__dtype=dtype))
    assert "dtype" in str(err)


@pytest.mark.parametrize(
    "shape",
    [[2**32, 2**32], [2**62, 4], [0, 2**62], [10**30], [2**64], [-1], [3, -2], [1.5], [True],
     ["6"], "6", 6, None, {"0": 6}, [1] * 9, [2**20] * 8, [float("inf")], [float("nan")]],
)
def test_bad_shapes_raise_codec_error_without_allocating(shape: Any) -> None:
    fields = with_header(good_fields(), arrays__a__shape=shape)
    tracemalloc.start()
    try:
        must_reject(fields)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"decoding a bad shape allocated {peak} bytes"


@pytest.mark.parametrize("delta", [-1, 1, -12, 100])
def test_wrong_payload_length_raises_codec_error(delta: int) -> None:
    fields = good_fields()
    payload = fields[b"a:a"]
    fields[b"a:a"] = payload[:delta] if delta < 0 else payload + b"\0" * delta
    assert "bytes, expected" in str(must_reject(fields))


@pytest.mark.parametrize("version", [0, 2, 99, "1", 1.5, True, None, [1]])
def test_wrong_wire_version_raises_codec_error(version: Any) -> None:
    assert "version" in str(must_reject(with_header(good_fields(), v=version)))


def test_missing_version_raises_codec_error() -> None:
    must_reject(with_header(good_fields(), v=...))


@pytest.mark.parametrize(
    "change",
    [{"arrays__a": ...}, {"arrays__a__dtype": ...}, {"arrays__a__shape": ...}, {"arrays": []},
     {"data": "x"}, {"arrays__a": "desc"}, {"trace": "x"}, {"trace": [{"agent": 1}]},
     {"ts_ns": "soon"}, {"id": 5}, {"key": None}, {"arrays__a__encoding": "gif"},
     {"arrays__a__encoding": "png"}, {"arrays__a__encoding": "jpeg"}],
    ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()),
)
def test_broken_or_missing_header_fields_raise_codec_error(change: dict[str, Any]) -> None:
    must_reject(with_header(good_fields(), **change))


def test_missing_array_field_raises_codec_error() -> None:
    fields = good_fields()
    del fields[b"a:a"]
    assert "missing" in str(must_reject(fields))


def test_deeply_nested_header_raises_codec_error() -> None:
    must_reject({HEADER_FIELD: b"[" * 100_000})
    deep = b'{"v":1,"data":{"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    must_reject({HEADER_FIELD: deep})


def test_header_that_is_not_an_object_or_not_utf8_raises_codec_error() -> None:
    for raw in (b"[]", b"1", b'"h"', b"null", b"\xff\xfe{}", b"", b"{"):
        must_reject({HEADER_FIELD: raw})


def test_jpeg_bytes_that_are_garbage_raise_codec_error() -> None:
    fields = with_header(good_fields(np.zeros((4, 4), "u1")), arrays__a__encoding="jpeg")
    fields[b"a:a"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    must_reject(fields)


def test_error_message_names_type_and_field() -> None:
    err = must_reject(with_header(good_fields(), ts_ns="soon"))
    assert "CdcArrays/v1" in str(err) and "ts_ns" in str(err)


# -- nothing unsafe in the source -------------------------------------------------------------
UNSAFE = [
    (re.compile(r"^\s*(import|from)\s+(c?pickle|dill|marshal|shelve|cloudpickle)\b"),
     "pickle-like module"),
    (re.compile(r"(?<![\w.])(eval|exec)\s*\("), "eval/exec"),
    (re.compile(r"\byaml\.(unsafe_load|full_load|load_all|load)\s*\("), "yaml.load without safe"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle"),
]


def test_no_pickle_eval_or_unsafe_yaml_in_src() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    found = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in UNSAFE:
                if pattern.search(code) and "SafeLoader" not in code:
                    found.append(f"{f.relative_to(SRC)}:{n}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_unsafe_source_scan_would_catch_offenders() -> None:
    samples = ["import pickle", "from pickle import loads", "x = eval(s)", "yaml.load(f)",
               "np.load(p, allow_pickle=True)"]
    for s in samples:
        assert any(p.search(s) for p, _ in UNSAFE), s
    for s in ["yaml.safe_load(f)", "model.eval()", "retrieval(x)"]:
        assert not any(p.search(s) for p, _ in UNSAFE), s
