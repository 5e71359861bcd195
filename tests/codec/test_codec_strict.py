"""The reader follows docs/wire-format.md strictly: UTF-8 only, strict JSON types, bounded
integers and headers; whatever fails is a CodecError (so the entry is dead-lettered)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from procgraph import Message, codec
from procgraph.errors import CodecError


class StrictItem(Message):
    n: int
    f: float = 0.0
    s: str = ""
    flag: bool = False


def header(**over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"v": 1, "type": "StrictItem", "type_version": 1, "id": "i", "key": "k",
                         "ts_ns": 5, "trace": [{"agent": "a", "replica": 0, "in_ns": 1,
                                                "out_ns": 2}],
                         "data": {"n": 1, "f": 1.5, "s": "x", "flag": True}, "arrays": {}}
    h.update(over)
    return h


def data(**over: Any) -> dict[str, Any]:
    return {**header()["data"], **over}


def hop(**over: Any) -> list[dict[str, Any]]:
    return [{**header()["trace"][0], **over}]


def decode_text(text: str | bytes) -> Message:
    raw = text.encode() if isinstance(text, str) else text
    return codec.decode({b"h": raw}, StrictItem)


def test_valid_header_decodes() -> None:
    msg = decode_text(json.dumps(header(key="😀\ud83d\ude00", data=data(f=2, s="é"))))
    assert isinstance(msg, StrictItem)
    assert (msg.key, msg.f, msg.s, msg.n, msg.flag) == ("😀😀", 2.0, "é", 1, True)


TEXT = json.dumps(header())


@pytest.mark.parametrize(("raw", "says"), [
    (TEXT.encode("utf-16"), "not UTF-8"),
    (TEXT.encode("utf-16-le"), "not UTF-8|not valid JSON"),  # ASCII as UTF-16: NULs
    (TEXT.encode("utf-32"), "not UTF-8"),
    (TEXT.encode("utf-32-be"), "not UTF-8|not valid JSON"),
    (TEXT.replace('"k"', '"k\\ud800"').encode(), "lone surrogate"),
    (TEXT.replace('"k"', '"\\udc00k"').encode(), "lone surrogate"),
    (TEXT.replace('"x"', '"\\ud83d"').encode(), "lone surrogate"),
    (TEXT.replace('"k"', '"\xed\xa0\xbd\xed\xb8\x80"').encode("latin-1"), "not UTF-8"),  # CESU-8
    (TEXT.replace('"k"', '"k"\n').encode("utf-8-sig"), "not valid JSON"),
], ids=["utf16-bom", "utf16le", "utf32-bom", "utf32be", "escape-high", "escape-low",
        "escape-in-data", "cesu8", "utf8-bom"])
def test_item03_non_utf8_and_surrogates_are_refused(raw: bytes, says: str) -> None:
    """Issue 9 item 3: UTF-16/32 headers, CESU-8 surrogates and lone \\ud800 escapes are
    refused; "1"/true/1.0 are not coerced to int (envelope and data fields)."""
    with pytest.raises(CodecError, match=says):
        decode_text(raw)


@pytest.mark.parametrize("h", [
    header(data=data(n="1")), header(data=data(n=True)), header(data=data(n=1.0)),
    header(data=data(f="1.5")), header(data=data(f=True)), header(data=data(s=1)),
    header(data=data(flag=1)), header(data=data(flag="true")),
    header(ts_ns="5"), header(ts_ns=True), header(ts_ns=5.0), header(key=1), header(id=7),
    header(trace=hop(replica=True)), header(trace=hop(in_ns="1")), header(trace="[]"),
], ids=lambda h: json.dumps({k: h[k] for k in ("data", "ts_ns", "key", "id", "trace")})[:90])
def test_item03_no_type_coercion(h: dict[str, Any]) -> None:
    with pytest.raises(CodecError, match="does not validate"):
        decode_text(json.dumps(h))


@pytest.mark.parametrize("h", [
    header(ts_ns=-1), header(ts_ns=2**63), header(trace=hop(out_ns=2**64)),
    header(trace=hop(replica=-1)),
])
def test_envelope_integers_out_of_range_are_refused(h: dict[str, Any]) -> None:
    with pytest.raises(CodecError, match="out of range"):
        decode_text(json.dumps(h))


@pytest.mark.parametrize("where", ["ts_ns", "v", "data"])
def test_huge_integer_raises_codec_error(where: str) -> None:
    huge = "9" * 5000
    text = {"ts_ns": TEXT.replace('"ts_ns": 5', f'"ts_ns": {huge}'),
            "v": TEXT.replace('"v": 1', f'"v": {huge}'),
            "data": TEXT.replace('"n": 1', f'"n": -{huge}')}[where]
    assert huge in text
    with pytest.raises(CodecError, match=r"5000 digits|5001 digits"):
        decode_text(text)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_nan_infinity_and_overflowing_floats_are_refused(number: str) -> None:
    with pytest.raises(CodecError, match=r"NaN|out of range"):
        decode_text(TEXT.replace('"f": 1.5', f'"f": {number}'))


def test_header_over_the_cap_is_refused_before_parsing() -> None:
    raw = b'{"v":1,"s":"' + b"a" * codec.MAX_HEADER_BYTES + b'"}'
    with pytest.raises(CodecError, match=f"over the limit of {codec.MAX_HEADER_BYTES}"):
        decode_text(raw)


class StrictFrame(Message):
    img: np.ndarray


def test_error_messages_quote_outside_values_escaped_and_capped() -> None:
    bad = [header(type="StrictFrame", arrays={"img": {"dtype": "\x1b[31m" + "x" * 10_000,
                                                       "shape": [1]}}),
           header(type="StrictFrame", arrays={"img": {"dtype": "<u1", "shape": [[1]] * 5000}}),
           header(type="StrictFrame", arrays={"img": {"dtype": "<u1", "shape": [1],
                                                       "encoding": "\n" * 5000}}),
           {"v": "\x1b[2J" * 5000}]
    for h in bad:
        with pytest.raises(CodecError) as err:
            codec.decode({b"h": json.dumps(h).encode()}, StrictFrame)
        text = str(err.value)
        assert len(text) < 300 and "\x1b" not in text and "\n" not in text, text


class PairItem(Message):
    """A field JSON has no type for (a tuple travels as an array): checked from the text."""

    n: int
    pair: tuple[int, int] = (0, 0)


def decode_pair(**data_fields: Any) -> Message:
    text = json.dumps(header(type="PairItem", data=data_fields))
    return codec.decode({b"h": text.encode()}, PairItem)


def test_fields_json_has_types_for_are_checked_in_one_pass_others_from_the_text() -> None:
    assert codec._strict_from_parsed(StrictItem)  # int, float, str, bool, the envelope
    assert not codec._strict_from_parsed(PairItem)
    msg = decode_pair(n=1, pair=[3, 4])
    assert isinstance(msg, PairItem) and msg.pair == (3, 4)


@pytest.mark.parametrize("fields", [{"n": "1"}, {"n": 1, "pair": ["3", 4]}, {"n": 1, "pair": 5}],
                         ids=["n-string", "pair-string", "pair-number"])
def test_a_field_checked_from_the_text_is_as_strict(fields: dict[str, Any]) -> None:
    with pytest.raises(CodecError, match="does not validate as PairItem/v1: data"):
        decode_pair(**fields)


def test_a_bad_data_field_is_named_where_it_sits_in_the_header() -> None:
    with pytest.raises(CodecError, match=r"StrictItem/v1: data\.n: Input should be a valid "
                                         r"integer"):
        decode_text(json.dumps(header(data=data(n="1"))))
