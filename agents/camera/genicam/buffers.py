"""GenTL buffers to numpy: copy an image out of the driver's buffer, unpacked and named.

Frames leave a source self-describing: packed formats come out unpacked, as uint16 images with
the unpacked format name (a ``Mono12p`` buffer becomes a ``Mono12`` image), so no consumer has to
know about packing. ``harvesters`` expands the packed formats it knows; packed bytes it hands
over as they are are unpacked here with :func:`procgraph.agents.imaging.unpack`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from procgraph.agents import imaging
from procgraph.agents.camera.sources import SourceError

__all__ = ["component_to_image"]


def _packed(fmt: str) -> bool:
    return fmt in imaging.PIXEL_FORMATS and imaging.is_packed(fmt)


def component_to_image(component: Any) -> tuple[np.ndarray, str]:
    """Copy a harvesters 2-D image component into ``(image, pixel format)``.

    ``component.data`` is flat: values as harvesters expanded them (uint8/uint16/float32), or
    the packed bytes of a packed format it did not expand. Line padding is removed. Mono and
    Bayer images are ``(H, W)``, colour ``(H, W, 3|4)``; sub-sampled formats (YUV422...) are
    returned one row per image line, as delivered.
    """
    data = component.data
    height = int(component.height)
    width = int(component.width)
    fmt = str(component.data_format)
    channels = float(component.num_components_per_pixel)
    if data is None or height <= 0 or width <= 0 or data.size == 0:
        raise SourceError("the camera delivered an empty image buffer")
    if _packed(fmt):
        unpacked = imaging.unpacked_format(fmt)
        if data.dtype == np.uint8 and imaging.channels(fmt) == 1:
            try:
                return imaging.unpack(data, fmt, width, height), unpacked
            except imaging.ImageFormatError as exc:
                raise SourceError(f"camera sent a bad {fmt} buffer: {exc}") from exc
        fmt = unpacked  # harvesters expanded it already
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
        return np.array(image, copy=True), fmt
    # sub-sampled formats (YUV422, YUV411...): hand out the rows as delivered
    return np.array(rows, copy=True), fmt
