"""Tests of migpt_traj.evaluation metrics against scikit-survival, lifelines, brute force and hand computations.

scikit-survival (GPL-3.0) and lifelines are used here only as references.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from migpt_traj.errors import ValueRangeError
from migpt_traj.evaluation import (
    aalen_johansen,
    brier_score,
    calibration,
    censoring_survival,
    concordance_ipcw,
    cumulative_dynamic_auc,
    estimable_horizon,
    integrated_brier_score,
    kaplan_meier,
    net_benefit,
)
from migpt_traj.evaluation._km import cif_pseudo_observations
from migpt_traj.evaluation._ranks import prefix_weight_below

sksurv_metrics = pytest.importorskip("sksurv.metrics")
sksurv_np = pytest.importorskip("sksurv.nonparametric")
sksurv_util = pytest.importorskip("sksurv.util")
lifelines = pytest.importorskip("lifelines")

Arr = NDArray[np.float64]


def _surv(event: NDArray[np.generic], time: Arr) -> NDArray[np.void]:
    return sksurv_util.Surv.from_arrays(event.astype(bool), time)


def single_event(seed: int, n: int, *, ties: bool) -> tuple[Arr, NDArray[np.int64], Arr]:
    """Censored single-event data. With ``ties``, events fall on even and censorings on odd days, so times tie
    among events and among censorings (never an event with a censoring), and risks are rounded (tied risks)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(100 * np.exp(-x))
    t_cens = rng.uniform(0, 250, n)
    if ties:
        t_event, t_cens = 2 * np.ceil(t_event / 2), 2 * np.floor(t_cens / 2) + 1
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(np.int64)
    risk = 1 / (1 + np.exp(-x))
    return time, event, np.round(risk, 2) if ties else risk


