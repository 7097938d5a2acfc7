"""Wall time of one VGA action chunk on this CPU (select_action_chunk: image resize, patch encoder,
backbone, action head; the auxiliary heads are skipped as in the paper's decoupled inference), per
config, against the time the chunk's executed actions take at the control rate. Weights do not
change the time: each config is measured with fresh (untrained) weights, or from a checkpoint.
Prints the table and writes bench/results/vla_latency-<time>.json.

    . ./twinloop_env.sh && python bench/vla_latency.py [--chunks 40] [--checkpoint DIR ...] [--threads 2]
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from twinloop_data.world_sim_expert import FPS, IMAGE_SIZE
from twinloop_vla.policies import load_policy, make_policy
from twinloop_vla.policies.configuration_vga import VGAConfig

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
CONFIGS = {
    'small (frozen DINOv2-S ONNX, 2 x 112 px)': VGAConfig.small(),
    'small, conv patch stem (trained, 2 x 112 px)': VGAConfig.small(encoder='conv', encoder_dim=128),
}


def measure(policy, chunks, rng):
    """Seconds per select_action_chunk over `chunks` calls on random observations (after one warm-up)."""
    width, height = IMAGE_SIZE
    times = []
    for k in range(chunks + 1):
        observation = {
            'images': rng.integers(0, 256, (policy.config.num_views, height, width, 3), dtype=np.uint8),
            'state': rng.standard_normal(policy.config.state_dim).astype(np.float32),
            'instruction': 'pick up the blue cube',
        }
        started = time.perf_counter()
        with torch.inference_mode():
            policy.select_action_chunk(observation)
        if k:
            times.append(time.perf_counter() - started)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--chunks', type=int, default=40)
    parser.add_argument('--checkpoint', action='append', default=[], help='also measure these checkpoints')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--execute-steps', type=int, default=4, help='actions executed per chunk')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    policies = {name: make_policy('vga', config).eval() for name, config in CONFIGS.items()}
    policies |= {f'checkpoint {path}': load_policy(path) for path in args.checkpoint}
    budget = args.execute_steps / FPS
    rows = []
    for name, policy in policies.items():
        times = measure(policy, args.chunks, rng)
        p50, p90 = np.percentile(times, [50, 90])
        rows.append({'config': name, 'p50_s': p50, 'p90_s': p90, 'chunks': len(times), 'chunk_runs_s': budget})
        print(
            f'{name}: p50 {p50:.3f} s, p90 {p90:.3f} s (a chunk runs {budget:.2f} s: {args.execute_steps} x 1/{FPS} s)'
        )
    out = ROOT / 'bench' / 'results' / f'vla_latency-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.write_text(json.dumps({'threads': args.threads, 'rows': rows}, indent=2))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
