"""GenICam cameras (GigE Vision, USB3 Vision, CoaXPress...) through ``harvesters``.

``harvesters`` talks to a camera through a GenTL producer: a ``.cti`` shared library that the
camera vendor ships (Basler pylon, Teledyne Spinnaker, Allied Vision Vimba, MATRIX VISION
mvIMPACT, Aravis...). The package has one module per job:

- :mod:`.producers`: finding ``.cti`` files, one ``Harvester`` per producer set, listing devices;
- :mod:`.nodes`: reading and writing camera features by name, with errors that help;
- :mod:`.buffers`: copying images out of driver buffers (unpacked, named);
- :mod:`.source`: :class:`GenICamSource`, the :class:`~procgraph.agents.camera.sources.FrameSource`.

``harvesters`` and ``genicam`` are optional dependencies (``pip install procgraph[genicam]``);
they are imported only when a :class:`GenICamSource` is opened.
"""

from procgraph.agents.camera.genicam.nodes import CameraNodes, NodeValue
from procgraph.agents.camera.genicam.producers import default_cti_files, list_devices
from procgraph.agents.camera.genicam.source import GenICamSource, TriggerMode

__all__ = [
    "CameraNodes",
    "GenICamSource",
    "NodeValue",
    "TriggerMode",
    "default_cti_files",
    "list_devices",
]
