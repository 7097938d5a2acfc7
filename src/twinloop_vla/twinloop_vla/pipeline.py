"""ReconVLA's two stages from one command (shared/seeds/001, Sec. 3.3): reconstruction-and-action
pretraining on all generated demonstrations, then fine-tuning on one task set from the pretrained weights.

    . ./twinloop_env.sh && python -m twinloop_vla.pipeline --policy reconvla --preset cpu \\
        --pretrain ~/.cache/twinloop/datasets/all_tasks --finetune ~/.cache/twinloop/datasets/sim_pick_place_gaze \\
        --out runs/recon_pipeline --pretrain-steps 3000 --finetune-steps 2000 --set vae_weights=DIR

Out: pretrain/ and finetune/, each a training folder (twinloop_vla.train: checkpoints, policy/, report);
finetune/policy is the result. Running the command again continues where it stopped: a stage whose
report says it reached its steps is done, one with checkpoints resumes from its newest. Fine-tuning keeps the pretrained
policy's config and normalisation statistics (the pretraining data covers the fine-tuning tasks).
"""

import argparse
import json
from pathlib import Path

from twinloop_vla.train import TrainSettings, latest_checkpoint, parse_overrides, train

STAGES = ('pretrain', 'finetune')


def run_pipeline(
    pretrain, finetune, out, policy, preset, overrides, pretrain_steps, finetune_steps, settings=None, **kwargs
):
    """Both stages in order, each skipped when done and resumed when started; a stage stopped early
    (settings.stop_at) ends the run there. Returns {stage: TrainResult, or None when done before}."""
    out, settings = Path(out), settings or TrainSettings()
    results = {}
    for stage, dataset, steps in (('pretrain', pretrain, pretrain_steps), ('finetune', finetune, finetune_steps)):
        folder = out / stage
        report = folder / 'report.json'
        if report.is_file() and json.loads(report.read_text())['steps'] >= steps:
            results[stage] = None
            continue
        init = out / 'pretrain' / 'policy' if stage == 'finetune' else None
        results[stage] = train(
            dataset,
            folder,
            policy,
            preset,
            overrides,
            TrainSettings(**{**settings.__dict__, 'steps': steps}),
            resume=latest_checkpoint(folder) is not None,
            init_from=init,
            **kwargs,
        )
        if results[stage].report['steps'] < steps:
            break  # stopped early: the next stage waits for this one
    return results


def main(argv=None):
    """Parse the command line and run both stages."""
    parser = argparse.ArgumentParser(description='Pretrain on all demonstrations, then fine-tune (ReconVLA Sec. 3.3)')
    parser.add_argument('--policy', default='reconvla')
    parser.add_argument('--preset', default='cpu')
    parser.add_argument('--pretrain', required=True, help='LeRobot dataset of all generated demonstrations')
    parser.add_argument('--finetune', required=True, help='LeRobot dataset of the task set to fine-tune on')
    parser.add_argument('--out', required=True)
    parser.add_argument('--pretrain-steps', type=int, default=3000)
    parser.add_argument('--finetune-steps', type=int, default=2000)
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override (YAML value)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    results = run_pipeline(
        args.pretrain,
        args.finetune,
        args.out,
        args.policy,
        args.preset,
        parse_overrides(parser, args.set),
        args.pretrain_steps,
        args.finetune_steps,
        TrainSettings(seed=args.seed),
    )
    print(
        json.dumps({stage: ('done before' if r is None else r.report.get('final_val')) for stage, r in results.items()})
    )


if __name__ == '__main__':
    main()
