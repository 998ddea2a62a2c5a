"""Which inputs moved a patient's risk: integrated gradients on the model's log risk, per input token.

Target ``f = log CIF_k(h)``: the log cumulative incidence of outcome ``k`` within ``h`` days of the prediction
time, computed by the fitted module from the single as-of sequence (only events available at the prediction
time are in the batch at all, so later events cannot receive attribution). Log risk rather than risk: the model is
additive in log hazards (the wide path is exactly so), and attributions then read as log risk ratios.

Integrated gradients (Sundararajan et al., ICML 2017) attributes ``f(x) - f(x0)`` to the continuous inputs the
transformer and the wide path both read: ``value`` (normal scores of measurements), ``image`` (standardised image
embeddings) and ``note`` (note embeddings). The baseline ``x0`` is a population-typical record with the same
structure: every value 0 (the train median on the normal-score scale), every image embedding 0 (the train mean)
and every note embedding 0. Along the straight path ``x0 + α (x - x0)``, ``A_i = (x_i - x0_i) · mean_α ∂f/∂x_i``
with ``steps`` midpoint Riemann points; a token's attribution is the sum over its input dimensions. Completeness:
``Σ A_i = f(x) - f(x0)`` up to the Riemann error, reported as ``completeness_gap``. IG was chosen over gradient ×
input (not complete for a non-linear model), attention weights (not attributions of the output) and occlusion
(one forward pass per token, and deleting a token also changes the sequence's times and gaps).

Not attributed: discrete facts — which codes are present, the times, ages and gaps, the order of tokens. A
straight path between two sequences with different codes or lengths is not defined, so these stay fixed on the
path and their joint effect is ``f(x0)`` itself: the risk the record's structure implies at typical values.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from migpt_traj.data.preprocess import UNK_ID, Preprocessor
from migpt_traj.model.module import TrajectoryModule
from migpt_traj.outputs._summary_history import note_snippet
from migpt_traj.outputs._summary_records import TokenAttribution

__all__ = ["CONTINUOUS_INPUTS", "integrated_gradients", "token_attributions", "token_events"]

CONTINUOUS_INPUTS = ("value", "image", "note")


def _path_batch(batch: dict[str, torch.Tensor], alphas: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``len(alphas)`` copies of a one-sample, one-query batch with the continuous inputs scaled by ``alpha``."""
    n = alphas.numel()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in batch.items():
        if name.startswith("q_"):
            out[name] = tensor.repeat(n)
        else:
            out[name] = tensor.expand(n, *tensor.shape[1:]).clone()
    out["q_sample"] = torch.arange(n)
    out["q_row"] = torch.arange(n)
    leaves = []
    for name in CONTINUOUS_INPUTS:
        x = batch[name][0]
        scale = alphas.view(-1, *([1] * x.dim()))
        out[name] = (scale * x.unsqueeze(0)).requires_grad_(True)
        leaves.append(name)
    return out, leaves


