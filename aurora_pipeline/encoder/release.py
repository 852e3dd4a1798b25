"""The published encoder (Aurora-FM) as a project checkpoint: ``import_encoder``.

The paper's author published the trained SimCLR encoder under CC-BY-4.0: file
``aurora-fm-no-finetune.tar`` of the Hugging Face repository ``Jwjohnson314/Aurora-FM``
(:data:`RELEASE_SIZE` bytes, SHA-256 :data:`RELEASE_SHA256`). Its publisher's loader
(github ``jwjohnson314/themisim``, ``src/themisim/model.py``) reads it with
``torch.load(..., weights_only=True)`` and loads it strictly into a wrapper:

* ``encoder``: torchvision ``resnet18(weights=None)`` with ``fc`` an identity (keys
  ``encoder.*``, no ``encoder.fc.*``), 3 input channels;
* ``projector``: ``Linear(512, 512, bias=False), ReLU, Linear(512, 64, bias=False)``
  (keys ``projector.0.weight``, ``projector.2.weight``).

Its input is (n, 3, 224, 224) float32 in [0, 1] with the frame in the green channel and
red and blue zero, so only the first convolution's green kernel ever meets a non-zero
pixel: ``conv1.weight[:, 1:2]`` in the project's one-channel ResNet18
(:func:`~aurora_pipeline.encoder.backbone.resnet18_encoder`) is the same function of the
frame. The frames are prepared as the ``fov="oath"`` preprocessing setting prepares them
(:func:`~aurora_pipeline.ingest.preprocess.preprocess_oath_frames`) at 224 x 224.

The file is only ever read with ``weights_only=True``: a pickle that asks for anything
but tensors and plain containers is refused by torch's restricted unpickler before any
of it runs, and reported in one line.

Example:
    >>> meta = import_encoder("aurora-fm-no-finetune.tar", "encoders/aurora-fm")
    >>> meta["model_id"], meta["config"]["image_size"], meta["preprocess"]["fov"]
    ('simclr-...', 224, 'oath')
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aurora_pipeline._torchvision_compat import import_torchvision
from aurora_pipeline.encoder import checkpoint as ckpt
from aurora_pipeline.encoder.backbone import resnet18_encoder
from aurora_pipeline.encoder.head import ProjectionHead
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.preprocess import PreprocessConfig

RELEASE_NAME = "aurora-fm-no-finetune.tar"
RELEASE_REPOSITORY = "https://huggingface.co/Jwjohnson314/Aurora-FM"
RELEASE_SIZE = 45_965_389
RELEASE_SHA256 = "f9c97e906bee7a34f0727377f8b3194086080fa9573390db44daab4ce2c64e33"
RELEASE_LICENCE = "CC-BY-4.0"
RELEASE_INPUT_SIZE = 224  # the publisher's input side in pixels
PROJECTOR_SHAPES = {"projector.0.weight": (512, 512), "projector.2.weight": (64, 512)}
GREEN = 1  # the input channel that holds the frame (red and blue are zero)


def release_layout() -> dict[str, tuple[int, ...]]:
    """Every key of the release's state dict and its shape: ``encoder.*`` of a 3-channel torchvision
    ResNet18 without ``fc`` (batch-norm counters included), then the two projector weights."""
    model = import_torchvision().models.resnet18(weights=None)
    model.fc = nn.Identity()
    layout = {f"encoder.{name}": tuple(value.shape) for name, value in model.state_dict().items()}
    return {**layout, **PROJECTOR_SHAPES}


def read_release(path: str | os.PathLike, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a state dict of the release's layout.

    Args:
        path: the file (the release, or any ``torch.save`` of a state dict of its layout).
        sha256: the file's expected SHA-256 (hex). None: the file must be the release itself
            (:data:`RELEASE_SHA256`, :data:`RELEASE_SIZE` bytes).

    Returns:
        ``(state_dict, source)``: the tensors by key; ``source`` = name, size, sha256 of the file.

    Raises:
        BadInputError: no such file, another digest, a pickle asking for more than tensors,
            not a state dict, or a missing, extra or misshapen key (each named in one line).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file", f"download {RELEASE_NAME} from {RELEASE_REPOSITORY} and pass its path")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = (sha256 or RELEASE_SHA256).strip().lower()
    if digest != expected:
        fix = (f"pass --sha256 {digest} if this is your own state dict of the release's layout"
               if sha256 is None else "check the file and the digest you passed")
        what = f"the release {RELEASE_NAME} ({RELEASE_SIZE} bytes, SHA-256 {RELEASE_SHA256})" if sha256 is None \
            else f"the digest given, {expected}"
        raise BadInputError(path, f"has SHA-256 {digest} ({len(data)} bytes), not that of {what}", fix)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the restricted unpickler raises several types; none of it ran
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInputError(path, f"cannot be read as plain tensors with torch.load(weights_only=True) "
                            f"({type(err).__name__}: {first[:200]}); nothing in it was run",
                            "use the release itself, or a state dict saved with torch.save(model.state_dict())") from None
    check_layout(state, path)
    return state, {"name": path.name, "size": len(data), "sha256": digest}


def check_layout(state: Any, where: str | os.PathLike) -> None:
    """Refuse (BadInputError, one line) anything but a dict of tensors with exactly the release's keys and shapes."""
    fix = "pass the release's state dict (keys encoder.* of a torchvision ResNet18 without fc, projector.0/2.weight)"
    if not isinstance(state, dict):
        raise BadInputError(where, f"holds a {type(state).__name__}, not a state dict", fix)
    layout = release_layout()
    missing = sorted(set(layout) - set(state))
    extra = sorted(set(state) - set(layout), key=str)
    if missing or extra:
        parts = ([f"missing key(s) {missing[:5]}"] if missing else []) + ([f"extra key(s) {extra[:5]}"] if extra else [])
        raise BadInputError(where, f"is not the release's layout: {'; '.join(parts)}", fix)
    for key, shape in layout.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise BadInputError(where, f"key {key} holds a {type(value).__name__}, not a tensor", fix)
        if tuple(value.shape) != shape:
            raise BadInputError(where, f"key {key} has shape {tuple(value.shape)}, the release's layout has {shape}", fix)
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise BadInputError(where, f"key {key} holds NaN or infinite values", fix)


