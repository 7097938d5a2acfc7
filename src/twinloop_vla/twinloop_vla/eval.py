"""Evaluate a policy checkpoint in process on the sim suite's tasks (world_sim's simulation core) or on
LIBERO tasks (LIBERO's own scenes, predicates and step limits).

    . ./twinloop_env.sh && python -m twinloop_vla.eval --checkpoint runs/vga_small/policy \\
        --task "pick up the blue cube" --task "put the red cube in the bowl" --episodes 20 \\
        --out runs/vga_small/eval [--workers 2 | --ray ADDRESS] [--blending rtc --delay-steps 1]
    python -m twinloop_vla.eval --checkpoint runs/vga_libero/policy --task libero_spatial:0 --episodes 30 --out ...

Layouts: the sim suite's held-out seeds (bench/tasks.yaml) by default, `--seeds development` while
tuning; never training layouts (seeds >= TRAIN_SEED_MIN). LIBERO: the held-out init states 20..49
(twinloop_vla.worlds; demonstrations are recorded from 0..19). An episode resets the task's world
(twinloop_vla.worlds) and then, every control step at the dataset's rate: renders the checkpoint's views
when a chunk is due and asks the policy (twinloop_vla.stepping: blending and a modelled inference
delay), applies the step's action the way the recording expert applied its own (a joint target
reached over the step, a gripper command) after shaping it to the limits as the vla_policy node
shapes chunks (twinloop_vla.blending.RateLimit), and judges the task (ground truth; LIBERO's predicate);
success ends the episode, so does an action the safety gate would refuse (non-finite, outside the
joint limits, beyond the velocity or acceleration limits; the recorded expert uses at most 54 % of the
latter), and the step limit (--max-steps; LIBERO's per suite) ends it as a failure.

Episodes run here one after another (--workers 1), or on Ray actors (one per CPU, each keeping its
policy and simulation) of a local cluster of --workers CPUs or of the cluster at --ray ADDRESS.
Out: results.json (settings, per episode:
success, reason, steps, chunks, inference times, mean absolute jerk of the measured joint path, the
grip offset: TCP to the object when the gripper is first commanded shut), report.md (per task:
success with its Wilson 95 % interval, steps, jerk, inference p50/p90 against the time a chunk
runs, the median grip offset, the share of steps the shaping changed) and GIFs of the first
--videos episodes (the views side by side, the policy's gaze drawn where it has a gaze head, ReconVLA's
action tokens' attention where it is that).

What this is not: the ROS graph (vla_policy node, stream, gate); the simulation waits for every
inference, whose effect on the robot is modelled by --delay-steps.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw
from tqdm import tqdm

from twinloop_core.evaluation import ray_cluster, wilson_interval
from twinloop_data.world_sim_expert import IMAGE_SIZE, TASKS, TRAIN_SEED_MIN
from twinloop_vla import worlds
from twinloop_vla.blending import BLENDINGS, BlendConfig, RateLimit
from twinloop_vla.stepping import SteppedChunks

SEED_RANGES = ('held_out', 'development')


@dataclass
class EvalSettings:
    """How episodes are run (see the module docstring)."""

    checkpoint: str
    blending: str = 'receding_horizon'
    execute_steps: int = BlendConfig.execute_steps  # actions of a chunk run before the next takes over
    delay_steps: int = 0  # modelled inference delay [control steps]
    blend_steps: int = BlendConfig.blend_steps  # rtc seam
    ensemble_decay: float = BlendConfig.ensemble_decay  # temporal ensembling
    limit_margin: float = BlendConfig.limit_margin  # actions shaped to this share of the limits (0: not)
    limit_tolerance: float = BlendConfig.limit_tolerance  # [rad] further is left to the gate (the node's setting)
    max_steps: int = 0  # an episode fails after this many control steps (0: the world's: 150; LIBERO's per suite)
    fps: int = 0  # the dataset's control rate (0: the world's, worlds.SimSuiteWorld / LiberoTaskWorld)
    cameras: tuple = ()  # the policy's views, in its order (empty: the world's)
    size: tuple = IMAGE_SIZE  # (width, height) the sim suite's views are rendered at (as recorded)
    scene: str = ''  # scene YAML ('' = config/scenes/tabletop.yaml)
    threads: int = 0  # torch threads per worker (0: torch's default)

    def for_tasks(self, tasks):
        """These settings with the world's rate and cameras filled in; ValueError for sim-suite and LIBERO
        tasks in one run (they differ in both)."""
        kinds = {worlds.world_kind(task) for task in tasks}
        if len(kinds) != 1:
            raise ValueError(f'evaluate sim-suite and LIBERO tasks in separate runs, not {list(tasks)}')
        world = worlds.LiberoTaskWorld if kinds == {'libero'} else worlds.SimSuiteWorld
        return replace(self, fps=self.fps or world.fps, cameras=tuple(self.cameras) or world.cameras)

    def blend(self):
        """The blending config (checked) at the dataset's control period."""
        if not self.fps:
            raise ValueError("the control rate is not set: fill in the world's with EvalSettings.for_tasks")
        return BlendConfig(
            blending=self.blending,
            control_period=1.0 / self.fps,
            execute_steps=self.execute_steps,
            blend_steps=self.blend_steps,
            ensemble_decay=self.ensemble_decay,
            limit_margin=self.limit_margin,
            limit_tolerance=self.limit_tolerance,
        )


