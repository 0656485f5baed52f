"""Theorem 1 made computable: the identity behind it, the bound μ ≤ ½δ²K² on any logistic
regression and data, and the power-law fit.

The gradients here are an independent numpy transcription of the logistic loss at the
closed-form worst point x − yδu (so this file needs no torch); test_synth checks the
library's own gradients against autograd.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from caat_app.lab import theorem

FAST = settings(max_examples=80, deadline=None)
_floats = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False, width=64)


def _np_mu(g_c: np.ndarray, g_a: np.ndarray) -> float:
    """The paper's definition, term by term."""
    n_c, n_a = np.linalg.norm(g_c), np.linalg.norm(g_a)
    return float(n_c * n_a * (1.0 - np.dot(g_c, g_a) / (n_c * n_a)))


@st.composite
def vector_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 32))
    return draw(arrays(np.float64, n, elements=_floats)), draw(
        arrays(np.float64, n, elements=_floats)
    )


@FAST
@given(vector_pairs())
def test_mu_identity_and_first_step_of_the_bound(pair: tuple[np.ndarray, np.ndarray]) -> None:
    g_c, g_a = pair
    assume(np.linalg.norm(g_c) > 1e-3 and np.linalg.norm(g_a) > 1e-3)
    mu = _np_mu(g_c, g_a)
    scale = 1.0 + float(np.sum(g_c**2) + np.sum(g_a**2))
    assert theorem.mu_from_gap(g_c, g_a) == pytest.approx(mu, abs=1e-9 * scale)
    assert mu <= theorem.half_gap_squared(g_c, g_a) + 1e-9 * scale


def test_first_step_is_tight_for_opposite_gradients_of_equal_length() -> None:
    """A stationary point of the λ = 0.5 loss has g_a = −g_c: there μ = ½‖g_a − g_c‖²."""
    g_c = np.array([0.3, -1.2, 2.0])
    assert theorem.half_gap_squared(g_c, -g_c) == pytest.approx(_np_mu(g_c, -g_c))


def _np_gradients(
    w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray, delta: float, norm: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean g_c, mean g_a over the rows and the adversarial slopes t_i (numpy reference)."""
    u = np.sign(w) if norm == "linf" else w / np.linalg.norm(w)
    x_adv = x - delta * y[:, None] * u[None, :]
    z_c = np.hstack([x, np.ones((len(x), 1))]) * y[:, None]
    z_a = np.hstack([x_adv, np.ones((len(x), 1))]) * y[:, None]
    s = 1.0 / (1.0 + np.exp(z_c[:, :-1] @ w + y * b))  # σ(−m)
    t = 1.0 / (1.0 + np.exp(z_a[:, :-1] @ w + y * b))  # σ(−m_adv)
    return -(s[:, None] * z_c).mean(0), -(t[:, None] * z_a).mean(0), t


@st.composite
def linear_problems(draw: st.DrawFn) -> tuple:
    d = draw(st.integers(1, 8))
    n = draw(st.integers(1, 12))
    w = draw(arrays(np.float64, d, elements=st.floats(-4.0, 4.0, width=64)))
    b = draw(st.floats(-2.0, 2.0))
    x = draw(arrays(np.float64, (n, d), elements=st.floats(0.0, 1.0, width=64)))
    y = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n)))
    delta = draw(st.floats(1e-3, 2.0))
    norm = draw(st.sampled_from(["linf", "l2"]))
    return w, b, x, y, delta, norm


@FAST
@given(linear_problems())
def test_the_bound_holds_on_any_logistic_regression(problem: tuple) -> None:
    """‖g_a − g_c‖ ≤ δK and μ ≤ ½δ²K², whatever the weights, the data and the budget."""
    w, b, x, y, delta, norm = problem
    assume(np.linalg.norm(w) > 1e-6)
    g_c, g_a, t = _np_gradients(w, b, x, y, delta, norm)
    dual = float(np.abs(w).sum() if norm == "linf" else np.linalg.norm(w))
    u_norm = math.sqrt(np.count_nonzero(w)) if norm == "linf" else 1.0
    z_norm = float(np.linalg.norm(np.hstack([x, np.ones((len(x), 1))]), axis=1).mean())
    k = theorem.gap_constant(dual, z_norm, float(t.mean()), u_norm)
    assert np.linalg.norm(g_a - g_c) <= delta * k * (1 + 1e-9) + 1e-12
    assert theorem.mu_from_gap(g_c, g_a) <= theorem.mu_bound(delta, k) * (1 + 1e-9) + 1e-12


@FAST
@given(
    st.floats(-3.0, 4.0),
    st.floats(1e-3, 1e3),
    st.lists(st.floats(0.01, 1.0), min_size=2, max_size=8, unique=True),
)
def test_power_law_fit_recovers_an_exact_law(
    exponent: float, prefactor: float, deltas: list[float]
) -> None:
    assume(max(deltas) / min(deltas) > 1.05)
    fit = theorem.power_law_fit(deltas, [prefactor * d**exponent for d in deltas])
    assert fit is not None
    assert fit.exponent == pytest.approx(exponent, abs=1e-6)
    assert fit.prefactor == pytest.approx(prefactor, rel=1e-5)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit(0.5) == pytest.approx(prefactor * 0.5**exponent, rel=1e-5)


def test_power_law_fit_leaves_out_zeros_and_needs_two_points() -> None:
    assert theorem.power_law_fit([0.1], [1.0]) is None
    assert theorem.power_law_fit([0.1, 0.2], [1.0, 0.0]) is None
    fit = theorem.power_law_fit([0.1, 0.2, 0.4], [0.01, 0.0, 0.16])
    assert fit is not None and fit.exponent == pytest.approx(2.0)


def test_findings_name_the_budgets_over_the_bound_and_the_exponent() -> None:
    deltas = [0.1, 0.2, 0.3]
    _, _, said = theorem.findings(deltas, [1e-3, 8e-3, 5.0], [1.0, 2.0, 3.0])
    assert said[0] == "measured μ exceeds the bound at δ = 0.3"
    fit, _, said = theorem.findings(deltas, [d**2 for d in deltas], [1.0, 2.0, 3.0])
    assert fit is not None and fit.exponent == pytest.approx(2.0)
    assert "stays under the bound" in said[0]
    assert any("close to the paper's quadratic" in s for s in said)
    _, _, said = theorem.findings(deltas, [d**3 for d in deltas], [1.0, 2.0, 3.0])
    assert any("is not the paper's 2" in s for s in said)
