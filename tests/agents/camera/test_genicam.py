"""GenICam: the real viky.cti producer shipped in the genicam wheel, and buffer conversion."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from procgraph.agents.camera.genicam import GenICamSource, default_cti_files, list_devices
from procgraph.agents.camera.genicam.buffers import component_to_image
from procgraph.agents.camera.sources import Grab, SourceError
from procgraph.agents.imaging import to_bgr8


@pytest.fixture(scope="module")
def viky() -> str:
    import genicam

    path = Path(genicam.__file__).parent / "viky.cti"
    assert path.is_file(), "the genicam wheel should ship viky.cti"
    return str(path)


def _grab_n(src: GenICamSource, n: int) -> list[Grab]:
    grabs = []
    for _ in range(n):
        g = src.grab(timeout_s=2.0)
        assert g is not None, "viky should stream in free-run"
        grabs.append(g)
    return grabs


def test_default_cti_uses_env_then_viky(
    viky: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    assert default_cti_files() == [viky]
    (tmp_path / "vendor.cti").write_bytes(b"")
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(tmp_path))
    assert default_cti_files() == [str(tmp_path / "vendor.cti")]


def test_list_devices(viky: str) -> None:
    rows = list_devices(viky)
    assert [r["serial"] for r in rows] == ["0", "1", "2"]
    assert [r["id"] for r in rows] == ["VikyTL_DEV_red", "VikyTL_DEV_green", "VikyTL_DEV_blue"]


def test_genicam_by_serial_grabs_rgba_frames(viky: str) -> None:
    with GenICamSource(viky, serial="0", frame_rate_hz=100) as src:
        assert src.is_open
        assert src.device["id"] == "VikyTL_DEV_red"
        grabs = _grab_n(src, 5)
    assert not src.is_open
    for g in grabs:
        assert g.pixel_format == "RGBa8"
        assert g.image.shape == (400, 400, 4)
        assert g.image.dtype == np.uint8
        assert g.image.flags.owndata and g.image.flags.c_contiguous
    ids = [g.frame_id for g in grabs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stamps = [g.timestamp_ns for g in grabs]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns()) < 10e9
    # the frames were copied out: the buffers being reused must not change them
    assert not np.shares_memory(grabs[0].image, grabs[-1].image)
    assert any(not np.array_equal(grabs[0].image, g.image) for g in grabs[1:]), "square moves"


def test_genicam_by_id_and_index_mono8_roi_params(viky: str) -> None:
    with GenICamSource(
        viky, device_id="VikyTL_DEV_blue", pixel_format="Mono8", width=320, height=240
    ) as src:
        assert src.device["serial"] == "2"
        g = src.grab(2.0)
    assert g is not None
    assert (g.pixel_format, g.image.shape, g.image.dtype) == ("Mono8", (240, 320), np.uint8)
    bgr = to_bgr8(g.image, g.pixel_format)
    assert bgr.shape == (240, 320, 3)

    with GenICamSource(viky, index=1) as src:
        assert src.device["id"] == "VikyTL_DEV_green"
        assert src.grab(2.0) is not None


def test_genicam_nodes_dict(viky: str) -> None:
    nodes: dict[str, int | float | str | bool] = {
        "Width": 200,
        "Height": 100,
        "PixelFormat": "Mono8",
        "AcquisitionFrameRate": 150.0,
    }
    with GenICamSource(viky, serial=0, nodes=nodes) as src:
        g = src.grab(2.0)
        assert src.get_node("Width") == 200
        assert src.get_node("AcquisitionFrameRate") == pytest.approx(150.0)
    assert g is not None and g.image.shape == (100, 200)


def test_genicam_unknown_node_lists_similar_names(viky: str) -> None:
    with pytest.raises(SourceError) as err:
        GenICamSource(viky, serial="0", nodes={"Widht": 300}).open()
    msg = str(err.value)
    assert "'VikyTL_DEV_red'" in msg and "has no node 'Widht'" in msg
    assert "nodes with a similar name: Width" in msg

    with pytest.raises(SourceError, match="has no node 'Foo'") as err:
        GenICamSource(viky, serial="0", nodes={"Foo": 1}).open()
    assert "writable nodes:" in str(err.value) and "PixelFormat" in str(err.value)


def test_genicam_bad_values(viky: str) -> None:
    with pytest.raises(SourceError, match=r"read-only \(current value 'Continuous'\)"):
        GenICamSource(viky, nodes={"AcquisitionMode": "Continuous"}).open()
    with pytest.raises(SourceError, match=r"5000 .*'Width'.* out of range \[100, 800\]"):
        GenICamSource(viky, width=5000).open()
    with pytest.raises(SourceError, match=r"out of range \[1\.0, 200\.0\]"):
        GenICamSource(viky, frame_rate_hz=1000).open()
    with pytest.raises(SourceError, match=r"'Mono16'.*not one of its entries: RGBa8, Mono8"):
        GenICamSource(viky, pixel_format="Mono16").open()
    with pytest.raises(SourceError, match=r"'Width'.* is an integer; got 'abc'"):
        GenICamSource(viky, nodes={"Width": "abc"}).open()
    # the failed opens released the device: it opens fine now
    with GenICamSource(viky, serial="0") as src:
        assert src.grab(2.0) is not None


def test_genicam_exposure_gain_trigger_errors_on_viky(viky: str) -> None:
    with pytest.raises(SourceError) as err:
        GenICamSource(viky, serial="0", exposure_us=1000).open()
    msg = str(err.value)
    assert msg.startswith("cannot set exposure_us: camera 'VikyTL_DEV_red'")
    assert "has no node 'ExposureTime' (nor 'ExposureTimeAbs')" in msg
    assert "leave exposure_us unset" in msg

    with pytest.raises(SourceError, match=r"cannot set gain_db: .* no node 'Gain'"):
        GenICamSource(viky, gain_db=6.0).open()
    for mode in ("software", "hardware"):
        with pytest.raises(SourceError, match=f"trigger='{mode}': .* no node 'TriggerMode'"):
            GenICamSource(viky, trigger=mode).open()  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="trigger must be one of"):
        GenICamSource(viky, trigger="sometimes")  # type: ignore[arg-type]


def test_genicam_device_not_found_lists_devices(viky: str) -> None:
    with pytest.raises(SourceError) as err:
        GenICamSource(viky, serial="ABC123").open()
    msg = str(err.value)
    assert "no camera with serial 'ABC123'" in msg
    for dev in ("VikyTL_DEV_red", "VikyTL_DEV_green", "VikyTL_DEV_blue"):
        assert dev in msg
    with pytest.raises(SourceError, match=r"no camera with device_id 'nope'.*VikyTL_DEV_red"):
        GenICamSource(viky, device_id="nope").open()
    with pytest.raises(SourceError, match="no camera with index 7"):
        GenICamSource(viky, index=7).open()
    with pytest.raises(SourceError, match="only one of serial, device_id and index"):
        GenICamSource(viky, serial="0", index=0)
    with pytest.raises(SourceError, match="does not exist"):
        GenICamSource("/nonexistent/producer.cti").open()


def test_genicam_two_cameras_share_the_producer_and_in_use_error(viky: str) -> None:
    with GenICamSource(viky, serial="0") as a, GenICamSource(viky, serial="1") as b:
        assert a.grab(2.0) is not None and b.grab(2.0) is not None
        with pytest.raises(SourceError, match="in use"):
            GenICamSource(viky, serial="1").open()
        assert b.grab(2.0) is not None


def test_genicam_keeps_sigint_handler(viky: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be checked from the main thread")
    before = signal.getsignal(signal.SIGINT)
    with GenICamSource(viky, serial="0"):
        assert signal.getsignal(signal.SIGINT) is before


def test_genicam_close_reopen_and_lost_device(viky: str) -> None:
    src = GenICamSource(viky, serial="2", frame_rate_hz=100)
    with pytest.raises(SourceError, match="not open"):
        src.grab(0.1)
    src.open()
    first = _grab_n(src, 2)
    src.close()
    src.close()  # idempotent
    assert not src.is_open
    src.open()
    assert src.grab(2.0) is not None

    # the device disappears under the source (as when a cable is pulled)
    assert src._ia is not None
    src._ia.destroy()
    with pytest.raises(SourceError, match="call reopen"):
        src.grab(0.5)
    src.reopen()
    again = _grab_n(src, 2)
    assert again[0].image.shape == first[0].image.shape
    src.close()


def test_genicam_fetch_error_becomes_source_error(
    viky: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genicam.gentl import IoException, TimeoutException

    with GenICamSource(viky, serial="0") as src:
        ia = src._ia
        assert ia is not None

        def broken(*, timeout: float, is_raw: bool = False) -> None:
            raise IoException("device removed")

        monkeypatch.setattr(ia, "try_fetch", broken)
        with pytest.raises(SourceError, match=r"lost camera 'VikyTL_DEV_red'.*call reopen"):
            src.grab(0.5)

        def slow(*, timeout: float, is_raw: bool = False) -> None:
            raise TimeoutException("nothing yet")

        monkeypatch.setattr(ia, "try_fetch", slow)
        assert src.grab(0.1) is None


def test_genicam_timeout_returns_none(viky: str) -> None:
    with GenICamSource(viky, serial="0", frame_rate_hz=4) as src:
        assert src.grab(2.0) is not None  # first frame
        t0 = time.monotonic()
        got = src.grab(0.05)
        assert time.monotonic() - t0 < 1.0
        assert got is None

# --------------------------------------------------------------------------------------------
# buffers to numpy, for formats viky lacks


def _comp(data: np.ndarray, w: int, h: int, n: float, fmt: str) -> SimpleNamespace:
    return SimpleNamespace(
        data=data, width=w, height=h, num_components_per_pixel=n, data_format=fmt
    )


def test_component_shapes_for_formats_viky_lacks() -> None:
    # Mono12 unpacked: uint16 (H, W), values untouched
    mono12 = np.arange(6, dtype=np.uint16) * 700
    out, fmt = component_to_image(_comp(mono12, 3, 2, 1.0, "Mono12"))
    assert fmt == "Mono12"
    assert out.dtype == np.uint16 and out.tolist() == [[0, 700, 1400], [2100, 2800, 3500]]
    # BGR8 with 2 bytes of line padding: padding dropped
    rows = np.arange(2 * (4 * 3 + 2), dtype=np.uint8)
    out, fmt = component_to_image(_comp(rows, 4, 2, 3.0, "BGR8"))
    assert out.shape == (2, 4, 3) and out[1, 0].tolist() == [14, 15, 16] and fmt == "BGR8"
    assert not np.shares_memory(out, rows)
    # sub-sampled YUV422: rows as delivered
    out, fmt = component_to_image(_comp(np.zeros(2 * 8, np.uint8), 4, 2, 2.0, "YUV422_8"))
    assert out.shape == (2, 8) and fmt == "YUV422_8"
    with pytest.raises(SourceError, match="empty image"):
        component_to_image(_comp(np.zeros(0, np.uint8), 4, 2, 1.0, "Mono8"))


def test_packed_buffers_leave_unpacked_and_named_so() -> None:
    # harvesters expanded Mono12p already: uint16 values, the name becomes Mono12
    expanded = np.array([0x123, 0x456, 0xFFF, 0], np.uint16)
    out, fmt = component_to_image(_comp(expanded, 2, 2, 1.0, "Mono12p"))
    assert fmt == "Mono12" and out.tolist() == [[0x123, 0x456], [0xFFF, 0]]
    # packed bytes handed over as they are: unpacked here (PFNC LSB first / GigE layout)
    raw = np.frombuffer(b"\x23\x61\x45\xff\x0f\x00", np.uint8)
    out, fmt = component_to_image(_comp(raw, 2, 2, 1.0, "Mono12p"))
    assert fmt == "Mono12" and out.tolist() == [[0x123, 0x456], [0xFFF, 0]]
    out, fmt = component_to_image(_comp(np.frombuffer(b"\x12\x63\x45", np.uint8), 2, 1, 1.0,
                                        "BayerRG12Packed"))
    assert fmt == "BayerRG12" and out.tolist() == [[0x123, 0x456]]
    with pytest.raises(SourceError, match="bad Mono10p buffer"):
        component_to_image(_comp(np.zeros(3, np.uint8), 4, 2, 1.0, "Mono10p"))
