"""procgraph camera agents: GenICam, OpenCV, image folder, synthetic parts.

Modules: :mod:`.agent` (the camera agents' shared loop; GenICam, OpenCV and folder cameras),
:mod:`.sources` (the ``FrameSource`` contract, ``RateLimiter``), :mod:`.opencv` (OpenCV
sources), :mod:`.genicam` (GenICam producers, nodes, source) and :mod:`.synthetic` (the
synthetic part renderer and camera). Pixel formats are converted by
:mod:`procgraph.agents.imaging`.
"""

from procgraph.agents.camera.agent import CameraAgent, FolderCamera, GenICamCamera, OpenCVCamera
from procgraph.agents.camera.synthetic import SyntheticPartCamera, SyntheticTriggeredCamera

__all__ = [
    "CameraAgent",
    "FolderCamera",
    "GenICamCamera",
    "OpenCVCamera",
    "SyntheticPartCamera",
    "SyntheticTriggeredCamera",
]
