"""SimCLR checkpoints: weights that load without running code, plus a JSON sidecar.

Layout of a training run's directory (``checkpoint_dir`` of ``train.pretrain``):

    run/
      epoch-0003/            one directory per completed epoch (the last few are kept)
        encoder.safetensors  ResNet18 encoder weights (the part used downstream)
        head.safetensors     projection head weights
        training_state.pt    Adam state, RNG states and the loss history; a plain
                             dict of tensors, loaded with torch.load(weights_only=True)
        state.json           the sidecar, written last
      final/                 the same files after the last epoch
      latest                 text file naming the newest complete epoch directory
      loss.json, loss.png    the loss curve

The sidecar holds the resolved training config, the training data's provenance (as
given by the caller), the package version, the sha256 of every file and the model id,
``"simclr-"`` + the first 16 hex digits of the sha256 of ``encoder.safetensors`` and of
the settings that change what the encoder makes of a frame (:data:`EMBEDDING_SETTINGS`:
the input side frames are resized to) and, where the sidecar records one, of its
``preprocess``: the store preprocessing setting (``PreprocessConfig.setting()``) of the
frames the encoder was trained on, or, for an imported encoder, the setting its
publisher prepared frames with. The same weights and settings always get the
same id, and no two models that embed differently share one, so embeddings can name
the exact model. A sidecar whose settings were edited after saving no longer matches
its id and is refused, as are settings no encoder could have been trained with.

Every file is written to a temporary name and renamed into place, the sidecar last: a
checkpoint is complete when its sidecar exists and every file matches its recorded
hash. Anything else (a crash mid-save, a truncated copy, a file from elsewhere) is
refused with ``CheckpointError``.

Example:
    >>> encoder, meta = load_encoder("s3://bucket/runs/2024-01/final", device="cuda")
    >>> meta["model_id"], meta["config"]["image_size"]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import posixpath
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
import torch
from torch import nn

from aurora_pipeline.atomic import atomic_write
from aurora_pipeline.errors import BadInputError, CheckpointError
from aurora_pipeline.device import resolve_device
from aurora_pipeline.encoder.backbone import resnet18_encoder
import aurora_pipeline
from aurora_pipeline.ingest.config import recorded_setting
from aurora_pipeline.ingest.preprocess import PreprocessConfig

ENCODER_FILE = "encoder.safetensors"
HEAD_FILE = "head.safetensors"
TRAINING_FILE = "training_state.pt"
SIDECAR_FILE = "state.json"
LATEST_FILE = "latest"
FINAL_DIR = "final"
FORMAT = "aurora-pipeline simclr checkpoint"
CHECKPOINT_FORMAT_VERSION = 2  # 2: the model id covers EMBEDDING_SETTINGS as well as the weights
# config keys that change the embedding of a frame, hashed into the model id with the weights
EMBEDDING_SETTINGS = ("image_size",)
IMAGE_SIZE_RANGE = (32, 512)  # ResNet18 needs 32 pixels; THEMIS frames are 256, so 512 is already 2x upsampled


def model_id_of(encoder_bytes: bytes, settings: dict[str, Any] | None = None, preprocess: dict | None = None) -> str:
    """The model id: ``"simclr-"`` + 16 hex digits of the sha256 of the encoder file and of
    ``settings`` (the sidecar config's :data:`EMBEDDING_SETTINGS`) and ``preprocess`` (when
    not None), as canonical JSON. Without ``preprocess`` the id is the one format 2 always gave."""
    digest = hashlib.sha256(encoder_bytes)
    digest.update(json.dumps(embedding_settings(settings or {}, preprocess), sort_keys=True).encode())
    return "simclr-" + digest.hexdigest()[:16]


def embedding_settings(config: dict[str, Any], preprocess: dict | None = None) -> dict[str, Any]:
    """The values of :data:`EMBEDDING_SETTINGS` in a config (None where absent), plus
    ``preprocess`` when the checkpoint records one."""
    out = {key: config.get(key) for key in EMBEDDING_SETTINGS}
    if preprocess is not None:
        out["preprocess"] = preprocess
    return out


def check_embedding_settings(sidecar: dict, where: str) -> dict[str, Any]:
    """The sidecar's embedding settings, refused when no encoder could have been trained with them.

    Raises:
        CheckpointError: no config, ``image_size`` not a whole number of pixels in IMAGE_SIZE_RANGE,
            or a ``preprocess`` that is not a preprocessing setting.
    """
    config = sidecar.get("config")
    fix = "Fix: use the checkpoint as training wrote it (copy it again), or retrain."
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: {SIDECAR_FILE} has no training config, so the encoder's input size "
                              f"is unknown. {fix}")
    size, (low, high) = config.get("image_size"), IMAGE_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        raise CheckpointError(f"{where}: {SIDECAR_FILE} has config.image_size {size!r}, not a whole number of "
                              f"pixels in {low}..{high}. {fix}")
    preprocess = sidecar.get("preprocess")
    if preprocess is not None:
        try:
            PreprocessConfig(**preprocess)
        except (TypeError, BadInputError) as err:
            raise CheckpointError(f"{where}: {SIDECAR_FILE} has a preprocess entry that is not a preprocessing "
                                  f"setting ({err}). {fix}") from None
    return embedding_settings(config, preprocess)


def encoder_preprocess(sidecar: dict) -> dict | None:
    """The preprocessing setting a checkpoint's encoder expects its frames in (None when the
    checkpoint predates recording it). A setting recorded before a key was added reads with the
    value its frames were made with (``recorded_setting``)."""
    return recorded_setting(sidecar.get("preprocess"))


def epoch_dir_name(epoch: int) -> str:
    """``epoch-0003`` for the checkpoint taken after 3 completed epochs."""
    return f"epoch-{epoch:04d}"


def _weights_bytes(module: nn.Module) -> bytes:
    # safetensors: only when writing or reading weights
    from safetensors.torch import save

    tensors = {name: value.detach().to("cpu").contiguous() for name, value in module.state_dict().items()}
    return save(tensors)


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    encoder: nn.Module,
    head: nn.Module,
    training_state: dict[str, Any] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write one complete checkpoint into ``directory`` (created if needed).

    An existing checkpoint there is replaced; its sidecar is removed first so the
    directory never looks complete while it holds a mix of old and new files.

    Args:
        directory: local directory of this checkpoint (e.g. ``run/epoch-0003``).
        encoder, head: the modules; their state dicts are saved as safetensors.
        training_state: tensors and plain values only (optimizer state dict, RNG
            states, loss history), saved with ``torch.save``; None for an encoder that
            cannot be resumed (an imported one): no training_state.pt.
        meta: JSON-serialisable facts for the sidecar (config, provenance, epoch, and
            ``preprocess``, the setting of the frames, which the model id covers).

    Returns:
        The sidecar as written (with ``model_id`` and ``files``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SIDECAR_FILE).unlink(missing_ok=True)
    blobs = {ENCODER_FILE: _weights_bytes(encoder), HEAD_FILE: _weights_bytes(head)}
    if training_state is not None:
        buffer = io.BytesIO()
        torch.save(training_state, buffer)
        blobs[TRAINING_FILE] = buffer.getvalue()
    for name, data in blobs.items():
        atomic_write(directory / name, data)
    sidecar = {
        "format": FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_id": model_id_of(blobs[ENCODER_FILE], meta.get("config"), meta.get("preprocess")),
        "aurora_pipeline_version": aurora_pipeline.__version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()},
    }
    atomic_write(directory / SIDECAR_FILE, json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return sidecar


def write_latest(run_dir: str | os.PathLike, name: str) -> None:
    """Point ``run_dir/latest`` at the checkpoint directory ``name`` (atomically)."""
    atomic_write(Path(run_dir) / LATEST_FILE, (name + "\n").encode())


def prune_epochs(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` epoch directories (``keep`` <= 0 keeps all)."""
    if keep <= 0:
        return
    epochs = sorted(p for p in Path(run_dir).glob("epoch-[0-9]*") if p.is_dir())
    for old in epochs[:-keep]:
        shutil.rmtree(old)


