"""Flat parameter/gradient buffers and the skip-capable SGD, against PyTorch's own."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from caat_app.method.optim import FlatAdamW, FlatParams, FlatSGD, make_optimizer

F64 = torch.float64


def _model(seed: int = 0, dtype: torch.dtype = F64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).to(dtype)


def _batch(seed: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(11, 5, generator=g, dtype=dtype), torch.randint(0, 3, (11,), generator=g)


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    x, y = _batch(seed, next(model.parameters()).dtype)
    return nn.functional.cross_entropy(model(x), y)


def _forbid_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("host synchronisation inside the step")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, boom)


# --------------------------------------------------------------------------- FlatParams


def test_parameters_become_views_of_flat_with_their_values() -> None:
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    fp = FlatParams(model)
    assert fp.sizes == [p.numel() for p in before]
    assert fp.numel == sum(fp.sizes)
    assert fp.grads.shape == (2, fp.numel)
    torch.testing.assert_close(fp.flat, torch.cat([b.reshape(-1) for b in before]), rtol=0, atol=0)
    for p, b in zip(model.parameters(), before, strict=True):
        assert p.shape == b.shape and p.dtype == b.dtype
        assert torch.equal(p.detach(), b)
    # Writing into the flat vector changes the parameters the model computes with.
    fp.flat.add_(1.0)
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b + 1.0)
    new = torch.randn(fp.numel, dtype=F64, generator=torch.Generator().manual_seed(9))
    fp.flat.copy_(new)
    ref = _model(seed=1)
    offset = 0
    with torch.no_grad():
        for q, n in zip(ref.parameters(), fp.sizes, strict=True):
            q.copy_(new[offset : offset + n].view_as(q))
            offset += n
    x, _ = _batch(0)
    torch.testing.assert_close(model(x), ref(x))


def test_frozen_parameters_are_left_out() -> None:
    model = _model()
    model[0].bias.requires_grad_(False)
    fp = FlatParams(model)
    assert fp.sizes == [35, 21, 3]
    assert all(p is not model[0].bias for p in fp.params)


def test_a_model_with_nothing_to_train_is_rejected() -> None:
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        FlatParams(model)


def _reference_grad(model: nn.Module, seed: int) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(_loss(model, seed), params)
    return torch.cat([g.reshape(-1) for g in grads])


def test_two_backward_passes_fill_the_two_rows() -> None:
    model = _model()
    ref = copy.deepcopy(model)
    fp = FlatParams(model)
    for round_ in range(2):  # the second round checks that zero_grads really resets
        fp.zero_grads()
        fp.grad_into(0)
        _loss(model, seed=10 + round_).backward()
        fp.grad_into(1)
        _loss(model, seed=20 + round_).backward()
        assert fp.grads_in_buffer()
        torch.testing.assert_close(fp.grads[0], _reference_grad(ref, 10 + round_))
        torch.testing.assert_close(fp.grads[1], _reference_grad(ref, 20 + round_))
        assert not torch.equal(fp.grads[0], fp.grads[1])
        for p, view in zip(fp.params, fp.grad_views(1), strict=True):
            assert p.grad is view


def test_grads_in_buffer_detects_grads_outside_the_buffer() -> None:
    model = _model()
    fp = FlatParams(model)
    assert not fp.grads_in_buffer()  # no .grad yet
    fp.grad_into(0)
    assert fp.grads_in_buffer()
    fp.params[1].grad = torch.zeros_like(fp.params[1])
    assert not fp.grads_in_buffer()


# --------------------------------------------------------------------------- FlatSGD


def _directions(n_steps: int, numel: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(numel, generator=g, dtype=dtype) for _ in range(n_steps)]


def _torch_sgd_run(
    model: nn.Module,
    directions: list[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    """Parameters (flattened) after each step of torch.optim.SGD fed `directions`."""
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    history = []
    for d in directions:
        offset = 0
        for p in params:
            p.grad = d[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        opt.step()
        history.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
    return history


# Exactly representable hyperparameters in float64; PyTorch's usual ones in float32.
_EXACT_CASES = [
    pytest.param(torch.float32, 0.1, 0.9, 5e-4, id="f32-usual"),
    pytest.param(torch.float32, 0.05, 0.0, 0.0, id="f32-plain"),
    pytest.param(F64, 0.125, 0.5, 2.0**-10, id="f64-dyadic"),
    pytest.param(F64, 0.25, 0.0, 0.0, id="f64-plain"),
]


@pytest.mark.parametrize(("dtype", "lr", "momentum", "wd"), _EXACT_CASES)
def test_follows_torch_sgd(dtype: torch.dtype, lr: float, momentum: float, wd: float) -> None:
    ref = _model(dtype=dtype)
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatSGD(fp.flat, momentum=momentum, weight_decay=wd)
    directions = _directions(6, fp.numel, dtype)
    expected = _torch_sgd_run(ref, directions, lr=lr, momentum=momentum, weight_decay=wd)
    for d, want in zip(directions, expected, strict=True):
        opt.step(d.clone(), lr, torch.tensor(True))
        torch.testing.assert_close(fp.flat, want, rtol=0, atol=0)
    assert not torch.equal(expected[0], expected[-1])


def test_follows_torch_sgd_closely_with_usual_float64_hyperparameters() -> None:
    ref = _model()
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatSGD(fp.flat, momentum=0.9, weight_decay=5e-4)
    directions = _directions(6, fp.numel, F64)
    expected = _torch_sgd_run(ref, directions, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for d, want in zip(directions, expected, strict=True):
        opt.step(d.clone(), 0.1, torch.tensor(True))
        torch.testing.assert_close(fp.flat, want, rtol=1e-6, atol=1e-7)


def test_follows_torch_sgd_exactly_in_float64() -> None:
    ref = _model()
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatSGD(fp.flat, momentum=0.9, weight_decay=5e-4)
    directions = _directions(3, fp.numel, F64)
    expected = _torch_sgd_run(ref, directions, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for d, want in zip(directions, expected, strict=True):
        opt.step(d.clone(), 0.1, torch.tensor(True))
        torch.testing.assert_close(fp.flat, want, rtol=1e-15, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_a_skipped_step_changes_nothing(bad: float, wd: float) -> None:
    flat = torch.randn(40, generator=torch.Generator().manual_seed(1))
    opt = FlatSGD(flat, momentum=0.9, weight_decay=wd)
    for d in _directions(2, 40, torch.float32):
        opt.step(d, 0.1, torch.tensor(True))
    theta, buf = flat.clone(), opt.buf.clone()
    assert buf.abs().sum() > 0
    direction = torch.randn(40)
    direction[5] = bad
    opt.step(direction, 0.1, torch.tensor(False))
    assert torch.equal(flat, theta)
    assert torch.equal(opt.buf, buf)
    assert bool(opt.state_dict()["started"])


def test_a_skipped_first_step_keeps_the_optimiser_fresh() -> None:
    flat = torch.randn(40, generator=torch.Generator().manual_seed(1))
    theta = flat.clone()
    opt = FlatSGD(flat, momentum=0.9)
    direction = torch.full((40,), float("nan"))
    opt.step(direction, 0.1, torch.tensor(False))
    assert torch.equal(flat, theta)
    assert torch.equal(opt.buf, torch.zeros(40))
    assert not bool(opt.state_dict()["started"])
    # The next applied step is still a first step: buf = d, θ -= lr·d.
    d = torch.randn(40)
    opt.step(d.clone(), 0.1, torch.tensor(True))
    assert torch.equal(opt.buf, d)
    torch.testing.assert_close(flat, theta - 0.1 * d)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_skipped_steps_drop_out_of_the_sequence(oks: list[bool]) -> None:
    ref = _model()
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatSGD(fp.flat, momentum=0.9, weight_decay=5e-4)
    directions = _directions(len(oks), fp.numel, F64, seed=3)
    start = fp.flat.clone()
    for d, ok in zip(directions, oks, strict=True):
        if not ok:
            d[::3] = float("nan")  # a skipped step carries junk
        opt.step(d.clone(), 0.125, torch.tensor(ok))
    kept = [d for d, ok in zip(directions, oks, strict=True) if ok]
    if kept:
        expected = _torch_sgd_run(ref, kept, lr=0.125, momentum=0.9, weight_decay=5e-4)[-1]
        torch.testing.assert_close(fp.flat, expected, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(fp.flat, start)
    assert torch.isfinite(fp.flat).all() and torch.isfinite(opt.buf).all()


def test_skip_in_the_middle_matches_torch_sgd_exactly() -> None:
    ref = _model(dtype=torch.float32)
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatSGD(fp.flat, momentum=0.9, weight_decay=5e-4)
    directions = _directions(5, fp.numel, torch.float32, seed=4)
    junk = torch.full((fp.numel,), float("nan"))
    for i, d in enumerate(directions):
        if i == 2:
            opt.step(junk.clone(), 0.1, torch.tensor(False))
        opt.step(d.clone(), 0.1, torch.tensor(True))
    expected = _torch_sgd_run(ref, directions, lr=0.1, momentum=0.9, weight_decay=5e-4)[-1]
    torch.testing.assert_close(fp.flat, expected, rtol=0, atol=0)


@pytest.mark.parametrize("ok", [True, False])
def test_step_never_syncs_with_the_host(monkeypatch: pytest.MonkeyPatch, ok: bool) -> None:
    flat = torch.randn(30, generator=torch.Generator().manual_seed(2))
    theta = flat.clone()
    opt = FlatSGD(flat, momentum=0.9, weight_decay=5e-4)
    flag = torch.tensor(ok)
    direction = torch.randn(30)
    with monkeypatch.context() as m:
        _forbid_host_sync(m)
        opt.step(direction, 0.1, flag)
        opt.step(torch.randn(30), 0.1, flag)
    assert torch.equal(flat, theta) is (not ok)


def test_state_dict_round_trip() -> None:
    numel = 30
    directions = _directions(6, numel, torch.float32, seed=5)
    flat = torch.randn(numel, generator=torch.Generator().manual_seed(6))
    opt = FlatSGD(flat, momentum=0.9, weight_decay=5e-4)
    for d in directions[:3]:
        opt.step(d.clone(), 0.1, torch.tensor(True))
    assert set(opt.state_dict()) == {"momentum_buffer", "started"}
    blob = io.BytesIO()
    torch.save(opt.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob)

    resumed_flat = flat.clone()
    resumed = FlatSGD(resumed_flat, momentum=0.9, weight_decay=5e-4)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.buf, opt.buf)
    fresh_flat = flat.clone()
    fresh = FlatSGD(fresh_flat, momentum=0.9, weight_decay=5e-4)  # no state: differs

    for d in directions[3:]:
        for o in (opt, resumed, fresh):
            o.step(d.clone(), 0.1, torch.tensor(True))
    assert torch.equal(resumed_flat, flat)
    assert torch.equal(resumed.buf, opt.buf)
    assert not torch.equal(fresh_flat, flat)


def test_state_dict_round_trip_before_any_step() -> None:
    opt = FlatSGD(torch.zeros(4), momentum=0.9)
    other = FlatSGD(torch.zeros(4), momentum=0.9)
    other.step(torch.ones(4), 0.1, torch.tensor(True))  # started, non-zero buffer
    other.load_state_dict({k: v.clone() for k, v in opt.state_dict().items()})
    assert not bool(other.state_dict()["started"])
    assert torch.equal(other.buf, torch.zeros(4))


# --------------------------------------------------------------------------- FlatAdamW


def _torch_adamw_run(
    model: nn.Module,
    directions: list[torch.Tensor],
    *,
    lr: float,
    weight_decay: float,
    betas1: list[float] | None = None,
) -> list[torch.Tensor]:
    """Parameters (flattened) after each step of torch.optim.AdamW fed `directions`;
    `betas1`, when given, sets β₁ before each step (as OneCycleLR cycles it)."""
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)
    history = []
    for i, d in enumerate(directions):
        if betas1 is not None:
            opt.param_groups[0]["betas"] = (betas1[i], opt.param_groups[0]["betas"][1])
        offset = 0
        for p in params:
            p.grad = d[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        opt.step()
        history.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
    return history


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(("lr", "wd"), [(1e-3, 0.05), (0.01, 0.0)])
def test_adamw_follows_torch_adamw(dtype: torch.dtype, lr: float, wd: float) -> None:
    ref = _model(dtype=dtype)
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatAdamW(fp.flat, weight_decay=wd)
    directions = _directions(8, fp.numel, dtype, seed=7)
    expected = _torch_adamw_run(ref, directions, lr=lr, weight_decay=wd)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    for d, want in zip(directions, expected, strict=True):
        opt.step(d.clone(), lr, torch.tensor(True))
        torch.testing.assert_close(fp.flat, want, **tol)
    assert not torch.equal(expected[0], expected[-1])


def test_adamw_follows_torch_when_a_schedule_cycles_beta1() -> None:
    ref = _model()
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatAdamW(fp.flat, weight_decay=0.01)
    directions = _directions(6, fp.numel, F64, seed=8)
    betas1 = [0.95, 0.9, 0.85, 0.87, 0.93, 0.95]
    expected = _torch_adamw_run(ref, directions, lr=0.01, weight_decay=0.01, betas1=betas1)
    for d, b1, want in zip(directions, betas1, expected, strict=True):
        opt.step(d.clone(), 0.01, torch.tensor(True), momentum=b1)
        torch.testing.assert_close(fp.flat, want, rtol=1e-12, atol=0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_adamw_skipped_steps_drop_out_of_the_sequence(oks: list[bool]) -> None:
    ref = _model()
    model = copy.deepcopy(ref)
    fp = FlatParams(model)
    opt = FlatAdamW(fp.flat, weight_decay=0.05)
    directions = _directions(len(oks), fp.numel, F64, seed=9)
    start = fp.flat.clone()
    for d, ok in zip(directions, oks, strict=True):
        if not ok:
            d[::3] = float("nan")  # a skipped step carries junk
        opt.step(d.clone(), 1e-3, torch.tensor(ok))
    kept = [d for d, ok in zip(directions, oks, strict=True) if ok]
    if kept:
        expected = _torch_adamw_run(ref, kept, lr=1e-3, weight_decay=0.05)[-1]
        torch.testing.assert_close(fp.flat, expected, rtol=1e-12, atol=0)
    else:
        assert torch.equal(fp.flat, start)
    assert int(opt.state_dict()["steps"]) == sum(oks)
    for state in opt.state_dict().values():
        assert torch.isfinite(state).all()


@pytest.mark.parametrize("ok", [True, False])
def test_adamw_step_never_syncs_with_the_host(monkeypatch: pytest.MonkeyPatch, ok: bool) -> None:
    flat = torch.randn(30, generator=torch.Generator().manual_seed(2))
    theta = flat.clone()
    opt = FlatAdamW(flat, weight_decay=0.05)
    flag = torch.tensor(ok)
    with monkeypatch.context() as m:
        _forbid_host_sync(m)
        opt.step(torch.randn(30), 1e-3, flag, momentum=0.85)
        opt.step(torch.randn(30), 1e-3, flag)
    assert torch.equal(flat, theta) is (not ok)


def test_adamw_state_dict_round_trip() -> None:
    directions = _directions(6, 30, torch.float32, seed=5)
    flat = torch.randn(30, generator=torch.Generator().manual_seed(6))
    opt = FlatAdamW(flat, weight_decay=0.05)
    for d in directions[:3]:
        opt.step(d.clone(), 1e-3, torch.tensor(True))
    blob = io.BytesIO()
    torch.save(opt.state_dict(), blob)
    blob.seek(0)
    resumed_flat = flat.clone()
    resumed = FlatAdamW(resumed_flat, weight_decay=0.05)
    resumed.load_state_dict(torch.load(blob, weights_only=True))
    fresh_flat = flat.clone()
    fresh = FlatAdamW(fresh_flat, weight_decay=0.05)  # no state: bias corrections differ
    for d in directions[3:]:
        for o in (opt, resumed, fresh):
            o.step(d.clone(), 1e-3, torch.tensor(True))
    assert torch.equal(resumed_flat, flat)
    assert not torch.equal(fresh_flat, flat)


def test_make_optimizer_names_its_choices() -> None:
    flat = torch.zeros(3)
    common = {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False}
    assert isinstance(make_optimizer("sgd", flat, **common), FlatSGD)
    assert isinstance(make_optimizer("adamw", flat, **common), FlatAdamW)
    with pytest.raises(ValueError, match="sgd, adamw"):
        make_optimizer("adam", flat, **common)


def test_channels_last_weights_keep_their_layout_as_views_of_flat() -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    model = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    fp = FlatParams(model)
    conv = model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    torch.testing.assert_close(conv.detach(), ref[0].weight.detach(), rtol=0, atol=0)
    x = torch.rand(5, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (5,))
    fp.zero_grads()
    fp.grad_into(0)
    nn.functional.cross_entropy(model(x), y).backward()
    nn.functional.cross_entropy(ref(x), y).backward()
    assert fp.grads_in_buffer()
    for got, want in zip(fp.grad_views(0), (p.grad for p in ref.parameters()), strict=True):
        torch.testing.assert_close(got, want)
    assert fp.grads[0].norm() > 0 and torch.equal(fp.grads[1], torch.zeros(fp.numel))
    fp.flat.mul_(0.0)  # the model computes with the flat vector
    assert torch.equal(conv.detach(), torch.zeros_like(conv))
