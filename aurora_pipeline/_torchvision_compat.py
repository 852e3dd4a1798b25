"""Import torchvision on CPU-only torch builds.

Why this exists: torchvision 0.28.0's compiled ops are built for CUDA, so on the
CPU wheel of torch 2.13.0 ``import torchvision`` fails while registering fake
(meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``, two operators
whose schemas were never defined (upstream pytorch/vision#9085). We need only the
models and ``transforms.v2``, neither of which calls those operators.

``import_torchvision()`` first tries the plain import. Only when it fails with the
missing-operator error does it define the two schemas (no kernels: calling
``torchvision.ops.nms`` still raises) and import again. On a build where the
import works (any CUDA machine) nothing is touched.
"""

from __future__ import annotations

import sys
from types import ModuleType

_MISSING_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the schema definitions alive for the life of the process


def _define_missing_schemas() -> None:
    global _library
    # torch: only when torchvision's import failed (the work-around)
    import torch

    if _library is not None:
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _MISSING_SCHEMAS.items():
        try:
            _library.define(schema)
        except RuntimeError:  # already defined by a partial earlier import
            pass


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, working around pytorch/vision#9085."""
    try:
        # torchvision: imported on demand, the reason for this module
        import torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        _define_missing_schemas()
        # torchvision again, after the missing schemas are defined
        import torchvision
    return torchvision