@dataclass
class EpisodeResult:
    """One episode."""

    task: str
    seed: int
    success: bool
    reason: str
    steps: int
    chunks: int
    inference_s: list = field(default_factory=list)  # wall time of each policy call
    mean_abs_jerk: float = float('nan')  # [rad/s^3] over the arm joints and the measured path
    grip_offset: float = float('nan')  # [m] TCP to the task's object when the gripper is first commanded shut
    shaped: int = 0  # steps whose arm target the shaping to the limits changed (blending.RateLimit)
    grasps: int = 0  # times the gripper was commanded shut after being open (2 or more: the policy tried again)
    frames: list = field(default_factory=list, repr=False)  # the views side by side per step, when recorded


def episode_seeds(ranges_file, name, episodes, kind='sim'):
    """The first `episodes` seeds of the named range of bench/tasks.yaml (never a training seed); for LIBERO
    tasks (kind 'libero') the held-out init states (worlds.LIBERO_TRAIN_INIT_STATES on)."""
    if kind == 'libero':
        first, end = worlds.LIBERO_TRAIN_INIT_STATES, worlds.LIBERO_INIT_STATES
        if name != 'held_out' or episodes > end - first:
            raise ValueError(
                f'LIBERO tasks are evaluated on held-out init states {first}..{end - 1}, not {name} x {episodes}'
            )
        return list(range(first, first + episodes))
    ranges = yaml.safe_load(Path(ranges_file).read_text())['seeds']
    if name not in ranges:
        raise ValueError(f'{ranges_file}: no seed range {name!r} (it has {sorted(ranges)})')
    first, end = ranges[name]
    if episodes > end - first or end > TRAIN_SEED_MIN:
        raise ValueError(f'{episodes} episodes do not fit seed range {name} [{first}, {end}) below {TRAIN_SEED_MIN}')
    return list(range(first, first + episodes))


def mean_abs_jerk(positions, dt):
    """Mean |third derivative| of a joint path sampled every dt (nan under 4 samples)."""
    positions = np.asarray(positions, float)
    if len(positions) < 4:
        return float('nan')
    return float(np.mean(np.abs(np.diff(positions, n=3, axis=0))) / dt**3)


