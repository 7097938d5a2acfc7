"""Train a skill's policy in the twin with PPO (shared/seeds/002, Sec. III-C) for a wall-time budget.

    python -m twinloop_iker.train --skill push|place|reorient --minutes 60 [--envs 2] [--seed 0] [--no-randomization]
        [--resume] [--out DIR] [--ray ADDRESS] [--eval-episodes 128] [--kinds KIND ...] [--init DIR]
    python -m twinloop_iker.train --skill push --finetune-minutes 5 --kinds shoe   # per-task fine-tuning

stable-baselines3 PPO on KeypointEnv (env.py) with the paper's network: actor and critic MLPs of
256, 128 and 64 ELU units (config/iker.yaml, block ppo; the paper shares a backbone, SB3's MlpPolicy
keeps the two apart). Observations and rewards are normalised (VecNormalize); the envs run in
subprocesses when there is more than one, or with `--ray ADDRESS` as Ray actors on that cluster
(ray_vec_env.RayVecEnv, one actor per env; `--ray local` starts a 2-CPU cluster on loopback, open
for the training and the evaluation). Training stops when the budget is spent (a tqdm bar counts it
down), with a checkpoint (the PPO zip and the VecNormalize statistics) every `checkpoint_minutes`
and at the end; `--resume` continues from the latest checkpoint and its curve. At the end the policy
is saved as OUT/policy.zip and OUT/vecnormalize.pkl, evaluated on `--eval-episodes` episodes of
fresh seeds (evaluate.py; as Ray tasks with --ray) and reported in OUT/report.json (with where the
rollouts ran) and the reward and success curve in OUT/curve.png. OUT defaults to
~/.cache/twinloop/iker/<skill>/, outside the repository: checkpoints stay out of git.

One goal-conditioned policy per skill is trained over every object kind and randomised targets
(the policies shipped in twinloop_iker/policies/ came from this command). Per-task fine-tuning
(`--finetune-minutes M`) continues the shipped policy of the skill (or `--init DIR`) for M minutes on
the task's object kinds (`--kinds`) only, into ~/.cache/twinloop/iker/<skill>-finetuned-<kinds>/.
"""

import argparse
import json
import os
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API: no pyplot, no display backend
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor, VecNormalize
from tqdm import tqdm

from twinloop_core.evaluation import ray_cluster
from twinloop_iker.config import default_config, load_iker_config
from twinloop_iker.env import SKILLS, kinds_field
from twinloop_iker.evaluate import NORMALIZER_FILE, POLICY_FILE, evaluate, make_env, summary
from twinloop_iker.ray_vec_env import RayVecEnv
from twinloop_iker.solvers import SHIPPED

CHECKPOINT = re.compile(r'^step_(\d+)\.zip$')
PROGRESS_FILE, REPORT_FILE, PLOT_FILE = 'progress.json', 'report.json', 'curve.png'


def default_out(skill):
    """~/.cache/twinloop/iker/<skill>/ (outside the repository)."""
    return Path(os.path.expanduser('~')) / '.cache' / 'twinloop' / 'iker' / skill


def latest_checkpoint(out):
    """(steps, zip path) of the newest checkpoint in OUT/checkpoints, or None."""
    found = [
        (int(m.group(1)), p) for p in (Path(out) / 'checkpoints').glob('step_*.zip') if (m := CHECKPOINT.match(p.name))
    ]
    return max(found) if found else None


def save_checkpoint(model, normalizer, out, keep, progress):
    """OUT/checkpoints/step_<n>.zip and its _vecnormalize.pkl (only the newest `keep` stay), and
    OUT/progress.json: the training wall time and curve up to this checkpoint (what --resume reads)."""
    folder = Path(out) / 'checkpoints'
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'step_{model.num_timesteps:012d}.zip'
    model.save(path)
    normalizer.save(path.with_name(path.stem + '_vecnormalize.pkl'))
    older = sorted(p for p in folder.glob('step_*.zip') if CHECKPOINT.match(p.name))[:-keep]
    for p in older:
        p.unlink()
        p.with_name(p.stem + '_vecnormalize.pkl').unlink(missing_ok=True)
    (Path(out) / PROGRESS_FILE).write_text(json.dumps(progress, indent=1))
    return path


