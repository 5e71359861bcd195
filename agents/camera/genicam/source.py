"""GenICam cameras (GigE Vision, USB3 Vision, CoaXPress...) through ``harvesters``.

:class:`GenICamSource` opens one camera of a GenTL producer (:mod:`.producers`), configures it
from plain parameters through its nodes (:mod:`.nodes`) and hands out frames as numpy arrays
copied out of the driver's buffers (:mod:`.buffers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from procgraph.agents.camera.genicam.buffers import component_to_image
from procgraph.agents.camera.genicam.nodes import CameraNodes, NodeValue
from procgraph.agents.camera.genicam.producers import (
    POOL,
    device_rows,
    resolve_ctis,
    select_device,
)
from procgraph.agents.camera.sources import FrameSource, Grab, SourceError

if TYPE_CHECKING:  # pragma: no cover
    from harvesters.core import Buffer, Harvester, ImageAcquirer

__all__ = ["GenICamSource", "TriggerMode"]

log = logging.getLogger("procgraph.agents.camera.genicam")

TriggerMode = Literal["free-run", "software", "hardware"]
_TRIGGERS: tuple[str, ...] = ("free-run", "software", "hardware")


class GenICamSource(FrameSource):
    """A GenICam camera through a GenTL producer, read with ``harvesters``.

    Args:
        cti: path(s) of GenTL producers (``.cti``). Default: the producers found through the
            environment variable ``GENICAM_GENTL64_PATH``; if there are none, the simulated
            producer ``viky.cti`` shipped with the ``genicam`` wheel (three fake cameras, ids
            ``VikyTL_DEV_red|green|blue``, serials ``"0"``-``"2"``).
        serial: select the camera by serial number (``list_devices()`` shows them).
        device_id: select the camera by GenTL device id.
        index: select the camera by position in the device list. Give at most one of
            ``serial``, ``device_id``, ``index``; with none, the first camera is used.
        pixel_format: PFNC name written to ``PixelFormat`` (``Mono8``, ``BayerRG8``...).
        width, height, offset_x, offset_y: region of interest (``Width``, ``Height``,
            ``OffsetX``, ``OffsetY``).
        exposure_us: exposure time in microseconds (``ExposureTime``, or ``ExposureTimeAbs`` on
            older GigE cameras); ``ExposureAuto`` is switched off when present.
        gain_db: analogue gain in dB (``Gain``); ``GainAuto`` is switched off when present.
        frame_rate_hz: frame rate cap (``AcquisitionFrameRate``/``AcquisitionFrameRateAbs``;
            ``AcquisitionFrameRateEnable`` is switched on when present).
        trigger: ``"free-run"`` (camera streams; ``TriggerMode=Off`` when the node exists),
            ``"software"`` (``TriggerMode=On``, ``TriggerSource=Software``; every :meth:`grab`
            executes ``TriggerSoftware`` then waits for that frame) or ``"hardware"``
            (``TriggerMode=On``, ``TriggerSource=trigger_source``; :meth:`grab` just waits).
        trigger_source: input line for hardware trigger (default ``Line1``).
        trigger_activation: e.g. ``RisingEdge``/``FallingEdge`` for hardware trigger (left
            unchanged when None).
        nodes: any further GenICam nodes to write by name, applied in order after the settings
            above (so they win): ``{"BalanceWhiteAuto": "Continuous", "ReverseX": True}``.
        num_buffers: number of driver buffers (harvesters' default when None).

    Images: mono and Bayer formats give ``(H, W)`` arrays (uint8 for 8-bit formats, uint16 for
    10/12/14/16-bit ones, values not rescaled); packed formats are unpacked and named so
    (``Mono12p`` frames arrive as uint16 ``Mono12``); ``RGB8``/``BGR8`` give ``(H, W, 3)`` and
    ``RGBa8``/``BGRa8`` ``(H, W, 4)`` uint8 in the channel order of the format name (no
    conversion; see :mod:`procgraph.agents.imaging`). Sub-sampled YUV formats are returned as
    delivered, one row per image line.

    Errors (:class:`SourceError`) name the camera and the node and say what is allowed:
    unknown node (with similarly named nodes), read-only node, value out of range or not one
    of the enumeration entries, device not found (with the devices that were found), device in
    use by another program.
    """

    def __init__(
        self,
        cti: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        *,
        serial: str | int | None = None,
        device_id: str | None = None,
        index: int | None = None,
        pixel_format: str | None = None,
        width: int | None = None,
        height: int | None = None,
        offset_x: int | None = None,
        offset_y: int | None = None,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        frame_rate_hz: float | None = None,
        trigger: TriggerMode = "free-run",
        trigger_source: str = "Line1",
        trigger_activation: str | None = None,
        nodes: Mapping[str, NodeValue] | None = None,
        num_buffers: int | None = None,
    ) -> None:
        selectors = [s for s in (serial, device_id, index) if s is not None]
        if len(selectors) > 1:
            raise SourceError("give only one of serial, device_id and index to select a camera")
        if trigger not in _TRIGGERS:
            raise SourceError(f"trigger must be one of {', '.join(_TRIGGERS)}; got {trigger!r}")
        self.cti = cti
        self.serial = None if serial is None else str(serial)
        self.device_id = device_id
        self.index = index
        self.pixel_format = pixel_format
        self.width = width
        self.height = height
        self.offset_x = offset_x
        self.offset_y = offset_y
        self.exposure_us = exposure_us
        self.gain_db = gain_db
        self.frame_rate_hz = frame_rate_hz
        self.trigger: TriggerMode = trigger
        self.trigger_source = trigger_source
        self.trigger_activation = trigger_activation
        self.nodes: dict[str, NodeValue] = dict(nodes or {})
        self.num_buffers = num_buffers

        self._ctis: tuple[str, ...] | None = None
        self._harvester: Harvester | None = None
        self._ia: ImageAcquirer | None = None
        self._nodes: CameraNodes | None = None
        self._name = "<not open>"
        self._device: dict[str, Any] = {}
        self._count = 0

    # -- public properties --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while the camera is open and acquiring."""
        return self._ia is not None

    @property
    def device(self) -> dict[str, Any]:
        """The opened camera: index, id, serial, model, vendor... (empty when closed)."""
        return dict(self._device)

    @property
    def name(self) -> str:
        """Human-readable name of the opened camera, used in error messages."""
        return self._name

    # -- life cycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the selected camera, apply the settings and start acquisition."""
        if self._ia is not None:
            return
        self._ctis = resolve_ctis(self.cti)
        harvester = POOL.acquire(self._ctis)
        self._harvester = harvester
        try:
            info_index = select_device(harvester, self._ctis, index=self.index,
                                       serial=self.serial, device_id=self.device_id)
            self._device = device_rows(harvester)[info_index]
            d = self._device
            self._name = f"{d['id']!r} ({d['model']}, serial {d['serial']})"
            self._ia = self._create_acquirer(harvester, info_index)
            self._nodes = CameraNodes(self._ia.remote_device.node_map, self._name)
            if self.num_buffers is not None:
                self._ia.num_buffers = self.num_buffers
            self._configure()
            self._ia.start()
            self._count = 0
            self.finished = False
        except BaseException:
            self._teardown()
            raise

    def close(self) -> None:
        """Stop acquisition and release the camera (safe to call twice)."""
        self._teardown()

    def _teardown(self) -> None:
        ia, self._ia = self._ia, None
        self._nodes = None
        harvester, self._harvester = self._harvester, None
        if ia is not None:
            try:
                ia.destroy()
            except Exception as exc:  # a vanished device cannot be stopped cleanly
                log.warning("releasing camera %s failed: %s", self._name, exc)
            if harvester is not None and ia in harvester.image_acquirers:
                harvester.image_acquirers.remove(ia)
        if harvester is not None and self._ctis is not None:
            POOL.release(self._ctis)

    def _create_acquirer(self, harvester: Harvester, info_index: int) -> ImageAcquirer:
        from genicam.gentl import AccessDeniedException, ResourceInUseException
        from genicam.gentl import GenericException as GenTLError

        # harvesters installs its own SIGINT handler (which swallows Ctrl-C) when an acquirer
        # is created in the main thread: keep the process' handler instead.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if in_main else None
        try:
            return harvester.create(info_index)
        except (ResourceInUseException, AccessDeniedException) as exc:
            raise SourceError(
                f"camera {self._name} is in use by another program or process (close viewers "
                f"such as the vendor's tool, or other procgraph agents on it): {exc}"
            ) from exc
        except GenTLError as exc:
            raise SourceError(f"cannot open camera {self._name}: {exc}") from exc
        finally:
            if in_main and previous is not None:
                signal.signal(signal.SIGINT, previous)

    # -- configuration ------------------------------------------------------------------------

    def _configure(self) -> None:
        n = self.camera_nodes
        if self.pixel_format is not None:
            n.set("PixelFormat", self.pixel_format)
        # shrink offsets first so that a larger width/height fits
        if self.offset_x is not None and n.has("OffsetX") and n.writable("OffsetX"):
            n.set("OffsetX", 0)
        if self.offset_y is not None and n.has("OffsetY") and n.writable("OffsetY"):
            n.set("OffsetY", 0)
        if self.width is not None:
            n.set("Width", self.width)
        if self.height is not None:
            n.set("Height", self.height)
        if self.offset_x is not None:
            n.set("OffsetX", self.offset_x)
        if self.offset_y is not None:
            n.set("OffsetY", self.offset_y)
        if self.exposure_us is not None:
            n.set_optional("ExposureAuto", "Off")
            n.set_first(("ExposureTime", "ExposureTimeAbs"), self.exposure_us, "exposure_us")
        if self.gain_db is not None:
            n.set_optional("GainAuto", "Off")
            n.set_first(("Gain",), self.gain_db, "gain_db")
        if self.frame_rate_hz is not None:
            n.set_optional("AcquisitionFrameRateEnable", True)
            n.set_first(
                ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"),
                self.frame_rate_hz,
                "frame_rate_hz",
            )
        self._configure_trigger()
        for name, value in self.nodes.items():
            n.set(name, value)

    def _configure_trigger(self) -> None:
        n = self.camera_nodes
        if self.trigger == "free-run":
            # cameras without trigger nodes (like viky) stream anyway
            if n.has("TriggerMode"):
                self._select_frame_start()
                n.set("TriggerMode", "Off")
            return
        what = f"trigger={self.trigger!r}"
        needed = ["TriggerMode", "TriggerSource"]
        if self.trigger == "software":
            needed.append("TriggerSoftware")
        for node in needed:
            if not n.has(node):
                raise SourceError(
                    f"{what}: {n.missing_message(node)}; this camera cannot be triggered "
                    "that way, use trigger='free-run'"
                )
        self._select_frame_start()
        n.set("TriggerMode", "On")
        if self.trigger == "software":
            n.set("TriggerSource", "Software")
        else:
            n.set("TriggerSource", self.trigger_source)
            if self.trigger_activation is not None:
                n.set("TriggerActivation", self.trigger_activation)

    def _select_frame_start(self) -> None:
        n = self.camera_nodes
        if n.has("TriggerSelector"):
            node = n.node("TriggerSelector")
            if "FrameStart" in tuple(getattr(node, "symbolics", ())) and n.writable(
                "TriggerSelector"
            ):
                node.value = "FrameStart"


    # -- node access --------------------------------------------------------------------------

    # -- node access --------------------------------------------------------------------------

    @property
    def camera_nodes(self) -> CameraNodes:
        """The open camera's GenICam nodes (:class:`SourceError` when closed)."""
        if self._nodes is None:
            raise SourceError("the camera is not open; call open() first")
        return self._nodes

    def list_nodes(self, *, writable_only: bool = False) -> list[str]:
        """Names of the camera's visible features, sorted (only writable ones if asked)."""
        return self.camera_nodes.list_nodes(writable_only=writable_only)

    def get_node(self, name: str) -> NodeValue:
        """Read a node's current value (``SourceError`` if missing or not readable)."""
        return self.camera_nodes.get(name)

    def set_node(self, name: str, value: NodeValue) -> None:
        """Write a node by name (see :meth:`CameraNodes.set`); works while acquiring for nodes
        the camera allows to change then (exposure, gain); put the others (size, pixel format)
        in the parameters and call :meth:`reopen`."""
        self.camera_nodes.set(name, value)

    def trigger_software(self) -> None:
        """Execute ``TriggerSoftware`` (done by :meth:`grab` when ``trigger="software"``)."""
        self.set_node("TriggerSoftware", True)

    def grab(self, timeout_s: float = 1.0) -> Grab | None:
        """Wait up to ``timeout_s`` for the next frame and return a copy of it.

        Returns None on timeout. Raises :class:`SourceError` when the camera is gone (unplugged,
        network down); call :meth:`reopen` (with a backoff) to reconnect.
        """
        from genicam.genapi import GenericException as GenApiError
        from genicam.gentl import GenericException as GenTLError
        from genicam.gentl import TimeoutException

        ia = self._ia
        if ia is None:
            raise SourceError("the camera is not open; call open() first")
        if not ia.is_valid():
            raise SourceError(f"camera {self._name} was released; call reopen()")
        try:
            if self.trigger == "software":
                self.camera_nodes.node("TriggerSoftware").execute()
            # try_fetch never returns with a timeout of 0
            buffer = ia.try_fetch(timeout=max(float(timeout_s), 0.001))
        except TimeoutException:
            return None
        except (GenTLError, GenApiError, IndexError, AttributeError) as exc:
            raise SourceError(
                f"lost camera {self._name} while fetching a frame ({exc}); call reopen()"
            ) from exc
        if buffer is None:
            return None
        received = time.time_ns()
        try:
            return self._to_grab(buffer, received)
        finally:
            try:
                buffer.queue()
            except Exception as exc:  # device gone between fetch and queue
                log.warning("could not requeue a buffer of %s: %s", self._name, exc)

    def _to_grab(self, buffer: Buffer, received_ns: int) -> Grab:
        components = buffer.payload.components
        if not components:
            raise SourceError(f"camera {self._name} sent a buffer without an image")
        image, pixel_format = component_to_image(components[0])
        self._count += 1
        meta: dict[str, Any] = {"device": self._device.get("id")}
        frame_id = self._count
        try:
            frame_id = int(buffer.module.frame_id)
            meta["device_frame_id"] = frame_id
        except Exception:
            pass
        with contextlib.suppress(Exception):
            meta["device_timestamp_ns"] = int(buffer.module.timestamp_ns)
        return Grab(
            image=image,
            pixel_format=pixel_format,
            timestamp_ns=received_ns,
            frame_id=frame_id,
            meta=meta,
        )
