"""The projection head g(h) of SimCLR (Chen et al., "A Simple Framework for
Contrastive Learning of Visual Representations", ICML 2020).

Paper (section III.B): "a projection head consisting of two fully connected linear
layers with an intermediate ReLU activation and without biases; that is,
g(h) = W2(max(0, W1(h)))". The contrastive loss is computed on z = g(h); the head is
thrown away after training and h is what downstream tasks use.

Shapes: (n, in_dim) -> (n, out_dim); defaults 512 -> 512 -> 128 (the paper gives no
dimensions; 512 hidden and 128 out are SimCLR's choices).

Example:
    >>> head = ProjectionHead()
    >>> z = head(torch.randn(8, 512))   # (8, 128)
"""

from __future__ import annotations

import torch
from torch import nn

from aurora_pipeline.errors import BadInputError


class ProjectionHead(nn.Module):
    """g(h) = W2 ReLU(W1 h), two bias-free linear layers.

    Args:
        in_dim: length of h (512 for ResNet18).
        hidden_dim: rows of W1.
        out_dim: length of z, where the loss is computed.

    Raises:
        BadInputError: a dimension below 1.
    """

    def __init__(self, in_dim: int = 512, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if int(value) != value or value < 1:
                raise BadInputError(f"ProjectionHead {name}", f"must be a positive integer, got {value!r}.", "use e.g. 128.")
        self.layer1 = nn.Linear(in_dim, hidden_dim, bias=False)  # W1
        self.layer2 = nn.Linear(hidden_dim, out_dim, bias=False)  # W2

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer2(torch.relu(self.layer1(h)))
