"""The CA-AT gradient arithmetic: φ, μ, Eq. 4, its degenerate cases and the Mixer.

Identities are checked with hypothesis on float64 vectors against an independent
numpy computation; every degenerate case of the module docstring has its own test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from caat_app.method.conflict import (
    Mixer,
    ca_at_direction,
    conflict_stats,
    segment_ids,
    vanilla_direction,
)

F64 = torch.float64
FAST = settings(max_examples=60, deadline=None)

_elements = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def pairs(draw: st.DrawFn, min_size: int = 2, max_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 vectors of the same length; g_a leans on g_c by a random amount, so
    that φ covers the whole range [-1, 1] rather than clustering near 0."""
    n = draw(st.integers(min_size, max_size))
    g_c = draw(arrays(np.float64, n, elements=_elements))
    other = draw(arrays(np.float64, n, elements=_elements))
    lean = draw(st.floats(-4.0, 4.0, allow_nan=False))
    return g_c, other + lean * g_c


def _np_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _usable(g_c: np.ndarray, g_a: np.ndarray, margin: float = 1e-3) -> float:
    """Reject near-degenerate draws for the identity checks; return φ (numpy)."""
    assume(np.linalg.norm(g_c) > 1e-3 and np.linalg.norm(g_a) > 1e-3)
    phi = _np_cos(g_c, g_a)
    assume(abs(1.0 - phi) > margin and abs(1.0 + phi) > margin)
    return phi


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def _eq4(g_c: np.ndarray, g_a: np.ndarray, gamma: float) -> np.ndarray:
    """Eq. 4 written out in numpy, independently of the module."""
    nc, na = np.linalg.norm(g_c), np.linalg.norm(g_a)
    phi = _np_cos(g_c, g_a)
    s = math.sqrt(1.0 - gamma**2)
    k = na * (gamma * math.sqrt(1.0 - phi**2) - phi * s) / (nc * s)
    return g_a + k * g_c


def _assert_finite(*tensors: torch.Tensor) -> None:
    for t in tensors:
        assert torch.isfinite(t).all(), t


# --------------------------------------------------------------------------- conflict_stats


@FAST
@given(pairs())
def test_phi_is_the_cosine_and_mu_the_conflict(pair: tuple[np.ndarray, np.ndarray]) -> None:
    g_c, g_a = pair
    assume(np.linalg.norm(g_c) > 1e-3 and np.linalg.norm(g_a) > 1e-3)
    c = conflict_stats(_t(g_c), _t(g_a))
    cos = _np_cos(g_c, g_a)
    nc, na = np.linalg.norm(g_c), np.linalg.norm(g_a)
    assert -1.0 <= c.phi.item() <= 1.0
    assert c.phi.item() == pytest.approx(cos, rel=1e-9, abs=1e-12)
    assert c.norm_c.item() == pytest.approx(nc, rel=1e-12)
    assert c.norm_a.item() == pytest.approx(na, rel=1e-12)
    assert c.mu.item() >= 0.0
    assert c.mu.item() == pytest.approx(nc * na * (1.0 - cos), rel=1e-6, abs=1e-9 * nc * na)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factor", [1.0, 2.0, -1.0, -3.0, 1e-3])
def test_phi_is_clamped_for_parallel_vectors(dtype: torch.dtype, factor: float) -> None:
    # Rounding can push dot/(‖g_c‖‖g_a‖) just outside [-1, 1]; φ must not leave it.
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        g_c = torch.randn(97, generator=g, dtype=dtype)
        c = conflict_stats(g_c, factor * g_c)
        assert -1.0 <= c.phi.item() <= 1.0
        assert c.mu.item() >= 0.0
        assert c.phi.item() == pytest.approx(math.copysign(1.0, factor), abs=1e-5)