def has_checkpoints(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds any checkpoint, complete or not."""
    run_dir = Path(run_dir)
    return (run_dir / LATEST_FILE).exists() or (run_dir / FINAL_DIR).exists() or any(run_dir.glob("epoch-[0-9]*"))


def latest_complete(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete epoch checkpoint in ``run_dir``, or None.

    Follows the ``latest`` pointer when it names a complete checkpoint, else scans the
    epoch directories newest first (a crash can leave the newest one incomplete).
    """
    run_dir = Path(run_dir)
    candidates = sorted((p for p in run_dir.glob("epoch-[0-9]*") if p.is_dir()), reverse=True)
    pointer = run_dir / LATEST_FILE
    if pointer.exists():
        candidates.insert(0, run_dir / pointer.read_text().strip())
    for candidate in candidates:
        try:
            read_verified(str(candidate), (ENCODER_FILE, HEAD_FILE, TRAINING_FILE))
        except CheckpointError:
            continue
        return candidate
    return None


# ---- reading (local paths or fsspec URLs) -------------------------------------------------


def _fs(path_or_url: str, storage_options: dict | None = None):
    return fsspec.core.url_to_fs(str(path_or_url), **(storage_options or {}))


def resolve_checkpoint(path_or_url: str | os.PathLike, storage_options: dict | None = None) -> str:
    """The checkpoint directory a path names: itself, its ``final/``, or what ``latest`` names.

    Raises:
        CheckpointError: nothing that looks like a checkpoint there.
    """
    text = str(path_or_url).rstrip("/")
    fs, root = _fs(text, storage_options)
    if fs.exists(posixpath.join(root, SIDECAR_FILE)):
        return text
    if fs.exists(posixpath.join(root, FINAL_DIR, SIDECAR_FILE)):
        return text + "/" + FINAL_DIR
    pointer = posixpath.join(root, LATEST_FILE)
    if fs.exists(pointer):
        return text + "/" + fs.cat_file(pointer).decode().strip()
    if fs.exists(posixpath.join(root, ENCODER_FILE)):
        raise CheckpointError(
            f"{text}: incomplete checkpoint, {ENCODER_FILE} is there but its sidecar {SIDECAR_FILE} is not "
            "(the save was interrupted, or the files were copied without it). "
            "Fix: use an earlier epoch-NNNN directory of the run, or resume the training run to rewrite it."
        )
    raise CheckpointError(
        f"{text}: no SimCLR checkpoint found (looked for {SIDECAR_FILE}, {FINAL_DIR}/{SIDECAR_FILE} and {LATEST_FILE}). "
        "Fix: pass the training run's directory, its final/ directory or one epoch-NNNN directory."
    )


def read_verified(
    checkpoint: str, names: tuple[str, ...] = (ENCODER_FILE,), storage_options: dict | None = None
) -> tuple[dict, dict[str, bytes]]:
    """Read a checkpoint's sidecar and the files ``names``, checking each hash.

    Returns:
        ``(sidecar, {name: bytes})``.

    Raises:
        CheckpointError: sidecar missing or not ours, a file missing, or a hash mismatch.
    """
    fs, root = _fs(checkpoint, storage_options)
    fix = "Fix: use another epoch-NNNN directory of the run, copy the checkpoint again, or retrain."
    try:
        sidecar = json.loads(fs.cat_file(posixpath.join(root, SIDECAR_FILE)))
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint}: no {SIDECAR_FILE}, so the checkpoint is incomplete. {fix}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{checkpoint}: {SIDECAR_FILE} is not valid JSON ({err}). {fix}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise CheckpointError(f"{checkpoint}: {SIDECAR_FILE} is not an aurora-pipeline SimCLR checkpoint sidecar. {fix}")
    if sidecar.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{checkpoint}: checkpoint format version {sidecar.get('format_version')!r}, this aurora-pipeline "
            f"reads version {CHECKPOINT_FORMAT_VERSION}. Fix: load it with the aurora-pipeline version that wrote it "
            f"({sidecar.get('aurora_pipeline_version')})."
        )
    blobs = {}
    for name in names:
        expected = sidecar.get("files", {}).get(name)
        try:
            data = fs.cat_file(posixpath.join(root, name))
        except FileNotFoundError:
            raise CheckpointError(f"{checkpoint}: {name} is missing. {fix}") from None
        if expected is None or hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(
                f"{checkpoint}: {name} ({len(data)} bytes) does not match the sha256 recorded in {SIDECAR_FILE}; "
                f"it is truncated or was changed after saving. {fix}"
            )
        blobs[name] = data
    return sidecar, blobs


