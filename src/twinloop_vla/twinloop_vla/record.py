"""Record scripted sim-suite demonstrations into a LeRobot v2.1 dataset folder.

Drives world_sim's simulation core in process (twinloop_data.world_sim_expert): the same scene
YAML, seeded layouts and cameras as the world_sim node, without the ROS transport. Layout seeds
start at --seed (>= TRAIN_SEED_MIN, never an evaluation layout) and count up over every attempt;
failed demonstrations are dropped. meta/expert_report.json lists each episode's seed. `--workers N`
records in N processes, each from its own block of seeds, and merges their shards (record_parallel).
Through ROS instead (world_sim's camera topics, the execution node's stream and safety gate; one process,
real time, no gaze masks): `python -m twinloop_bringup.ros_expert` with the same arguments.

    . ./twinloop_env.sh && python -m twinloop_vla.record --task "pick up the blue cube" \\
        --task "put the red cube in the bowl" --episodes 40 --out ~/.cache/twinloop/datasets/sim_pick_place
"""

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from twinloop_data.lerobot_format import LeRobotWriter, merge
from twinloop_data.world_sim_expert import (
    CAMERAS,
    FPS,
    IMAGE_SIZE,
    TASKS,
    TRAIN_SEED_MIN,
    VELOCITY_SCALE,
    ExpertFailed,
    WorldSimExpert,
)
from twinloop_twin import scene


def record(
    out,
    tasks,
    episodes,
    seed=TRAIN_SEED_MIN,
    fps=FPS,
    cameras=CAMERAS,
    size=IMAGE_SIZE,
    max_frames=None,
    max_attempts=None,
    scene_path=None,
    root=None,
    progress=True,
    velocity_scale=VELOCITY_SCALE,
    noise=0.0,
    retries=0,
    position=0,
    expert=None,
):
    """Record `episodes` successful demonstrations per task into out; returns the report dict.

    max_frames cuts every episode short (kept even if unfinished: for quick tests);
    max_attempts per task defaults to 2 x episodes; position: the progress bar's line;
    expert: what records (WorldSimExpert's interface; default: WorldSimExpert in process, closed at the end)."""
    if seed < TRAIN_SEED_MIN:
        raise ValueError(f'training layouts use seeds >= {TRAIN_SEED_MIN} (below are evaluation layouts), got {seed}')
    import datasets

    datasets.disable_progress_bars()  # one bar: episodes
    root = Path(root or os.environ.get('TWINLOOP_ROOT', '.'))
    scene_path = Path(scene_path or root / 'config' / 'scenes' / 'tabletop.yaml')
    expert = expert or WorldSimExpert(scene.SceneConfig.from_yaml(scene_path), root, fps, cameras, size)
    writer = LeRobotWriter(out, fps=fps, features=expert.features())
    report = {'fps': fps, 'cameras': list(cameras), 'size': list(size), 'first_seed': seed}
    report |= {'velocity_scale': velocity_scale, 'noise': noise, 'retries': retries, 'expert': type(expert).__name__}
    report['episodes'] = []
    attempts_left = {task: max_attempts or 2 * episodes for task in tasks}
    bar = tqdm(total=episodes * len(tasks), unit='episode', disable=not progress, position=position)
    started, frames, next_seed = time.monotonic(), 0, seed
    try:
        for task in tasks:
            done = 0
            while done < episodes and attempts_left[task] > 0:
                attempts_left[task] -= 1
                layout_seed, next_seed = next_seed, next_seed + 1
                try:
                    episode = expert.run(
                        task, layout_seed, writer.add_frame, max_frames, velocity_scale, noise, retries
                    )
                except (ExpertFailed, ValueError) as exc:  # no IK solution; objects that do not fit
                    writer.discard_episode()
                    bar.write(f'seed {layout_seed}: {exc}')
                    continue
                if not (episode.success or max_frames is not None):
                    writer.discard_episode()
                    bar.write(f'seed {layout_seed} {task!r}: {episode.detail}, dropped')
                    continue
                index = writer.save_episode(task)
                entry = {'episode_index': index, 'seed': layout_seed, 'task': task, 'frames': episode.frames}
                entry['retries'] = episode.retries
                report['episodes'].append(entry | {'success': episode.success, 'detail': episode.detail})
                done, frames = done + 1, frames + episode.frames
                bar.update(1)
                bar.set_postfix(frames=frames, seed=str(layout_seed))
    finally:
        bar.close()
        expert.close()
    wall = time.monotonic() - started
    attempts = next_seed - seed
    report |= {
        'attempts': attempts,
        'frames': frames,
        'wall_s': round(wall, 1),
        'frames_per_s': round(frames / wall, 1),
    }
    report['bytes'] = sum(f.stat().st_size for f in Path(out).rglob('*.parquet'))
    (Path(out) / 'meta' / 'expert_report.json').write_text(json.dumps(report, indent=2))
    return report