@FAST
@given(pairs(), st.floats(0.01, 100.0))
def test_scaling_g_c_keeps_phi_and_scales_mu(pair: tuple[np.ndarray, np.ndarray], a: float) -> None:
    g_c, g_a = pair
    _usable(g_c, g_a)
    base = conflict_stats(_t(g_c), _t(g_a))
    scaled = conflict_stats(_t(a * g_c), _t(g_a))
    assert scaled.phi.item() == pytest.approx(base.phi.item(), rel=1e-9, abs=1e-12)
    assert scaled.mu.item() == pytest.approx(a * base.mu.item(), rel=1e-6)
    assert scaled.norm_c.item() == pytest.approx(a * base.norm_c.item(), rel=1e-12)


@FAST
@given(pairs())
def test_swapping_the_gradients_keeps_phi_and_mu(pair: tuple[np.ndarray, np.ndarray]) -> None:
    g_c, g_a = pair
    one = conflict_stats(_t(g_c), _t(g_a))
    two = conflict_stats(_t(g_a), _t(g_c))
    torch.testing.assert_close(two.phi, one.phi, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(two.mu, one.mu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(two.norm_c, one.norm_a, rtol=0, atol=0)
    torch.testing.assert_close(two.norm_a, one.norm_c, rtol=0, atol=0)


_DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_are_device_tensors(device: str, dtype: torch.dtype) -> None:
    g_c = torch.randn(8, dtype=dtype, device=device)
    g_a = torch.randn(8, dtype=dtype, device=device)
    c = conflict_stats(g_c, g_a)
    for t in c:
        assert isinstance(t, torch.Tensor)
        assert t.device.type == device
        assert t.dtype == dtype
        assert t.dim() == 0
    d = ca_at_direction(g_c, g_a, 0.3)
    assert d.device.type == device and d.dtype == dtype and d.shape == g_c.shape


# --------------------------------------------------------------------------- Eq. 4


@FAST
@given(pairs(), st.floats(1e-3, 1.0))
def test_projected_direction_sits_on_the_cone(
    pair: tuple[np.ndarray, np.ndarray], frac: float
) -> None:
    g_c, g_a = pair
    phi = _usable(g_c, g_a)
    assume(phi < 0.98)
    gamma = phi + frac * (0.99 - phi)  # φ < γ < 0.99: the projection branch
    assume(gamma - phi > 1e-9)
    out = ca_at_direction(_t(g_c), _t(g_a), gamma).numpy()
    na = np.linalg.norm(g_a)
    assert _np_cos(out, g_c) == pytest.approx(gamma, rel=1e-6, abs=1e-9)
    expected_norm = na * math.sqrt(1.0 - phi**2) / math.sqrt(1.0 - gamma**2)
    assert np.linalg.norm(out) == pytest.approx(expected_norm, rel=1e-6)
    # g* = g_a + k·g_c: the coefficient on g_a is exactly one.
    rest = out - g_a
    k = np.dot(rest, g_c) / np.dot(g_c, g_c)
    np.testing.assert_allclose(rest, k * g_c, rtol=0, atol=1e-9 * na)
    np.testing.assert_allclose(out, _eq4(g_c, g_a, gamma), rtol=1e-7, atol=1e-9 * na)


@FAST
@given(pairs(), st.floats(1e-3, 1.0))
def test_no_conflict_steps_along_g_c_exactly(
    pair: tuple[np.ndarray, np.ndarray], frac: float
) -> None:
    g_c, g_a = pair
    phi = _usable(g_c, g_a)
    gamma = phi - frac * (phi + 0.99)  # -0.99 ≤ γ < φ: no projection
    assume(phi - gamma > 1e-9 and gamma > -0.99)
    out = ca_at_direction(_t(g_c), _t(g_a), gamma)
    assert torch.equal(out, _t(g_c))


def test_phi_equal_to_gamma_steps_along_g_c() -> None:
    g_c = torch.tensor([1.0, 0.0], dtype=F64)
    g_a = torch.tensor([0.0, 1.0], dtype=F64)
    # φ = 0 = γ: the official rule (project only when cos < γ) keeps g_c.
    assert torch.equal(ca_at_direction(g_c, g_a, 0.0), g_c)
    # Just above φ: projected, and Eq. 4 near φ = γ is close to g_a itself.
    torch.testing.assert_close(ca_at_direction(g_c, g_a, 1e-9), g_a, rtol=0, atol=1e-8)
    # Just below φ: no projection.
    assert torch.equal(ca_at_direction(g_c, g_a, -1e-6), g_c)


def test_worked_example_matches_eq4() -> None:
    # g_c = e1, g_a at 120° to it, γ = 0.5: g* must be at 60° with length sin120°/sin60° = 1.
    g_c = torch.tensor([2.0, 0.0], dtype=F64)
    g_a = torch.tensor([-0.5, math.sqrt(3) / 2], dtype=F64)
    out = ca_at_direction(g_c, g_a, 0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, math.sqrt(3) / 2], dtype=F64))