class BudgetCallback(BaseCallback):
    """Stops training when the wall-time budget is spent; records the curve (mean episode return
    and success rate per rollout), checkpoints periodically and moves the progress bar."""

    def __init__(self, seconds, out, ppo, curve, wall_offset, show_bar=True):
        """seconds: this run's budget; curve: the rows so far (appended to); wall_offset: earlier runs' time."""
        super().__init__()
        self.seconds, self.out, self.ppo, self.curve, self.wall_offset = seconds, out, ppo, curve, wall_offset
        self.bar = tqdm(total=round(seconds), unit='s', desc='training', disable=not show_bar)
        self.returns, self.successes = [], []

    def _on_training_start(self):
        self.started = self.last_checkpoint = time.monotonic()

    def elapsed(self):
        """Seconds since this run's training started."""
        return time.monotonic() - self.started

    def progress(self):
        """What progress.json keeps: the wall time of all runs so far and the curve."""
        return {'wall_s': self.wall_offset + self.elapsed(), 'curve': self.curve}

    def _on_step(self):
        for info in self.locals['infos']:
            if 'episode' in info:
                self.returns.append(float(info['episode']['r']))
                self.successes.append(bool(info.get('is_success', False)))
        now = time.monotonic()
        if now - self.last_checkpoint >= 60 * self.ppo.checkpoint_minutes:
            normalizer = self.model.get_vec_normalize_env()
            save_checkpoint(self.model, normalizer, self.out, self.ppo.keep_checkpoints, self.progress())
            self.last_checkpoint = now
        self.bar.update(min(round(now - self.started), self.bar.total) - self.bar.n)
        return now - self.started < self.seconds

    def _on_rollout_end(self):
        if not self.returns:
            return
        row = {
            'steps': int(self.num_timesteps),
            'wall_s': self.wall_offset + self.elapsed(),
            'episodes': len(self.returns),
            'mean_return': float(np.mean(self.returns)),
            'success_rate': float(np.mean(self.successes)),
        }
        self.curve.append(row)
        self.bar.set_postfix(steps=row['steps'], success=f'{row["success_rate"]:.2f}', refresh=False)
        self.returns, self.successes = [], []

    def _on_training_end(self):
        self.bar.close()


def plot_curve(curve, path, title):
    """PNG of mean episode return and success rate against environment steps."""
    fig = Figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    steps = [row['steps'] for row in curve]
    top.plot(steps, [row['mean_return'] for row in curve])
    top.set_ylabel('mean episode return')
    bottom.plot(steps, [row['success_rate'] for row in curve])
    bottom.set_ylabel('success rate (5 cm)')
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel('environment steps')
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def make_vec_env(skill, config, randomize, envs, seed, ray=False):
    """envs KeypointEnvs (in subprocesses when more than one; with ray, as Ray actors on the connected
    cluster) with episode statistics, seeded."""
    factory = partial(make_env, skill, config, randomize)
    if ray:
        venv = RayVecEnv([factory] * envs)
    else:
        venv = SubprocVecEnv([factory] * envs) if envs > 1 else DummyVecEnv([factory])
    venv.seed(seed)
    return VecMonitor(venv)


def rollout_workers(envs, ray_address=None):
    """Where the training envs run, in words (report.json)."""
    if ray_address:
        return f'{envs} Ray actors at {ray_address}'
    return f'{envs} subprocesses' if envs > 1 else 'in process'


def build_model(venv, ppo, seed=0):
    """A new PPO on venv with the paper's actor-critic MLPs (ELU) and config's hyperparameters."""
    return PPO(
        'MlpPolicy',
        venv,
        n_steps=ppo.n_steps,
        batch_size=ppo.batch_size,
        n_epochs=ppo.n_epochs,
        learning_rate=ppo.learning_rate,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_range,
        ent_coef=ppo.ent_coef,
        policy_kwargs={'net_arch': {'pi': list(ppo.net_arch), 'vf': list(ppo.net_arch)}, 'activation_fn': torch.nn.ELU},
        seed=seed,
        device='cpu',
        verbose=0,
    )