def _masked_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with image / note tensors zeroed where a token has none (the collate fills them with row 0;
    the module never reads those entries, so the target is unchanged)."""
    out = dict(batch)
    out["image"] = batch["image"] * batch["has_image"].unsqueeze(-1)
    out["note"] = batch["note"] * batch["has_note"].unsqueeze(-1)
    return out


def integrated_gradients(
    module: TrajectoryModule,
    batch: dict[str, torch.Tensor],
    *,
    cause_index: int,
    horizon_days: float,
    steps: int = 48,
) -> tuple[float, float, np.ndarray]:
    """Integrated gradients of ``log CIF_{cause_index}(horizon_days)`` for a one-sample batch (module docstring).

    Args:
        module: the fitted module (put in eval mode).
        batch: a collated batch with one sample and one query (at the prediction time).
        cause_index: 0-based index of the outcome in the model's outcomes.
        horizon_days: horizon of the risk (days, > 0).
        steps: midpoint Riemann steps.

    Returns:
        ``(f(x), f(x0), attributions)`` with ``attributions`` of shape ``(L,)``, one per sequence position, summed
        over the position's value, image and note dimensions.
    """
    module.eval()
    batch = _masked_inputs(batch)
    midpoints = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    alphas = torch.cat([midpoints, torch.tensor([1.0, 0.0])])
    tau = torch.tensor([float(horizon_days)], dtype=torch.float32)
    with torch.inference_mode(False), torch.enable_grad():
        path, names = _path_batch(batch, alphas)
        cif = module.cif(path, tau)[:, cause_index, 0]
        f = torch.log(cif.clamp(min=1e-30))
        grads = torch.autograd.grad(f[:steps].sum(), [path[n] for n in names], allow_unused=True)
    total = torch.zeros(batch["value"].shape[1], dtype=torch.float64)
    for name, grad in zip(names, grads, strict=True):
        if grad is None:
            continue
        mean_grad = grad[:steps].double().mean(dim=0)  # (L,) or (L, D)
        contrib = batch[name][0].double() * mean_grad  # baseline 0: x - x0 = x
        total += contrib if contrib.dim() == 1 else contrib.sum(dim=-1)
    return float(f[steps].detach()), float(f[steps + 1].detach()), total.numpy()


def token_events(
    events: pl.DataFrame,
    pre: Preprocessor,
    *,
    notes_used: bool,
    max_len: int,
    code_ids: np.ndarray,
) -> pl.DataFrame:
    """The event behind each token of a one-sample sequence, rebuilt by the tensorizer's rules.

    ``events``: the subject's as-of events (:func:`~migpt_traj.outputs._summary_history.subject_events_as_of`).
    Inputs are the events outside the preprocessor's excluded codes (notes only when the model reads notes);
    static rows first in input order, then by availability, time and input order; only the newest timed ones when
    more than ``max_len - 1`` are visible. Checked against the sequence's ``code_ids`` (position 0, the start
    token, excluded).

    Returns:
        One row per token position ``1..L-1``: ``position``, ``modality``, ``code``, ``time``, ``avail``,
        ``numeric_value``, ``text_value``.

    Raises:
        RuntimeError: the rebuilt order does not match the tensorized sequence (a bug, never bad input).
    """
    inputs = events.filter(~pl.col("code").is_in(pre.excluded_codes))
    if not notes_used:
        inputs = inputs.filter(pl.col("modality") != "note")
    static = inputs.filter(pl.col("time").is_null())
    timed = inputs.filter(pl.col("time").is_not_null()).sort("avail", "time", "row")
    keep = min(timed.height, max(max_len - 1 - static.height, 0))
    timed = timed.tail(keep) if keep else timed.clear()
    columns = ["modality", "code", "time", "avail", "numeric_value"]
    text = pl.col("text_value") if "text_value" in inputs.columns else pl.lit(None, dtype=pl.String)
    rows = pl.concat(
        [static.select(*columns, text.alias("text_value")), timed.select(*columns, text.alias("text_value"))]
    )
    vocab = {code: i for i, code in enumerate(pre.codes)}
    expected = np.asarray([vocab.get(c, UNK_ID) for c in rows["code"].to_list()], dtype=np.int64)
    if expected.shape != code_ids[1:].shape or not np.array_equal(expected, code_ids[1:].astype(np.int64)):
        raise RuntimeError(
            f"The rebuilt token order ({expected.size} tokens) does not match the tensorized sequence "
            f"({code_ids.size - 1} tokens); please report this as a bug in migpt_traj."
        )
    return rows.with_row_index("position", offset=1)


def token_attributions(
    tokens: pl.DataFrame, attributions: np.ndarray, batch: dict[str, torch.Tensor]
) -> list[TokenAttribution]:
    """One record per token that has a value, an image or a note, in input order."""
    has_input = (batch["has_value"][0] > 0) | (batch["has_image"][0] > 0) | (batch["has_note"][0] > 0)
    out = []
    for row in tokens.iter_rows(named=True):
        pos = int(row["position"])
        if not bool(has_input[pos]):
            continue
        value = row["numeric_value"]
        out.append(
            TokenAttribution(
                position=pos,
                kind=str(row["modality"]),
                code=str(row["code"]),
                time=row["time"],
                available_time=row["avail"],
                value=float(value) if value is not None else None,
                text=note_snippet(row["text_value"]) if row["modality"] == "note" else None,
                attribution=float(attributions[pos]),
            )
        )
    return out
