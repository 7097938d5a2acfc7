"""Scripted sim-suite demonstrations: the expert completes both tasks, and what `record` writes loads
with the LeRobot loader holding the frames, actions and language the simulation produced."""

import os

import numpy as np
import pytest

from twinloop_data.lerobot_format import load
from twinloop_data.world_sim_expert import (
    STATE_NAMES,
    TASKS,
    TRAIN_SEED_MIN,
    WorldSimExpert,
    box_gaze_mask,
    camera_parameters,
    dataset_views,
    object_states,
)
from twinloop_twin import scene
from twinloop_vla.record import main as record_main, record, record_parallel

SIZE = (64, 48)


def tabletop():
    return scene.SceneConfig.from_yaml(os.path.join(os.environ['TWINLOOP_ROOT'], 'config/scenes/tabletop.yaml'))


def test_expert_completes_both_tasks_on_a_training_layout():
    expert = WorldSimExpert(tabletop(), os.environ['TWINLOOP_ROOT'], camera_names=['front'], size=SIZE)
    try:
        for task in TASKS:
            frames = []
            episode = expert.run(task, TRAIN_SEED_MIN + 7, frames.append)
            assert episode.success, (task, episode.detail)
            assert episode.frames == len(frames) > 10
    finally:
        expert.close()


def test_a_gaze_mask_from_ground_truth_boxes_covers_what_the_segmentation_sees():
    """The through-ROS recorder's gaze masks (box silhouettes from ground-truth poses and the camera's
    parameters) against MuJoCo's segmentation, on two layouts, in a fixed and the wrist camera."""
    size = (160, 120)
    expert = WorldSimExpert(tabletop(), os.environ['TWINLOOP_ROOT'], camera_names=['front', 'wrist'], size=size)
    try:
        for seed in (TRAIN_SEED_MIN + 7, TRAIN_SEED_MIN + 8):
            expert.reset(seed)
            states = object_states(expert.sim)
            for camera in expert.sim.config.cameras:
                frame = expert.sim.render(camera.name, camera.width, camera.height)
                _, depth = dataset_views(frame.rgb, frame.depth, size)
                seen = expert.sim.segmentation(camera.name, *size)
                for oid, least_overlap in (('blue_cube', 0.65), ('red_cube', 0.65), ('bowl', 0.4)):
                    truth = seen == expert.sim.object_ids.index(oid)
                    mask = box_gaze_mask(states[oid], camera_parameters(frame), size, depth) > 0
                    overlap = (mask & truth).sum() / (mask | truth).sum()
                    assert truth.sum() > 20 and overlap >= least_overlap, (seed, camera.name, oid, overlap)
                    assert (mask & truth).sum() >= 0.9 * truth.sum(), (seed, camera.name, oid)  # covers it
    finally:
        expert.close()


def test_dart_noise_moves_the_arm_off_the_recorded_targets_and_still_succeeds():
    expert = WorldSimExpert(tabletop(), os.environ['TWINLOOP_ROOT'], camera_names=['wrist'], size=SIZE)
    task = 'pick up the blue cube'
    try:
        runs = {}
        for noise in (0.0, 0.03):
            frames = []
            episode = expert.run(task, TRAIN_SEED_MIN + 502, frames.append, noise=noise)  # the grasp holds
            assert episode.success, (noise, episode.detail)
            runs[noise] = [np.array([f[key] for f in frames]) for key in ('action', 'observation.state')]
    finally:
        expert.close()
    (clean_actions, clean_states), (actions, states) = runs[0.0], runs[0.03]
    np.testing.assert_allclose(actions, clean_actions, atol=1e-6)  # the labels are the expert's own targets
    assert np.abs(states[:, :7] - clean_states[:, :7]).mean() > 0.01  # while the arm went elsewhere


def test_a_grasp_the_noise_made_miss_is_tried_again_and_the_data_shows_the_reopening():
    expert = WorldSimExpert(tabletop(), os.environ['TWINLOOP_ROOT'], camera_names=['wrist'], size=SIZE)
    task, seed = 'pick up the blue cube', TRAIN_SEED_MIN + 500  # a layout where the noise spoils the first grasp
    try:
        episodes, grippers = {}, {}
        for retries in (0, 2):
            frames = []
            episodes[retries] = expert.run(task, seed, frames.append, noise=0.03, retries=retries)
            grippers[retries] = np.array([f['action'][7] for f in frames])
    finally:
        expert.close()
    assert not episodes[0].success and episodes[0].retries == 0, episodes[0].detail  # the miss is real
    retried = episodes[2]
    assert retried.success and 1 <= retried.retries <= 2, retried.detail
    # the recorded gripper commands: closed on the miss, opened again, closed again (once per retry)
    commands = grippers[2][np.r_[0, np.flatnonzero(np.diff(grippers[2])) + 1]]
    assert np.round(commands.astype(float), 3).tolist() == [0.08] + [0.0, 0.08] * retried.retries + [0.0], commands
    assert retried.frames > episodes[0].frames + 20


