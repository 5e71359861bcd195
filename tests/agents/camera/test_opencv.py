"""OpenCV sources: video files (written here with MJPG) and image folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from procgraph.agents.camera.opencv import FolderSource, OpenCVSource, pixel_format_of
from procgraph.agents.camera.sources import SourceError

# --------------------------------------------------------------------------------------------
# OpenCV video files


def _write_video(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    assert writer.isOpened(), "MJPG/avi writing should work with opencv-python-headless"
    for i in range(n):
        frame = np.full((size[1], size[0], 3), 20 * i, np.uint8)
        writer.write(frame)
    writer.release()


def test_opencv_video_stops_at_end(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    _write_video(video, 5)
    with OpenCVSource(str(video)) as src:
        assert src.kind == "file"
        assert src.fps == pytest.approx(25.0)
        grabs = []
        while (g := src.grab()) is not None:
            grabs.append(g)
            assert len(grabs) <= 5
        assert src.finished
        assert src.grab() is None
    assert len(grabs) == 5
    assert [g.frame_id for g in grabs] == [1, 2, 3, 4, 5]
    assert all(g.image.shape == (48, 64, 3) and g.pixel_format == "BGR8" for g in grabs)
    # MJPG is lossy: compare brightness with a tolerance
    means = [float(g.image.mean()) for g in grabs]
    assert means == pytest.approx([0, 20, 40, 60, 80], abs=4)


def test_opencv_video_loops_gray(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    _write_video(video, 3)
    with OpenCVSource(video, loop=True, gray=True) as src:
        grabs = [src.grab() for _ in range(8)]
        assert not src.finished
    assert all(g is not None for g in grabs)
    frames = [g for g in grabs if g is not None]
    assert all(g.image.shape == (48, 64) and g.pixel_format == "Mono8" for g in frames)
    assert [g.meta["loop"] for g in frames] == [0, 0, 0, 1, 1, 1, 2, 2]
    means = [float(g.image.mean()) for g in frames]
    assert means[3] == pytest.approx(means[0], abs=2)
    assert [g.frame_id for g in frames] == list(range(1, 9))


def test_opencv_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        OpenCVSource(tmp_path / "missing.avi").open()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot open video file"):
        OpenCVSource(junk).open()
    assert OpenCVSource("0").kind == "usb"
    assert OpenCVSource(2).target == 2
    assert OpenCVSource("rtsp://10.0.0.5/stream1").kind == "stream"


# --------------------------------------------------------------------------------------------
# Image folders


def test_folder_source_8_and_16_bit(tmp_path: Path) -> None:
    mono16 = (np.arange(12 * 10, dtype=np.uint16).reshape(10, 12) * 500).astype(np.uint16)
    bgr8 = np.zeros((10, 12, 3), np.uint8)
    bgr8[..., 2] = 255
    mono8 = np.full((10, 12), 7, np.uint8)
    assert cv2.imwrite(str(tmp_path / "img10.png"), mono8)
    assert cv2.imwrite(str(tmp_path / "img2.png"), mono16)
    assert cv2.imwrite(str(tmp_path / "img1.png"), bgr8)
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")

    with FolderSource(tmp_path) as src:
        grabs = [src.grab() for _ in range(3)]
        assert src.grab() is None and src.finished
    frames = [g for g in grabs if g is not None]
    assert [Path(g.meta["path"]).name for g in frames] == ["img1.png", "img2.png", "img10.png"]
    assert [g.pixel_format for g in frames] == ["BGR8", "Mono16", "Mono8"]
    assert np.array_equal(frames[0].image, bgr8)
    assert frames[1].image.dtype == np.uint16 and np.array_equal(frames[1].image, mono16)
    assert np.array_equal(frames[2].image, mono8)


def test_folder_source_pattern_and_loop(tmp_path: Path) -> None:
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"a{i}.png"), np.full((4, 4), i, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((4, 4), np.uint8))
    with FolderSource(tmp_path, pattern="a*.png", loop=True) as src:
        names = [Path(g.meta["path"]).name for g in (src.grab() for _ in range(5)) if g]
        assert not src.finished
    assert names == ["a0.png", "a1.png", "a0.png", "a1.png", "a0.png"]


def test_folder_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope").open()
    with pytest.raises(SourceError, match="has no files ending in"):
        FolderSource(tmp_path).open()
    with pytest.raises(SourceError, match=r"has no files matching '\*\.tif'"):
        cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 4), np.uint8))
        FolderSource(tmp_path, pattern="*.tif").open()
    (tmp_path / "y.png").write_bytes(b"garbage, not a png")
    with FolderSource(tmp_path) as src:
        assert src.grab() is not None  # x.png
        with pytest.raises(SourceError, match=r"cannot read image '.*y\.png'"):
            src.grab()
    with pytest.raises(SourceError, match="unsupported image layout"):
        pixel_format_of(np.zeros((2, 2), np.float32))
