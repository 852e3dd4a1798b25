"""SimCLR (Chen et al., ICML 2020) as used by Johnson et al. for auroral images, in parts.

Each part is its own small module, documented with the paper it comes from:

* ``backbone``: the base encoder f, a random-init ResNet18 with a 1-channel stem;
  h = f(x) is the 512-d representation used downstream.
* ``head``: the projection head g(h) = W2 ReLU(W1 h), no biases.
* ``loss``: NT-Xent, eq. 2 and 3 of the paper.
* ``augment``: two views per frame, random resized crop + top-bottom flip, batched
  on the model's device.

Training lives in ``aurora_pipeline.encoder.train``, checkpoints in ``aurora_pipeline.encoder.checkpoint``
and embedding in ``aurora_pipeline.embed.model``.

Example:
    >>> from aurora_pipeline.encoder import AugmentConfig, ProjectionHead, nt_xent_loss, resnet18_encoder, two_views
    >>> encoder, head = resnet18_encoder(), ProjectionHead()
    >>> views = two_views(frames, AugmentConfig(), torch.Generator().manual_seed(0), out_size=128)
    >>> loss = nt_xent_loss(head(encoder(views)), temperature=0.5)
"""

import importlib

# The parts import torch, so they are imported on first use: ``aurora_pipeline.encoder.config``
# (the settings, no torch) is then light for the command line, which builds its options from it.
_WHERE = {
    "AugmentConfig": "config", "AugmentParams": "augment", "apply_params": "augment", "sample_params": "augment",
    "two_views": "augment", "REPRESENTATION_DIM": "backbone", "frames_to_input": "backbone",
    "resnet18_encoder": "backbone", "ProjectionHead": "head", "NTXentLoss": "loss", "nt_xent_loss": "loss",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "REPRESENTATION_DIM",
    "AugmentConfig",
    "AugmentParams",
    "NTXentLoss",
    "ProjectionHead",
    "apply_params",
    "frames_to_input",
    "nt_xent_loss",
    "resnet18_encoder",
    "sample_params",
    "two_views",
]
