"""RBMs against brute force over every state of a 4-visible × 3-hidden machine, both visible types.

Free energy: -log Σ_h exp(-E(v, h)) summed over the 2³ hidden states. Positive phase: the exact
E[h | v] by the same sum. Model term: E_model[h·vᵀ] over all 2^(4+3) states (Bernoulli) or over
the 2³ hidden states with v | h ~ N(b + Wᵀh, I) integrated out (Gaussian); CD-k with k large
approaches it, within a tolerance from the number of chains.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dropnet.trainer.pretrain.rbm import RBM

VISIBLE, HIDDEN = 4, 3
CHAINS, GROUPS = 4000, 10
"""CD chains per group; the spread of the group means gives the standard error of the chain average."""


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _rbm(visible_type: str, seed: int = 0, weight_std: float = 1.0) -> RBM:
    rbm = RBM(VISIBLE, HIDDEN, visible_type).double()  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rbm.weight.copy_(torch.randn(HIDDEN, VISIBLE, generator=g, dtype=torch.float64) * weight_std)
        rbm.hidden_bias.copy_(torch.randn(HIDDEN, generator=g, dtype=torch.float64) * 0.5)
        rbm.visible_bias.copy_(torch.randn(VISIBLE, generator=g, dtype=torch.float64) * 0.5)
    return rbm


def _data(visible_type: str, rows: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    if visible_type == "bernoulli":
        return torch.rand(rows, VISIBLE, generator=g, dtype=torch.float64)  # probabilities in [0, 1] are data too
    return torch.randn(rows, VISIBLE, generator=g, dtype=torch.float64) * 2.0


def _exact_hidden_expectation(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """E[h | v] per row by summing p(h | v) ∝ exp(-E(v, h)) over every hidden state."""
    hs = _states(HIDDEN)
    energies = torch.stack([rbm.energy(v, h.expand(len(v), -1)) for h in hs], dim=1)  # [rows, 2^H]
    return torch.softmax(-energies, dim=1) @ hs


def _exact_model_terms(rbm: RBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E_model[h·vᵀ], E_model[v], E_model[h] by brute force."""
    hs = _states(HIDDEN)
    with torch.no_grad():
        if rbm.visible_type == "bernoulli":
            vs = _states(VISIBLE)
            v = vs.repeat_interleave(len(hs), dim=0)
            h = hs.repeat(len(vs), 1)
            p = torch.softmax(-rbm.energy(v, h), dim=0)
            return (h * p[:, None]).T @ v, p @ v, p @ h
        # ∫ exp(-E(v, h)) dv ∝ exp(c·h + ½‖b + Wᵀh‖²): p(h), then E[v | h] = b + Wᵀh
        mean_v = rbm.visible_bias + hs @ rbm.weight
        p = torch.softmax(hs @ rbm.hidden_bias + 0.5 * (mean_v**2).sum(dim=1), dim=0)
        return (hs * p[:, None]).T @ mean_v, p @ mean_v, p @ hs


@pytest.mark.parametrize("visible_type", ["bernoulli", "gaussian"])
def test_free_energy_is_minus_log_of_the_sum_over_hidden_states(visible_type: str) -> None:
    rbm, v = _rbm(visible_type), _data(visible_type)
    hs = _states(HIDDEN)
    with torch.no_grad():
        energies = torch.stack([rbm.energy(v, h.expand(len(v), -1)) for h in hs], dim=1)
        brute = -torch.logsumexp(-energies, dim=1)
        torch.testing.assert_close(rbm.free_energy(v), brute, rtol=1e-12, atol=1e-12)


