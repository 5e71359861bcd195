"""GenTL producers: finding the ``.cti`` files, loading them once per process, listing devices.

A GenTL producer is the shared library (``.cti``) a camera vendor ships; ``harvesters`` loads it
into a ``Harvester``. A producer can be loaded only once per process, so :data:`POOL` shares one
Harvester per set of producers among all sources. ``harvesters`` is imported only when a pool
entry is first created.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from procgraph.agents.camera.sources import SourceError

if TYPE_CHECKING:  # pragma: no cover
    from harvesters.core import Harvester

__all__ = [
    "POOL",
    "CtiArg",
    "HarvesterPool",
    "default_cti_files",
    "device_rows",
    "format_rows",
    "list_devices",
    "resolve_ctis",
    "select_device",
]

log = logging.getLogger("procgraph.agents.camera.genicam")

#: one producer path, several, or None for :func:`default_cti_files`
CtiArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


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


class HarvesterPool:
    """One Harvester per set of producers per process.

    A GenTL producer can be opened only once per process: a second Harvester on the same
    ``.cti`` sees no devices. Sources on the same producers therefore share one Harvester,
    which is reset when the last of them closes.
    """

    def __init__(self) -> None:
        """An empty pool."""
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], tuple[Harvester, int]] = {}

    def acquire(self, ctis: tuple[str, ...]) -> Harvester:
        """The Harvester of these producers (created and scanned on first use)."""
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
        """How many sources hold the Harvester of these producers."""
        with self._lock:
            entry = self._entries.get(ctis)
            return entry[1] if entry else 0

    def release(self, ctis: tuple[str, ...]) -> None:
        """Give back one use; the last one resets the Harvester."""
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


#: the process' Harvesters, shared by every source on the same producers
POOL = HarvesterPool()


def resolve_ctis(cti: CtiArg) -> tuple[str, ...]:
    """The absolute paths of the producers to load (``cti`` as in ``GenICamSource``)."""
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


def device_rows(harvester: Harvester) -> list[dict[str, Any]]:
    """One row per device the Harvester sees: index, id, serial, model, vendor..."""
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


def list_devices(cti: CtiArg = None) -> list[dict[str, Any]]:
    """List the cameras the given producers see: index, id, serial, model, vendor...

    Use it to find the ``serial`` or ``device_id`` of your camera. ``cti`` works as in
    :class:`GenICamSource`.
    """
    ctis = resolve_ctis(cti)
    harvester = POOL.acquire(ctis)
    try:
        return device_rows(harvester)
    finally:
        POOL.release(ctis)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The device rows on one line, for error messages."""
    if not rows:
        return "no devices found"
    return "; ".join(
        f"index {r['index']}: id={r['id']!r} serial={r['serial']!r} model={r['model']!r}"
        for r in rows
    )


def select_device(
    harvester: Harvester,
    ctis: tuple[str, ...],
    *,
    index: int | None = None,
    serial: str | None = None,
    device_id: str | None = None,
) -> int:
    """Index of the device chosen by ``index``, ``serial`` or ``device_id`` (else the first).

    Raises :class:`SourceError` naming what was wanted and every device that was found.
    """
    rows = device_rows(harvester)
    if index is not None:
        if 0 <= index < len(rows):
            return index
        wanted = f"index {index}"
    elif serial is not None:
        matches = [r["index"] for r in rows if str(r["serial"]) == serial]
        if len(matches) == 1:
            return int(matches[0])
        if len(matches) > 1:
            raise SourceError(
                f"{len(matches)} cameras have serial {serial!r}; select by device_id. "
                f"Found: {format_rows(rows)}"
            )
        wanted = f"serial {serial!r}"
    elif device_id is not None:
        matches = [r["index"] for r in rows if r["id"] == device_id]
        if matches:
            return int(matches[0])
        wanted = f"device_id {device_id!r}"
    else:
        if rows:
            return 0
        wanted = "any camera"
    hint = "check the cable/network and the power of the camera, and the producer (cti)"
    if POOL.users(ctis) > 1:
        hint += "; other sources share these producers, so the device list was not rescanned"
    raise SourceError(
        f"no camera with {wanted} among the producers {list(ctis)}. "
        f"Found: {format_rows(rows)}. {hint}"
    )
