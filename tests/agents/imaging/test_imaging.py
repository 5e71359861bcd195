"""procgraph.agents.imaging against known images: packed bytes, Bayer mosaics, deep pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from procgraph.agents import imaging
from procgraph.agents.imaging import (
    PIXEL_FORMATS,
    ImageFormatError,
    bit_depth,
    channels,
    decode_jpeg,
    encode_jpeg,
    preview,
    to_bgr8,
    to_color,
    to_float,
    to_gray8,
    unpack,
    unpacked_format,
)

# --------------------------------------------------------------------------------------------
# the format table


def test_format_table_names_depths_and_channels() -> None:
    for name in (
        "Mono8",
        "Mono10",
        "Mono12",
        "Mono16",
        "Mono10p",
        "Mono12p",
        "Mono12Packed",
        "RGB8",
        "BGR8",
        "RGBa8",
        "BGRa8",
        "BGR16",
    ):
        assert name in PIXEL_FORMATS
    for cell in ("RG", "GR", "BG", "GB"):
        for bits in (8, 10, 12, 16):
            assert bit_depth(f"Bayer{cell}{bits}") == bits
            assert channels(f"Bayer{cell}{bits}") == 1
    assert [bit_depth(f) for f in ("Mono8", "Mono10p", "Mono12Packed", "Mono16")] == [8, 10, 12, 16]
    assert [channels(f) for f in ("Mono12p", "RGB8", "BGR8", "RGBa8", "BGRa8")] == [1, 3, 3, 4, 4]
    assert unpacked_format("Mono12p") == "Mono12"
    assert unpacked_format("Mono12Packed") == "Mono12"
    assert unpacked_format("BayerRG10p") == "BayerRG10"
    assert unpacked_format("Mono8") == "Mono8"
    assert imaging.is_packed("Mono10p") and not imaging.is_packed("Mono10")
    assert imaging.is_color("BayerGB8") and not imaging.is_color("Mono16")
    assert bit_depth("rgba8") == 8  # spelling of the case is forgiven
    with pytest.raises(ImageFormatError, match="unsupported pixel format 'YUV422_8'"):
        bit_depth("YUV422_8")


# --------------------------------------------------------------------------------------------
# packed formats: hand-built byte strings with known pixel values


def test_mono12p_is_lsb_first() -> None:
    # PFNC Mono12p: 0x123, 0x456 -> 23 | 6 1 | 45 (low nibble of byte 1 = high bits of pixel 0)
    img = unpack(b"\x23\x61\x45" * 2, "Mono12p", width=2, height=2)
    assert img.dtype == np.uint16 and img.tolist() == [[0x123, 0x456], [0x123, 0x456]]


def test_mono12packed_is_the_gige_layout() -> None:
    # GigE Mono12Packed: 0x123, 0x456 -> 12 | 6 3 | 45 (byte 1 holds both low nibbles)
    img = unpack(b"\x12\x63\x45", "Mono12Packed", width=2, height=1)
    assert img.tolist() == [[0x123, 0x456]]


def test_mono10p_four_pixels_in_five_bytes() -> None:
    img = unpack(b"\x01\xfc\x5f\x95\xaa", "Mono10p", width=4, height=1)
    assert img.tolist() == [[0x001, 0x3FF, 0x155, 0x2AA]]
    # GigE Mono10Packed: 0x2AB, 0x155 -> AA | 1 3 | 55
    assert unpack(b"\xaa\x13\x55", "Mono10Packed", 2, 1).tolist() == [[0x2AB, 0x155]]


def test_packed_lines_that_end_mid_byte() -> None:
    # Mono10p 3x2: 30 bits a line, the image is one continuous bit stream of 60 bits
    values = [[1, 2, 3], [1021, 1022, 1023]]
    stream = 0
    for i, v in enumerate(v for row in values for v in row):
        stream |= v << (10 * i)
    data = stream.to_bytes(8, "little")
    assert unpack(data, "Mono10p", width=3, height=2).tolist() == values
    # Mono12p with an odd width: 3 pixels = 4.5 bytes a line
    px = [0xABC, 0x123, 0xFFF, 0x000, 0x800, 0x00F]
    stream = sum(v << (12 * i) for i, v in enumerate(px))
    out = unpack(np.frombuffer(stream.to_bytes(9, "little"), np.uint8), "Mono12p", 3, 2)
    assert out.tolist() == [px[:3], px[3:]]


def test_unpack_errors() -> None:
    with pytest.raises(ImageFormatError, match="needs 6 bytes; the buffer has 3"):
        unpack(b"\x00\x00\x00", "Mono12p", width=2, height=2)
    with pytest.raises(ImageFormatError, match="not a packed format"):
        unpack(b"\x00", "Mono8", 1, 1)


def test_conversions_take_packed_rows_and_unpacked_images() -> None:
    rows = np.frombuffer(b"\xff\xff\xff\x00\x00\x80", np.uint8).reshape(2, 3)  # Mono12p 2x2
    assert to_gray8(rows, "Mono12p").tolist() == [[255, 255], [0, 0x80]]
    # a uint16 image named Mono12p was unpacked already (what harvesters hands out)
    deep = np.array([[4095, 16]], np.uint16)
    assert to_gray8(deep, "Mono12p").tolist() == [[255, 1]]
    expected = np.array([[255.0, 16 / 4095 * 255]])
    assert to_float(deep, "Mono12Packed")[..., 0] == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Bayer mosaics of a known colour

BGR = (50, 100, 200)  # the scene: R 200, G 100, B 50


def _mosaic(cell: str, bgr: tuple[int, int, int], dtype: type = np.uint8, shape=(8, 10)):
    """A sensor looking at one uniform colour, for the 2x2 cell ``cell`` (e.g. "RGGB")."""
    value = {"B": bgr[0], "G": bgr[1], "R": bgr[2]}
    m = np.zeros(shape, dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        m[dy::2, dx::2] = value[cell[k]]
    return m


@pytest.mark.parametrize(
    ("pfnc", "cell"),
    [
        ("BayerRG", "RGGB"),
        ("BayerGR", "GRBG"),
        ("BayerBG", "BGGR"),
        ("BayerGB", "GBRG"),
    ],
)
def test_bayer_patterns_give_the_scene_colour(pfnc: str, cell: str) -> None:
    bgr = to_bgr8(_mosaic(cell, BGR), f"{pfnc}8")
    assert bgr.shape == (8, 10, 3) and bgr.dtype == np.uint8
    assert bgr[2:-2, 2:-2].reshape(-1, 3).tolist() == [list(BGR)] * 24
    # 12-bit sensor, same scene: the same 8-bit colour
    deep = _mosaic(cell, tuple(v * 16 for v in BGR), np.uint16)  # type: ignore[arg-type]
    assert to_bgr8(deep, f"{pfnc}12")[4, 4].tolist() == list(BGR)
    assert to_float(deep, f"{pfnc}12", "rgb")[4, 4].tolist() == pytest.approx(
        [v * 16 * 255 / 4095 for v in BGR[::-1]]
    )
    # grey from a mosaic: the luma of the colour
    luma = 0.114 * BGR[0] + 0.587 * BGR[1] + 0.299 * BGR[2]
    assert to_gray8(_mosaic(cell, BGR), f"{pfnc}8")[4, 4] == pytest.approx(luma, abs=1)
    # packed Bayer arrives unpacked with its unpacked name
    assert to_bgr8(deep, f"{pfnc}12p")[4, 4].tolist() == list(BGR)


def test_bayer_preview_is_colour() -> None:
    small, scale = preview(_mosaic("RGGB", BGR, shape=(40, 80)), "BayerRG8", 20)
    assert small.shape == (10, 20, 3) and scale == 0.25
    assert small[5, 10].tolist() == pytest.approx(list(BGR), abs=2)


# --------------------------------------------------------------------------------------------
# bit depth, channel order, alpha


def test_deep_mono_scaled_to_8_bits() -> None:
    mono12 = np.array([[0, 16, 2048, 4095, 65535]], np.uint16)
    assert to_gray8(mono12, "Mono12").tolist() == [[0, 1, 128, 255, 255]]  # >> 4, saturating
    assert to_gray8(np.array([[1023, 4]], np.uint16), "Mono10").tolist() == [[255, 1]]
    assert to_gray8(np.array([[65535, 256]], np.uint16), "Mono16").tolist() == [[255, 1]]
    assert to_bgr8(np.full((2, 3), 4095, np.uint16), "Mono12").tolist() == [[[255] * 3] * 3] * 2
    f = to_float(np.array([[4095, 0], [1023, 512]], np.uint16), "Mono12")
    assert f.dtype == np.float32 and f.shape == (2, 2, 1)
    expected = np.array([[255.0, 0.0], [1023 * 255 / 4095, 512 * 255 / 4095]])
    assert f[..., 0] == pytest.approx(expected)
    assert to_float(np.array([[512]], np.uint16), "Mono10")[0, 0, 0] == pytest.approx(
        512 * 255 / 1023
    )
    assert to_float(np.array([[200]], np.uint8), "Mono8", "bgr")[0, 0].tolist() == [200.0] * 3


def test_rgb_and_bgr_order_and_alpha_dropped() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B G R
    rgb = bgr[..., ::-1].copy()
    alpha = np.full((2, 2, 1), 7, np.uint8)
    for image, fmt in (
        (bgr, "BGR8"),
        (rgb, "RGB8"),
        (np.concatenate([rgb, alpha], 2), "RGBa8"),
        (np.concatenate([bgr, alpha], 2), "BGRa8"),
        (bgr, None),
    ):
        assert to_bgr8(image, fmt)[0, 0].tolist() == [10, 20, 30], fmt
        assert to_color(image, fmt, "rgb")[0, 0].tolist() == [30, 20, 10], fmt
        assert to_float(image, fmt, "rgb")[1, 1].tolist() == [30.0, 20.0, 10.0], fmt
        assert to_gray8(image, fmt)[0, 0] == round(0.114 * 10 + 0.587 * 20 + 0.299 * 30), fmt
    deep = np.zeros((1, 1, 3), np.uint16)
    deep[..., 2] = 65535
    assert to_bgr8(deep, "BGR16").tolist() == [[[0, 0, 255]]]
    assert to_bgr8(deep[..., ::-1], "RGB16").tolist() == [[[0, 0, 255]]]


def test_plain_arrays_and_wrong_shapes() -> None:
    assert to_bgr8(np.full((2, 2), 9, np.uint8), None).shape == (2, 2, 3)
    assert to_gray8(np.full((2, 2), 256, np.uint16), "").tolist() == [[1, 1], [1, 1]]  # Mono16
    assert to_gray8(np.full((2, 2, 1), 5, np.uint8), "Mono8").tolist() == [[5, 5], [5, 5]]
    assert to_gray8(np.array([[0.0, 1.0]], np.float64), None).tolist() == [[0, 255]]  # floats 0..1
    assert imaging.pixel_format_of(np.zeros((2, 2, 4), np.uint16)) == "BGRa16"
    with pytest.raises(ImageFormatError, match="no PFNC name"):
        imaging.pixel_format_of(np.zeros((2, 2), np.float32))
    with pytest.raises(ImageFormatError, match=r"'Mono8' with shape \(2, 2, 3\)"):
        to_gray8(np.zeros((2, 2, 3), np.uint8), "Mono8")
    with pytest.raises(ImageFormatError, match=r"'RGB8' with shape \(2, 2\)"):
        to_bgr8(np.zeros((2, 2), np.uint8), "RGB8")
    with pytest.raises(ImageFormatError, match="unsupported pixel format"):
        to_bgr8(np.zeros((2, 2, 2), np.uint8), "YUV422_8")
    with pytest.raises(ImageFormatError, match=r"neither \(H, W\)"):
        to_bgr8(np.zeros((2, 2, 2), np.uint8), None)


# --------------------------------------------------------------------------------------------
# previews and JPEG


def test_preview_width_and_scale() -> None:
    mono12 = np.full((300, 640), 2048, np.uint16)
    small, scale = preview(mono12, "Mono12", 320)
    assert small.shape == (150, 320) and small.dtype == np.uint8 and scale == 0.5
    assert int(small[0, 0]) == 128  # the pixel format is respected: 2048 >> 4
    same, scale = preview(np.zeros((10, 20, 4), np.uint8), "RGBa8", 320)
    assert same.shape == (10, 20, 3) and scale == 1.0  # never upscaled, alpha dropped
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB order
    small, scale = preview(rgb, "RGB8", 50)
    assert small.shape == (25, 50, 3) and scale == 0.25
    assert small[10, 10].tolist() == [0, 0, 255]  # previews are BGR
    with pytest.raises(ValueError, match="positive"):
        preview(rgb, "RGB8", 0)


def test_jpeg_round_trip() -> None:
    yy, xx = np.mgrid[0:64, 0:96]
    bgr = np.dstack([xx * 2, yy * 3, (xx + yy)]).astype(np.uint8)
    data = encode_jpeg(bgr, quality=95)
    assert data[:2] == b"\xff\xd8"
    back = decode_jpeg(data)
    assert back.shape == bgr.shape
    assert np.abs(back.astype(int) - bgr).mean() < 2.0
    assert np.array_equal(back, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    gray = (xx * 2).astype(np.uint8)
    back = decode_jpeg(encode_jpeg(gray))
    assert back.shape == gray.shape and np.abs(back.astype(int) - gray).mean() < 2.0
    assert len(encode_jpeg(bgr, quality=20)) < len(data)
    with pytest.raises(ImageFormatError, match="8-bit grey or BGR"):
        encode_jpeg(np.zeros((4, 4), np.uint16))
    with pytest.raises(ImageFormatError, match="not a JPEG"):
        decode_jpeg(b"nope")


def test_item04_jpeg_bomb_is_refused_before_decoding() -> None:
    """Issue 9 item 4: a small JPEG whose header claims 30000x30000 is not decoded."""
    data = bytearray(encode_jpeg(np.zeros((8, 8), np.uint8)))
    at = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[at + 5:at + 9] = (30000).to_bytes(2, "big") * 2
    with pytest.raises(ImageFormatError, match="30000x30000 is over"):
        decode_jpeg(bytes(data))