def refusal(target, previous, limits, dt, velocity=None):
    """Why the safety gate would refuse an arm target one control step after previous, or ''.
    velocity: the commanded velocity of the step before (None: the arm starts from rest, where the
    gate's estimate of the start acceleration is 2 dq / dt^2, twinloop_execution.safety)."""
    if not np.all(np.isfinite(target)):
        return 'non-finite action'
    outside = np.flatnonzero((target < limits.lower) | (target > limits.upper))
    if outside.size:
        return f'target outside the joint limits ({[limits.names[i] for i in outside]})'
    fast = np.flatnonzero(np.abs(target - previous) > limits.velocity * dt)
    if fast.size:
        return f'a jump beyond the velocity limit in one step ({[limits.names[i] for i in fast]})'
    step_velocity = (target - previous) / dt
    if velocity is None:
        acceleration = step_velocity / (dt / 2)
    else:
        acceleration = (step_velocity - velocity) / dt
    hard = np.flatnonzero(np.abs(acceleration) > limits.acceleration)
    if hard.size:
        worst = int(hard[np.argmax(np.abs(acceleration[hard]) / limits.acceleration[hard])])
        return (
            f'accelerates beyond the limit ({[limits.names[i] for i in hard]}; {limits.names[worst]} at '
            f'{abs(acceleration[worst]):.1f} rad/s^2, limit {limits.acceleration[worst]:.1f})'
        )
    return ''


def gaze_overlay(image, weights, point=None):
    """An RGB view (h, w, 3) with the gaze (weights over its g x g patches) tinted red and the gaze point
    (u, v in [0, 1]; None: none) ringed in yellow."""
    h, w = image.shape[:2]
    grid = int(round(len(weights) ** 0.5))
    levels = (255 * weights.reshape(grid, grid) / max(float(weights.max()), 1e-9)).astype(np.uint8)
    heat = np.asarray(Image.fromarray(levels).resize((w, h), Image.BILINEAR), np.float32)[..., None] / 255
    tinted = image.astype(np.float32) * (1 - 0.6 * heat) + 0.6 * heat * np.array([255.0, 0.0, 0.0])
    picture = Image.fromarray(tinted.astype(np.uint8))
    if point is not None:
        u, v = float(point[0]) * w, float(point[1]) * h
        ImageDraw.Draw(picture).ellipse([u - 4, v - 4, u + 4, v + 4], outline=(255, 255, 0), width=2)
    return np.asarray(picture)


