"""The wide path: as-of features by hand, and the penalised fit against lifelines' Cox model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from migpt_traj.model.wide import fit_wide, raw_wide_features, wide_moments, wide_width

V = 5  # ids 0-2 special, 3 = lab A, 4 = static flag


def _batch() -> dict[str, torch.Tensor]:
    # One sample: start, static (id 4), lab A = 1.0 at day 0, lab A = 3.0 at day 500, image at day 500, lab A = 9 at
    # day 800. Queries at day 600 (5 tokens visible) and day 850 (6 visible).
    code = torch.tensor([[2, 4, 3, 3, 3, 3]])
    value = torch.tensor([[0.0, 0.0, 1.0, 3.0, 0.0, 9.0]])
    has_value = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    code[0, 4] = 3  # the image token uses the lab code id only to keep the vocabulary tiny; it has no value
    image = torch.zeros(1, 6, 2)
    image[0, 4] = torch.tensor([0.5, -0.5])
    return {
        "q_sample": torch.tensor([0, 0]),
        "q_visible": torch.tensor([5, 6]),
        "q_days": torch.tensor([600.0, 850.0]),
        "q_age_years": torch.tensor([50.0, float("nan")]),
        "code_id": code,
        "value": value,
        "has_value": has_value,
        "time_days": torch.tensor([[0.0, 0.0, 0.0, 500.0, 500.0, 800.0]]),
        "has_image": torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]),
        "image": image,
        "has_note": torch.zeros(1, 6),
        "note": torch.zeros(1, 6, 3),
    }


def test_features_by_hand() -> None:
    x = raw_wide_features(_batch(), V, image_dim=2, note_dim=3)
    assert x.shape == (2, wide_width(V, 2, 3))
    last, window, seen = x[:, :V], x[:, V : 2 * V], x[:, 2 * V : 3 * V]
    img, note, extra = x[:, 3 * V : 3 * V + 2], x[:, 3 * V + 2 : 3 * V + 5], x[:, -2:]
    assert last[:, 3].tolist() == [3.0, 9.0]
    # Year before day 600: only the day-500 value; before day 850: days 500 and 800 (day 0 is outside).
    assert window[:, 3].tolist() == [3.0, 6.0]
    assert seen[:, 4].tolist() == [1.0, 1.0] and seen[:, :3].sum() == 0  # special ids never count
    assert img.tolist() == [[0.5, -0.5], [0.5, -0.5]]
    assert note.abs().sum() == 0
    assert extra[0, 0] == 50.0 and torch.isnan(extra[1, 0])
    assert extra[:, 1].tolist() == pytest.approx([np.log1p(100.0), np.log1p(50.0)])


def test_features_ignore_tokens_after_the_query() -> None:
    batch = _batch()
    before = raw_wide_features(batch, V, image_dim=2, note_dim=3)[0]
    batch["value"][0, 5] = -100.0  # the day-800 value is not visible at the day-600 query
    batch["image"][0, 5] = 7.0
    batch["has_image"][0, 5] = 1.0
    assert torch.equal(raw_wide_features(batch, V, image_dim=2, note_dim=3)[0], before)


def test_moments_ignore_nan_and_constant_columns() -> None:
    x = torch.tensor([[1.0, 5.0, float("nan")], [3.0, 5.0, 2.0]])
    mean, std = wide_moments(x)
    assert mean.tolist() == [2.0, 5.0, 2.0]
    assert std.tolist() == [1.0, 1.0, 1.0]  # column 0 has std 1 exactly; constant columns get 1


def test_fit_matches_lifelines_cox_on_exponential_data() -> None:
    """One cause, one bin, hazard exp(a + b x): the exponential MLE slope equals the Cox estimate closely."""
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=n)
    t_event = rng.exponential(1.0 / (np.exp(-6.0 + 0.7 * x)))
    t_cens = rng.uniform(100, 1500, size=n)
    duration = np.minimum(t_event, t_cens)
    cause = (t_event <= t_cens).astype(np.int64)
    train = (torch.tensor(x, dtype=torch.float32).unsqueeze(1), torch.tensor(duration).float(), torch.tensor(cause))
    weight, bias, _ = fit_wide(
        train, None, bias=torch.full((1, 1), -5.0), edges=torch.tensor([0.0]), penalties=(0.0,)
    )
    cox = lifelines.CoxPHFitter().fit(pd.DataFrame({"x": x, "T": duration, "E": cause}), "T", "E")
    assert float(weight[0, 0]) == pytest.approx(float(cox.params_["x"]), abs=0.03)
    assert float(weight[0, 0]) == pytest.approx(0.7, abs=0.08)
    assert float(bias[0, 0]) == pytest.approx(-6.0, abs=0.1)


def test_penalty_is_chosen_on_the_tuning_split() -> None:
    """Pure-noise features: the tuning split prefers the strongest penalty offered."""
    rng = np.random.default_rng(1)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.tensor(rng.normal(size=(n, 40)), dtype=torch.float32)
        d = torch.tensor(rng.exponential(300.0, size=n), dtype=torch.float32)
        return x, d, torch.ones(n, dtype=torch.long)

    weight, _, penalty = fit_wide(
        split(200), split(2000), bias=torch.full((1, 1), -5.0), edges=torch.tensor([0.0]), penalties=(1e-4, 1.0)
    )
    assert penalty == 1.0
    assert float(weight.abs().max()) < 0.05
