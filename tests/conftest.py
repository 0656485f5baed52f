"""Every test gets its own CAAT_HOME, so nothing touches the user's store or data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "caat-home"
    monkeypatch.setenv("CAAT_HOME", str(home))
    monkeypatch.delenv("CAAT_DB", raising=False)
    monkeypatch.delenv("CAAT_DATA", raising=False)
    return home


@pytest.fixture(autouse=True)
def _utc_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local times shown by the dashboard are UTC in tests, so snapshots do not move."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture(scope="session")
def digits_linear() -> tuple:
    """Logistic regression on digits (~95% clean test accuracy), trained once per session.

    The attack tests share it: a fixed, well-trained model gives their budgets something
    to break, and training it once keeps the suite fast.
    """
    import torch
    import torch.nn.functional as F

    from caat_app.data.splits import load_dataset
    from caat_app.models.build import build_model

    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model(
        "linear", in_channels=1, num_classes=10, image_size=8, mean=data.mean, std=data.std
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    model.eval()
    return model, data.x_test, data.y_test


@pytest.fixture(scope="module")
def digits_model(request: pytest.FixtureRequest, digits_linear: tuple) -> tuple:
    """`digits_linear` on the first `N` test images, `N` set by the test module (else all)."""
    model, x, y = digits_linear
    n = getattr(request.module, "N", None)
    return (model, x, y) if n is None else (model, x[:n], y[:n])