@FAST
@given(
    pairs(),
    st.floats(-0.99, 0.99),
    st.floats(0.01, 100.0),
    st.floats(0.01, 100.0),
)
def test_direction_does_not_depend_on_the_norm_of_g_c(
    pair: tuple[np.ndarray, np.ndarray], gamma: float, a: float, b: float
) -> None:
    g_c, g_a = pair
    phi = _usable(g_c, g_a)
    assume(abs(phi - gamma) > 1e-6)
    base = ca_at_direction(_t(g_c), _t(g_a), gamma)
    scaled = ca_at_direction(_t(a * g_c), _t(b * g_a), gamma)
    if phi <= gamma:
        expected = b * base
        atol = 1e-9 * b * np.linalg.norm(g_a)
    else:
        expected = _t(a * g_c)
        atol = 0.0
    torch.testing.assert_close(scaled, expected, rtol=1e-7, atol=atol)


@FAST
@given(pairs(), st.floats(0.0, 1.0))
def test_vanilla_direction_is_the_convex_mix(
    pair: tuple[np.ndarray, np.ndarray], lam: float
) -> None:
    g_c, g_a = pair
    out = vanilla_direction(_t(g_c), _t(g_a), lam).numpy()
    np.testing.assert_allclose(out, (1.0 - lam) * g_c + lam * g_a, rtol=1e-12, atol=1e-12)


def test_vanilla_direction_endpoints_are_exact() -> None:
    g = torch.Generator().manual_seed(3)
    g_c, g_a = torch.randn(33, generator=g), torch.randn(33, generator=g)
    assert torch.equal(vanilla_direction(g_c, g_a, 0.0), g_c)
    assert torch.equal(vanilla_direction(g_c, g_a, 1.0), g_a)
    torch.testing.assert_close(vanilla_direction(g_c, g_a, 0.5), (g_c + g_a) / 2)


# --------------------------------------------------------------------------- degenerate cases


