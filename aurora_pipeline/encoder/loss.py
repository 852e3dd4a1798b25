"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

Paper (section III.B), eq. 2 and 3, after Chen et al. (ICML 2020), Sohn (2016),
Wu et al. (2018), van den Oord et al. (2018):

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_k, z_i) / tau) )   (2)
    L = 1/(2N) sum_{k=1..N} [ l(2k-1, 2k) + l(2k, 2k-1) ]                                  (3)

with sim the cosine similarity and the sum in (2) over all 2N views of the batch but
view i itself. Views are laid out as in eq. 3: rows 2k and 2k+1 (0-based) of ``z`` are
the two views of frame k.

Implementation: the (2N, 2N) cosine-similarity matrix divided by tau, its diagonal
set to -inf (the k != i indicator), then a cross-entropy whose target for row i is
its partner i ^ 1. Cross-entropy's log-softmax is eq. 2 exactly, and its mean over
the 2N rows is eq. 3. Computed in float32 (or float64 if given) even under autocast.

Example:
    >>> z = head(encoder(views))            # views (2N, 1, H, W), pairs adjacent
    >>> loss = nt_xent_loss(z, temperature=0.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aurora_pipeline.encoder.config import check_temperature
from aurora_pipeline.errors import BadInputError


def nt_xent_loss(z: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Eq. 3: mean NT-Xent over the 2N views of a batch.

    Args:
        z: (2N, d) projections; rows 2k and 2k+1 are the two views of frame k.
        temperature: tau > 0.

    Returns:
        0-d tensor, float32 (float64 if ``z`` is float64), differentiable.

    Raises:
        BadInputError: tau <= 0, ``z`` not 2-d, an odd number of views, or fewer
            than 2 frames (N = 1 leaves no negatives, so the loss is always 0).
    """
    check_temperature(temperature)
    if z.ndim != 2:
        raise BadInputError("nt_xent_loss z", f"expected a (2N, d) tensor, got shape {tuple(z.shape)}.", "flatten the projections to (2N, d).")
    n_views = z.shape[0]
    if n_views % 2:
        raise BadInputError(
            "nt_xent_loss z",
            f"got {n_views} views, an odd count; every frame needs exactly two views.",
            "stack the two views of each frame on adjacent rows (2k, 2k+1).",
        )
    if n_views < 4:
        raise BadInputError(
            "nt_xent_loss z",
            f"got {n_views // 2} frame(s); with one frame there are no negatives and the loss is constant.",
            "use a batch of at least 2 frames (the paper uses 128).",
        )
    if z.dtype != torch.float64:
        z = z.float()
    z = F.normalize(z, dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(n_views, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = torch.arange(n_views, device=z.device) ^ 1  # 0<->1, 2<->3, ...
    return F.cross_entropy(logits, partner)


class NTXentLoss(nn.Module):
    """``nt_xent_loss`` as a module with a fixed temperature (checked at construction)."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        check_temperature(temperature)
        self.temperature = float(temperature)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(z, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
