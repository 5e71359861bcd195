"""GenICam node access: read and write a camera's features by name, with errors that help.

:class:`CameraNodes` wraps the node map of one open camera. Every error is a
:class:`~procgraph.agents.camera.sources.SourceError` that names the camera and the node and
says what is allowed: an unknown node (with similarly named nodes, or the writable ones), a
read-only or unavailable node, a value out of range, off the increment or not one of an
enumeration's entries.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

from procgraph.agents.camera.sources import SourceError

__all__ = ["CameraNodes", "NodeValue"]

NodeValue = int | float | str | bool

# genicam.genapi.EAccessMode values
_NI, _NA, _WO, _RO, _RW = 0, 1, 2, 3, 4
_INVISIBLE = 3  # genicam.genapi.EVisibility.Invisible


class CameraNodes:
    """The GenICam nodes of one open camera, by name.

    Args:
        node_map: the camera's node map (``ImageAcquirer.remote_device.node_map``).
        camera: how errors name the camera (``'VikyTL_DEV_red' (model, serial 0)``).
    """

    def __init__(self, node_map: Any, camera: str) -> None:
        self._map = node_map
        self.camera = camera

    def has(self, name: str) -> bool:
        """True if the camera has a node called ``name``."""
        try:
            self._map.get_node(name)
        except Exception:
            return False
        return True

    def node(self, name: str) -> Any:
        """The node called ``name``; :class:`SourceError` with similar names if there is none."""
        try:
            return self._map.get_node(name)
        except Exception as exc:
            raise SourceError(self.missing_message(name)) from exc

    def access(self, name: str) -> int:
        """The node's GenApi access mode now (``EAccessMode``: NI, NA, WO, RO, RW)."""
        return int(self.node(name).node.get_access_mode())

    def writable(self, name: str) -> bool:
        """True if the node can be written now."""
        return self.access(name) in (_WO, _RW)

    def list_nodes(self, *, writable_only: bool = False) -> list[str]:
        """Names of the camera's features (visible, non-category nodes), sorted.

        With ``writable_only``, only nodes that can be written now, without commands.
        """
        from genicam.genapi import ICategory, ICommand, IEnumEntry, IPort, IRegister

        names = []
        for wrapped in self._map.nodes:
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

    def missing_message(self, name: str, *alternatives: str) -> str:
        """"camera X has no node 'name'", with the nodes of a similar name (or writable ones)."""
        nor = f" (nor {', '.join(repr(a) for a in alternatives)})" if alternatives else ""
        return f"camera {self.camera} has no node {name!r}{nor}; {self._suggest(name)}"

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

    def get(self, name: str) -> NodeValue:
        """Read a node's current value (``SourceError`` if missing or not readable)."""
        wrapped = self.node(name)
        access = int(wrapped.node.get_access_mode())
        if access not in (_RO, _RW):
            raise SourceError(f"node {name!r} of camera {self.camera} is not readable now")
        return wrapped.value  # type: ignore[no-any-return]

    def set(self, name: str, value: NodeValue) -> None:
        """Write a node by name, with errors that say what is allowed.

        Enumerations take the entry name (``"Mono8"``), integers an int, floats a number,
        booleans a bool, strings a str; a command node is executed when ``value`` is True.
        Works while acquiring for nodes the camera allows to change then (exposure, gain);
        nodes locked during acquisition (size, pixel format) can be changed by putting them in
        the source's parameters and reopening it.
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

        wrapped = self.node(name)
        access = int(wrapped.node.get_access_mode())
        where = f"node {name!r} of camera {self.camera}"
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

    def set_optional(self, name: str, value: NodeValue) -> None:
        """Write the node if the camera has it and it is writable now; else do nothing."""
        if self.has(name) and self.writable(name):
            self.set(name, value)

    def set_first(self, names: Sequence[str], value: NodeValue, param: str) -> None:
        """Write the first of ``names`` the camera has (``ExposureTime``/``ExposureTimeAbs``).

        ``param`` names the source parameter in the error when the camera has none of them.
        """
        for name in names:
            if self.has(name):
                self.set(name, value)
                return
        raise SourceError(
            f"cannot set {param}: {self.missing_message(*names)}; "
            f"leave {param} unset for this camera"
        )

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


def _safe_value(wrapped: Any) -> Any:
    try:
        return wrapped.value
    except Exception:
        return "?"
