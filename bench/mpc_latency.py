"""Wall time of AntiGrounding MPC steps, by stage (sampling, IK, rollout, render, scoring), for N
candidates x V views with the twin_critic scorer (not a VLM), in process (SimPorts: no ROS
messages; the ROS graph adds serialisation, see the task suite's per-step figures). Runs a
pick-and-place on the clutter scene (four cameras) for a number of steps, executing each chosen
candidate so the steps see changing states. Prints the table, writes bench/results/mpc_latency-
<time>.json; --results appends to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/mpc_latency.py [--candidates 16] [--steps 12] [--results]
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

from twinloop_antigrounding.config import MpcConfig
from twinloop_antigrounding.mpc import AntiGroundingMpc
from twinloop_core.engine import load_config
from twinloop_core.ports import QuietProgress
from twinloop_execution.kinematics import Arm
from twinloop_core.task import SubTask
from twinloop_planning.ports.in_process import SimPorts
from twinloop_scoring import agents, vqa
from twinloop_twin import scene, world
from twinloop_twin.twin import MeshLibrary, SimTwin

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
PLANNING = ('sync', 'sampling', 'ik', 'rollout', 'render', 'scoring')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--candidates', type=int, default=16)
    parser.add_argument('--steps', type=int, default=12)
    parser.add_argument('--results', action='store_true', help='append the table to bench/RESULTS.md')
    args = parser.parse_args()
    config = scene.SceneConfig.from_yaml(ROOT / 'config' / 'scenes' / 'clutter.yaml')
    w = world.SimWorld(config)
    twin = SimTwin(MeshLibrary.from_scene(config), config.cameras)
    ports = SimPorts(
        w,
        twin,
        vqa.PromptConfig.from_yaml(ROOT / 'config' / 'vqa_prompts.yaml'),
        agents.load(ROOT / 'config' / 'vlm_agents.yaml', ['twin_critic']),
        ROOT / 'urdf' / 'panda.urdf',
        ROOT / 'config' / 'panda_joint_limits.yaml',
    )
    mpc_config = load_config(MpcConfig, yaml.safe_load(open(ROOT / 'config' / 'anti_grounding.yaml')))
    mpc_config.num_candidates = args.candidates
    mpc_config.max_steps_per_stage = args.steps
    mpc = AntiGroundingMpc(ports.ports(QuietProgress(print)), Arm.panda(), mpc_config)
    mpc.run('put the orange cube in the bowl', [SubTask('place', 'orange_cube', 'bowl')], max_steps=args.steps)
    steps = [r.timings for r in mpc.records]
    planning = [sum(t.get(k, 0.0) for k in PLANNING) for t in steps]
    table = {
        k: {
            'median': round(float(np.median([t.get(k, 0.0) for t in steps])), 3),
            'p90': round(float(np.percentile([t.get(k, 0.0) for t in steps], 90)), 3),
        }
        for k in (*PLANNING, 'report_render', 'execution')
    }
    result = {
        'command': f'python bench/mpc_latency.py --candidates {args.candidates} --steps {args.steps}',
        'candidates': args.candidates,
        'views': len(ports.views),
        'scorer': ', '.join(a.label for a in ports.agents),
        'steps': len(steps),
        'cpu_cores': os.cpu_count(),
        'per_stage_s': table,
        'planning_s_per_step': {
            'median': round(float(np.median(planning)), 3),
            'p90': round(float(np.percentile(planning, 90)), 3),
            'max': round(float(np.max(planning)), 3),
        },
        'steps_timings': steps,
        'chosen': [(r.stage, r.chosen, round(r.best_score, 4)) for r in mpc.records],  # to compare runs step by step
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ('steps_timings', 'chosen')}, indent=2))
    out = ROOT / 'bench' / 'results' / f'mpc_latency-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.write_text(json.dumps(result, indent=2))
    if args.results:
        lines = [
            f'\n## AntiGrounding MPC step latency, {time.strftime("%Y-%m-%d %H:%M")}\n',
            f'Command: `{result["command"]}`  ',
            f'{args.candidates} candidates x {result["views"]} views (224 x 224), scorer {result["scorer"]}, '
            'in process, '
            f'{result["steps"]} steps of a pick-and-place on the clutter scene, {os.cpu_count()} cores, no GPU.\n',
            '| stage | median [s] | p90 [s] |',
            '|---|---|---|',
        ]
        lines += [f'| {k} | {v["median"]:.3f} | {v["p90"]:.3f} |' for k, v in table.items()]
        p = result['planning_s_per_step']
        lines.append(f'| **planning per step** (sync .. scoring) | **{p["median"]:.3f}** | **{p["p90"]:.3f}** |')
        lines.append(
            '\n`report_render` (the scored views for the HTML report) and `execution` (the arm moving, simulated '
            'here) are outside the planning budget.'
        )
        with open(ROOT / 'bench' / 'RESULTS.md', 'a') as f:
            f.write('\n'.join(lines) + '\n')
    twin.close()
    w.close()
    print(f'results: {out}')


if __name__ == '__main__':
    main()
