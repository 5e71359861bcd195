"""GenICam cameras (GigE Vision, USB3 Vision, CoaXPress...) through ``harvesters``.

``harvesters`` talks to a camera through a GenTL producer: a ``.cti`` shared library that the
camera vendor ships (Basler pylon, Teledyne Spinnaker, Allied Vision Vimba, MATRIX VISION
mvIMPACT, Aravis...). :class:`GenICamSource` opens one camera of such a producer, configures it
from plain parameters and hands out frames as numpy arrays that it has copied out of the
driver's buffers.

``harvesters`` and ``genicam`` are optional dependencies (``pip install procgraph[genicam]``);
they are imported only when a :class:`GenICamSource` is opened.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from procgraph.agents.camera.sources import FrameSource, Grab, SourceError

if TYPE_CHECKING:  # pragma: no cover
    from harvesters.core import Buffer, Harvester, ImageAcquirer

__all__ = ["GenICamSource", "NodeValue", "TriggerMode", "default_cti_files", "list_devices"]

log = logging.getLogger(__name__)

NodeValue = int | float | str | bool
TriggerMode = Literal["free-run", "software", "hardware"]
_TRIGGERS: tuple[str, ...] = ("free-run", "software", "hardware")

# genicam.genapi.EAccessMode values
_NI, _NA, _WO, _RO, _RW = 0, 1, 2, 3, 4
_INVISIBLE = 3  # genicam.genapi.EVisibility.Invisible


# ---------------------------------------------------------------------------------------------
# Producers and the per-process Harvester


def default_cti_files() -> list[str]:
    """GenTL producers to use when none are given.

    The ``.cti`` files found in the folders (or files) listed in the environment variable
    ``GENICAM_GENTL64_PATH`` (``os.pathsep``-separated; vendor installers set it); if that yields
    nothing, the simulated producer ``viky.cti`` shipped inside the ``genicam`` wheel.
    """
    found: list[str] = []
    for entry in os.environ.get("GENICAM_GENTL64_PATH", "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry.strip())
        if path.is_file() and path.suffix.lower() == ".cti":
            found.append(str(path))
        elif path.is_dir():
            found.extend(str(p) for p in sorted(path.glob("*.cti")) if p.is_file())
    if found:
        return list(dict.fromkeys(found))
    viky = _viky_cti()
    return [viky] if viky else []


def _viky_cti() -> str | None:
    """Path of the simulated producer in the genicam wheel, or None if genicam is missing."""
    spec = importlib.util.find_spec("genicam")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "viky.cti"
        if candidate.is_file():
            return str(candidate)
    return None


def _import_harvesters() -> Any:
    """Import harvesters.core without letting it change the process-wide warning filters.

    (harvesters.core calls ``warnings.simplefilter("once")`` at import time.)
    """
    try:
        with warnings.catch_warnings():
            import harvesters.core as core
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SourceError(
            "GenICam cameras need the 'harvesters' and 'genicam' packages: "
            "pip install 'procgraph[genicam]'"
        ) from exc
    return core


class _HarvesterPool:
    """One Harvester per set of producers per process.

    A GenTL producer can be opened only once per process: a second Harvester on the same
    ``.cti`` sees no devices. Sources on the same producers therefore share one Harvester,
    which is reset when the last of them closes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], tuple[Harvester, int]] = {}

    def acquire(self, ctis: tuple[str, ...]) -> Harvester:
        with self._lock:
            entry = self._entries.get(ctis)
            if entry is not None:
                self._entries[ctis] = (entry[0], entry[1] + 1)
                return entry[0]
            core = _import_harvesters()
            harvester = core.Harvester()
            for cti in ctis:
                harvester.add_file(cti)
            harvester.update()
            self._entries[ctis] = (harvester, 1)
            return harvester

    def users(self, ctis: tuple[str, ...]) -> int:
        with self._lock:
            entry = self._entries.get(ctis)
            return entry[1] if entry else 0

    def release(self, ctis: tuple[str, ...]) -> None:
        with self._lock:
            entry = self._entries.get(ctis)
            if entry is None:
                return
            harvester, users = entry
            if users > 1:
                self._entries[ctis] = (harvester, users - 1)
                return
            del self._entries[ctis]
        try:
            harvester.reset()
        except Exception as exc:  # a vanished device may make the reset fail
            log.warning("resetting harvester for %s failed: %s", ctis, exc)