def test_energy_matches_its_formula_on_a_hand_computed_state() -> None:
    rbm = _rbm("bernoulli")
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    h = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    b, c, w = rbm.visible_bias.detach(), rbm.hidden_bias.detach(), rbm.weight.detach()
    expected = -(b[0] + b[2] + b[3]) - (c[1] + c[2]) - sum(w[j, i] for j in (1, 2) for i in (0, 2, 3))
    with torch.no_grad():
        torch.testing.assert_close(rbm.energy(v, h), expected.reshape(1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("visible_type", ["bernoulli", "gaussian"])
def test_positive_phase_is_the_exact_conditional_expectation(visible_type: str) -> None:
    rbm, v = _rbm(visible_type), _data(visible_type)
    result = rbm.contrastive_divergence(v, k=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = _exact_hidden_expectation(rbm, v)
    torch.testing.assert_close(result.positive.vh, h.T @ v / len(v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.positive.h, h.mean(dim=0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.positive.v, v.mean(dim=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("visible_type", "weight_std"), [("bernoulli", 2.5), ("gaussian", 1.5)])
def test_cd_k_model_term_approaches_the_exact_model_expectation_as_k_grows(
    visible_type: str, weight_std: float,
) -> None:
    rbm = _rbm(visible_type, weight_std=weight_std)  # strong couplings: one Gibbs step is far from the model
    exact = _exact_model_terms(rbm)
    start = torch.zeros(CHAINS, VISIBLE, dtype=torch.float64)  # every chain starts at the same state

    def excess_and_tolerance(k: int) -> tuple[float, float]:
        """Over every entry of h·vᵀ, v and h: the largest |chain average - exact| beyond 5 standard errors of the
        average (the spread of GROUPS group means), and the largest such 5 standard errors."""
        g = torch.Generator().manual_seed(k)
        groups = [rbm.contrastive_divergence(start, k, g).negative for _ in range(GROUPS)]
        excess = tolerance = 0.0
        for name, truth in zip(("vh", "v", "h"), exact):
            estimate = torch.stack([getattr(s, name) for s in groups])
            five_se = 5 * estimate.std(dim=0) / GROUPS**0.5
            excess = max(excess, float(((estimate.mean(dim=0) - truth).abs() - five_se).max()))
            tolerance = max(tolerance, float(five_se.max()))
        return excess, tolerance

    excess, _ = excess_and_tolerance(k=60)
    assert excess <= 2e-3  # within 5 standard errors, up to a floor for entries that barely vary
    excess, tolerance = excess_and_tolerance(k=1)
    assert excess > 2 * tolerance  # the comparison has power: CD-1 from the start is far from the model


def test_gradient_terms_pair_as_the_log_likelihood_gradient() -> None:
    """E_data[h·vᵀ] - E_model[h·vᵀ] is ∂/∂W of the mean log-likelihood, computed by autograd over all 16 v."""
    rbm, v = _rbm("bernoulli"), (_data("bernoulli") > 0.5).double()
    vs = _states(VISIBLE)
    log_likelihood = (-rbm.free_energy(v) - torch.logsumexp(-rbm.free_energy(vs), dim=0)).mean()
    (grad_w,) = torch.autograd.grad(log_likelihood, rbm.weight)
    positive = rbm.contrastive_divergence(v, k=1, generator=torch.Generator().manual_seed(0)).positive
    model_vh, _, _ = _exact_model_terms(rbm)
    torch.testing.assert_close(grad_w, positive.vh - model_vh, rtol=1e-10, atol=1e-12)


def test_train_step_sets_the_negative_log_likelihood_gradient_estimate() -> None:
    rbm, v = _rbm("bernoulli"), _data("bernoulli")
    rbm.cd_k = 2
    result = rbm.contrastive_divergence(v, k=2, generator=torch.Generator().manual_seed(3))
    squared_error = rbm.train_step(v, torch.Generator().manual_seed(3))  # the same draws
    torch.testing.assert_close(rbm.weight.grad, result.negative.vh - result.positive.vh)
    torch.testing.assert_close(rbm.hidden_bias.grad, result.negative.h - result.positive.h)
    torch.testing.assert_close(rbm.visible_bias.grad, result.negative.v - result.positive.v)
    torch.testing.assert_close(squared_error, ((result.reconstruction - v) ** 2).sum())