def record_parallel(out, tasks, episodes, workers, seed=TRAIN_SEED_MIN, max_attempts=None, **options):
    """record() split over `workers` processes (1: record itself): worker w records its share of the episodes
    per task from layout seed `seed + w * stride` (stride: the most seeds a worker may use, so no layout is
    recorded twice) into a shard folder; the shards are merged into out in worker order (lerobot_format.merge)
    and removed. The layouts differ from a serial recording's with the same seed."""
    if workers <= 1 or episodes < 2:
        return record(out, tasks, episodes, seed, max_attempts=max_attempts, **options)
    out = Path(out)
    if (out / 'meta' / 'info.json').exists():
        raise FileExistsError(f'{out} already holds a dataset; choose another folder')
    counts = [episodes // workers + (w < episodes % workers) for w in range(workers)]
    attempts = [max(1, round((max_attempts or 2 * episodes) * n / episodes)) for n in counts]
    stride = len(tasks) * max(attempts)
    out.parent.mkdir(parents=True, exist_ok=True)
    shards = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.shards-'))
    started = time.monotonic()
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            jobs = [
                pool.submit(record, shards / str(w), tasks, n, seed + w * stride, max_attempts=a, position=w, **options)
                for w, (n, a) in enumerate(zip(counts, attempts))
                if n
            ]
            reports = [job.result() for job in jobs]
        roots = [str(shards / str(w)) for w, n in enumerate(counts) if n]
        renumbered = merge(roots, out)
    finally:
        shutil.rmtree(shards, ignore_errors=True)
    report = {k: v for k, v in reports[0].items() if k not in ('episodes', 'wall_s', 'frames_per_s')}
    report['episodes'] = [
        e | {'episode_index': renumbered[(root, e['episode_index'])]}
        for root, r in zip(roots, reports)
        for e in r['episodes']
    ]
    report |= {'workers': workers, 'attempts': sum(r['attempts'] for r in reports)}
    report['frames'] = sum(r['frames'] for r in reports)
    wall = time.monotonic() - started
    report |= {'wall_s': round(wall, 1), 'frames_per_s': round(report['frames'] / wall, 1)}
    report['bytes'] = sum(f.stat().st_size for f in out.rglob('*.parquet'))
    (out / 'meta' / 'expert_report.json').write_text(json.dumps(report, indent=2))
    return report


def argument_parser():
    """The recorders' command line (this module's and twinloop_bringup.ros_expert's)."""
    parser = argparse.ArgumentParser(description='Scripted sim-suite demonstrations (world_sim) in the LeRobot format')
    parser.add_argument('--task', action='append', choices=sorted(TASKS), required=True, help='repeat for more tasks')
    parser.add_argument('--episodes', type=int, default=40, help='successful demonstrations per task')
    parser.add_argument('--seed', type=int, default=TRAIN_SEED_MIN, help=f'first layout seed (>= {TRAIN_SEED_MIN})')
    parser.add_argument('--out', required=True, help='dataset folder (must not hold a dataset yet)')
    parser.add_argument('--fps', type=int, default=FPS, help='control and recording rate [Hz]')
    parser.add_argument('--cameras', nargs='+', default=list(CAMERAS), help="world_sim's cameras to record")
    parser.add_argument('--width', type=int, default=IMAGE_SIZE[0], help='recorded image width [px]')
    parser.add_argument('--height', type=int, default=IMAGE_SIZE[1], help='recorded image height [px]')
    parser.add_argument('--max-frames', type=int, default=None, help='cut every episode after this many frames')
    parser.add_argument('--max-attempts', type=int, default=None, help='per task (default: 2 x episodes)')
    parser.add_argument(
        '--velocity-scale', type=float, default=VELOCITY_SCALE, help="share of the arm's limits the expert moves at"
    )
    parser.add_argument(
        '--noise', type=float, default=0.0, help='DART: spread [rad] of the offset added to the executed targets'
    )
    parser.add_argument('--retries', type=int, default=0, help='grasps the expert tries again after a miss')
    parser.add_argument('--workers', type=int, default=1, help='processes recording in parallel (shards merged)')
    parser.add_argument('--scene', default=None, help='scene YAML (default: config/scenes/tabletop.yaml)')
    return parser


def main(argv=None):
    """Parse the command line and record."""
    args = argument_parser().parse_args(argv)
    report = record_parallel(
        args.out,
        args.task,
        args.episodes,
        args.workers,
        args.seed,
        args.max_attempts,
        fps=args.fps,
        cameras=args.cameras,
        size=(args.width, args.height),
        max_frames=args.max_frames,
        scene_path=args.scene,
        velocity_scale=args.velocity_scale,
        noise=args.noise,
        retries=args.retries,
    )
    print_summary(report)


def print_summary(report):
    """The report without its episode list, as JSON."""
    summary = {k: v for k, v in report.items() if k != 'episodes'} | {'episodes': len(report['episodes'])}
    summary['episodes_with_a_retry'] = sum(e['retries'] > 0 for e in report['episodes'])
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
