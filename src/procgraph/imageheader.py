"""The size of a PNG or JPEG image, read from its header before anything is decoded.

A compressed image can expand a thousandfold: a 1 MB PNG can hold a 1 GB bitmap. So before
an encoded image that came from outside (a stream entry, an HMI preview) is decoded,
:func:`check_image` compares its header (PNG ``IHDR``, JPEG ``SOFn``) with the shape and
dtype the sender declared, and raises :class:`~procgraph.errors.CodecError` when they differ,
when the bytes are neither PNG nor JPEG, or when the image would decode to more than
:data:`MAX_IMAGE_BYTES`. Only the header is read: no pixel is decompressed.

This is a public module: agents may use it (e.g. ``check_image(payload, (480, 640, 3), "u1")``
before ``cv2.imdecode``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from procgraph.errors import CodecError

#: no checked image may decode to more bytes than this (a raw array's broker limit, 512 MiB)
MAX_IMAGE_BYTES = 512 * 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (samples per pixel in the file, channel counts OpenCV decodes it to)
_PNG_COLOUR: dict[int, tuple[int, frozenset[int]]] = {
    0: (1, frozenset({1})),  # grey
    2: (3, frozenset({3})),  # RGB
    3: (3, frozenset({3, 4})),  # palette: RGB, or RGBA with a tRNS chunk
    4: (2, frozenset({2, 4})),  # grey + alpha (OpenCV gives BGRA)
    6: (4, frozenset({4})),  # RGBA
}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# JPEG start-of-frame markers (baseline, extended, progressive, lossless; not DHT/JPG/DAC)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# markers that stand alone (no length follows): TEM, RST0-7, SOI
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def image_format(payload: bytes | memoryview) -> str:
    """``"png"`` or ``"jpeg"`` from the first bytes; CodecError for anything else."""
    head = bytes(payload[:8])
    if head == _PNG_SIGNATURE:
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    raise CodecError(f"not a PNG or JPEG file (starts with {head[:8]!r})")


def _png_dims(data: memoryview) -> tuple[int, int, int, int]:
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        raise CodecError("PNG header unreadable: no IHDR chunk right after the signature")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_COLOUR or depth not in _PNG_DEPTHS[colour]:
        raise CodecError(f"PNG header unreadable: bit depth {depth}, colour type {colour}")
    if width == 0 or height == 0:
        raise CodecError(f"PNG header unreadable: {width}x{height} pixels")
    return height, width, _PNG_COLOUR[colour][0], depth


def _jpeg_dims(data: memoryview) -> tuple[int, int, int, int]:
    pos, end = 2, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            raise CodecError(f"JPEG header unreadable: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        if pos + 4 > end:
            break
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            raise CodecError(f"JPEG header unreadable: segment length {length} at byte {pos}")
        if marker in _SOF:
            if length < 8 or pos + 10 > end:
                break
            bits = data[pos + 4]
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            components = data[pos + 9]
            if height == 0 or width == 0 or components not in (1, 3, 4):
                raise CodecError(
                    f"JPEG header unreadable: {width}x{height} pixels, {components} components"
                    " (a height given only after the scan is not accepted)")
            return height, width, components, bits
        pos += 2 + length
    raise CodecError("JPEG header unreadable: no frame header (SOF) before the image data")


def image_dims(payload: bytes | memoryview) -> tuple[int, int, int, int]:
    """``(height, width, channels, bits per sample)`` of a PNG or JPEG, from its header.

    ``channels`` is the number of samples per pixel the file stores (PNG: grey 1, grey and
    alpha 2, RGB and palette 3, RGBA 4; JPEG: its component count). Nothing is decoded.
    Raises :class:`~procgraph.errors.CodecError` when the bytes are not a PNG or JPEG whose
    header can be read.
    """
    data = memoryview(payload).cast("B") if isinstance(payload, memoryview) else memoryview(
        payload)
    if image_format(data) == "png":
        return _png_dims(data)
    return _jpeg_dims(data)


def _decoded_channels(data: memoryview, fmt: str, samples: int) -> frozenset[int]:
    """The channel counts OpenCV's IMREAD_UNCHANGED may give for this file."""
    if fmt == "png":
        return _PNG_COLOUR[data[25]][1]  # the colour type byte of IHDR
    return frozenset({1}) if samples == 1 else frozenset({3}) if samples == 3 else frozenset(
        {3, 4})


def check_image(payload: bytes | memoryview, shape: Sequence[int], dtype: DTypeLike,
                encoding: str | None = None) -> None:
    """Raise CodecError unless the PNG/JPEG header matches the declared ``shape``/``dtype``.

    ``shape`` is ``(height, width)`` or ``(height, width, channels)``; ``dtype`` must be
    unsigned, one byte for up to 8 bits per sample and two for 16 (12-bit JPEG too). The
    channel count must be one the image decodes to with OpenCV's ``IMREAD_UNCHANGED`` (a
    palette PNG gives 3 or 4, grey with alpha 4). With ``encoding`` (``"png"``/``"jpeg"``)
    the file must be of that format. An image over :data:`MAX_IMAGE_BYTES` is refused even
    when it matches. Call it before decoding; nothing is decompressed.
    """
    data = memoryview(payload).cast("B") if isinstance(payload, memoryview) else memoryview(
        payload)
    fmt = image_format(data)
    if encoding is not None and fmt != encoding:
        raise CodecError(f"payload is a {fmt} file, declared {encoding}")
    height, width, samples, bits = image_dims(data)
    want = tuple(int(d) for d in shape)
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise CodecError(f"declared dtype {dtype!r} is not a numpy dtype") from exc
    if len(want) not in (2, 3):
        raise CodecError(f"an image has shape (h, w) or (h, w, c), declared {list(want)}")
    channels = want[2] if len(want) == 3 else 1
    got = f"{fmt} header says {height}x{width}, {bits}-bit"
    if want[:2] != (height, width):
        raise CodecError(f"{got}: does not decode to the declared shape {list(want)}"
                         " (height, width differ)")
    if channels not in _decoded_channels(data, fmt, samples):
        raise CodecError(f"{got}: does not decode to {channels} channel(s)")
    itemsize = 1 if bits <= 8 else 2
    if dt.kind != "u" or dt.itemsize != itemsize:
        raise CodecError(f"{got}: does not decode to {dt} (it gives uint{8 * itemsize})")
    nbytes = math.prod(want) * itemsize
    if nbytes > MAX_IMAGE_BYTES:
        raise CodecError(f"{got}: would decode to {nbytes} bytes, over the limit of"
                         f" {MAX_IMAGE_BYTES}")