_POOL = _HarvesterPool()


def _resolve_ctis(
    cti: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> tuple[str, ...]:
    if cti is None:
        files = default_cti_files()
        if not files:
            raise SourceError(
                "no GenTL producer found: pass cti='/path/to/producer.cti' or set "
                "GENICAM_GENTL64_PATH to the folder holding your camera vendor's .cti file"
            )
    elif isinstance(cti, str | os.PathLike):
        files = [os.fspath(cti)]
    else:
        files = [os.fspath(c) for c in cti]
    if not files:
        raise SourceError("cti is an empty list: give at least one GenTL producer (.cti) path")
    for path in files:
        if not Path(path).is_file():
            raise SourceError(
                f"GenTL producer {path!r} does not exist; pass the path of the .cti file your "
                "camera vendor installed (often listed in GENICAM_GENTL64_PATH)"
            )
    return tuple(str(Path(p).resolve()) for p in files)


def _device_rows(harvester: Harvester) -> list[dict[str, Any]]:
    rows = []
    for i, info in enumerate(harvester.device_info_list):
        props = info.property_dict
        rows.append(
            {
                "index": i,
                "id": props.get("id_"),
                "serial": props.get("serial_number"),
                "model": props.get("model"),
                "vendor": props.get("vendor"),
                "display_name": props.get("display_name"),
                "user_defined_name": props.get("user_defined_name"),
                "tl_type": props.get("tl_type"),
            }
        )
    return rows


def list_devices(
    cti: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
) -> list[dict[str, Any]]:
    """List the cameras the given producers see: index, id, serial, model, vendor...

    Use it to find the ``serial`` or ``device_id`` of your camera. ``cti`` works as in
    :class:`GenICamSource`.
    """
    ctis = _resolve_ctis(cti)
    harvester = _POOL.acquire(ctis)
    try:
        return _device_rows(harvester)
    finally:
        _POOL.release(ctis)


def _format_rows(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no devices found"
    return "; ".join(
        f"index {r['index']}: id={r['id']!r} serial={r['serial']!r} model={r['model']!r}"
        for r in rows
    )


# ---------------------------------------------------------------------------------------------
# Buffers to numpy


def _component_to_array(component: Any) -> np.ndarray:
    """Copy a harvesters 2-D image component into a numpy array of the right shape.

    ``component.data`` is flat, already unpacked to uint8/uint16/float32 by harvesters. Line
    padding (``padding_x``) is removed here.
    """
    data = component.data
    height = int(component.height)
    width = int(component.width)
    channels = float(component.num_components_per_pixel)
    if data is None or height <= 0 or width <= 0 or data.size == 0:
        raise SourceError("the camera delivered an empty image buffer")
    row = data.size // height
    rows = data[: row * height].reshape(height, row)
    if channels.is_integer() and int(channels) in (1, 3, 4):
        n = int(channels)
        if row < width * n:
            raise SourceError(
                f"buffer too small for {width}x{height} {component.data_format}: {data.size} values"
            )
        image = rows[:, : width * n]
        if n > 1:
            image = image.reshape(height, width, n)
        return np.array(image, copy=True)
    # sub-sampled formats (YUV422, YUV411...): hand out the rows as delivered
    return np.array(rows, copy=True)


# ---------------------------------------------------------------------------------------------
# The source


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
    10/12/14/16-bit ones, values not rescaled; packed formats such as ``Mono12p`` are unpacked);
    ``RGB8``/``BGR8`` give ``(H, W, 3)`` and ``RGBa8``/``BGRa8`` ``(H, W, 4)`` uint8 in the
    channel order of the format name (no conversion; see ``to_bgr8``). Sub-sampled YUV formats
    are returned as delivered, one row per image line.

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
        self._ctis = _resolve_ctis(self.cti)
        harvester = _POOL.acquire(self._ctis)
        self._harvester = harvester
        try:
            info_index = self._select_device(harvester)
            self._device = _device_rows(harvester)[info_index]
            d = self._device
            self._name = f"{d['id']!r} ({d['model']}, serial {d['serial']})"
            self._ia = self._create_acquirer(harvester, info_index)
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
        harvester, self._harvester = self._harvester, None
        if ia is not None:
            try:
                ia.destroy()
            except Exception as exc:  # a vanished device cannot be stopped cleanly
                log.warning("releasing camera %s failed: %s", self._name, exc)
            if harvester is not None and ia in harvester.image_acquirers:
                harvester.image_acquirers.remove(ia)
        if harvester is not None and self._ctis is not None:
            _POOL.release(self._ctis)

    def _select_device(self, harvester: Harvester) -> int:
        rows = _device_rows(harvester)
        if self.index is not None:
            if 0 <= self.index < len(rows):
                return self.index
            wanted = f"index {self.index}"
        elif self.serial is not None:
            matches = [r["index"] for r in rows if str(r["serial"]) == self.serial]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise SourceError(
                    f"{len(matches)} cameras have serial {self.serial!r}; select by device_id. "
                    f"Found: {_format_rows(rows)}"
                )
            wanted = f"serial {self.serial!r}"
        elif self.device_id is not None:
            matches = [r["index"] for r in rows if r["id"] == self.device_id]
            if matches:
                return matches[0]
            wanted = f"device_id {self.device_id!r}"
        else:
            if rows:
                return 0
            wanted = "any camera"
        hint = "check the cable/network and the power of the camera, and the producer (cti)"
        if _POOL.users(self._ctis or ()) > 1:
            hint += "; other sources share these producers, so the device list was not rescanned"
        raise SourceError(
            f"no camera with {wanted} among the producers {list(self._ctis or ())}. "
            f"Found: {_format_rows(rows)}. {hint}"
        )

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
        if self.pixel_format is not None:
            self.set_node("PixelFormat", self.pixel_format)
        # shrink offsets first so that a larger width/height fits
        if self.offset_x is not None and self._has("OffsetX") and self._writable("OffsetX"):
            self.set_node("OffsetX", 0)
        if self.offset_y is not None and self._has("OffsetY") and self._writable("OffsetY"):
            self.set_node("OffsetY", 0)
        if self.width is not None:
            self.set_node("Width", self.width)
        if self.height is not None:
            self.set_node("Height", self.height)
        if self.offset_x is not None:
            self.set_node("OffsetX", self.offset_x)
        if self.offset_y is not None:
            self.set_node("OffsetY", self.offset_y)
        if self.exposure_us is not None:
            self._set_optional("ExposureAuto", "Off")
            self._set_first(("ExposureTime", "ExposureTimeAbs"), self.exposure_us, "exposure_us")
        if self.gain_db is not None:
            self._set_optional("GainAuto", "Off")
            self._set_first(("Gain",), self.gain_db, "gain_db")
        if self.frame_rate_hz is not None:
            self._set_optional("AcquisitionFrameRateEnable", True)
            self._set_first(
                ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"),
                self.frame_rate_hz,
                "frame_rate_hz",
            )
        self._configure_trigger()
        for name, value in self.nodes.items():
            self.set_node(name, value)

    def _configure_trigger(self) -> None:
        if self.trigger == "free-run":
            # cameras without trigger nodes (like viky) stream anyway
            if self._has("TriggerMode"):
                self._select_frame_start()
                self.set_node("TriggerMode", "Off")
            return
        what = f"trigger={self.trigger!r}"
        needed = ["TriggerMode", "TriggerSource"]
        if self.trigger == "software":
            needed.append("TriggerSoftware")
        for node in needed:
            if not self._has(node):
                raise SourceError(
                    f"{what}: {self._missing_message(node)}; this camera cannot be triggered "
                    "that way, use trigger='free-run'"
                )
        self._select_frame_start()
        self.set_node("TriggerMode", "On")
        if self.trigger == "software":
            self.set_node("TriggerSource", "Software")
        else:
            self.set_node("TriggerSource", self.trigger_source)
            if self.trigger_activation is not None:
                self.set_node("TriggerActivation", self.trigger_activation)

    def _select_frame_start(self) -> None:
        if self._has("TriggerSelector"):
            node = self._node("TriggerSelector")
            if "FrameStart" in tuple(getattr(node, "symbolics", ())) and self._writable(
                "TriggerSelector"
            ):
                node.value = "FrameStart"

    def _set_optional(self, name: str, value: NodeValue) -> None:
        if self._has(name) and self._writable(name):
            self.set_node(name, value)

    def _set_first(self, names: Sequence[str], value: NodeValue, param: str) -> None:
        for name in names:
            if self._has(name):
                self.set_node(name, value)
                return
        raise SourceError(
            f"cannot set {param}: {self._missing_message(*names)}; "
            f"leave {param} unset for this camera"
        )

    # -- node access --------------------------------------------------------------------------

    def _node_map(self) -> Any:
        if self._ia is None:
            raise SourceError("the camera is not open; call open() first")
        return self._ia.remote_device.node_map

    def _has(self, name: str) -> bool:
        try:
            self._node_map().get_node(name)
        except SourceError:
            raise
        except Exception:
            return False
        return True

    def _node(self, name: str) -> Any:
        try:
            return self._node_map().get_node(name)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(self._missing_message(name)) from exc

    def _access(self, name: str) -> int:
        return int(self._node(name).node.get_access_mode())

    def _writable(self, name: str) -> bool:
        return self._access(name) in (_WO, _RW)

    def list_nodes(self, *, writable_only: bool = False) -> list[str]:
        """Names of the camera's features (visible, non-category nodes), sorted.

        With ``writable_only``, only nodes that can be written now, without commands.
        """
        from genicam.genapi import ICategory, ICommand, IEnumEntry, IPort, IRegister

        names = []
        for wrapped in self._node_map().nodes:
            if isinstance(wrapped, ICategory | IEnumEntry | IPort | IRegister):
                continue
            if writable_only and isinstance(wrapped, ICommand):
                continue
            node = wrapped.node
            try:
                if int(node.visibility) >= _INVISIBLE:
                    continue
                if writable_only and int(node.get_access_mode()) not in (_WO, _RW):
                    continue
            except Exception:
                continue
            names.append(str(node.name))
        return sorted(set(names))

    def _missing_message(self, name: str, *alternatives: str) -> str:
        nor = f" (nor {', '.join(repr(a) for a in alternatives)})" if alternatives else ""
        return f"camera {self._name} has no node {name!r}{nor}; {self._suggest(name)}"

    def _suggest(self, name: str) -> str:
        candidates = self.list_nodes()
        lowered = name.lower()
        similar = difflib.get_close_matches(name, candidates, n=6, cutoff=0.6)
        similar += [
            c
            for c in candidates
            if (lowered in c.lower() or c.lower() in lowered) and c not in similar
        ]
        if similar:
            return f"nodes with a similar name: {', '.join(similar[:8])}"
        writable = self.list_nodes(writable_only=True)
        if writable:
            return f"no node has a similar name; writable nodes: {', '.join(writable)}"
        return "no node has a similar name"

    def get_node(self, name: str) -> NodeValue:
        """Read a node's current value (``SourceError`` if missing or not readable)."""
        wrapped = self._node(name)
        access = int(wrapped.node.get_access_mode())
        if access not in (_RO, _RW):
            raise SourceError(f"node {name!r} of camera {self._name} is not readable now")
        return wrapped.value  # type: ignore[no-any-return]

    def set_node(self, name: str, value: NodeValue) -> None:
        """Write a node by name, with errors that say what is allowed.

        Enumerations take the entry name (``"Mono8"``), integers an int, floats a number,
        booleans a bool, strings a str; a command node is executed when ``value`` is True.
        Works while acquiring for nodes the camera allows to change then (exposure, gain);
        nodes locked during acquisition (size, pixel format) can be changed by putting them in
        the parameters and calling :meth:`reopen`.
        """
        from genicam.genapi import GenericException as GenApiError
        from genicam.genapi import (
            IBoolean,
            ICommand,
            IEnumeration,
            IFloat,
            IInteger,
            IString,
        )

        wrapped = self._node(name)
        access = int(wrapped.node.get_access_mode())
        where = f"node {name!r} of camera {self._name}"
        if access == _RO:
            current = _safe_value(wrapped)
            raise SourceError(
                f"{where} is read-only (current value {current!r}); remove it from the settings"
            )
        if access not in (_WO, _RW):
            state = "not implemented" if access == _NI else "not available now"
            raise SourceError(
                f"{where} is {state}; it may depend on another node (a selector, an *Auto or "
                "*Enable node) or be locked while the camera is acquiring"
            )
        try:
            if isinstance(wrapped, ICommand):
                if value is not True:
                    raise SourceError(f"{where} is a command; set it to true to execute it")
                wrapped.execute()
            elif isinstance(wrapped, IEnumeration):
                entries = tuple(wrapped.symbolics)
                if not isinstance(value, str) or value not in entries:
                    raise SourceError(
                        f"value {value!r} for {where} is not one of its entries: "
                        f"{', '.join(entries)}"
                    )
                wrapped.value = value
            elif isinstance(wrapped, IBoolean):
                if not isinstance(value, bool):
                    raise SourceError(f"{where} is a boolean; got {value!r}")
                wrapped.value = value
            elif isinstance(wrapped, IInteger):
                wrapped.value = self._checked_int(wrapped, where, value)
            elif isinstance(wrapped, IFloat):
                wrapped.value = self._checked_float(wrapped, where, value)
            elif isinstance(wrapped, IString):
                if not isinstance(value, str):
                    raise SourceError(f"{where} is a string; got {value!r}")
                wrapped.value = value
            else:
                raise SourceError(f"{where} is a {type(wrapped).__name__}; it cannot be set")
        except GenApiError as exc:
            raise SourceError(f"camera refused {value!r} for {where}: {exc}") from exc

    @staticmethod
    def _checked_int(wrapped: Any, where: str, value: NodeValue) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise SourceError(f"{where} is an integer; got {value!r}")
        number = int(value)
        low, high = int(wrapped.min), int(wrapped.max)
        if not low <= number <= high:
            raise SourceError(f"value {number} for {where} is out of range [{low}, {high}]")
        try:
            inc = int(wrapped.inc)
        except Exception:
            inc = 1
        if inc > 1 and (number - low) % inc:
            below = low + (number - low) // inc * inc
            raise SourceError(
                f"value {number} for {where} must be {low} + a multiple of {inc}; "
                f"try {below} or {min(below + inc, high)}"
            )
        return number

    @staticmethod
    def _checked_float(wrapped: Any, where: str, value: NodeValue) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SourceError(f"{where} is a number; got {value!r}")
        number = float(value)
        low, high = float(wrapped.min), float(wrapped.max)
        if not math.isfinite(number) or not low <= number <= high:
            try:
                unit = f" {wrapped.unit}" if wrapped.unit else ""
            except Exception:
                unit = ""
            raise SourceError(f"value {number} for {where} is out of range [{low}, {high}]{unit}")
        return number

    # -- acquisition --------------------------------------------------------------------------

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
                self._node("TriggerSoftware").execute()
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
        component = components[0]
        image = _component_to_array(component)
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
            pixel_format=str(component.data_format),
            timestamp_ns=received_ns,
            frame_id=frame_id,
            meta=meta,
        )


def _safe_value(wrapped: Any) -> Any:
    try:
        return wrapped.value
    except Exception:
        return "?"
