"""NT-Xent (eq. 2 and 3 of the paper) against a slow, literal reference."""

import math

import pytest
import torch

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.encoder.loss import NTXentLoss, nt_xent_loss


def reference_nt_xent(z: torch.Tensor, tau: float) -> float:
    """Eq. 2 and 3 written out with Python loops, 1-based indices as in the paper."""
    two_n = z.shape[0]

    def sim(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    def ell(i, j):  # eq. 2, views i and j (1-based)
        numerator = math.exp(sim(z[i - 1], z[j - 1]) / tau)
        denominator = sum(math.exp(sim(z[k - 1], z[i - 1]) / tau) for k in range(1, two_n + 1) if k != i)
        return -math.log(numerator / denominator)

    n = two_n // 2
    return sum(ell(2 * k - 1, 2 * k) + ell(2 * k, 2 * k - 1) for k in range(1, n + 1)) / (2 * n)  # eq. 3


@pytest.mark.parametrize("n_frames", [2, 3, 8, 17])
@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0, 2.0])
def test_matches_literal_reference(n_frames, tau):
    gen = torch.Generator().manual_seed(1000 * n_frames + int(100 * tau))
    z = torch.randn(2 * n_frames, 7, generator=gen, dtype=torch.float64)
    got = nt_xent_loss(z, tau)
    assert got.dtype == torch.float64
    assert torch.allclose(got, torch.tensor(reference_nt_xent(z, tau), dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_pairs_are_adjacent_rows():
    # perfectly aligned pairs on rows (2k, 2k+1) and orthogonal frames give a low loss; the same rows paired
    # differently (first half with second half) give a high one
    frames = torch.eye(4, dtype=torch.float64)
    adjacent = frames.repeat_interleave(2, dim=0)
    halves = torch.cat([frames, frames])
    assert nt_xent_loss(adjacent, 0.1) < 0.01
    assert nt_xent_loss(halves, 0.1) > 5.0


def test_float32_input_and_gradient():
    z = torch.randn(16, 128, requires_grad=True)
    loss = NTXentLoss(0.5)(z)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(z.grad).all()
    reference = reference_nt_xent(z.detach().double(), 0.5)
    assert abs(loss.item() - reference) < 1e-5


def test_scale_invariant_cosine_similarity():
    z = torch.randn(10, 5, dtype=torch.float64)
    scales = torch.rand(10, 1, dtype=torch.float64) * 10 + 0.1
    assert torch.allclose(nt_xent_loss(z, 0.5), nt_xent_loss(z * scales, 0.5))


@pytest.mark.parametrize("tau", [0.0, -0.5, float("nan"), float("inf"), "0.5", None])
def test_bad_temperature_refused(tau):
    with pytest.raises(BadInputError, match="temperature"):
        nt_xent_loss(torch.randn(4, 3), tau)
    with pytest.raises(BadInputError, match="temperature"):
        NTXentLoss(tau)


def test_odd_number_of_views_refused():
    with pytest.raises(BadInputError, match="odd"):
        nt_xent_loss(torch.randn(5, 3))


def test_batch_of_one_frame_refused():
    with pytest.raises(BadInputError, match="at least 2 frames"):
        nt_xent_loss(torch.randn(2, 3))


def test_wrong_rank_refused():
    with pytest.raises(BadInputError, match=r"\(2N, d\)"):
        nt_xent_loss(torch.randn(4, 3, 2))