def _vec(seed: int, n: int = 16, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("kind", ["random", "anti-parallel", "orthogonal", "parallel"])
def test_gamma_one_steps_along_g_c(dtype: torch.dtype, kind: str) -> None:
    g_c = _vec(0, dtype=dtype)
    g_a = {
        "random": _vec(1, dtype=dtype),
        "anti-parallel": -2.0 * g_c,
        "orthogonal": _vec(1, dtype=dtype) - (_vec(1, dtype=dtype) @ g_c) / (g_c @ g_c) * g_c,
        "parallel": 5.0 * g_c,
    }[kind]
    out = ca_at_direction(g_c, g_a, 1.0)
    _assert_finite(out)
    assert torch.equal(out, g_c)


@pytest.mark.parametrize("gamma", [1.0, 0.8, 0.0, -0.5])
def test_zero_g_c_steps_along_g_a(gamma: float) -> None:
    g_c, g_a = torch.zeros(16, dtype=F64), _vec(1)
    out = ca_at_direction(g_c, g_a, gamma)
    _assert_finite(out)
    assert torch.equal(out, g_a)
    c = conflict_stats(g_c, g_a)
    _assert_finite(*c)
    assert c.phi.item() == 1.0 and c.mu.item() == 0.0


@pytest.mark.parametrize("gamma", [1.0, 0.8, 0.0, -0.5])
def test_zero_g_a_steps_along_g_c_with_no_conflict(gamma: float) -> None:
    g_c, g_a = _vec(0), torch.zeros(16, dtype=F64)
    c = conflict_stats(g_c, g_a)
    _assert_finite(*c)
    assert c.phi.item() == 1.0
    assert c.mu.item() == 0.0
    assert c.norm_a.item() == 0.0
    out = ca_at_direction(g_c, g_a, gamma)
    _assert_finite(out)
    assert torch.equal(out, g_c)


@pytest.mark.parametrize("gamma", [1.0, 0.5, -0.5])
def test_both_zero_gives_a_zero_step(gamma: float) -> None:
    z = torch.zeros(16, dtype=F64)
    c = conflict_stats(z, z)
    assert c.phi.item() == 1.0 and c.mu.item() == 0.0
    out = ca_at_direction(z, z.clone(), gamma)
    _assert_finite(out)
    assert torch.equal(out, z)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("gamma", [0.999, 0.8, 0.0, -0.5])
def test_phi_one_steps_along_g_c(dtype: torch.dtype, gamma: float) -> None:
    g_c = _vec(0, dtype=dtype)
    g_a = 2.0 * g_c
    c = conflict_stats(g_c, g_a)
    assert c.phi.item() == pytest.approx(1.0, abs=1e-6)
    out = ca_at_direction(g_c, g_a, gamma)
    _assert_finite(out)
    assert torch.equal(out, g_c)


@pytest.mark.parametrize("gamma", [0.999, 0.8, 0.0, -0.5, -0.9])
def test_phi_minus_one_gives_the_zero_vector(gamma: float) -> None:
    # Exactly representable: ‖g_c‖ = 3, ‖g_a‖ = 9, φ = -1 with no rounding.
    g_c = torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    g_a = -3.0 * g_c
    assert conflict_stats(g_c, g_a).phi.item() == -1.0
    out = ca_at_direction(g_c, g_a, gamma)
    _assert_finite(out)
    torch.testing.assert_close(out, torch.zeros(3, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.8, 0.0, -0.5])
def test_phi_minus_one_random_vector_is_nearly_zero(gamma: float) -> None:
    g_c = _vec(4, n=50)
    g_a = -3.0 * g_c
    out = ca_at_direction(g_c, g_a, gamma)
    _assert_finite(out)
    assert out.norm().item() <= 1e-6 * g_a.norm().item()


# --------------------------------------------------------------------------- layer projection


@st.composite
def segmented(draw: st.DrawFn) -> tuple[list[int], np.ndarray, np.ndarray]:
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    n = sum(sizes)
    g_c = draw(arrays(np.float64, n, elements=_elements))
    other = draw(arrays(np.float64, n, elements=_elements))
    lean = draw(st.floats(-4.0, 4.0, allow_nan=False))
    return sizes, g_c, other + lean * g_c


def _slices(sizes: list[int]) -> list[slice]:
    bounds = np.cumsum([0, *sizes])
    return [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]


def test_segment_ids() -> None:
    assert segment_ids([2, 1, 3]).tolist() == [0, 0, 1, 2, 2, 2]


@FAST
@given(segmented())
def test_layer_stats_are_per_slice_stats(case: tuple[list[int], np.ndarray, np.ndarray]) -> None:
    sizes, g_c, g_a = case
    c = conflict_stats(_t(g_c), _t(g_a), segments=segment_ids(sizes))
    assert c.phi.shape == (len(sizes),)
    for i, sl in enumerate(_slices(sizes)):
        one = conflict_stats(_t(g_c[sl]), _t(g_a[sl]))
        assert c.phi[i].item() == pytest.approx(one.phi.item(), rel=1e-9, abs=1e-12)
        assert c.mu[i].item() == pytest.approx(one.mu.item(), rel=1e-6, abs=1e-9)
        assert c.norm_c[i].item() == pytest.approx(one.norm_c.item(), rel=1e-12)
        assert c.norm_a[i].item() == pytest.approx(one.norm_a.item(), rel=1e-12)


def _per_slice_direction(
    sizes: list[int], g_c: torch.Tensor, g_a: torch.Tensor, gamma: float
) -> torch.Tensor:
    return torch.cat([ca_at_direction(g_c[sl], g_a[sl], gamma) for sl in _slices(sizes)])


def _branches_are_clear(sizes: list[int], g_c: np.ndarray, g_a: np.ndarray, gamma: float) -> None:
    for sl in _slices(sizes):
        c, a = g_c[sl], g_a[sl]
        if np.linalg.norm(c) > 0 and np.linalg.norm(a) > 0:
            phi = _np_cos(c, a)
            # Near φ = ±1, √(1−φ²) carries only √eps of precision; the exact ends are
            # covered by the degenerate-case tests.
            assume(abs(phi - gamma) > 1e-6 and 1.0 - abs(phi) > 1e-3)


@FAST
@given(segmented(), st.floats(-0.99, 1.0))
def test_layer_direction_is_the_per_slice_direction(
    case: tuple[list[int], np.ndarray, np.ndarray], gamma: float
) -> None:
    sizes, g_c, g_a = case
    _branches_are_clear(sizes, g_c, g_a, gamma)
    out = ca_at_direction(_t(g_c), _t(g_a), gamma, segments=segment_ids(sizes))
    expected = _per_slice_direction(sizes, _t(g_c), _t(g_a), gamma)
    _assert_finite(out)
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9)