def one_channel_modules(state: dict[str, torch.Tensor]) -> tuple[nn.Module, nn.Module]:
    """The release's weights in the project's parts: the 1-channel ResNet18 (green kernel of
    ``conv1``) and the projection head (512 -> 512 -> 64), both loaded strictly."""
    weights = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
    weights["conv1.weight"] = weights["conv1.weight"][:, GREEN : GREEN + 1].contiguous()
    encoder = resnet18_encoder()
    encoder.load_state_dict({k: v.to(encoder.state_dict()[k].dtype) for k, v in weights.items()}, strict=True)
    head = ProjectionHead(512, 512, 64)
    head.load_state_dict({"layer1.weight": state["projector.0.weight"].float(),
                          "layer2.weight": state["projector.2.weight"].float()}, strict=True)
    return encoder.eval(), head.eval()


def import_encoder(path: str | os.PathLike, out_dir: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """Turn the release (or a state dict of its layout) into a project checkpoint in ``out_dir``.

    The checkpoint records input size 224, the ``fov="oath"`` preprocessing setting at 224 px
    (which ``ingest --checkpoint`` gives a new store and ``embed`` requires of a store), the
    source file's name, size and SHA-256; its model id covers the weights and that setting.
    An existing checkpoint in ``out_dir`` is refused unless it is this very import.

    Returns:
        The sidecar (``model_id``, ``config``, ``preprocess``, ``provenance``, ...) plus ``path``.

    Raises:
        BadInputError: see :func:`read_release`; ``out_dir`` holds another checkpoint.
    """
    if sha256 is not None and (len(sha256.strip()) != 64 or any(c not in "0123456789abcdef" for c in sha256.strip().lower())):
        raise BadInputError("--sha256", f"{sha256!r} is not a SHA-256 digest (64 hex digits)",
                            "pass the file's digest as `sha256sum FILE` prints it")
    state, source = read_release(path, sha256)
    encoder, head = one_channel_modules(state)
    preprocess = PreprocessConfig(fov="oath", image_size=RELEASE_INPUT_SIZE).setting()
    meta = {"config": {"image_size": RELEASE_INPUT_SIZE}, "preprocess": preprocess, "epoch": None,
            "provenance": {"imported_from": source, "release": RELEASE_NAME, "repository": RELEASE_REPOSITORY,
                           "licence": RELEASE_LICENCE, "is_the_release": source["sha256"] == RELEASE_SHA256,
                           "conversion": "encoder.conv1.weight[:, 1:2] (the green kernel) into the 1-channel "
                                         "stem; projector.0/2.weight -> head layer1/layer2"}}
    out = Path(out_dir)
    if (out / ckpt.SIDECAR_FILE).exists():
        old, _ = ckpt.read_verified(str(out), ())
        if old.get("provenance", {}).get("imported_from", {}).get("sha256") != source["sha256"]:
            raise BadInputError(out, "already holds another checkpoint; refusing to overwrite it",
                                "choose a new --out directory, or delete this one")
    sidecar = ckpt.save_checkpoint(out, encoder=encoder, head=head, training_state=None, meta=meta)
    return {**sidecar, "path": str(out)}

