"""Synthetic images of machined parts, for demos, tests and training the demo models.

A part is a round machined flange photographed from two sides. The ``"front"`` view shows a
raised hub, a bore and six through bolt holes; the ``"back"`` view shows lathe marks, an O-ring
groove, a keyed bore, two blind dowel holes and a laser-etched matrix code. Each side may carry
one defect:

- ``"scratch"``: a thin, long, nearly straight bright or dark line on the metal surface;
- ``"dent"``: a shaded elliptical depression, lit from the scene's light direction;
- ``"chip"``: a missing notch on the outer edge, with a bright fracture face.

Everything that is *not* a defect varies too, so that a classifier has to learn the defect and
not the picture: position jitter, rotation, size, metal tone, lighting (gain, offset, gradient,
hot spot), sensor noise, and harmless dust (soft specks and short curled fibres) on the part,
the belt and the lens.

Rendering is deterministic: the same :class:`PartSpec`, view, size and flags give the same
image, byte for byte. Geometry, defect, dust, lighting and noise draw from separate random
streams, so switching ``dust`` or ``lighting`` off leaves the rest of the picture unchanged.
The renderer only needs numpy and OpenCV; a 256x256 view renders in well under 5 ms.

Modules: :mod:`.spec` (what a part is), :mod:`.draw` (the part's two sides), :mod:`.defects`
(defects and dust), :mod:`.render` (``render_view``: lighting and noise), :mod:`.source`
(``SyntheticPartSource``, a frame source) and :mod:`.agent` (``SyntheticPartCamera``, free-run,
and ``SyntheticTriggeredCamera``, one frame per trigger).
"""

from procgraph.agents.camera.synthetic.agent import (
    SyntheticPartCamera,
    SyntheticTriggeredCamera,
)
from procgraph.agents.camera.synthetic.render import render_view
from procgraph.agents.camera.synthetic.source import SyntheticPartSource
from procgraph.agents.camera.synthetic.spec import DEFECT_KINDS, VIEWS, PartSpec, make_part

__all__ = [
    "DEFECT_KINDS",
    "VIEWS",
    "PartSpec",
    "SyntheticPartCamera",
    "SyntheticPartSource",
    "SyntheticTriggeredCamera",
    "make_part",
    "render_view",
]