def test_layer_direction_handles_degenerate_segments() -> None:
    sizes = [3, 4, 2, 3]
    g_c = _vec(0, n=12)
    g_a = _vec(1, n=12)
    g_c[3:7] = 0.0  # segment 1: no clean gradient → g_a there
    g_a[7:9] = 0.0  # segment 2: no adversarial gradient → g_c there
    g_a[9:] = -2.0 * g_c[9:]  # segment 3: φ = -1 → zero there
    seg = segment_ids(sizes)
    c = conflict_stats(g_c, g_a, segments=seg)
    _assert_finite(*c)
    assert c.phi[1].item() == 1.0 and c.phi[2].item() == 1.0
    out = ca_at_direction(g_c, g_a, 0.5, segments=seg)
    _assert_finite(out)
    assert torch.equal(out[3:7], g_a[3:7])
    assert torch.equal(out[7:9], g_c[7:9])
    assert out[9:].abs().max().item() < 1e-12
    torch.testing.assert_close(out[:3], ca_at_direction(g_c[:3], g_a[:3], 0.5))


# --------------------------------------------------------------------------- Mixer


def _mix(mixer: Mixer, g_c: torch.Tensor, g_a: torch.Tensor):
    grads = torch.stack((g_c, g_a))
    out = torch.full_like(g_c, float("nan"))
    ptr = out.data_ptr()
    mix = mixer(grads, out)
    assert out.data_ptr() == ptr
    return mix, out


@FAST
@given(pairs(), st.floats(-0.99, 0.99))
def test_mixer_caat_global_matches_the_functions(
    pair: tuple[np.ndarray, np.ndarray], gamma: float
) -> None:
    g_c, g_a = pair
    phi = _usable(g_c, g_a)
    assume(abs(phi - gamma) > 1e-6)
    mix, out = _mix(Mixer("caat", gamma), _t(g_c), _t(g_a))
    expected = ca_at_direction(_t(g_c), _t(g_a), gamma)
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9 * np.linalg.norm(g_a))
    stats = conflict_stats(_t(g_c), _t(g_a))
    torch.testing.assert_close(mix.conflict.phi, stats.phi, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mix.conflict.mu, stats.mu, rtol=1e-6, atol=1e-9)
    assert mix.fired.item() == (1.0 if mix.conflict.phi.item() < gamma else 0.0)
    assert mix.fired.item() == (1.0 if phi < gamma else 0.0)
    assert mix.ok.dtype == torch.bool and mix.ok.dim() == 0 and bool(mix.ok)
    for t in (mix.conflict.phi, mix.conflict.mu, mix.coef_c, mix.coef_a, mix.fired):
        assert isinstance(t, torch.Tensor) and t.dim() == 0


