"""procgraph camera agents: GenICam, OpenCV, image folder, synthetic parts."""

from procgraph.agents.camera.cameras import (
    CameraAgent,
    FolderCamera,
    GenICamCamera,
    OpenCVCamera,
    SyntheticPartCamera,
)

__all__ = ["CameraAgent", "FolderCamera", "GenICamCamera", "OpenCVCamera", "SyntheticPartCamera"]