class Evaluator:
    """A policy and the worlds of its tasks (twinloop_vla.worlds), kept for many episodes."""

    def __init__(self, settings: EvalSettings, root):
        """settings: with the rate and cameras filled in (EvalSettings.for_tasks)."""
        import torch

        from twinloop_vla.policies import load_policy

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings, self.blend, self.root = settings, settings.blend(), Path(root)
        self.policy = load_policy(settings.checkpoint)
        self.worlds = {}

    def world(self, task):
        """The task's world, made on first use."""
        if task not in self.worlds:
            self.worlds[task] = worlds.make_world(task, self.root, self.settings)
        return self.worlds[task]

    def observation(self, world):
        """The policy's observation now: its views, the world's policy state, the instruction."""
        views = world.views()
        return {
            'images': np.stack([views[name] for name in self.settings.cameras]),
            'state': world.state(),
            'instruction': world.instruction,
        }

    def run(self, task, seed, record=False):
        """One episode of task on the seed's layout (a LIBERO task: its init state); record: keep every
        step's views side by side (with the policy's gaze drawn over them where it has a gaze head)."""
        import torch

        s, dt, world = self.settings, 1.0 / self.settings.fps, self.world(task)
        world.reset(seed)
        shaping, max_steps = RateLimit.of(world.limits, self.blend), s.max_steps or world.max_steps
        joints = [world.arm_positions()]
        commanded, velocity = joints[0], None
        unshaped, was_shut = commanded, False  # the policy's last arm target before shaping; the gripper
        schedule, result = SteppedChunks(self.blend, s.delay_steps), EpisodeResult(task, seed, False, '', 0, 0)
        result.reason = f'not done after {max_steps} steps'
        for step in range(max_steps):
            if schedule.due(step) or record:
                observation = self.observation(world)
                if record:
                    result.frames.append(self.picture(observation))
            if schedule.due(step):
                started = time.perf_counter()
                with torch.inference_mode():
                    chunk = self.policy.select_action_chunk(observation)
                result.inference_s.append(time.perf_counter() - started)
                result.chunks += 1
                try:
                    schedule.add(step, chunk, rest=np.append(commanded, chunk[0][7:]))
                except ValueError as error:
                    result.reason = f'policy output refused: {error}'
                    break
            action = schedule.action(step)
            target = action[:7]
            if shaping is not None:
                target = shaping.shape([0.0, dt], [commanded, target], velocity, previous=unshaped)[1]
                result.shaped += int(np.abs(target - action[:7]).max() > 1e-6)
            unshaped = action[:7]
            why = refusal(target, commanded, world.limits, dt, velocity)
            if why or not np.isfinite(action[7]):
                result.reason = f'step {step}: the gate would refuse: {why or "non-finite gripper command"}'
                break
            commanded, velocity = target, (target - commanded) / dt
            shut = world.shut(action[7])
            result.grasps += int(shut and not was_shut)
            was_shut = shut
            if shut and not np.isfinite(result.grip_offset):
                result.grip_offset = world.grip_offset()
            world.act(commanded, action[7])
            joints.append(world.arm_positions())
            result.steps = step + 1
            done, detail = world.judge()
            if done:
                result.success, result.reason = True, detail
                break
        result.mean_abs_jerk = mean_abs_jerk(joints, dt)
        return result

    def picture(self, observation):
        """The observation's views side by side, each with the policy's gaze where it has a gaze head."""
        views = list(observation['images'])
        batch = {k: np.asarray(observation[k])[None] for k in ('images', 'state')}
        batch['instruction'] = observation['instruction']
        if getattr(self.policy, 'gaze_head', None) is not None:
            weights, points = self.policy.gaze(batch)
            views = [gaze_overlay(v, w.numpy(), p.numpy()) for v, w, p in zip(views, weights[0], points[0])]
        elif callable(getattr(self.policy, 'attention', None)):  # ReconVLA: the action tokens' attention
            views = [gaze_overlay(v, w.numpy()) for v, w in zip(views, self.policy.attention(batch)[0])]
        return np.concatenate(views, axis=1)

    def close(self):
        """Release the worlds."""
        for world in self.worlds.values():
            world.close()


def evaluate(settings, tasks, seeds, root, workers=1, ray_address=None, videos=0, progress=True):
    """EpisodeResults of every task on every seed (in that order); the first `videos` keep frames."""
    settings = settings.for_tasks(tasks)
    jobs = [(task, seed, index < videos) for index, (task, seed) in enumerate((t, s) for t in tasks for s in seeds)]
    if workers <= 1 and ray_address is None:
        evaluator = Evaluator(settings, root)
        try:
            return [evaluator.run(*job) for job in tqdm(jobs, unit='episode', disable=not progress)]
        finally:
            evaluator.close()
    with ray_cluster(ray_address or 'local', num_cpus=workers) as ray:
        cpus = max(1, int(ray.available_resources().get('CPU', 1)))
        threaded = EvalSettings(**{**asdict(settings), 'threads': settings.threads or 1})
        # one actor per CPU keeps its policy and simulation; each runs its share of episodes in turn
        actors = [ray.remote(num_cpus=1)(Evaluator).remote(threaded, str(root)) for _ in range(min(cpus, len(jobs)))]
        futures = {actors[i % len(actors)].run.remote(*job): i for i, job in enumerate(jobs)}
        results = [None] * len(jobs)
        with tqdm(total=len(jobs), unit='episode', disable=not progress) as bar:
            pending = list(futures)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                results[futures[ready[0]]] = ray.get(ready[0])
                bar.update(1)
        ray.get([actor.close.remote() for actor in actors])
        return results