@FAST
@given(pairs(), st.floats(0.0, 1.0))
def test_mixer_vanilla_mixes_and_still_measures(
    pair: tuple[np.ndarray, np.ndarray], lam: float
) -> None:
    g_c, g_a = pair
    mix, out = _mix(Mixer("vanilla", lam), _t(g_c), _t(g_a))
    torch.testing.assert_close(out, vanilla_direction(_t(g_c), _t(g_a), lam), rtol=1e-9, atol=1e-9)
    stats = conflict_stats(_t(g_c), _t(g_a))
    torch.testing.assert_close(mix.conflict.phi, stats.phi, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mix.conflict.mu, stats.mu, rtol=1e-6, atol=1e-9)
    assert mix.fired.item() == 0.0
    assert mix.coef_c.item() == pytest.approx(1.0 - lam)
    assert mix.coef_a.item() == pytest.approx(lam)
    assert bool(mix.ok)


def test_mixer_never_fires_at_gamma_one() -> None:
    g_c = torch.tensor([1.0, 0.0], dtype=F64)
    mix, out = _mix(Mixer("caat", 1.0), g_c, -g_c)
    assert mix.fired.item() == 0.0
    assert bool(mix.ok)
    assert torch.equal(out, g_c)


def test_mixer_keeps_g_c_on_the_boundary() -> None:
    """φ = γ exactly steps along g_c, as the official `proj_g_thres` (cos >= γ) does."""
    g_c = torch.tensor([1.0, 0.0], dtype=F64)
    g_a = torch.tensor([0.0, 1.0], dtype=F64)
    mix, out = _mix(Mixer("caat", 0.0), g_c, g_a)  # φ = 0 = γ
    assert mix.fired.item() == 0.0
    assert torch.equal(out, g_c)
    mix, out = _mix(Mixer("caat", 0.01), g_c, g_a)  # φ = 0 < γ: projected
    assert mix.fired.item() == 1.0
    assert float(out @ g_c) / float(out.norm()) == pytest.approx(0.01, abs=1e-12)


@pytest.mark.parametrize(
    ("g_c", "g_a", "expected"),
    [
        ("zero", "rand", "g_a"),
        ("rand", "zero", "g_c"),
        ("zero", "zero", "zero"),
        ("rand", "anti", "zero"),
        ("rand", "twice", "g_c"),
    ],
)
@pytest.mark.parametrize("projection", ["global", "layer"])
def test_mixer_degenerate_cases_stay_finite(
    g_c: str, g_a: str, expected: str, projection: str
) -> None:
    base = torch.tensor([1.0, 2.0, 2.0, 4.0], dtype=F64)
    other = torch.tensor([3.0, -1.0, 0.5, 1.0], dtype=F64)
    vc = {"zero": torch.zeros(4, dtype=F64), "rand": base}[g_c]
    va = {"zero": torch.zeros(4, dtype=F64), "rand": other, "anti": -3 * base, "twice": 2 * base}[
        g_a
    ]
    sizes = [4] if projection == "layer" else None
    mix, out = _mix(Mixer("caat", 0.5, sizes=sizes, projection=projection), vc, va)
    _assert_finite(out, *mix.conflict, mix.coef_c, mix.coef_a, mix.fired)
    assert bool(mix.ok)
    want = {"g_a": va, "g_c": vc, "zero": torch.zeros(4, dtype=F64)}[expected]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("row", [0, 1])
@pytest.mark.parametrize(
    ("method", "projection"),
    [("caat", "global"), ("caat", "layer"), ("vanilla", "global"), ("vanilla", "layer")],
)
def test_mixer_flags_non_finite_gradients(
    bad: float, row: int, method: str, projection: str
) -> None:
    grads = torch.randn(2, 10, generator=torch.Generator().manual_seed(5))
    grads[row, 7] = bad
    mixer = Mixer(method, 0.5, sizes=[4, 6], projection=projection)
    mix = mixer(grads, torch.empty(10))
    assert isinstance(mix.ok, torch.Tensor)
    assert mix.ok.dtype == torch.bool and mix.ok.dim() == 0
    assert not bool(mix.ok)


