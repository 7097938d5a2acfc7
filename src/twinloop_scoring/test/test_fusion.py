"""The MoA view-fusion formula on hand-computed examples."""

import numpy as np
import pytest

from twinloop_scoring.fusion import fuse

# 2 agents x 2 views x 2 candidates x 2 dimensions, weights 0.5 / 0.5.
SCORES = np.array(
    [
        [[[0.8, 0.6], [0.2, 0.4]], [[1.0, 1.0], [0.0, 0.0]]],  # agent 0: view 0, view 1
        [[[0.8, 0.6], [0.2, 0.4]], [[0.0, 0.0], [1.0, 1.0]]],  # agent 1: agrees on view 0, disagrees on view 1
    ]
)
CLARITY = np.full((2, 2), 0.8)


def test_hand_computed():
    f = fuse(SCORES, CLARITY, [0.5, 0.5], lambda_c=1.0)
    np.testing.assert_allclose(f.weighted[:, 0], [[0.7, 0.3], [0.7, 0.3]])
    np.testing.assert_allclose(f.variance, [0.0, 0.25])  # Var_m of weighted scores, mean over candidates
    np.testing.assert_allclose(f.confidence, [0.8, 0.8 / 1.25])  # q / (1 + lambda * sigma)
    np.testing.assert_allclose(f.normalised, [0.8 / 1.44, 0.64 / 1.44])
    np.testing.assert_allclose(f.totals, [0.8 / 1.44 * 0.7 + 0.64 / 1.44 * 0.5, 0.8 / 1.44 * 0.3 + 0.64 / 1.44 * 0.5])
    assert f.normalised[1] < f.normalised[0], 'the view the agents disagree on loses weight'
    assert f.totals == pytest.approx([0.611111, 0.388889], abs=1e-6)


def test_more_disagreement_weight_less_and_lambda():
    weak = fuse(SCORES, CLARITY, [0.5, 0.5], lambda_c=4.0)
    np.testing.assert_allclose(weak.normalised[1], (0.8 / 2.0) / (0.8 + 0.8 / 2.0))


def test_failed_agent_and_failed_view():
    scores = SCORES.copy()
    scores[1, 1] = np.nan  # agent 1 failed on view 1
    f = fuse(scores, CLARITY, [0.5, 0.5])
    assert f.valid_agents.tolist() == [2, 1] and f.variance[1] == 0.0
    np.testing.assert_allclose(f.totals, [0.5 * 0.7 + 0.5 * 1.0, 0.5 * 0.3 + 0.5 * 0.0])
    scores[0, 1] = np.nan  # and agent 0: the view is a failure, not a zero
    f = fuse(scores, CLARITY, [0.5, 0.5])
    assert f.failed_views.tolist() == [False, True] and f.normalised.tolist() == [1.0, 0.0]
    np.testing.assert_allclose(f.totals, [0.7, 0.3])
    with pytest.raises(ValueError, match='nothing to fuse'):
        fuse(np.full_like(SCORES, np.nan), CLARITY, [0.5, 0.5])