def load_weights(module: nn.Module, data: bytes, where: str) -> None:
    """Load safetensors ``data`` into ``module``, refusing wrong keys or shapes."""
    # safetensors: only when writing or reading weights
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{where}: not a readable safetensors file ({err}). Fix: point at a checkpoint written by aurora-pipeline.") from None
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in tensors.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        if wrong:
            details.append(f"wrong shapes for {wrong[:3]} (expected {[expected[n] for n in wrong[:3]]}, found {[found[n] for n in wrong[:3]]})")
        raise CheckpointError(
            f"{where}: these weights are not a {type(module).__name__} of the expected shape: {'; '.join(details)}. "
            "Fix: point at an aurora-pipeline SimCLR checkpoint (1-channel ResNet18 encoder)."
        )
    module.load_state_dict(tensors, strict=True)


def load_training_state(checkpoint: str | os.PathLike) -> tuple[dict, dict[str, bytes], dict[str, Any]]:
    """Everything needed to resume: ``(sidecar, {weights file: bytes}, training_state)``.

    ``training_state`` is loaded with ``torch.load(weights_only=True)`` (no code runs).
    """
    sidecar, blobs = read_verified(str(checkpoint), (ENCODER_FILE, HEAD_FILE, TRAINING_FILE))
    try:
        state = torch.load(io.BytesIO(blobs.pop(TRAINING_FILE)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text advises weights_only=False: never pass it on
        raise CheckpointError(f"{checkpoint}/{TRAINING_FILE}: not a safe checkpoint file: it holds pickled objects "
                              "besides tensors, which aurora-pipeline never loads (nothing in it was run). "
                              f"Fix: {_other_epochs_fix(checkpoint)}") from None
    except Exception as err:  # noqa: BLE001 - a damaged file: its first line says how
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{checkpoint}/{TRAINING_FILE}: cannot be read ({first}). "
                              f"Fix: {_other_epochs_fix(checkpoint)}") from None
    return sidecar, blobs, state


def _other_epochs_fix(checkpoint: str | os.PathLike) -> str:
    """How to resume from another epoch of the run ``checkpoint`` belongs to (naming the ones there)."""
    here = Path(checkpoint)
    run = here.parent
    others = sorted(p.name for p in run.glob("epoch-[0-9]*") if p.is_dir() and p.name != here.name)
    if not others:
        return (f"no other epoch is kept in {run}: start the training again in a new checkpoint directory "
                "(or delete this run)")
    return (f"resume from another epoch: move {here.name} out of {run}, then --resume continues from the newest "
            f"complete epoch left ({others[-1]}; kept: {', '.join(others)})")


def load_encoder(
    path_or_url: str | os.PathLike, device: str | torch.device = "cpu", *, storage_options: dict | None = None
) -> tuple[nn.Module, dict]:
    """Load the trained ResNet18 encoder of a checkpoint, verified, in eval mode.

    Args:
        path_or_url: a training run directory (its ``final/`` is used, else ``latest``),
            a ``final/`` or ``epoch-NNNN`` directory, locally or as an fsspec URL
            (``s3://bucket/runs/x/final``).
        device: where to put the model (``"auto"``, ``"cpu"``, ``"cuda"``...).
        storage_options: fsspec options for a URL (endpoint, credentials...).

    Returns:
        ``(encoder, meta)``: the module maps (n, 1, S, S) float to (n, 512); ``meta`` is
        the sidecar (``model_id``, ``config``, ``provenance``, ...) plus ``path``.

    Raises:
        CheckpointError: missing sidecar, hash mismatch, not safetensors, wrong keys
            or shapes, an impossible ``image_size``, or the sidecar's model id disagrees
            with the weights and settings.
    """
    checkpoint = resolve_checkpoint(path_or_url, storage_options)
    sidecar, blobs = read_verified(checkpoint, (ENCODER_FILE,), storage_options)
    data = blobs[ENCODER_FILE]
    settings = check_embedding_settings(sidecar, checkpoint)
    expected_id = model_id_of(data, settings, settings.get("preprocess"))
    if sidecar.get("model_id") != expected_id:
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        raise CheckpointError(
            f"{checkpoint}: model_id {sidecar.get('model_id')!r} in {SIDECAR_FILE} is not the id of these weights "
            f"with {shown} ({expected_id}): the sidecar was edited after saving. "
            "Fix: do not edit sidecars by hand; copy the checkpoint again."
        )
    encoder = resnet18_encoder()
    load_weights(encoder, data, f"{checkpoint}/{ENCODER_FILE}")
    encoder = encoder.to(resolve_device(str(device))).eval()
    return encoder, {**sidecar, "path": checkpoint}