def competing(seed: int, n: int, *, censor_scale: float = 800.0) -> tuple[Arr, NDArray[np.int64], Arr, Arr, Arr]:
    """Two exponential causes; returns observed (time, event), true risk of cause 1 by 365 d, latent T and cause."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    l1, l2 = 0.002 * np.exp(0.8 * x), 0.0015 * np.exp(-0.5 * x)
    latent = rng.exponential(1 / (l1 + l2))
    cause = np.where(rng.uniform(size=n) < l1 / (l1 + l2), 1, 2)
    cens = rng.exponential(censor_scale, n)
    time, event = np.minimum(latent, cens), np.where(latent <= cens, cause, 0)
    risk = l1 / (l1 + l2) * (1 - np.exp(-(l1 + l2) * 365.0))
    return time, event.astype(np.int64), risk, latent, cause.astype(np.int64)


# --- Kaplan–Meier, censoring distribution, Aalen–Johansen -------------------------------------------------------


def test_kaplan_meier_hand_case_right_continuous_and_left_limits() -> None:
    # times 1(event) 2(event) 2(censored) 3(event): S(1) = 3/4, S(2) = 3/4 · 2/3 = 1/2, S(3) = 0
    km = kaplan_meier([1.0, 2.0, 2.0, 3.0], [1, 1, 0, 1])
    times, surv = km
    assert times.tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(surv, [0.75, 0.5, 0.0])
    np.testing.assert_allclose(km([0.0, 1.0, 1.5, 2.0, 9.0]), [1.0, 0.75, 0.75, 0.5, 0.0])
    np.testing.assert_allclose(km.left_limit([1.0, 2.0, 3.0]), [1.0, 0.75, 0.5])


@pytest.mark.parametrize("ties", [False, True], ids=["tie-free", "tied"])
def test_kaplan_meier_matches_lifelines_and_sksurv(ties: bool) -> None:
    time, event, _ = single_event(0, 300, ties=ties)
    time = np.ceil(time) if ties else time  # integer days: events tie with censorings too
    km = kaplan_meier(time, event)
    ref_t, ref_s = sksurv_np.kaplan_meier_estimator(event.astype(bool), time)
    np.testing.assert_allclose(km(ref_t), ref_s, atol=1e-12)
    fitter = lifelines.KaplanMeierFitter().fit(time, event)
    grid = np.linspace(0, time.max(), 97)
    np.testing.assert_allclose(km(grid), fitter.survival_function_at_times(grid).to_numpy(), atol=1e-12)


def test_censoring_survival_matches_sksurv_with_event_censoring_ties() -> None:
    rng = np.random.default_rng(1)
    time = rng.integers(1, 30, 200).astype(float)
    event = rng.integers(0, 3, 200)  # two causes: both count as "not censored"
    g = censoring_survival(time, event)
    ref = sksurv_np.CensoringDistributionEstimator().fit(_surv(event > 0, time))
    grid = np.unique(time)[:-1]
    np.testing.assert_allclose(g(grid), ref.predict_proba(grid), atol=1e-12)
    np.testing.assert_allclose(g.left_limit(grid[1:]), g(grid[:-1]), atol=0)


def test_aalen_johansen_matches_lifelines_on_tie_free_data() -> None:
    # lifelines jitters tied event times at random, so compare on continuous (tie-free) times
    rng = np.random.default_rng(2)
    time, event = rng.exponential(10, 400), rng.integers(0, 3, 400)
    grid = np.linspace(0, 40, 81)
    for cause in (1, 2):
        ref = lifelines.AalenJohansenFitter(calculate_variance=False).fit(time, event, event_of_interest=cause)
        np.testing.assert_allclose(
            aalen_johansen(time, event, cause=cause, times=grid), ref.predict(grid).to_numpy(), atol=1e-12
        )


def test_aalen_johansen_matches_sksurv_with_ties() -> None:
    rng = np.random.default_rng(3)
    time, event = rng.integers(1, 40, 300).astype(float), rng.integers(0, 4, 300)
    ref_t, ref_cif = sksurv_np.cumulative_incidence_competing_risks(event, time)
    for cause in (1, 2, 3):
        np.testing.assert_allclose(aalen_johansen(time, event, cause=cause, times=ref_t), ref_cif[cause], atol=1e-12)


def test_aalen_johansen_without_competing_events_is_one_minus_km() -> None:
    time, event, _ = single_event(4, 200, ties=True)
    grid = np.linspace(0, 300, 61)
    np.testing.assert_allclose(aalen_johansen(time, event, cause=1, times=grid), 1 - kaplan_meier(time, event)(grid))


@pytest.mark.parametrize("horizon", [3.0, 15.0, 80.0])
def test_pseudo_observations_equal_brute_force_jackknife(horizon: float) -> None:
    rng = np.random.default_rng(5)
    n = 70
    time, event = np.ceil(rng.exponential(15, n)), rng.integers(0, 3, n)
    time[:3] = time.max()  # several subjects tied at the last time
    theta = cif_pseudo_observations(time, event, cause=1, horizon=horizon)
    full = aalen_johansen(time, event, cause=1, times=horizon)
    loo = np.array([aalen_johansen(np.delete(time, i), np.delete(event, i), cause=1, times=horizon) for i in range(n)])
    np.testing.assert_allclose(theta, n * full - (n - 1) * loo, atol=1e-10)
    assert theta.mean() == pytest.approx(float(full))


# --- single-event references: scikit-survival ----------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True], ids=["tie-free", "tied-times-and-risks"])
@pytest.mark.parametrize("horizon", [30.5, 80.5, 150.5])
def test_single_event_metrics_equal_sksurv(ties: bool, horizon: float) -> None:
    time, event, risk = single_event(10, 500, ties=ties)
    y = _surv(event, time)
    assert cumulative_dynamic_auc(time, event, risk, horizon) == pytest.approx(
        sksurv_metrics.cumulative_dynamic_auc(y, y, risk, horizon)[0][0], abs=1e-8
    )
    assert brier_score(time, event, risk, horizon) == pytest.approx(
        sksurv_metrics.brier_score(y, y, 1 - risk, horizon)[1][0], abs=1e-8
    )
    assert concordance_ipcw(time, event, risk, tau=horizon) == pytest.approx(
        sksurv_metrics.concordance_index_ipcw(y, y, risk, tau=horizon)[0], abs=1e-8
    )


def test_single_event_metrics_equal_sksurv_with_separate_training_sample() -> None:
    time, event, risk = single_event(11, 600, ties=True)
    train, test = np.arange(350), np.arange(350, 600)
    # scikit-survival needs the training follow-up to cover the test sample
    tr_time, tr_event = np.append(time[train], time.max() + 1), np.append(event[train], 0)
    y_tr, y_te = _surv(tr_event, tr_time), _surv(event[test], time[test])
    t, e, r = time[test], event[test], risk[test]
    for h in (40.5, 120.5):
        assert cumulative_dynamic_auc(t, e, r, h, train_time=tr_time, train_event=tr_event) == pytest.approx(
            sksurv_metrics.cumulative_dynamic_auc(y_tr, y_te, r, h)[0][0], abs=1e-8
        )
        assert brier_score(t, e, r, h, train_time=tr_time, train_event=tr_event) == pytest.approx(
            sksurv_metrics.brier_score(y_tr, y_te, 1 - r, h)[1][0], abs=1e-8
        )
        assert concordance_ipcw(t, e, r, tau=h, train_time=tr_time, train_event=tr_event) == pytest.approx(
            sksurv_metrics.concordance_index_ipcw(y_tr, y_te, r, tau=h)[0], abs=1e-8
        )


def test_integrated_brier_score_equals_sksurv() -> None:
    time, event, risk = single_event(12, 400, ties=True)
    horizons = np.array([20.5, 45.5, 90.5, 160.5])
    risk_matrix = np.column_stack([risk * f for f in (0.3, 0.5, 0.8, 1.0)])
    y = _surv(event, time)
    assert integrated_brier_score(time, event, risk_matrix, horizons) == pytest.approx(
        sksurv_metrics.integrated_brier_score(y, y, 1 - risk_matrix, horizons), abs=1e-8
    )


def test_risks_tied_within_tolerance_count_half_as_in_sksurv() -> None:
    time, event, risk = single_event(13, 300, ties=False)
    risk = np.clip(np.round(risk, 1) + np.random.default_rng(0).choice([0.0, 5e-9], 300), 0, 1)
    y = _surv(event, time)
    assert cumulative_dynamic_auc(time, event, risk, 60.0) == pytest.approx(
        sksurv_metrics.cumulative_dynamic_auc(y, y, risk, 60.0)[0][0], abs=1e-8
    )
    assert concordance_ipcw(time, event, risk, tau=60.0) == pytest.approx(
        sksurv_metrics.concordance_index_ipcw(y, y, risk, tau=60.0)[0], abs=1e-8
    )


def test_event_censoring_ties_use_left_limit_unlike_sksurv() -> None:
    # Documented deviation: at a censoring tied with an event, sksurv weighs the event by 1/G(T), we by 1/G(T-)
    # (censoring after the event). Moving those censorings 1e-7 days later makes sksurv's G(T) our G(T-).
    rng = np.random.default_rng(14)
    x = rng.normal(size=400)
    t_event, t_cens = np.ceil(rng.exponential(30 * np.exp(-x))), np.ceil(rng.uniform(0, 80, 400))
    time, event = np.minimum(t_event, t_cens), (t_event <= t_cens).astype(np.int64)
    risk = np.round(1 / (1 + np.exp(-x)), 2)
    y, y_shift = _surv(event, time), _surv(event, time + np.where(event == 0, 1e-7, 0.0))
    ours = brier_score(time, event, risk, 20.5)
    assert ours == pytest.approx(sksurv_metrics.brier_score(y_shift, y_shift, 1 - risk, 20.5)[1][0], abs=1e-8)
    assert abs(ours - sksurv_metrics.brier_score(y, y, 1 - risk, 20.5)[1][0]) > 1e-5
    assert cumulative_dynamic_auc(time, event, risk, 20.5) == pytest.approx(
        sksurv_metrics.cumulative_dynamic_auc(y_shift, y_shift, risk, 20.5)[0][0], abs=1e-8
    )
    assert concordance_ipcw(time, event, risk, tau=20.5) == pytest.approx(
        sksurv_metrics.concordance_index_ipcw(y_shift, y_shift, risk, tau=20.5)[0], abs=1e-8
    )


# --- hand-computed tiny cases --------------------------------------------------------------------------------


def test_auc_hand_case() -> None:
    # subjects (time, event, risk): (1, 1, .9) (2, 1, .4) (5, 0, .5) (6, 1, .1), horizon 3.
    # No censoring before 3, so all weights are 1. Cases {.9, .4}, controls {.5, .1}:
    # .9>.5, .9>.1, .4<.5, .4>.1 -> 3 of 4 pairs concordant -> AUC = 0.75.
    assert cumulative_dynamic_auc([1.0, 2.0, 5.0, 6.0], [1, 1, 0, 1], [0.9, 0.4, 0.5, 0.1], 3.0) == 0.75


def test_competing_auc_and_brier_hand_case() -> None:
    # (time, event, risk): (1, 1, .8) (2, 0, .3) (3, 2, .6) (5, 0, .2) (6, 1, .1), horizon 4, cause 1.
    # G: censoring at 2 with 4 at risk -> G(t) = 3/4 for t >= 2; G(1-) = 1, G(3-) = 3/4, G(4) = 3/4.
    # Case: subject 1 (w 1). Controls: competing subject 3 (w 4/3), event-free subjects 4, 5 (w 4/3 each);
    # the case outranks all three -> AUC = 1. If the competing control had risk .9 instead: (0 + 4/3 + 4/3) / 4.
    t, e = [1.0, 2.0, 3.0, 5.0, 6.0], [1, 0, 2, 0, 1]
    assert cumulative_dynamic_auc(t, e, [0.8, 0.3, 0.6, 0.2, 0.1], 4.0) == pytest.approx(1.0)
    assert cumulative_dynamic_auc(t, e, [0.8, 0.3, 0.9, 0.2, 0.1], 4.0) == pytest.approx(2 / 3)
    # Brier: case (1 - .8)² / 1 + competing (0 - .6)² / (3/4) + event-free (.2² + .1²) / (3/4), over n = 5
    expected = (0.04 + 0.36 / 0.75 + (0.04 + 0.01) / 0.75) / 5
    assert brier_score(t, e, [0.8, 0.3, 0.6, 0.2, 0.1], 4.0) == pytest.approx(expected)
    # with cause 2 the roles swap: target 1 for subject 3, 0 for subject 1
    expected2 = (0.64 + 0.16 / 0.75 + 0.05 / 0.75) / 5
    assert brier_score(t, e, [0.8, 0.3, 0.6, 0.2, 0.1], 4.0, cause=2) == pytest.approx(expected2)


def test_concordance_hand_case_with_competing_pair() -> None:
    # (time, event, risk): (1, 2, .7) (2, 1, .5) (3, 0, .6) (4, 1, .2), tau 3.5, cause 1; G(t) = 1 for t < 3.
    # Case 2 (risk .5): type A pairs with subjects 3 (.6, discordant), 4 (.2, concordant), weight 1 each;
    # type B pair with competing subject 1 at t=1 <= 2 (.7 > .5, discordant), weight 1/(G(2-) G(1-)) = 1.
    # C = 1 / 3.
    c = concordance_ipcw([1.0, 2.0, 3.0, 4.0], [2, 1, 0, 1], [0.7, 0.5, 0.6, 0.2], tau=3.5)
    assert c == pytest.approx(1 / 3)


# --- competing risks: brute force, reductions, consistency ---------------------------------------------------


def _g_left(time: Arr, event: NDArray[np.int64]):
    """Censoring survival from scikit-survival; on continuous data G(T) = G(T-) at event times."""
    est = sksurv_np.CensoringDistributionEstimator().fit(_surv(event > 0, time))
    return est.predict_proba


def test_competing_metrics_equal_brute_force_pair_sums() -> None:
    time, event, risk, _, _ = competing(20, 120)
    risk = np.round(risk, 2)  # some tied risks
    h = 300.0
    g = _g_left(time, event)
    gh = g(np.array([h]))[0]
    num = den = 0.0
    num_c = den_c = 0.0
    for i in range(time.size):
        if not (event[i] == 1 and time[i] <= h):
            continue
        wi = 1 / g(time[i : i + 1])[0]
        for j in range(time.size):
            if time[j] > h:
                wj = 1 / gh
            elif event[j] == 2:
                wj = 1 / g(time[j : j + 1])[0]
            else:
                wj = 0.0
            score = 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
            num, den = num + wi * wj * score, den + wi * wj
            if time[i] < h and (time[j] > time[i] or (event[j] == 2 and time[j] <= time[i])):
                w = wi * wi if time[j] > time[i] else wi / g(time[j : j + 1])[0]
                num_c, den_c = num_c + w * score, den_c + w
    assert cumulative_dynamic_auc(time, event, risk, h) == pytest.approx(num / den, abs=1e-12)
    assert concordance_ipcw(time, event, risk, tau=h) == pytest.approx(num_c / den_c, abs=1e-12)
    by_h = (time <= h) & (event > 0)
    w = np.where(by_h, 1 / g(np.minimum(time, h)), np.where(time > h, 1 / gh, 0.0))
    target = ((event == 1) & by_h).astype(float)
    assert brier_score(time, event, risk, h) == pytest.approx(np.mean(w * (target - risk) ** 2), abs=1e-12)


def test_competing_metrics_reduce_to_single_event_without_competing_events() -> None:
    time, event, risk = single_event(21, 300, ties=True)
    y = _surv(event, time)
    # cause 2 recoded: the same data with the cause of interest labelled 2 give the same values
    assert cumulative_dynamic_auc(time, 2 * event, risk, 70.5, cause=2) == pytest.approx(
        sksurv_metrics.cumulative_dynamic_auc(y, y, risk, 70.5)[0][0], abs=1e-8
    )
    assert brier_score(time, 2 * event, risk, 70.5, cause=2) == pytest.approx(
        sksurv_metrics.brier_score(y, y, 1 - risk, 70.5)[1][0], abs=1e-8
    )
    assert concordance_ipcw(time, 2 * event, risk, tau=70.5, cause=2) == pytest.approx(
        sksurv_metrics.concordance_index_ipcw(y, y, risk, tau=70.5)[0], abs=1e-8
    )


def test_ipcw_competing_metrics_recover_uncensored_values() -> None:
    # With independent censoring (24% censored), IPCW estimates approach what the uncensored data give.
    time, event, risk, latent, cause = competing(22, 20000)
    h = 365.0
    for metric in (cumulative_dynamic_auc, brier_score):
        assert metric(time, event, risk, h) == pytest.approx(metric(latent, cause, risk, h), abs=0.01)
    c_obs = concordance_ipcw(time, event, risk, tau=h)
    assert c_obs == pytest.approx(concordance_ipcw(latent, cause, risk, tau=h), abs=0.01)
    # treating competing events as censoring is biased by much more than that
    naive = cumulative_dynamic_auc(time, np.where(event == 2, 0, event), risk, h)
    assert abs(naive - cumulative_dynamic_auc(latent, cause, risk, h)) > 0.03


# --- calibration -------------------------------------------------------------------------------------------------


def test_calibration_of_true_risk_and_of_doubled_risk() -> None:
    time, event, risk, latent, cause = competing(30, 4000, censor_scale=1500.0)
    good = calibration(time, event, risk, 365.0)
    assert good.slope == pytest.approx(1.0, abs=0.1)
    assert good.intercept == pytest.approx(0.0, abs=0.1)
    assert good.calibration_in_the_large == pytest.approx(0.0, abs=0.1)
    assert good.ici < 0.02
    assert good.observed == pytest.approx(float(aalen_johansen(time, event, cause=1, times=365.0)))
    assert good.group_size.sum() == 4000 and good.group_size.size == 10
    # each group's observed risk matches what the uncensored data show (censoring noise only) ...
    group = np.searchsorted(np.sort(risk), risk, side="left") * 10 // 4000
    uncensored = [np.mean((latent[group == g] <= 365) & (cause[group == g] == 1)) for g in range(10)]
    np.testing.assert_allclose(good.group_observed, uncensored, atol=0.03)
    # ... and the predicted mean within sampling error (about 0.025 per group of 400)
    np.testing.assert_allclose(good.group_observed, good.group_predicted, atol=0.1)
    bad = calibration(time, event, np.minimum(risk * 2, 1.0), 365.0)
    assert bad.calibration_in_the_large < -1.0
    assert bad.ici > 0.15
    assert np.all(bad.group_predicted > bad.group_observed)


def test_calibration_slope_recovers_known_logit_distortion() -> None:
    time, event, risk, _, _ = competing(31, 4000, censor_scale=1500.0)
    logit = np.log(risk / (1 - risk))
    res = calibration(time, event, 1 / (1 + np.exp(-(2 * logit + 1))), 365.0)
    assert res.slope == pytest.approx(0.5, abs=0.06)  # predictions twice as extreme on the logit scale


def test_calibration_without_censoring_equals_logistic_regression() -> None:
    # No censoring, no competing events: pseudo-observations are the 0/1 outcomes, so the recalibration is an
    # ordinary logistic regression of the outcome on logit(risk) (sklearn as the reference).
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(32)
    risk = rng.uniform(0.05, 0.9, 1500)
    y = rng.uniform(size=1500) < risk**1.3
    time = np.where(y, rng.uniform(0, 100, 1500), 150.0)
    time[0], y[0] = 200.0, False
    res = calibration(time, y.astype(int), risk, 120.0)
    z = np.log(risk / (1 - risk))[:, None]
    ref = linear_model.LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(z, y)
    assert res.slope == pytest.approx(ref.coef_[0, 0], abs=1e-5)
    assert res.intercept == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert res.observed == pytest.approx(y.mean())


# --- net benefit -----------------------------------------------------------------------------------------------


def test_net_benefit_hand_case() -> None:
    # (time, event, risk): (1, 1, .9) (2, 0, .6) (5, 0, .2) (6, 0, .1), horizon 3.
    # pt = .2: treated = first three; KM among them: 1 - 2/3 -> F = 1/3; NB = 3/4 (1/3 - 2/3 · .25) = 0.125.
    # pt = .5: treated = first two; F = 1/2; NB = 2/4 (1/2 - 1/2 · 1) = 0. pt = .95: nobody treated -> 0.
    # treat all: F = 1/4; NB = 1/4 - 3/4 · pt/(1 - pt).
    res = net_benefit([1.0, 2.0, 5.0, 6.0], [1, 0, 0, 0], [0.9, 0.6, 0.2, 0.1], 3.0, [0.5, 0.2, 0.95])
    np.testing.assert_allclose(res.model, [0.0, 0.125, 0.0], atol=1e-12)
    np.testing.assert_allclose(res.treat_all, [0.25 - 0.75, 0.25 - 0.75 * 0.25, 0.25 - 0.75 * 19], atol=1e-12)
    np.testing.assert_array_equal(res.treat_none, 0.0)
    np.testing.assert_allclose(res.treated, [0.5, 0.75, 0.0])


def test_net_benefit_without_censoring_counts_true_and_false_positives() -> None:
    rng = np.random.default_rng(40)
    risk = rng.uniform(size=500)
    event = np.where(rng.uniform(size=500) < risk, rng.integers(1, 3, 500), 0)
    time = np.where(event > 0, rng.uniform(0, 100, 500), 200.0)  # nobody censored before the horizon
    pts = np.linspace(0, 0.9, 10)
    res = net_benefit(time, event, risk, 150.0, pts)
    treat = risk[None, :] >= pts[:, None]
    tp, fp = (treat & (event == 1)).sum(1) / 500, (treat & (event != 1)).sum(1) / 500
    np.testing.assert_allclose(res.model, tp - fp * pts / (1 - pts), atol=1e-12)
    prevalence = np.mean(event == 1)
    np.testing.assert_allclose(res.treat_all, prevalence - (1 - prevalence) * pts / (1 - pts), atol=1e-12)


# --- input validation ----------------------------------------------------------------------------------------

_T = np.array([1.0, 2.0, 5.0, 6.0])
_E = np.array([1, 1, 0, 1])
_R = np.array([0.9, 0.4, 0.5, 0.1])


@pytest.mark.parametrize(
    "call",
    [
        lambda t, e, r: cumulative_dynamic_auc(t, e, r, 3.0),
        lambda t, e, r: brier_score(t, e, r, 3.0),
        lambda t, e, r: concordance_ipcw(t, e, r, tau=3.0),
        lambda t, e, r: calibration(t, e, r, 3.0, n_groups=2),
        lambda t, e, r: net_benefit(t, e, r, 3.0, [0.5]),
    ],
    ids=["auc", "brier", "concordance", "calibration", "net_benefit"],
)
@pytest.mark.parametrize("column", ["time", "event", "risk"])
def test_column_vectors_are_rejected(call, column: str) -> None:
    # the N × N broadcasting bug: an (n, 1) column must raise, never broadcast
    args = {"time": _T, "event": _E, "risk": _R}
    args[column] = args[column][:, None]
    with pytest.raises(ValueRangeError, match=rf"'{column}' must be a flat 1-D array .* shape \(4, 1\)"):
        call(args["time"], args["event"], args["risk"])


@pytest.mark.parametrize(
    ("time", "event", "risk", "match"),
    [
        (_T[:3], _E, _R, r"Dimension mismatch: 'event' has 4 samples but 'time' has 3\."),
        (_T, _E, _R[:2], r"Dimension mismatch: 'risk' has 2 samples but 'time' has 4\."),
        ([1.0, np.nan, 5.0, 6.0], _E, _R, r"'time' must be finite; found 1 NaN/inf value\(s\), first at index 1"),
        ([1.0, -2.0, 5.0, 6.0], _E, _R, r"'time' must be non-negative \(days\); found -2\.0 at index 1"),
        (_T, [1, 0.5, 0, 1], _R, r"'event' must hold integer codes 0 \(censored\) or 1\.\.K"),
        (_T, [1, -1, 0, 1], _R, r"'event' must hold integer codes"),
        (_T, _E, [0.9, 1.2, 0.5, 0.1], r"'risk' must be probabilities in \[0, 1\].*found 1\.2 at index 1"),
        (_T, _E, [0.9, np.inf, 0.5, 0.1], r"'risk' must be finite"),
    ],
)
def test_bad_inputs_raise_with_names(time, event, risk, match: str) -> None:
    for call in (
        lambda: cumulative_dynamic_auc(time, event, risk, 3.0),
        lambda: brier_score(time, event, risk, 3.0),
        lambda: concordance_ipcw(time, event, risk, tau=3.0),
    ):
        with pytest.raises(ValueRangeError, match=match):
            call()


@pytest.mark.parametrize("horizon", [6.0, 10.0, -1.0, float("nan")])
def test_horizon_outside_follow_up_names_the_largest_valid_horizon(horizon: float) -> None:
    match = r"valid values are in \[0, 6\) days"
    with pytest.raises(ValueRangeError, match=match):
        cumulative_dynamic_auc(_T, _E, _R, horizon)
    with pytest.raises(ValueRangeError, match=match):
        brier_score(_T, _E, _R, horizon)
    with pytest.raises(ValueRangeError, match=r"'tau' = .* valid values are in \[0, 6\) days"):
        concordance_ipcw(_T, _E, _R, tau=horizon)
    with pytest.raises(ValueRangeError, match=match):
        net_benefit(_T, _E, _R, horizon, [0.1])


def test_horizon_bound_comes_from_the_censoring_distribution_of_the_training_sample() -> None:
    # training sample: last subject censored at 4 -> G = 0 from 4 on, so horizons must be below 4
    tr_time, tr_event = [1.0, 2.0, 3.0, 4.0], [1, 0, 1, 0]
    assert estimable_horizon(_T, _E, train_time=tr_time, train_event=tr_event) == 4.0
    with pytest.raises(ValueRangeError, match=r"valid values are in \[0, 4\) days"):
        brier_score(_T, _E, _R, 4.5, train_time=tr_time, train_event=tr_event)
    with pytest.raises(ValueRangeError, match=r"Give both 'train_time' and 'train_event'"):
        brier_score(_T, _E, _R, 3.0, train_time=[1.0, 2.0])


def test_undefined_metrics_and_bad_options_raise() -> None:
    with pytest.raises(ValueRangeError, match=r"no case \(cause-1 event by the horizon\)"):
        cumulative_dynamic_auc(_T, _E, _R, 0.5)
    with pytest.raises(ValueRangeError, match=r"no cause-2 event before tau"):
        concordance_ipcw(_T, _E, _R, tau=3.0, cause=2)
    with pytest.raises(ValueRangeError, match=r"'cause' must be an integer event code >= 1"):
        brier_score(_T, _E, _R, 3.0, cause=0)
    with pytest.raises(ValueRangeError, match=r"'horizons' must hold at least two strictly increasing"):
        integrated_brier_score(_T, _E, np.column_stack([_R, _R]), [3.0, 2.0])
    with pytest.raises(ValueRangeError, match=r"'risk_matrix' must have shape \(n samples, n horizons\) = \(4, 2\)"):
        integrated_brier_score(_T, _E, _R, [2.0, 3.0])
    with pytest.raises(ValueRangeError, match=r"'thresholds' must be in \[0, 1\)"):
        net_benefit(_T, _E, _R, 3.0, [0.5, 1.0])
    with pytest.raises(ValueRangeError, match=r"'n_groups' must be an integer in \[1, 4\]"):
        calibration(_T, _E, _R, 3.0, n_groups=5)


# --- properties ----------------------------------------------------------------------------------------------

_samples = st.integers(min_value=6, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 30), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.integers(0, 100), min_size=n, max_size=n),
    )
)


def _arrays(sample):
    t, e, r = (np.asarray(v) for v in sample)
    t = t.astype(float)
    t[np.argmax(t)] += 0.5  # one subject followed beyond every horizon used
    return t, e, r / 100.0


@settings(max_examples=60, deadline=None)
@given(_samples)
def test_auc_and_concordance_are_invariant_to_monotone_transforms(sample) -> None:
    time, event, risk = _arrays(sample)
    h = float(np.median(time))
    transformed = risk**3 * 0.5 + 0.25  # strictly increasing on [0, 1]; gaps stay far above the tie tolerance
    for metric in (cumulative_dynamic_auc, lambda t, e, r, h: concordance_ipcw(t, e, r, tau=h)):
        try:
            value = metric(time, event, risk, h)
        except ValueRangeError:
            continue  # no case or no control in this draw
        assert 0.0 <= value <= 1.0
        assert metric(time, event, transformed, h) == pytest.approx(value, abs=1e-12)
        assert metric(time, event, 1 - risk, h) == pytest.approx(1 - value, abs=1e-12)  # reversed ranking


@settings(max_examples=60, deadline=None)
@given(_samples)
def test_brier_is_non_negative_and_zero_for_a_perfect_prediction(sample) -> None:
    time, event, risk = _arrays(sample)
    h = float(np.median(time))
    assert brier_score(time, event, risk, h) >= 0.0
    perfect = ((event == 1) & (time <= h)).astype(float)
    assert brier_score(time, event, perfect, h) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.floats(0, 5)), min_size=1, max_size=60),
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 22)), min_size=1, max_size=20),
)
def test_prefix_weight_below_equals_brute_force(points, queries) -> None:
    ranks = np.array([p[0] for p in points], dtype=np.int64)
    weights = np.array([p[1] for p in points])
    end = np.minimum(np.array([q[0] for q in queries], dtype=np.int64), ranks.size)
    thr = np.array([q[1] for q in queries], dtype=np.int64)
    expected = [weights[:s][ranks[:s] < q].sum() for s, q in zip(end, thr, strict=True)]
    np.testing.assert_allclose(prefix_weight_below(ranks, weights, end, thr), expected, atol=1e-9)
