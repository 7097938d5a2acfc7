"""In-process evaluation (eval.py): an untrained tiny VGA checkpoint whose actions stay near home
runs whole episodes on held-out layouts with the chunk schedule its blending implies, writes
results, a report and GIFs; one whose actions leap away is stopped at its first step with the
gate's reason; a local Ray cluster gives exactly the serial run's episodes."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from vla_samples import TINY

from twinloop_execution.safety import JointLimits
from twinloop_twin import scene
from twinloop_vla import eval as vla_eval
from twinloop_vla.policies import make_policy

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3]))
TASK = 'pick up the blue cube'


def save_checkpoint(folder, action_mean, action_std, **overrides):
    """A tiny VGA (random weights, seed 0) whose actions are action_mean + action_std * (its raw output)."""
    stats = {'action': {'mean': list(action_mean), 'std': list(action_std)}}
    make_policy('vga', {**TINY, **overrides}, stats=stats).save(folder)
    return str(folder)


@pytest.fixture(scope='module')
def near_home(tmp_path_factory):
    """Arm targets within ~1 mrad of home, the gripper open: never done, never refused; a gaze head."""
    folder = tmp_path_factory.mktemp('near_home')
    return save_checkpoint(folder, [*scene.HOME, 0.08], [1e-3] * 7 + [0.0], use_gaze_head=True)


def test_episodes_run_to_the_step_limit_with_the_blendings_schedule(near_home, tmp_path):
    settings = vla_eval.EvalSettings(checkpoint=near_home, blending='rtc', delay_steps=1, max_steps=11)
    seeds = vla_eval.episode_seeds(ROOT / 'bench' / 'tasks.yaml', 'held_out', 1)
    results = vla_eval.evaluate(settings, [TASK], seeds, ROOT, videos=1, progress=False)
    (r,) = results
    assert (r.task, r.seed, r.success, r.steps) == (TASK, 1000, False, 11)
    assert r.reason == 'not done after 11 steps'
    assert r.chunks == 3 and len(r.inference_s) == 3  # observed at steps 0, 3, 7 (delay 1, 4 per chunk)
    assert len(r.frames) == 11 and r.frames[0].shape == (120, 2 * 160, 3)  # front and wrist, gaze drawn
    assert np.isfinite(r.mean_abs_jerk) and r.mean_abs_jerk < 50.0  # the arm holds still near home
    assert r.grasps == 0 and not np.isfinite(r.grip_offset)  # the gripper stayed open
    facts = vla_eval.write_outputs(tmp_path, settings, results, 'held_out', 'python -m twinloop_vla.eval ...')
    assert facts['all']['successes'] == 0 and facts['all']['episodes'] == 1
    assert facts['all']['chunk_execution_s'] == pytest.approx(0.4)
    saved = json.loads((tmp_path / 'results.json').read_text())
    assert saved['episodes'][0]['chunks'] == 3 and 'frames' not in saved['episodes'][0]
    gif = Image.open(next((tmp_path / 'videos').glob('*.gif')))
    durations = []  # identical frames are merged into one of a longer duration
    for index in range(gif.n_frames):
        gif.seek(index)
        durations.append(gif.info['duration'])
    assert sum(durations) == 11 * 100
    assert '| pick up the blue cube | 0/1 |' in (tmp_path / 'report.md').read_text()


def test_a_gripper_held_shut_counts_one_grasp_and_its_offset(tmp_path):
    shut = save_checkpoint(tmp_path / 'shut', [*scene.HOME, 0.0], [1e-3] * 7 + [0.0])
    settings = vla_eval.EvalSettings(checkpoint=shut, blending='rtc', delay_steps=1, max_steps=6)
    (r,) = vla_eval.evaluate(settings, [TASK], [1000], ROOT, progress=False)
    assert r.steps == 6 and r.grasps == 1 and 0.2 < r.grip_offset < 1.5  # shut once, at home, far from the cube
    episodes = [r, vla_eval.EpisodeResult(TASK, 1001, False, '', 9, 2, grasps=3)]
    assert vla_eval.summary(settings, episodes)['all']['retried'] == 1


def test_views_render_at_the_size_asked_and_the_report_names_it(tmp_path):
    shut = save_checkpoint(tmp_path / 'shut', [*scene.HOME, 0.0], [1e-3] * 7 + [0.0])
    settings = vla_eval.EvalSettings(checkpoint=shut, max_steps=2, size=(320, 240))  # world_sim's cameras
    (r,) = vla_eval.evaluate(settings, [TASK], [1000], ROOT, videos=1, progress=False)
    assert r.frames[0].shape == (240, 2 * 320, 3)
    vla_eval.write_outputs(tmp_path / 'out', settings, [r], 'held_out', 'python -m twinloop_vla.eval ...')
    assert 'views rendered 320 x 240' in (tmp_path / 'out' / 'report.md').read_text()


def test_a_libero_task_runs_on_held_out_init_states_with_its_own_rate_views_and_gripper(tmp_path):
    # arm targets = the observed joints (relative actions, ~1 mrad spread), the gripper entry +1: close
    shut = save_checkpoint(
        tmp_path / 'libero', [0.0] * 7 + [1.0], [1e-3] * 7 + [0.0], state_dim=9, relative_action_dims=7
    )
    settings = vla_eval.EvalSettings(checkpoint=shut, blending='rtc', delay_steps=1, max_steps=8)
    task = 'libero_spatial:0'
    assert vla_eval.episode_seeds(ROOT / 'bench' / 'tasks.yaml', 'held_out', 3, 'libero') == [20, 21, 22]
    with pytest.raises(ValueError, match='held-out init states 20..49'):
        vla_eval.episode_seeds(ROOT / 'bench' / 'tasks.yaml', 'held_out', 31, 'libero')
    with pytest.raises(ValueError, match='separate runs'):
        settings.for_tasks([task, TASK])
    (r,) = vla_eval.evaluate(settings, [task], [20], ROOT, videos=1, progress=False)
    assert (r.steps, r.success, r.reason) == (8, False, 'not done after 8 steps')
    assert r.chunks == 3 and r.frames[0].shape == (128, 2 * 128, 3)  # observed at 0, 3, 7; agentview and wrist
    assert r.grasps == 1 and 0.05 < r.grip_offset < 1.0  # shut at once, the bowl within the table's reach
    assert np.isfinite(r.mean_abs_jerk)
    evaluator = vla_eval.Evaluator(settings.for_tasks([task]), ROOT)
    try:
        with pytest.raises(ValueError, match='may be in the training data'):
            evaluator.run(task, 5)  # an init state demonstrations may come from
    finally:
        evaluator.close()


def test_the_never_trained_libero_tasks_are_the_recorded_seeds_choice():
    chosen = yaml.safe_load((ROOT / 'bench' / 'vla_libero_tasks.yaml').read_text())
    suites = ('libero_spatial', 'libero_object', 'libero_goal')
    others = [f'{s}:{i}' for s in suites for i in range(10) if f'{s}:{i}' not in chosen['acceptance']]
    picked = np.random.default_rng(chosen['selection_seed']).choice(others, 2, replace=False)
    assert len(others) == 26 and sorted(picked.tolist()) == chosen['never_trained']


def test_the_gaze_is_drawn_over_the_view():
    image = np.full((12, 16, 3), 100, np.uint8)
    weights = np.zeros(4)
    weights[3] = 1.0  # the bottom-right patch of a 2 x 2 grid
    picture = vla_eval.gaze_overlay(image, weights, np.array([0.25, 0.25]))
    assert picture.shape == image.shape
    assert picture[10, 13, 0] > 150 and picture[10, 13, 1] < 60  # red where the gaze is
    assert np.array_equal(picture[1, 14], image[1, 14])  # untouched away from the gaze and the ring
    ring = picture[:7, :8]
    assert ((ring[..., 0] > 200) & (ring[..., 1] > 200) & (ring[..., 2] < 50)).any()  # the yellow ring at (4, 3)


def test_an_action_the_gate_would_refuse_ends_the_episode_with_the_reason(tmp_path):
    leap = save_checkpoint(tmp_path / 'leap', [*scene.HOME[:3], scene.HOME[3] + 1.0, *scene.HOME[4:], 0.08], [1e-3] * 8)
    settings = vla_eval.EvalSettings(checkpoint=leap, max_steps=20)
    (r,) = vla_eval.evaluate(settings, [TASK], [1000], ROOT, progress=False)
    assert not r.success and r.steps == 0 and r.chunks == 1
    assert r.reason == "step 0: the gate would refuse: a jump beyond the velocity limit in one step (['panda_joint4'])"


def test_the_gates_acceleration_limit_holds_in_process_from_rest_and_in_motion(tmp_path):
    # joint 2 moves 0.07 rad in the first step: 0.7 rad/s is allowed, starting from rest to it is not
    lunge = save_checkpoint(tmp_path / 'lunge', [*scene.HOME[:1], scene.HOME[1] + 0.07, *scene.HOME[2:], 0.08], [0] * 8)
    unshaped = vla_eval.EvalSettings(checkpoint=lunge, max_steps=5, limit_margin=0.0)
    (r,) = vla_eval.evaluate(unshaped, [TASK], [1000], ROOT, progress=False)
    assert not r.success and r.steps == 0
    assert r.reason.startswith("step 0: the gate would refuse: accelerates beyond the limit (['panda_joint2']")
    assert 'panda_joint2 at 14.0 rad/s^2, limit 7.5' in r.reason
    # shaped to 90 % of the limits (the default), the same lunge is followed over a few steps: 3.6 cm-rad off at
    # most, within the limit_tolerance (0.15 rad)
    (r,) = vla_eval.evaluate(vla_eval.EvalSettings(checkpoint=lunge, max_steps=5), [TASK], [1000], ROOT, progress=False)
    assert r.steps == 5 and r.reason == 'not done after 5 steps', r.reason
    assert r.shaped >= 2
    limits = JointLimits.panda(ROOT)
    q, moving = np.asarray(scene.HOME, float), np.full(7, 1.0)  # [rad/s]
    assert vla_eval.refusal(q + 0.1, q, limits, 0.1, velocity=moving) == ''  # on at the same speed
    stop = vla_eval.refusal(q, q, limits, 0.1, velocity=moving)  # to rest in one step: -10 rad/s^2
    assert stop.startswith("accelerates beyond the limit (['panda_joint2']"), stop


def test_training_seeds_are_never_evaluation_layouts():
    with pytest.raises(ValueError, match='no seed range'):
        vla_eval.episode_seeds(ROOT / 'bench' / 'tasks.yaml', 'training', 5)
    assert vla_eval.episode_seeds(ROOT / 'bench' / 'tasks.yaml', 'development', 3) == [1, 2, 3]


def test_a_local_ray_cluster_gives_the_serial_episodes(near_home):
    settings = vla_eval.EvalSettings(checkpoint=near_home, max_steps=6)
    serial = vla_eval.evaluate(settings, [TASK], [1000, 1001], ROOT, progress=False)
    parallel = vla_eval.evaluate(settings, [TASK], [1000, 1001], ROOT, workers=2, progress=False)
    assert [(r.seed, r.steps, r.chunks, r.reason) for r in parallel] == [
        (r.seed, r.steps, r.chunks, r.reason) for r in serial
    ]
    assert [r.mean_abs_jerk for r in parallel] == pytest.approx([r.mean_abs_jerk for r in serial], rel=1e-6)
