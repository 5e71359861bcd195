"""procgraph.imageheader: PNG/JPEG sizes read from the header, checked before decoding."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from procgraph import Message, codec
from procgraph.errors import CodecError
from procgraph.imageheader import MAX_IMAGE_BYTES, check_image, image_dims, image_format


class ImgMsg(Message):
    image: np.ndarray


class _Bits:
    """A DEFLATE bit writer (values LSB first, Huffman codes MSB first)."""

    def __init__(self) -> None:
        self.acc, self.n, self.out = 0, 0, bytearray()

    def put(self, value: int, nbits: int) -> None:
        self.acc |= value << self.n
        self.n += nbits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def code(self, code: int, length: int) -> None:
        for i in reversed(range(length)):
            self.put((code >> i) & 1, 1)


def _zero_deflate(total: int) -> bytes:
    """``total`` zero bytes as one DEFLATE block of 2-bit (258, 1) matches (ratio ~1000)."""
    assert (total - 1) % 258 == 0
    bits = _Bits()
    bits.put(1, 1)  # last block
    bits.put(2, 2)  # dynamic Huffman
    bits.put(29, 5)  # 286 literal/length codes
    bits.put(0, 5)  # 1 distance code
    bits.put(14, 4)  # 18 code-length codes
    lengths = {18: 1, 1: 2, 2: 2}
    for s in (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1):
        bits.put(lengths.get(s, 0), 3)
    codes = {18: (0, 1), 1: (2, 2), 2: (3, 2)}
    # literal 0 and end of block: 2 bits, length 258 (285): 1 bit; distance 1: 1 bit
    for s, extra in ((2, None), (18, 127), (18, 106), (2, None), (18, 17), (1, None),
                     (1, None)):
        bits.code(*codes[s])
        if extra is not None:
            bits.put(extra, 7)
    bits.code(2, 2)  # the literal 0; then every match is 2 zero bits
    matches = (total - 1) // 258
    pending = bits.n + 2 * matches
    if pending < 8:  # the zero bits fit in the partial byte
        bits.n = pending
        body, tail = b"", bits
    else:
        body = bytes(bits.out) + bytes([bits.acc]) + bytes(pending // 8 - 1)
        tail = _Bits()
        tail.n = pending % 8
    tail.code(3, 2)  # end of block
    tail.put(0, (8 - tail.n) % 8)
    return body + bytes(tail.out)  # (when the bits fit, tail.out holds the header too)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid RGBA PNG of zeros, ~1000x smaller than the bitmap it decodes to."""
    total = height * (1 + 4 * width)
    stream = b"\x78\xda" + _zero_deflate(total) + struct.pack(">I", ((total % 65521) << 16) | 1)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream)
            + _chunk(b"IEND", b""))


def encoded(ext: str, arr: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, arr, list(params))
    assert ok
    return buf.tobytes()


def test_png_bomb_helper_is_a_real_png() -> None:
    small = png_bomb(6, 31)
    out = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape == (31, 6, 4) and not out.any()
    assert image_dims(small) == (31, 6, 4, 8)


@pytest.mark.parametrize(("shape", "dtype"), [
    ((4, 5), "u1"), ((4, 5, 3), "u1"), ((4, 5, 4), "u1"), ((4, 5), "u2"), ((4, 5, 3), "u2"),
    ((4, 5, 4), "<u2")])
def test_png_written_by_opencv_passes(shape: tuple[int, ...], dtype: str) -> None:
    png = encoded(".png", np.zeros(shape, dtype))
    channels = shape[2] if len(shape) == 3 else 1
    assert image_dims(png) == (4, 5, channels, 8 * np.dtype(dtype).itemsize)
    assert image_format(png) == "png"
    check_image(png, shape, dtype, "png")
    check_image(memoryview(png), list(shape), np.dtype(dtype))


@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 3)])
@pytest.mark.parametrize("progressive", [0, 1])
def test_jpeg_written_by_opencv_passes(shape: tuple[int, ...], progressive: int) -> None:
    jpg = encoded(".jpg", np.zeros(shape, "u1"), cv2.IMWRITE_JPEG_PROGRESSIVE, progressive)
    assert image_dims(jpg) == (7, 9, shape[2] if len(shape) == 3 else 1, 8)
    check_image(jpg, shape, "u1", "jpeg")


@pytest.mark.parametrize(("shape", "dtype", "says"), [
    ((8, 8), "u1", "height, width"),
    ((5, 4), "u1", "height, width"),
    ((4, 5, 3), "u1", "channel"),
    ((4, 5), "u2", "uint8"),
    ((4, 5), "i1", "uint8"),
    ((4, 5, 1, 1), "u1", "(h, w)"),
])
def test_declared_shape_or_dtype_that_differs_is_refused(shape: tuple[int, ...], dtype: str,
                                                         says: str) -> None:
    png = encoded(".png", np.zeros((4, 5), "u1"))
    with pytest.raises(CodecError, match=says):
        check_image(png, shape, dtype)


def test_format_other_than_declared_is_refused() -> None:
    with pytest.raises(CodecError, match="png file, declared jpeg"):
        check_image(encoded(".png", np.zeros((4, 5), "u1")), (4, 5), "u1", "jpeg")


@pytest.mark.parametrize("payload", [
    b"", b"\x89PNG", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDX" + bytes(17),
    b"\xff\xd8\xff\xe0 not really a jpeg", b"\xff\xd8\xff\xd9", b"\xff\xd8\xff\xda\x00\x08",
    b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03",  # height 0: given after the scan
    b"\xff\xd8\xff\xe0\x00\x01", b"GIF89a....", b"BM" + bytes(60), b"RIFF\x00\x00\x00\x00WEBP",
])
def test_unreadable_header_raises_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        image_dims(payload)
    with pytest.raises(CodecError):
        check_image(payload, (4, 4), "u1")


def test_bmp_declared_as_png_is_refused() -> None:
    """OpenCV picks the decoder from the bytes: a BMP said to be a PNG must not reach it."""
    bmp = encoded(".bmp", np.zeros((4, 4), "u1"))
    with pytest.raises(CodecError, match="not a PNG or JPEG"):
        check_image(bmp, (4, 4), "u1", "png")


def test_jpeg_header_after_large_app_segments_is_found() -> None:
    jpg = encoded(".jpg", np.zeros((3, 2), "u1"))
    app = b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533)
    padded = jpg[:2] + app * 3 + b"\xff\xff" + jpg[2:]  # with a fill byte too
    assert image_dims(padded) == (3, 2, 1, 8)


def test_matching_header_over_the_byte_cap_is_refused() -> None:
    bomb = png_bomb(16000, 16163)
    assert image_dims(bomb) == (16163, 16000, 4, 8)
    assert MAX_IMAGE_BYTES < 16163 * 16000 * 4
    with pytest.raises(CodecError, match="over the limit"):
        check_image(bomb, (16163, 16000, 4), "u1")


def test_item04_png_bomb_declared_8x8_is_refused_before_decoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9 item 4: a ~1 MB PNG declared as shape [8,8] (1 GB bitmap) is never decoded."""
    bomb = png_bomb(16000, 16163)
    assert len(bomb) < 1_010_000
    calls: list[int] = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    header = (b'{"v":1,"type":"CdcPng","data":{},'
              b'"arrays":{"image":{"dtype":"|u1","shape":[8,8],"encoding":"png"}}}')
    with pytest.raises(CodecError, match="16163x16000"):
        codec.decode({b"h": header, b"a:image": bomb}, ImgMsg)
    assert calls == [], "cv2.imdecode ran on an image whose header does not match its shape"
