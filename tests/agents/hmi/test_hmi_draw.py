"""Drawing: verdict frames and banners, placeholders, thumbnails, JPEG."""

from __future__ import annotations

import numpy as np
import pytest
from hmi_messages import decodes, preview, verdict
from procgraph.agents.hmi.draw import (
    BAD_BGR,
    IDLE_BGR,
    OK_BGR,
    THUMB_HEIGHT,
    annotate,
    as_bgr,
    jpeg,
    placeholder,
    thumbnail,
)


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("defective", [None, False, True])
def test_annotate_gives_a_decodable_jpeg(gray: bool, defective: bool | None) -> None:
    p = preview(gray=gray)
    v = None if defective is None else verdict(defective=defective)
    img = decodes(jpeg(annotate(p.image, v)))
    assert img.shape == (60, 80, 3)
    corner = img[1, 40].astype(int)  # on the frame, outside the label banner
    if defective:
        assert corner[2] > 150 and corner[1] < 120, "defective frame is red"
    elif defective is False:
        assert corner[1] > 150 and corner[2] < 120, "ok frame is green"
    assert p.image[1, 40].tolist() == ([120] * 3 if not gray else 120), "input untouched"


@pytest.mark.parametrize(("defective", "colour"), [(None, IDLE_BGR), (False, OK_BGR),
                                                   (True, BAD_BGR)])
def test_annotate_frame_colours_exactly(defective: bool | None,
                                        colour: tuple[int, int, int]) -> None:
    v = None if defective is None else verdict(defective=defective)
    img = annotate(np.zeros((120, 160, 3), np.uint8), v)
    assert img[1, 80].tolist() == list(colour), "frame at the top edge"
    assert img[118, 80].tolist() == list(colour), "frame at the bottom edge"
    assert img[60, 80].tolist() == [0, 0, 0], "the middle of the picture is not drawn on"


def test_annotate_accepts_bgra_and_single_channel() -> None:
    bgra = np.full((40, 50, 4), 200, np.uint8)
    assert annotate(bgra, None).shape == (40, 50, 3)
    one = np.full((40, 50, 1), 90, np.uint8)
    out = annotate(one, verdict())
    assert out.shape == (40, 50, 3) and out[20, 25].tolist() == [90, 90, 90]


def test_as_bgr_is_a_writable_copy() -> None:
    src = np.full((10, 12, 3), 7, np.uint8)
    out = as_bgr(src)
    out[:] = 0
    assert src[0, 0].tolist() == [7, 7, 7]


def test_unmatched_verdict_changes_the_banner() -> None:
    base = np.zeros((120, 160, 3), np.uint8)
    assert not np.array_equal(annotate(base, verdict(), matched=True),
                              annotate(base, verdict(), matched=False))


def test_placeholder_and_thumbnail() -> None:
    tile = placeholder(["BACK", "missing"])
    assert tile.shape == (THUMB_HEIGHT, 160, 3) and tile[1, 80].tolist() == list(BAD_BGR)
    wide = thumbnail([np.zeros((60, 80, 3), np.uint8), tile])
    assert wide.shape == (THUMB_HEIGHT, 160 + 160, 3)
    assert thumbnail([tile]) is not None
    with pytest.raises(ValueError, match="at least one tile"):
        thumbnail([])