def summary(settings, results):
    """Per task and overall: successes, rate, Wilson 95 %, steps, jerk, inference p50 / p90."""
    settings = settings.for_tasks([r.task for r in results]) if results else settings
    chunk_time = settings.execute_steps / settings.fps if settings.fps else float('nan')

    def facts(rows):
        successes, n = sum(r.success for r in rows), len(rows)
        inference = [t for r in rows for t in r.inference_s]
        jerks = [r.mean_abs_jerk for r in rows if np.isfinite(r.mean_abs_jerk)]
        offsets = [r.grip_offset for r in rows if np.isfinite(r.grip_offset)]
        return {
            'episodes': n,
            'successes': successes,
            'success_rate': successes / n if n else 0.0,
            'wilson95': list(wilson_interval(successes, n)),
            'mean_steps': float(np.mean([r.steps for r in rows])) if rows else 0.0,
            'mean_abs_jerk': float(np.mean(jerks)) if jerks else float('nan'),
            'median_grip_offset_m': float(np.median(offsets)) if offsets else float('nan'),
            'shaped_share': sum(r.shaped for r in rows) / max(1, sum(r.steps for r in rows)),
            'retried': sum(r.grasps >= 2 for r in rows),
            'inference_p50_s': float(np.percentile(inference, 50)) if inference else float('nan'),
            'inference_p90_s': float(np.percentile(inference, 90)) if inference else float('nan'),
            'chunk_execution_s': chunk_time,
        }

    tasks = list(dict.fromkeys(r.task for r in results))
    return {'tasks': {task: facts([r for r in results if r.task == task]) for task in tasks}, 'all': facts(results)}


def write_outputs(out, settings, results, seeds_name, command):
    """results.json, report.md and GIFs in out; returns the summary."""
    out = Path(out)
    settings = settings.for_tasks([r.task for r in results]) if results else settings
    (out / 'videos').mkdir(parents=True, exist_ok=True)
    facts = summary(settings, results)
    videos = []
    for r in results:
        if r.frames:
            path = out / 'videos' / f'{r.task.replace(" ", "_")}_seed{r.seed}.gif'
            images = [Image.fromarray(np.asarray(f, np.uint8)) for f in r.frames]
            images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / settings.fps), loop=0)
            videos.append((r, path.relative_to(out)))
    episodes = [{k: v for k, v in asdict(r).items() if k != 'frames'} for r in results]
    data = {'command': command, 'settings': asdict(settings), 'seeds': seeds_name, 'summary': facts}
    (out / 'results.json').write_text(json.dumps(data | {'episodes': episodes}, indent=2))
    (out / 'report.md').write_text(report_markdown(settings, facts, seeds_name, command, videos))
    return facts