def test_recorded_episodes_load_with_their_frames_actions_and_language(tmp_path):
    out = tmp_path / 'demos'
    tasks = list(TASKS)
    report = record(out, tasks, episodes=1, seed=TRAIN_SEED_MIN + 3, size=SIZE, max_frames=8, progress=False)
    info, loaded_tasks, episodes, frames = load(out)
    assert info['total_episodes'] == 2 and info['total_frames'] == 16 and info['fps'] == 10
    assert [e['tasks'] for e in episodes] == [[t] for t in tasks]
    assert [e['length'] for e in episodes] == [8, 8]
    assert [loaded_tasks[i] for i in frames['task_index'][::8]] == tasks
    seeds = [e['seed'] for e in report['episodes']]
    assert seeds == [TRAIN_SEED_MIN + 3, TRAIN_SEED_MIN + 4]

    # the first frame of each episode is what world_sim's core shows for that layout seed
    expert = WorldSimExpert(tabletop(), os.environ['TWINLOOP_ROOT'], size=SIZE)
    try:
        for episode, seed in zip(episodes, seeds):
            first = frames[episode['episode_index'] * 8]
            expert.reset(seed)
            gaze = TASKS[loaded_tasks[first['task_index']]][0].object_id
            view = expert.observation(gaze)
            for camera in ('front', 'wrist'):
                assert np.array_equal(np.asarray(first[f'observation.images.{camera}']), view[camera][0])
                np.testing.assert_allclose(first[f'observation.camera.{camera}'], view[camera][3], atol=1e-6)
                mask = np.asarray(first[f'observation.gaze.{camera}'])
                assert np.array_equal(mask.reshape(view[camera][2].shape), view[camera][2])
            # the front view sees the object of the task in the gaze mask, in the object's colour
            mask = np.asarray(first['observation.gaze.front']).reshape(SIZE[::-1]) > 0
            assert mask.sum() >= 4, f'{gaze}: {mask.sum()} pixels in the front gaze mask'
            colour = np.asarray(first['observation.images.front'])[mask].mean(axis=0)
            assert np.argmax(colour) == ('red', 'green', 'blue').index(gaze.split('_')[0]), (gaze, colour)
            np.testing.assert_allclose(first['observation.state'][:7], expert.sim.arm_positions(), atol=1e-6)
            assert len(first['observation.state']) == len(STATE_NAMES) == 15
    finally:
        expert.close()

    # actions lead the states: each is the arm's next target, the gripper an open/closed width
    episode_of = np.asarray(frames['episode_index'])
    actions, states = np.asarray(frames['action']), np.asarray(frames['observation.state'])
    for e in (0, 1):
        a, s = actions[episode_of == e], states[episode_of == e]
        assert np.abs(a[:-1, :7] - s[1:, :7]).max() < 0.1
        assert np.abs(a[:-1, :7] - s[1:, :7]).mean() < np.abs(a[:-1, :7] - s[:-1, :7]).mean()
        assert set(np.round(a[:, 7], 3)) <= {0.0, 0.08}
        # the recorded joint velocities are the arm's: the mean over a step is its position change over it
        moving = np.abs(s[2:, :7] - s[:-2, :7]).max(axis=1) > 0.02
        central = (s[2:, :7] - s[:-2, :7]) / 0.2
        assert (
            moving.any()
            and np.abs(s[1:-1, 8:][moving] - central[moving]).mean() < 0.25 * np.abs(central[moving]).mean()
        )


def test_two_workers_record_disjoint_layouts_merged_into_one_dataset(tmp_path):
    out = tmp_path / 'demos'
    tasks = list(TASKS)
    report = record_parallel(out, tasks, 3, workers=2, seed=TRAIN_SEED_MIN + 3, size=SIZE, max_frames=5, progress=False)
    info, loaded_tasks, episodes, frames = load(out)
    assert info['total_episodes'] == 6 and info['total_frames'] == 30 and report['workers'] == 2
    assert sorted(loaded_tasks.values()) == sorted(tasks)
    assert np.array_equal(frames['index'], np.arange(30))
    assert np.array_equal(frames['episode_index'], np.repeat(np.arange(6), 5))
    # worker 0 recorded 2 episodes per task from the first seed, worker 1 one per task 8 seeds later (2 tasks x
    # worker 0's 4 attempts per task)
    seeds = [(e['episode_index'], e['seed'], e['task']) for e in report['episodes']]
    assert [s for _, s, _ in seeds] == [TRAIN_SEED_MIN + k for k in (3, 4, 5, 6, 11, 12)]
    assert [i for i, _, _ in seeds] == list(range(6))
    assert [loaded_tasks[t] for t in frames['task_index'][::5]] == [t for _, _, t in seeds]
    assert [e['tasks'] for e in episodes] == [[t] for _, _, t in seeds]
    assert not list(tmp_path.glob('.demos.shards-*'))  # the shards are gone
    expert = WorldSimExpert(tabletop(), os.environ['TWINLOOP_ROOT'], camera_names=['front'], size=SIZE)
    try:
        for index, seed, _ in seeds[3:5]:  # the merged frames are those of their seed's layout
            expert.reset(seed)
            image = expert.observation()['front'][0]
            assert np.array_equal(np.asarray(frames[index * 5]['observation.images.front']), image)
    finally:
        expert.close()
    with pytest.raises(FileExistsError):
        record_parallel(out, tasks, 2, workers=2, seed=TRAIN_SEED_MIN, progress=False)


def test_evaluation_seeds_are_refused(tmp_path):
    with pytest.raises(ValueError, match='seeds >='):
        record(tmp_path / 'x', list(TASKS), episodes=1, seed=1, progress=False)
    with pytest.raises(SystemExit):
        record_main(['--task', 'fly to the moon', '--out', str(tmp_path / 'y')])
