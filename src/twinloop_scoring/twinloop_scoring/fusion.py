"""AntiGrounding's multi-agent, multi-view fusion (MoA with confidence-weighted views).

Inputs per agent m, view v, candidate j and dimension k: scores s[m, v, j, k] in [0, 1] (NaN
where that agent failed on that view) and self-assessed view clarity q[m, v].
  per-view disagreement   sigma_v = mean_j Var_m( sum_k w_k s[m, v, j, k] )
  view confidence         C_v = q_v / (1 + lambda_C * sigma_v),   q_v = mean_m q[m, v]
  normalised              C'_v = C_v / sum_v C_v
  final score             S_j = sum_v C'_v * mean_m( sum_k w_k s[m, v, j, k] )
With every agent valid this is S_j = (1/M') sum_m sum_v C'_v sum_k w_k s[m, v, j, k] of the paper;
agents that failed on a view are left out of that view's mean, views where all failed get C = 0.
Every intermediate number is returned for the report.
"""

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class Fusion:
    """The fused scores and every intermediate of fuse(); shapes use M agents, V views, J candidates, K dimensions."""

    totals: np.ndarray  # (J,) S_j
    dimension_scores: np.ndarray  # (J, K) confidence-weighted, agent-averaged s
    weighted: np.ndarray  # (M, V, J) sum_k w_k s
    variance: np.ndarray  # (V,) sigma_v
    clarity: np.ndarray  # (V,) q_v
    confidence: np.ndarray  # (V,) C_v
    normalised: np.ndarray  # (V,) C'_v
    valid_agents: np.ndarray  # (V,) agents with a valid reply per view
    failed_views: np.ndarray  # (V,) bool


def fuse(scores, clarity, weights, lambda_c=1.0):
    """Fuse scores (M, V, J, K) with view clarity (M, V) and dimension weights (K,) as described above."""
    scores = np.asarray(scores, float)  # (M, V, J, K)
    clarity = np.asarray(clarity, float)  # (M, V)
    weights = np.asarray(weights, float)  # (K,)
    if scores.ndim != 4 or clarity.shape != scores.shape[:2] or weights.shape != scores.shape[3:]:
        raise ValueError(f'shapes: scores {scores.shape}, clarity {clarity.shape}, weights {weights.shape}')
    weighted = np.einsum('mvjk,k->mvj', scores, weights)
    valid = ~np.isnan(weighted).any(axis=2) & ~np.isnan(clarity)  # (M, V)
    valid_agents = valid.sum(axis=0)
    failed = valid_agents == 0
    with np.errstate(invalid='ignore', divide='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN slices are failed views, handled below
        masked = np.where(valid[:, :, None], weighted, np.nan)
        variance = np.where(failed, np.nan, np.nanmean(np.nanvar(masked, axis=0), axis=1) if masked.size else np.nan)
        q = np.where(failed, 0.0, np.nanmean(np.where(valid, clarity, np.nan), axis=0))
        confidence = np.where(failed, 0.0, q / (1.0 + lambda_c * np.nan_to_num(variance)))
    total = confidence.sum()
    if total <= 0:
        raise ValueError('no view has a valid, confident score: nothing to fuse')
    normalised = confidence / total
    with np.errstate(invalid='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        per_view = np.nanmean(masked, axis=0)  # (V, J)
        per_view_dims = np.nanmean(np.where(valid[:, :, None, None], scores, np.nan), axis=0)  # (V, J, K)
    totals = np.nansum(normalised[:, None] * np.nan_to_num(per_view), axis=0)
    dims = np.nansum(normalised[:, None, None] * np.nan_to_num(per_view_dims), axis=0)
    return Fusion(totals, dims, weighted, variance, q, confidence, normalised, valid_agents, failed)