def report_markdown(settings, facts, seeds_name, command, videos):
    """The report: settings, the per-task table, the videos."""
    limit = f'at most {settings.max_steps} steps' if settings.max_steps else "the task world's step limit"
    libero = any(worlds.world_kind(task) == 'libero' for task in facts['tasks'])
    where, episodes = ("LIBERO's scenes and predicates", 'init states') if libero else ("world_sim's core", 'layouts')
    if not libero:
        episodes += f', views rendered {settings.size[0]} x {settings.size[1]}'
    lines = [
        f'# Policy evaluation: {settings.checkpoint}',
        '',
        f'`{command}`',
        '',
        f'In process ({where}, no ROS graph), {seeds_name} {episodes}; blending {settings.blending}, '
        f'{settings.execute_steps} actions per chunk, modelled delay {settings.delay_steps} steps, '
        f'{settings.fps} Hz, {limit}; actions shaped to {settings.limit_margin:.0%} of '
        f'the velocity and acceleration limits where that moves them {settings.limit_tolerance} rad or less.',
        '',
        '| task | success | 95 % Wilson | mean steps | mean abs jerk [rad/s^3] | inference p50 / p90 [s] '
        '| chunk runs [s] | median grip offset [cm] | steps shaped | episodes with a second grasp |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for task, f in [*facts['tasks'].items(), ('all', facts['all'])]:
        lines.append(
            f'| {task} | {f["successes"]}/{f["episodes"]} | {f["wilson95"][0]:.2f}-{f["wilson95"][1]:.2f} | '
            f'{f["mean_steps"]:.0f} | {f["mean_abs_jerk"]:.1f} | {f["inference_p50_s"]:.3f} / '
            f'{f["inference_p90_s"]:.3f} | {f["chunk_execution_s"]:.2f} | {100 * f["median_grip_offset_m"]:.1f} | '
            f'{f["shaped_share"]:.0%} | {f["retried"]} |'
        )
    for r, path in videos:
        lines += ['', f'{r.task}, seed {r.seed}: {"success" if r.success else "failure"} ({r.reason})', f'![]({path})']
    return '\n'.join(lines) + '\n'


def main(argv=None):
    """Parse the command line, evaluate, write the outputs and print the summary."""
    defaults = EvalSettings(checkpoint='')
    parser = argparse.ArgumentParser(description='Evaluate a policy on the sim suite (world_sim core, in process)')
    parser.add_argument('--checkpoint', required=True, help='a policy checkpoint folder (load_policy)')
    parser.add_argument(
        '--task', action='append', required=True, help=f'{sorted(TASKS)} or a LIBERO task as suite:id; repeat for more'
    )
    parser.add_argument('--episodes', type=int, default=20, help='layouts per task')
    parser.add_argument('--seeds', choices=SEED_RANGES, default='held_out', help="bench/tasks.yaml's seed range")
    parser.add_argument('--out', required=True, help='output folder (results.json, report.md, videos/)')
    parser.add_argument('--blending', choices=BLENDINGS, default=defaults.blending)
    parser.add_argument('--execute-steps', type=int, default=defaults.execute_steps)
    parser.add_argument('--delay-steps', type=int, default=defaults.delay_steps)
    parser.add_argument('--blend-steps', type=int, default=defaults.blend_steps)
    parser.add_argument(
        '--limit-margin', type=float, default=defaults.limit_margin, help='shape actions to this share of the limits'
    )
    parser.add_argument('--limit-tolerance', type=float, default=defaults.limit_tolerance, help='[rad]')
    parser.add_argument('--max-steps', type=int, default=defaults.max_steps, help="0: the world's (LIBERO's per suite)")
    parser.add_argument(
        '--fps', type=int, default=defaults.fps, help="the dataset's control rate [Hz] (0: the world's)"
    )
    parser.add_argument('--cameras', nargs='+', default=[], help="the policy's views, in order (default: the world's)")
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=defaults.size,
        metavar=('W', 'H'),
        help="sim-suite views rendered at this size, then resized by the policy's processor (default: as recorded)",
    )
    parser.add_argument('--scene', default='', help='scene YAML (default: config/scenes/tabletop.yaml)')
    parser.add_argument('--videos', type=int, default=2, help='episodes recorded as GIFs')
    parser.add_argument('--workers', type=int, default=1, help='episodes in parallel on a local Ray cluster')
    parser.add_argument('--ray', metavar='ADDRESS', help='run the episodes on this Ray cluster instead')
    args = parser.parse_args(argv)
    root = Path(os.environ.get('TWINLOOP_ROOT', '.')).resolve()
    settings = EvalSettings(
        checkpoint=str(Path(args.checkpoint).resolve()),
        blending=args.blending,
        execute_steps=args.execute_steps,
        delay_steps=args.delay_steps,
        blend_steps=args.blend_steps,
        limit_margin=args.limit_margin,
        limit_tolerance=args.limit_tolerance,
        max_steps=args.max_steps,
        fps=args.fps,
        cameras=tuple(args.cameras),
        size=tuple(args.size),
        scene=args.scene,
    )
    try:
        kind = {worlds.world_kind(task) for task in args.task}.pop()
        settings = settings.for_tasks(args.task)
        settings.blend()  # checked before anything starts
        seeds = episode_seeds(root / 'bench' / 'tasks.yaml', args.seeds, args.episodes, kind)
    except ValueError as error:
        parser.error(str(error))
    command = 'python -m twinloop_vla.eval ' + ' '.join(argv if argv is not None else sys.argv[1:])
    results = evaluate(settings, args.task, seeds, root, args.workers, args.ray, args.videos)
    facts = write_outputs(args.out, settings, results, args.seeds, command)
    print(json.dumps(facts, indent=2))


if __name__ == '__main__':
    main()
