"""Pixel formats, previews and JPEG: the one place images are converted, for every agent.

Cameras, the classifier and the HMI all turn frames into something else (8-bit BGR for a
screen, float tensors for a model, small JPEGs for previews). They do it here, so that one
pixel format means the same picture everywhere.

Pixel formats carry GenICam PFNC names (see :data:`PIXEL_FORMATS`):

- ``Mono8/10/12/14/16``: ``(H, W)``; uint8 for 8 bits, uint16 otherwise, values not rescaled
  (a ``Mono12`` pixel is 0..4095).
- ``Bayer{RG,GR,BG,GB}{8,10,12,14,16}``: ``(H, W)`` raw mosaics; the two letters name the top-left
  2x2 cell in PFNC order (``BayerRG``: R G on the first row, G B on the second).
- ``RGB*``, ``BGR*`` ``(H, W, 3)``, ``RGBa*``, ``BGRa*`` ``(H, W, 4)`` in the channel order of
  the name (8 to 16 bits); the alpha channel is dropped by every conversion.
- packed formats: ``Mono10p``/``Mono12p`` and ``Bayer*10p``/``Bayer*12p`` (PFNC: pixels packed
  LSB first into a continuous bit stream), ``Mono10Packed``/``Mono12Packed`` and
  ``Bayer*10Packed``/``Bayer*12Packed`` (the older GigE Vision packing, two pixels in 3 bytes).
- plain arrays: ``pixel_format`` ``None`` or ``""``: ``(H, W)`` is mono, ``(H, W, 3)`` BGR,
  ``(H, W, 4)`` BGRa (OpenCV's conventions), bit depth from the dtype.

How packed images travel: a :class:`~procgraph.agents.messages.Frame` is self-describing, so
sources unpack. A packed buffer becomes an unpacked uint16 ``(H, W)`` image with the unpacked
format name (``Mono12p`` -> ``Mono12``), with :func:`unpack` and :func:`unpacked_format`. The
conversions below accept packed names anyway: an ``(H, B)`` uint8 array is taken as packed rows
(each row its own bit stream) and unpacked; a uint16 array is taken as already unpacked.

Integer images of ``n`` bits are scaled to 8 bits by a shift (``Mono12 >> 4``) and to floats by
``255 / (2**n - 1)``; values above the bit depth saturate. Float images are taken as 0..1.
Errors are :class:`ImageFormatError`, a ``ValueError`` that names the format and the shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from procgraph import ProcgraphError
from procgraph.errors import CodecError
from procgraph.imageheader import MAX_IMAGE_BYTES, image_dims

__all__ = [
    "PIXEL_FORMATS", "ColorOrder", "ImageFormatError", "PixelFormat", "bit_depth", "channels",
    "decode_jpeg", "encode_jpeg", "is_color", "is_packed", "pixel_format_of", "preview",
    "to_bgr8", "to_color", "to_float", "to_gray8", "unpack", "unpacked_format",
]

Layout = Literal["mono", "bayer", "rgb", "bgr", "rgba", "bgra"]
Packing = Literal["", "pfnc", "gige"]
ColorOrder = Literal["gray", "rgb", "bgr"]


class ImageFormatError(ProcgraphError, ValueError):
    """An image does not match its pixel format, or the format is not supported."""


@dataclass(frozen=True)
class PixelFormat:
    """What a PFNC pixel format name means for the array that carries it.

    Attributes:
        name: the PFNC name (``Mono12p``).
        layout: ``mono``, ``bayer`` (raw mosaic), ``rgb``, ``bgr``, ``rgba`` or ``bgra``.
        bits: significant bits per value (8 to 16).
        packing: ``""`` (one value per array element), ``"pfnc"`` (``...p``: LSB-first bit
            stream) or ``"gige"`` (``...Packed``: GigE Vision, 2 pixels in 3 bytes).
        pattern: the Bayer cell read row by row (``"RGGB"`` for ``BayerRG``), else ``""``.
    """

    name: str
    layout: Layout
    bits: int
    packing: Packing = ""
    pattern: str = ""

    @property
    def channels(self) -> int:
        """Channels of the (unpacked) array: 1 for mono and Bayer, 3 or 4 for colour."""
        return {"mono": 1, "bayer": 1, "rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4}[self.layout]

    @property
    def unpacked(self) -> str:
        """Name of the same format without packing (``Mono12p`` -> ``Mono12``)."""
        if not self.packing:
            return self.name
        base = self.name.removesuffix("Packed") if self.packing == "gige" else self.name[:-1]
        return base


def _build_formats() -> dict[str, PixelFormat]:
    table: dict[str, PixelFormat] = {}

    def add(name: str, layout: Layout, bits: int, packing: Packing = "", pattern: str = "") -> None:
        table[name] = PixelFormat(name, layout, bits, packing, pattern)

    cells = {"RG": "RGGB", "GR": "GRBG", "BG": "BGGR", "GB": "GBRG"}
    for bits in (8, 10, 12, 14, 16):
        add(f"Mono{bits}", "mono", bits)
        for two, cell in cells.items():
            add(f"Bayer{two}{bits}", "bayer", bits, pattern=cell)
        for prefix, layout in (("RGB", "rgb"), ("BGR", "bgr"), ("RGBa", "rgba"), ("BGRa", "bgra")):
            add(f"{prefix}{bits}", layout, bits)  # type: ignore[arg-type]
    for bits in (10, 12):
        add(f"Mono{bits}p", "mono", bits, "pfnc")
        add(f"Mono{bits}Packed", "mono", bits, "gige")
        for two, cell in cells.items():
            add(f"Bayer{two}{bits}p", "bayer", bits, "pfnc", cell)
            add(f"Bayer{two}{bits}Packed", "bayer", bits, "gige", cell)
    return table


#: Every supported pixel format by PFNC name (``"Mono12p" in PIXEL_FORMATS``).
PIXEL_FORMATS: Mapping[str, PixelFormat] = _build_formats()
_BY_LOWER = {name.lower(): info for name, info in PIXEL_FORMATS.items()}

# OpenCV's own Bayer names are shifted by one pixel; its RGGB-style aliases name the top-left
# cell as PFNC does (checked against synthetic mosaics in tests/agents/imaging).
_BAYER_CV = {
    cell: {order: getattr(cv2, f"COLOR_Bayer{cell}2{order.upper()}") for order in ("gray", "bgr",
                                                                                 "rgb")}
    for cell in ("RGGB", "GRBG", "BGGR", "GBRG")
}


def _format(pixel_format: str) -> PixelFormat:
    info = PIXEL_FORMATS.get(pixel_format) or _BY_LOWER.get(pixel_format.lower())
    if info is None:
        raise ImageFormatError(
            f"unsupported pixel format {pixel_format!r}; use a Mono, Bayer, RGB/BGR or RGBa/BGRa "
            "format (8-16 bits, or packed Mono10p/Mono12p/Mono12Packed)"
        )
    return info


def channels(pixel_format: str) -> int:
    """Channels of an image in ``pixel_format`` once unpacked: 1 (mono, Bayer), 3 or 4."""
    return _format(pixel_format).channels


def bit_depth(pixel_format: str) -> int:
    """Significant bits per value of ``pixel_format`` (``Mono12p`` -> 12)."""
    return _format(pixel_format).bits


def is_color(pixel_format: str) -> bool:
    """True for formats that hold colour (Bayer, RGB, BGR, RGBa, BGRa)."""
    return _format(pixel_format).layout != "mono"


def is_packed(pixel_format: str) -> bool:
    """True for packed formats (``Mono12p``, ``Mono12Packed``, ``BayerRG10p``...)."""
    return bool(_format(pixel_format).packing)


def unpacked_format(pixel_format: str) -> str:
    """The name a packed format has once unpacked (``Mono12p`` -> ``Mono12``); others as is."""
    return _format(pixel_format).unpacked


def pixel_format_of(image: np.ndarray) -> str:
    """The PFNC name of a plain uint8/uint16 array: ``Mono*``, ``BGR*`` or ``BGRa*`` by shape.

    OpenCV's conventions: ``(H, W)`` grey, ``(H, W, 3)`` BGR, ``(H, W, 4)`` BGRA.
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageFormatError(f"a plain {image.dtype} image has no PFNC name; use uint8/uint16")
    return _plain_format(image)


