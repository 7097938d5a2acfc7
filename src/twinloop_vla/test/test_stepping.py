"""Chunks on a stepped simulation (stepping.py): inference timing with a modelled delay, and the
three blendings at whole steps on hand-made chunks whose values say where they came from."""

import numpy as np
import pytest

from twinloop_vla.blending import BlendConfig
from twinloop_vla.stepping import SteppedChunks


def chunk(value, size=8):
    """A (size, 1) chunk: value + step index within the chunk."""
    return (value + np.arange(size, dtype=float))[:, None]


def schedule(blending, delay=0, **kwargs):
    return SteppedChunks(BlendConfig(blending=blending, control_period=0.1, execute_steps=4, **kwargs), delay)


def run(plan, steps, make):
    """Actions of steps 0..steps-1, inferring chunk make(step) whenever one is due; (actions, inference steps)."""
    actions, inferred = [], []
    for step in range(steps):
        if plan.due(step):
            plan.add(step, make(step))
            inferred.append(step)
        actions.append(float(plan.action(step)[0]))
    return actions, inferred


def test_receding_horizon_without_delay_runs_the_first_actions_of_each_chunk():
    actions, inferred = run(schedule('receding_horizon'), 10, lambda s: chunk(100 * (s + 1)))
    assert inferred == [0, 4, 8]
    assert actions == [100, 101, 102, 103, 500, 501, 502, 503, 900, 901]


def test_a_delayed_chunk_starts_later_and_skips_its_past_actions():
    """Delay 1: chunks come from steps 0, 3, 7; the one from step 3 runs from step 4 on at its index 1."""
    actions, inferred = run(schedule('receding_horizon', delay=1), 10, lambda s: chunk(100 * (s + 1)))
    assert inferred == [0, 3, 7]
    assert actions == [100, 101, 102, 103, 401, 402, 403, 404, 801, 802]


def test_temporal_ensembling_weights_older_chunks_more():
    plan = schedule('temporal_ensembling', ensemble_decay=0.5)
    actions, _ = run(plan, 6, lambda s: chunk(0.0 if s == 0 else 10.0))
    w = np.exp(-0.5 * np.arange(2))
    assert actions[:4] == [0, 1, 2, 3]
    # step 4: the first chunk's action 4 and the second chunk's action 0; step 5: 5 and 11
    assert actions[4] == pytest.approx((w @ [4.0, 10.0]) / w.sum())
    assert actions[5] == pytest.approx((w @ [5.0, 11.0]) / w.sum())


def test_rtc_ramps_over_the_seam_then_follows_the_new_chunk():
    plan = schedule('rtc', blend_steps=3)
    actions, _ = run(plan, 9, lambda s: chunk(0.0 if s == 0 else 40.0))
    assert actions[:4] == [0, 1, 2, 3]
    for k, step in enumerate((4, 5, 6)):  # old chunk 4, 5, 6 vs new 40, 41, 42
        w = (k + 1) / 4
        assert actions[step] == pytest.approx((1 - w) * step + w * (40 + k))
    assert actions[7] == 43  # past the seam: the new chunk alone
    assert actions[8] == pytest.approx(0.75 * 44 + 0.25 * 40)  # the next seam (the third chunk, from step 8)


def test_chunks_too_short_for_delay_and_execution_are_refused():
    plan = schedule('receding_horizon', delay=2)
    plan.add(0, chunk(0.0))
    with pytest.raises(ValueError, match='C >= delay \\+ execute_steps = 6'):
        plan.add(2, chunk(0.0, size=5))
    with pytest.raises(ValueError, match='delay_steps must be in'):
        schedule('rtc', delay=4)


def test_rtc_from_rest_ramps_from_holding_still_and_other_blendings_do_not():
    rtc = schedule('rtc', blend_steps=3)
    rtc.add(0, chunk(10.0), rest=np.zeros(1))
    ramped = [float(rtc.action(step)[0]) for step in range(5)]
    assert ramped == pytest.approx([0.25 * 10, 0.5 * 11, 0.75 * 12, 13, 14])  # from the rest at 0
    plain = schedule('receding_horizon')
    plain.add(0, chunk(10.0), rest=np.zeros(1))
    assert [float(plain.action(step)[0]) for step in range(4)] == [10, 11, 12, 13]