@pytest.mark.parametrize("projection", ["global", "layer"])
def test_mixer_flags_float32_overflow(projection: str) -> None:
    grads = torch.full((2, 10), 1e30)  # finite, but ‖g‖² overflows float32
    mix = Mixer("caat", 0.5, sizes=[4, 6], projection=projection)(grads, torch.empty(10))
    assert not bool(mix.ok)
    ok_grads = torch.full((2, 10), 1e3)
    mix = Mixer("caat", 0.5, sizes=[4, 6], projection=projection)(ok_grads, torch.empty(10))
    assert bool(mix.ok)


def _forbid_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("host synchronisation inside the step")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, boom)


@pytest.mark.parametrize("bad", [None, float("nan")])
@pytest.mark.parametrize("method", ["caat", "vanilla"])
@pytest.mark.parametrize("projection", ["global", "layer"])
def test_mixer_never_syncs_with_the_host(
    monkeypatch: pytest.MonkeyPatch, bad: float | None, method: str, projection: str
) -> None:
    grads = torch.randn(2, 10, generator=torch.Generator().manual_seed(6))
    grads[1] = -grads[0] + 0.1 * grads[1]  # conflicting: the projection branch is taken
    if bad is not None:
        grads[0, 3] = bad
    mixer = Mixer(method, 0.5, sizes=[4, 6], projection=projection)
    out = torch.empty(10)
    with monkeypatch.context() as m:
        _forbid_host_sync(m)
        with pytest.raises(AssertionError, match="host synchronisation"):
            bool(torch.tensor(True))  # the trap is armed
        mix = mixer(grads, out)
    assert bool(mix.ok) is (bad is None)
    if bad is None and method == "caat" and projection == "global":
        assert mix.fired.item() == 1.0


@FAST
@given(segmented(), st.floats(-0.99, 1.0))
def test_mixer_layer_matches_the_per_slice_computation(
    case: tuple[list[int], np.ndarray, np.ndarray], gamma: float
) -> None:
    sizes, g_c, g_a = case
    _branches_are_clear(sizes, g_c, g_a, gamma)
    tc, ta = _t(g_c), _t(g_a)
    mix, out = _mix(Mixer("caat", gamma, sizes=sizes, projection="layer"), tc, ta)
    torch.testing.assert_close(
        out, _per_slice_direction(sizes, tc, ta, gamma), rtol=1e-7, atol=1e-9
    )
    whole = conflict_stats(tc, ta)  # the reported statistics are the global ones
    torch.testing.assert_close(mix.conflict.phi, whole.phi, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mix.conflict.mu, whole.mu, rtol=1e-6, atol=1e-9)
    fired = []
    for sl in _slices(sizes):
        c, a = g_c[sl], g_a[sl]
        nonzero = np.linalg.norm(c) > 0 and np.linalg.norm(a) > 0
        fired.append(gamma < 1.0 and nonzero and _np_cos(c, a) < gamma)
    assert mix.fired.item() == pytest.approx(sum(fired) / len(sizes))
    assert bool(mix.ok)


def test_mixer_layer_vanilla_matches_global_vanilla() -> None:
    grads = torch.randn(2, 10, generator=torch.Generator().manual_seed(8), dtype=F64)
    mix, out = _mix(Mixer("vanilla", 0.3, sizes=[4, 6], projection="layer"), grads[0], grads[1])
    torch.testing.assert_close(out, vanilla_direction(grads[0], grads[1], 0.3))
    torch.testing.assert_close(mix.conflict.phi, conflict_stats(grads[0], grads[1]).phi)


def test_mixer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        Mixer("sgd", 0.5)
    with pytest.raises(ValueError, match="unknown projection"):
        Mixer("caat", 0.5, projection="block")
    with pytest.raises(ValueError, match="sizes"):
        Mixer("caat", 0.5, projection="layer")