def _plain_format(image: np.ndarray) -> str:
    """Like :func:`pixel_format_of` for any dtype: 8 bits for uint8 and bool, else 16."""
    bits = 8 if image.dtype in (np.uint8, np.bool_) else 16
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return f"Mono{bits}"
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return f"BGR{bits}" if image.shape[2] == 3 else f"BGRa{bits}"
    raise ImageFormatError(f"an image of shape {image.shape} is neither (H, W), (H, W, 3) nor "
                           "(H, W, 4)")


# ---------------------------------------------------------------------------------------------
# Unpacking


def _unpack_rows(rows: np.ndarray, info: PixelFormat, width: int) -> np.ndarray:
    """Unpack each row of ``rows`` (uint8, one packed bit stream per row) into ``width`` values."""
    group_px, group_bytes = (4, 5) if (info.bits, info.packing) == (10, "pfnc") else (2, 3)
    groups = -(-width // group_px)
    need = groups * group_bytes
    height = rows.shape[0]
    if rows.shape[1] < -(-width * info.bits // 8):
        raise ImageFormatError(f"{info.name}: {rows.shape[1]} bytes per row cannot hold {width} px")
    if rows.shape[1] < need:
        rows = np.pad(rows, ((0, 0), (0, need - rows.shape[1])))
    b = rows[:, :need].reshape(height, groups, group_bytes).astype(np.uint16)
    if info.packing == "pfnc" and info.bits == 10:
        px = np.stack([b[..., 0] | (b[..., 1] & 0x03) << 8, b[..., 1] >> 2 | (b[..., 2] & 15) << 6,
                       b[..., 2] >> 4 | (b[..., 3] & 0x3F) << 4, b[..., 3] >> 6 | b[..., 4] << 2],
                      -1)
    elif info.packing == "pfnc":  # 12p: LSB first
        px = np.stack([b[..., 0] | (b[..., 1] & 0x0F) << 8, b[..., 1] >> 4 | b[..., 2] << 4], -1)
    elif info.bits == 12:  # GigE Mono12Packed: high bits in bytes 0 and 2, low nibbles in byte 1
        px = np.stack([b[..., 0] << 4 | (b[..., 1] & 0x0F), b[..., 2] << 4 | b[..., 1] >> 4], -1)
    else:  # GigE Mono10Packed: low 2 bits in bits 0-1 and 4-5 of byte 1
        px = np.stack([b[..., 0] << 2 | (b[..., 1] & 0x03), b[..., 2] << 2 | (b[..., 1] >> 4) & 3],
                      -1)
    return np.ascontiguousarray(px.reshape(height, groups * group_px)[:, :width])


def unpack(data: bytes | np.ndarray, pixel_format: str, width: int, height: int) -> np.ndarray:
    """Unpack a packed image buffer into a uint16 ``(height, width)`` array.

    ``data`` holds the packed bytes of the whole image as one bit stream (how GenTL producers
    deliver ``Mono12p``), flat or in rows; lines may start mid-byte. The result's format is
    :func:`unpacked_format` of ``pixel_format``.
    """
    info = _format(pixel_format)
    if not info.packing:
        raise ImageFormatError(f"{pixel_format!r} is not a packed format; nothing to unpack")
    raw = isinstance(data, bytes | bytearray | memoryview)
    flat = np.frombuffer(data, np.uint8) if raw else np.asarray(data).reshape(-1)
    if flat.dtype != np.uint8:
        raise ImageFormatError(f"packed {pixel_format} data must be bytes, not {flat.dtype}")
    need = -(-width * height * info.bits // 8)
    if flat.size < need:
        raise ImageFormatError(
            f"{pixel_format} {width}x{height} needs {need} bytes; the buffer has {flat.size}"
        )
    if (width * info.bits) % 8 == 0:  # whole bytes per line: unpack line by line
        return _unpack_rows(flat[:need].reshape(height, -1), info, width)
    return _unpack_rows(flat[None, :need], info, width * height).reshape(height, width)


# ---------------------------------------------------------------------------------------------
# Conversions


def _resolve(image: np.ndarray, pixel_format: str | None) -> tuple[np.ndarray, PixelFormat]:
    """The unpacked image, checked against its format, in a dtype OpenCV takes."""
    image = np.asarray(image)
    info = _format(pixel_format) if pixel_format else _format(_plain_format(image))
    if info.packing:
        if image.dtype == np.uint8 and image.ndim == 2:
            width = image.shape[1] * 8 // info.bits
            image = _unpack_rows(image, info, width)
        info = _format(info.unpacked)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    want = info.channels
    if image.shape[2:] != (() if want == 1 else (want,)) or image.ndim not in (2, 3):
        raise ImageFormatError(
            f"cannot convert pixel format {info.name!r} with shape {image.shape}: "
            f"{info.name} images are {'(H, W)' if want == 1 else f'(H, W, {want})'}"
        )
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * np.uint8(255)
    elif image.dtype.kind == "f" and info.layout == "bayer":  # OpenCV demosaics integers only
        image = (np.clip(image, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
        info = _format(f"Bayer{info.pattern[:2]}16")
    elif image.dtype.kind == "f":
        image = image.astype(np.float32, copy=False)
    elif image.dtype.kind in "ui" and image.dtype not in (np.uint8, np.uint16):
        image = np.clip(image, 0, 65535).astype(np.uint16)
    elif image.dtype.kind not in "ui":
        raise ImageFormatError(f"cannot convert {info.name} images of dtype {image.dtype}")
    return image, info


def _cvt(image: np.ndarray, code: int) -> np.ndarray:
    return np.asarray(cv2.cvtColor(image, code))


_COLOR_CV = {
    ("rgb", "gray"): cv2.COLOR_RGB2GRAY, ("bgr", "gray"): cv2.COLOR_BGR2GRAY,
    ("rgba", "gray"): cv2.COLOR_RGBA2GRAY, ("bgra", "gray"): cv2.COLOR_BGRA2GRAY,
    ("rgb", "bgr"): cv2.COLOR_RGB2BGR, ("bgr", "rgb"): cv2.COLOR_BGR2RGB,
    ("rgba", "bgr"): cv2.COLOR_RGBA2BGR, ("rgba", "rgb"): cv2.COLOR_RGBA2RGB,
    ("bgra", "bgr"): cv2.COLOR_BGRA2BGR, ("bgra", "rgb"): cv2.COLOR_BGRA2RGB,
}


def _layout(image: np.ndarray, info: PixelFormat, order: ColorOrder) -> np.ndarray:
    """``image`` (already resolved) as gray ``(H, W)`` or rgb/bgr ``(H, W, 3)``, same depth."""
    if info.layout == "mono":
        return image if order == "gray" else _cvt(image, cv2.COLOR_GRAY2BGR)
    if info.layout == "bayer":
        return _cvt(image, _BAYER_CV[info.pattern][order])
    code = _COLOR_CV.get((info.layout, order))
    return np.ascontiguousarray(image) if code is None else _cvt(image, code)


def _to8(image: np.ndarray, bits: int) -> np.ndarray:
    """Scale to uint8: integers by a shift of ``bits - 8`` (saturating), floats from 0..1."""
    if image.dtype == np.uint8:
        return image  # an 8-bit array holds 8 bits whatever the name says
    if image.dtype == np.float32:
        return np.asarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    shift = max(min(bits, 8 * image.dtype.itemsize) - 8, 0)
    # floor(x / 2**shift) saturated to 0..255, in one pass: round(x * a + b) with b between
    # -0.5 and a - 0.5 rounds down exactly (checked against the shift for every uint16 value)
    alpha = 1.0 / (1 << shift)
    return np.asarray(
        cv2.convertScaleAbs(image, alpha=alpha, beta=alpha / 2 - 0.5 if shift else 0.0)
    )


def to_color(image: np.ndarray, pixel_format: str | None, color: ColorOrder) -> np.ndarray:
    """Convert to ``gray`` ``(H, W)`` or ``rgb``/``bgr`` ``(H, W, 3)`` keeping the bit depth.

    Packed input comes out unpacked (uint16), Bayer demosaiced, alpha dropped. Use it to
    crop or resize before scaling with :func:`to_float` (format name :func:`unpacked_format`).
    """
    img, info = _resolve(image, pixel_format)
    return _layout(img, info, color)


def to_bgr8(image: np.ndarray, pixel_format: str | None) -> np.ndarray:
    """Any supported image as 8-bit BGR ``(H, W, 3)``, for display and JPEG."""
    img, info = _resolve(image, pixel_format)
    return _layout(_to8(img, info.bits), info, "bgr")


def to_gray8(image: np.ndarray, pixel_format: str | None) -> np.ndarray:
    """Any supported image as 8-bit grey ``(H, W)`` (colour by OpenCV's luma weights)."""
    img, info = _resolve(image, pixel_format)
    return _layout(_to8(img, info.bits), info, "gray")


def to_float(image: np.ndarray, pixel_format: str | None, color: ColorOrder = "gray") -> np.ndarray:
    """Any supported image as float32 ``(H, W, C)`` (C 1 for gray, 3 for rgb/bgr) on 0..255.

    The scale is the same whatever the bit depth: full scale (255 for 8 bits, 4095 for 12,
    65535 for 16) becomes 255.0, so a model sees the same numbers from every camera.
    """
    img, info = _resolve(image, pixel_format)
    out = _layout(img, info, color)
    if out.dtype == np.float32:
        res: np.ndarray = np.clip(out, 0.0, 1.0) * np.float32(255.0)
    else:
        full = float(2 ** min(info.bits, 8 * out.dtype.itemsize) - 1)
        res = out.astype(np.float32)
        if full != 255.0:
            res *= np.float32(255.0 / full)
            np.minimum(res, np.float32(255.0), out=res)
    return res[:, :, None] if res.ndim == 2 else res


def preview(image: np.ndarray, pixel_format: str | None, width: int) -> tuple[np.ndarray, float]:
    """A small 8-bit copy for screens: grey ``(h, w)`` for mono, BGR ``(h, w, 3)`` for colour.

    Downscaled (``cv2.INTER_AREA``) to at most ``width`` pixels wide, never upscaled. Returns the
    image and the scale used (``preview width / image width``, 1.0 when not downscaled).
    """
    if width <= 0:
        raise ValueError(f"preview width must be positive; got {width}")
    img, info = _resolve(image, pixel_format)
    img = _to8(img, info.bits)
    order: ColorOrder = "gray" if info.layout == "mono" else "bgr"
    if info.layout == "bayer":
        img = _layout(img, info, order)  # demosaic at full size, then shrink
    h, w = img.shape[:2]
    scale = min(1.0, width / w)
    if scale < 1.0:
        img = _shrink(img, (max(1, int(w * scale)), max(1, int(h * scale))))
    if info.layout != "bayer":
        img = _layout(img, info, order)
    return np.ascontiguousarray(img), scale


def _shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.INTER_AREA`` to ``size``; first by the largest whole factor that divides the image
    (OpenCV's fast path, about 3x faster on a 5 MP frame), then the rest of the way."""
    h, w = img.shape[:2]
    k = min(w // size[0], h // size[1])
    while k >= 2 and (w % k or h % k):
        k -= 1
    if k >= 2:
        img = cv2.resize(img, (w // k, h // k), interpolation=cv2.INTER_AREA)
    if img.shape[1] != size[0] or img.shape[0] != size[1]:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.asarray(img)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of an 8-bit grey ``(H, W)`` or BGR ``(H, W, 3)`` image (see :func:`preview`)."""
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))
    ):
        raise ImageFormatError(
            f"JPEG needs 8-bit grey or BGR; got {image.dtype} {image.shape} (use to_bgr8 or "
            "preview first)"
        )
    if not 0 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 0..100; got {quality}")
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV fails only on impossible input
        raise ImageFormatError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return bytes(buf.tobytes())


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes into grey ``(H, W)`` or BGR ``(H, W, 3)`` uint8.

    The size in the JPEG's header is checked first: an image that would decode to more than
    ``procgraph.imageheader.MAX_IMAGE_BYTES`` is refused before anything is decompressed.
    """
    try:
        h, w, c, _ = image_dims(data)  # header only: nothing decompressed yet
    except CodecError as exc:
        raise ImageFormatError(f"not a JPEG image: {exc}") from exc
    if h * w * max(c, 3) > MAX_IMAGE_BYTES:
        raise ImageFormatError(f"a JPEG of {w}x{h} is over {MAX_IMAGE_BYTES} bytes decoded")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageFormatError("not a JPEG image OpenCV can decode")
    return np.asarray(img)
