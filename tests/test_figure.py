"""The SA-AA figure: each format is written with the right header; bad suffixes fail fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from caat_app.analysis.figure import save_front_figure
from caat_app.analysis.front import RunPoint, report
from caat_app.analysis.points import tagged

V, C = "Vanilla AT", "CA-AT"


def _report() -> dict:
    runs = []
    rid = 0
    for family, label, sa, aa, seeds in [
        (V, "λ=0", 0.95, 0.05, 2),
        (V, "λ=0.5", 0.85, 0.40, 2),
        (V, "λ=1", 0.70, 0.50, 1),
        (C, "γ=0.8", 0.90, 0.45, 2),
        (C, "γ=0.9", 0.93, 0.30, 2),
        (f"{C} · trades", "γ=0.8", 0.80, 0.52, 1),
    ]:
        for seed in range(seeds):
            rid += 1
            jitter = 0.01 * seed
            runs.append(
                RunPoint(rid, family, f"{family}:{label}", label, seed, sa - jitter, aa + jitter)
            )
    return report(runs)


MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".svg": (b"<?xml", b"<svg"), ".pdf": (b"%PDF",)}


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_each_format_has_its_magic_bytes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "out" / f"front{suffix}"
    save_front_figure(
        _report(),
        path,
        aa_label="PGD-10 accuracy at ε = 8/255 (%)",
        title="digits, cnn",
    )
    data = path.read_bytes()
    assert data.startswith(MAGIC[suffix])
    assert len(data) > 5_000
    if suffix == ".svg":
        text = data.decode()
        # text stays text: labels and legend are searchable in the SVG
        assert "PGD-10 accuracy" in text and "CA-AT  (HV" in text and "γ=0.9" in text


def test_uppercase_suffix_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "front.PNG"
    save_front_figure(_report(), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_empty_report_still_draws(tmp_path: Path) -> None:
    path = tmp_path / "empty.svg"
    save_front_figure(report([]), path)
    assert "No finished runs to compare." in path.read_text()


@pytest.mark.parametrize("name", ["front.jpg", "front", "front.eps"])
def test_unsupported_suffix_names_the_three(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
        save_front_figure(_report(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_a_front_of_mixed_aa_sources_names_each_points_source(tmp_path: Path) -> None:
    points = tagged(
        [
            RunPoint(1, V, "a", "λ=0.5", 0, 0.90, 0.30, source="autoattack"),
            RunPoint(2, C, "b", "γ=0.8", 0, 0.92, 0.40, source="epoch-pgd"),
        ]
    )
    path = tmp_path / "mixed.svg"
    save_front_figure(report(points), path, aa_label="AA: mixed sources (%)")
    text = path.read_text()
    assert "λ=0.5 [AutoAttack]" in text and "γ=0.8 [PGD]" in text
    same = tagged([RunPoint(1, V, "a", "λ=0.5", 0, 0.9, 0.3, source="autoattack")])
    assert [p.label for p in same] == ["λ=0.5"]  # one source: labels stay bare