def train(
    skill,
    minutes,
    envs=2,
    seed=0,
    randomize=True,
    resume=False,
    out=None,
    ray_address=None,
    eval_episodes=128,
    config=None,
    show_progress=True,
    init=None,
):
    """Train for `minutes` of wall time, save, evaluate and write the report; returns the report dict.
    init: a folder with a trained policy and its statistics to start from (fine-tuning) instead of a new one."""
    with ray_cluster(ray_address) if ray_address else nullcontext():  # open for training and evaluation
        config = config or default_config()
        ppo = config.ppo
        out = Path(out or default_out(skill))
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = latest_checkpoint(out) if resume else None
        progress = json.loads((out / PROGRESS_FILE).read_text()) if checkpoint else {'wall_s': 0.0, 'curve': []}
        curve, wall_offset = progress['curve'], progress['wall_s']
        # later runs draw later seeds: a resumed run does not replay the episodes it trained on
        venv = make_vec_env(
            skill, config, randomize, envs, seed + (checkpoint[0] if checkpoint else 0), ray_address is not None
        )
        if checkpoint:
            steps, path = checkpoint
            normalizer = VecNormalize.load(str(path.with_name(path.stem + '_vecnormalize.pkl')), venv)
            model = PPO.load(path, env=normalizer, device='cpu')
            print(f'resuming from {path} ({steps} steps, {wall_offset / 60:.1f} min trained)')
        elif init:
            normalizer = VecNormalize.load(str(Path(init) / NORMALIZER_FILE), venv)
            model = PPO.load(Path(init) / POLICY_FILE, env=normalizer, device='cpu')
            model.num_timesteps = 0  # this run's steps; the report names the policy it started from
        else:
            normalizer = VecNormalize(venv, gamma=ppo.gamma)
            model = build_model(normalizer, ppo, seed)
        callback = BudgetCallback(60 * minutes, out, ppo, curve, wall_offset, show_progress)
        start_steps = model.num_timesteps
        model.learn(total_timesteps=10**12, callback=callback, reset_num_timesteps=not checkpoint and not init)
        final = callback.progress()
        run_wall = final['wall_s'] - wall_offset
        save_checkpoint(model, normalizer, out, ppo.keep_checkpoints, final)
        model.save(out / POLICY_FILE)
        normalizer.save(str(out / NORMALIZER_FILE))
        venv.close()
        randomization = 'domain randomisation' if randomize else 'nominal physics'
        plot_curve(curve, out / PLOT_FILE, f'IKER {skill} PPO ({randomization})')

        started = time.perf_counter()
        results = evaluate(skill, eval_episodes, 'ppo', out, randomize, config, ray_address) if eval_episodes else []
        report = {
            'skill': skill,
            'randomization': randomize,
            'seed': seed,
            'envs': envs,
            'rollout_workers': rollout_workers(envs, ray_address),
            'steps': int(model.num_timesteps),
            'wall_s': final['wall_s'],
            'run_steps': int(model.num_timesteps - start_steps),
            'run_wall_s': run_wall,
            'steps_per_s': (model.num_timesteps - start_steps) / max(run_wall, 1e-9),
            'evaluation': summary(results, time.perf_counter() - started),
            'kinds': list(getattr(config.env, kinds_field(skill))),
            'init': str(init) if init else None,
            'ppo': asdict(ppo),
            'policy': str(out / POLICY_FILE),
            'normalizer': str(out / NORMALIZER_FILE),
            'curve': str(out / PLOT_FILE),
        }
        (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report


def main(argv=None):
    """Command line: train one skill for a wall-time budget and print the report's figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--skill', choices=SKILLS, required=True)
    parser.add_argument('--minutes', type=float, default=60.0, help='wall-time budget of this run')
    parser.add_argument(
        '--envs', type=int, default=2, help='parallel envs (subprocesses when > 1, Ray actors with --ray)'
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-randomization', action='store_true', help='nominal physics (no domain randomisation)')
    parser.add_argument('--resume', action='store_true', help='continue from the latest checkpoint in --out')
    parser.add_argument('--out', help='output folder (default ~/.cache/twinloop/iker/<skill>/)')
    parser.add_argument(
        '--ray',
        metavar='ADDRESS',
        help="run the envs as Ray actors and evaluate as Ray tasks on this cluster ('local': 2 CPUs)",
    )
    parser.add_argument('--eval-episodes', type=int, default=128)
    parser.add_argument('--config', help='IKER config (default: config/iker.yaml of $TWINLOOP_ROOT)')
    parser.add_argument(
        '--kinds', nargs='+', help='train on these object kinds only (default: env.kinds; reorient: env.reorient_kinds)'
    )
    parser.add_argument('--init', help='start from the trained policy in this folder (policy.zip, vecnormalize.pkl)')
    parser.add_argument(
        '--finetune-minutes', type=float, help='fine-tune for this long from --init (default: the shipped policy)'
    )
    args = parser.parse_args(argv)
    minutes = args.finetune_minutes or args.minutes
    if args.envs < 1 or minutes <= 0 or args.eval_episodes < 0:
        parser.error('--envs >= 1, --minutes > 0 and --eval-episodes >= 0 are required')
    config = load_iker_config(args.config) if args.config else default_config()
    kinds = kinds_field(args.skill)
    if args.kinds:
        config = replace(config, env=replace(config.env, **{kinds: tuple(args.kinds)}))
    init, out = args.init, args.out
    if args.finetune_minutes:
        init = init or str(SHIPPED / args.skill)
        out = out or str(default_out(f'{args.skill}-finetuned-{"-".join(getattr(config.env, kinds))}'))
    report = train(
        args.skill,
        minutes,
        args.envs,
        args.seed,
        not args.no_randomization,
        args.resume,
        out,
        args.ray,
        args.eval_episodes,
        config,
        init=init,
    )
    e = report['evaluation']
    print(
        f'{args.skill}: {report["steps"]} steps in {report["wall_s"] / 60:.1f} min '
        f'({report["steps_per_s"]:.0f} steps/s this run); success {e["successes"]}/{e["episodes"]} = '
        f'{e["success_rate"]:.3f} (95 % Wilson {e["wilson95"][0]:.3f}-{e["wilson95"][1]:.3f}); '
        f'report {Path(report["policy"]).parent / REPORT_FILE}'
    )


if __name__ == '__main__':
    main()
