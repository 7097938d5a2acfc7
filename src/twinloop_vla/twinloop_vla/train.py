"""Train a registered policy on a LeRobot dataset with Hugging Face accelerate.

    . ./twinloop_env.sh && python -m twinloop_vla.train --policy vga --preset small \\
        --dataset ~/.cache/twinloop/datasets/sim_pick_place --out runs/vga_small --steps 3000
    # GPUs, nodes: accelerate launch --multi_gpu --num_processes N [--num_machines M ...] -m twinloop_vla.train ...
    # several CPU processes (gloo): torchrun --nproc_per_node 2 -m twinloop_vla.train --cpu ...
    # fine-tune a checkpoint on more data: ... --init-from runs/vga_small/policy --dataset MORE --out runs/vga_more

CPU by default, the GPU when there is one (accelerate's device placement; --cpu forces the CPU).
Validation holds out whole episodes (--val-fraction); its loss is computed every --val-every steps.
Every frame's images (and depth, gaze masks) are decoded once into arrays on disk, and a frozen patch
encoder (VGA's dinov2_onnx) runs once per frame: its tokens are cached on disk; both caches are keyed
by the dataset's content (twinloop_vla.datasets; --no-cache turns them off). The output folder holds
  checkpoints/step_NNNNNN/{policy/, state/, trainer.json}  policy: a load_policy checkpoint;
                                                         state: accelerate's model, optimizer,
                                                         scheduler and RNG states for --resume
  policy/                the final policy (load_policy)
  history.jsonl          one line per logged step (train losses) and per validation
  loss_curves.png, report.json, report.md   the training report (time, dataset size, config, losses)
"""

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from tqdm import tqdm

from twinloop_vla.datasets import ChunkDataset, collate, split_episodes
from twinloop_vla.policies import load_policy, make_policy, policy_class
from twinloop_vla.processing import compute_stats, relative_actions

DEFAULT_CACHE = Path('~/.cache/twinloop/features')


@dataclass
class TrainSettings:
    """What a training run does besides the policy's own config."""

    steps: int = 2000  # the run's length (the learning-rate schedule spans it)
    stop_at: int = 0  # stop (with a checkpoint) at this step to --resume later; 0: at steps
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100  # linear warm-up steps, then cosine decay to 10 % of lr
    grad_clip: float = 1.0
    val_fraction: float = 0.1  # share of episodes held out
    val_every: int = 200
    save_every: int = 500
    keep: int = 3  # step checkpoints kept
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    cache_features: bool = True  # decoded frames and frozen-encoder tokens on disk (twinloop_vla.datasets)
    cache_dir: str = str(DEFAULT_CACHE)


def policy_config(policy, preset, overrides, dataset):
    """The policy's config: a preset (a config classmethod such as VGAConfig.small, or 'default'),
    the dataset's shapes (views, state and action sizes) and the overrides, in that order."""
    cls = policy_class(policy).config_class
    fields = set(cls.__dataclass_fields__)
    shapes = {'num_views': len(dataset.cameras), 'state_dim': dataset.state_dim, 'action_dim': dataset.action_dim}
    data = {k: v for k, v in shapes.items() if k in fields} | dict(overrides or {})
    if preset == 'default':
        return cls.from_dict(data)
    if not callable(getattr(cls, preset, None)):
        raise ValueError(f'{cls.__name__} has no preset {preset!r}')
    return getattr(cls, preset)(**data)


def lr_lambda(warmup, steps):
    """Linear warm-up, then cosine decay to 10 %."""

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def latest_checkpoint(out):
    """The newest checkpoints/step_* folder of out, or None."""
    found = sorted((Path(out) / 'checkpoints').glob('step_*'))
    return found[-1] if found else None


def frozen_encoder(policy):
    """The policy's patch encoder when it has no trainable parameters and the policy does not need the views
    themselves (ReconVLA's gaze crops): cacheable; else None."""
    encoder = getattr(policy, 'encoder', None)
    if encoder is None or getattr(policy, 'needs_pixels', False) or any(p.requires_grad for p in encoder.parameters()):
        return None
    return encoder


@dataclass
class TrainResult:
    """The trained policy (unwrapped, eval mode), the run's history and report."""

    policy: torch.nn.Module
    history: list
    report: dict


def train(
    dataset,
    out,
    policy='vga',
    preset='default',
    overrides=None,
    settings=None,
    resume=False,
    cpu=False,
    mixed_precision='no',
    policy_kwargs=None,
    progress=True,
    init_from=None,
):
    """Train and return a TrainResult; see the module docstring for what lands in out. init_from: a policy
    checkpoint to fine-tune (its config and statistics are kept; preset and overrides are not used)."""
    out, s = Path(out), settings or TrainSettings()
    policy_kwargs = dict(policy_kwargs or {})
    started = time.monotonic()
    meta = ChunkDataset(dataset, chunk_size=1)
    all_targets = meta.has_camera and meta.has_depth  # else the auxiliary heads may sit out (DDP must know)
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=s.seed),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=not all_targets)],
    )
    set_seed(s.seed)
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f'--resume: no checkpoints in {out / "checkpoints"}')
    if not resume and latest_checkpoint(out) is not None:
        raise FileExistsError(f'{out} already holds checkpoints; pass --resume or choose another folder')
    train_episodes, val_episodes = split_episodes(len(meta.episode_meta), s.val_fraction, s.seed)
    if checkpoint is not None:
        model = load_policy(checkpoint / 'policy', **policy_kwargs).train()
        if model.name != policy:
            raise ValueError(f'{checkpoint} holds a {model.name!r} policy, not {policy!r}')
    elif init_from is not None:
        model = load_policy(init_from, **policy_kwargs).train()
        if model.name != policy:
            raise ValueError(f'{init_from} holds a {model.name!r} policy, not {policy!r}')
    else:
        config = policy_config(policy, preset, overrides, meta)
        rows = np.flatnonzero(np.isin(meta.episode_of, train_episodes))
        chunks = meta.chunks(rows, config.chunk_size)
        actions = relative_actions(chunks, meta.states[rows], getattr(config, 'relative_action_dims', 0))
        stats = compute_stats([{'state': meta.states[rows], 'action': actions}], ('state', 'action'))
        model = make_policy(policy, config, stats=stats, **policy_kwargs)
    chunk = model.config.chunk_size
    cameras = meta.cameras[: model.config.num_views]
    train_set = ChunkDataset(dataset, chunk, train_episodes, cameras)
    val_set = ChunkDataset(dataset, chunk, val_episodes, cameras) if val_episodes else None
    encoder = frozen_encoder(model)
    cache = {'features': None, 'frames': None}
    if s.cache_features:
        with accelerator.main_process_first():
            for part in filter(None, (train_set, val_set)):
                shown = progress and accelerator.is_main_process
                if encoder is not None:
                    cache['features'] = part.use_cached_features(encoder, s.cache_dir, progress=shown)
                cache['frames'] = part.use_decoded_frames(s.cache_dir, progress=shown)

    def loader(part, shuffle):
        generator = torch.Generator().manual_seed(s.seed)
        return torch.utils.data.DataLoader(
            part,
            batch_size=s.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(part) >= s.batch_size,
            collate_fn=collate,
            num_workers=s.num_workers,
            generator=generator,
        )

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=s.lr, weight_decay=s.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s.warmup, s.steps))
    model, optimizer, train_loader, scheduler = accelerator.prepare(
        model, optimizer, loader(train_set, True), scheduler
    )
    val_loader = accelerator.prepare(loader(val_set, False)) if val_set is not None else None
    step, history = 0, []
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint / 'state'))
        step = json.loads((checkpoint / 'trainer.json').read_text())['step']
        history = [h for h in read_history(out) if h['step'] <= step]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_history(out, history)
    unwrapped = accelerator.unwrap_model(model)
    epoch, skip = divmod(step, len(train_loader))
    bar = tqdm(total=s.steps, initial=step, unit='step', disable=not (progress and accelerator.is_main_process))
    step_times, first_step = [], step
    end = min(s.stop_at or s.steps, s.steps)
    while step < end:
        train_loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        skip = 0
        for batch in batches:
            tick = time.monotonic()
            model.train()
            losses = model(batch)
            accelerator.backward(losses['loss'])
            if s.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            step_times.append(time.monotonic() - tick)
            values = {k: accelerator.reduce(v.detach(), 'mean').item() for k, v in losses.items()}
            bar.update(1)
            bar.set_postfix(loss=f'{values["loss"]:.4f}')
            if step % s.log_every == 0 or step == s.steps or step == first_step + 1:
                history.append({'step': step, 'split': 'train', 'lr': scheduler.get_last_lr()[0], **values})
                if accelerator.is_main_process:
                    write_history(out, history[-1:], append=True)
            if val_loader is not None and (step % s.val_every == 0 or step == s.steps):
                history.append({'step': step, 'split': 'val', **validate(model, val_loader, accelerator)})
                if accelerator.is_main_process:
                    bar.write(f'step {step}: validation loss {history[-1]["loss"]:.4f}')
                    write_history(out, history[-1:], append=True)
            if step % s.save_every == 0 or step == end:
                save_checkpoint(accelerator, unwrapped, out, step, s.keep)
            if step >= end:
                break
        epoch += 1
    bar.close()
    report = {}
    if accelerator.is_main_process:
        final = out / 'policy'
        if final.exists():
            shutil.rmtree(final)
        unwrapped.save(final)
        report = write_report(out, history, meta, unwrapped, s, step_times, time.monotonic() - started, cache)
        report.update(
            {'train_episodes': train_episodes, 'val_episodes': val_episodes, 'processes': accelerator.num_processes}
        )
        (out / 'report.json').write_text(json.dumps(report, indent=2))
    accelerator.wait_for_everyone()
    return TrainResult(unwrapped.eval(), history, report)


@torch.no_grad()
def validate(model, loader, accelerator):
    """Mean losses over the validation loader (every process's share, weighted by batch size)."""
    model.eval()
    sums, count = {}, 0
    for batch in loader:
        n = len(batch['state'])
        for key, value in model(batch).items():
            sums[key] = sums.get(key, 0.0) + value.item() * n
        count += n
    totals = accelerator.reduce(torch.tensor([count, *sums.values()], dtype=torch.float64), 'sum')
    return {key: (totals[i + 1] / totals[0]).item() for i, key in enumerate(sums)}


def save_checkpoint(accelerator, policy, out, step, keep):
    """checkpoints/step_NNNNNN/{policy, state, trainer.json}; only the newest `keep` stay."""
    folder = out / 'checkpoints' / f'step_{step:06d}'
    accelerator.save_state(str(folder / 'state'))
    if accelerator.is_main_process:
        policy.save(folder / 'policy')
        (folder / 'trainer.json').write_text(json.dumps({'step': step}))
        for old in sorted((out / 'checkpoints').glob('step_*'))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def read_history(out):
    """The history.jsonl entries of out (empty when there is none)."""
    path = Path(out) / 'history.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def write_history(out, entries, append=False):
    """Write (or append) history entries to out/history.jsonl."""
    with open(Path(out) / 'history.jsonl', 'a' if append else 'w') as f:
        f.writelines(json.dumps(e) + '\n' for e in entries)


def plot_losses(history, path):
    """Train and validation curves of every loss term, one panel per term (log scale; symlog for terms
    that go below zero)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    terms = [k for k in history[0] if k not in ('step', 'split', 'lr')] if history else []
    fig, axes = plt.subplots(1, max(1, len(terms)), figsize=(4.5 * max(1, len(terms)), 3.6), squeeze=False)
    for ax, term in zip(axes[0], terms):
        values = []
        for split, style in (('train', '-'), ('val', 'o-')):
            points = [(h['step'], h[term]) for h in history if h['split'] == split and term in h]
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
                values += [v for _, v in points]
        ax.set_title(term)
        ax.set_xlabel('step')
        if min(values, default=1.0) > 0:
            ax.set_yscale('log')
        else:  # a confidence-weighted depth loss goes below zero: linear near zero
            ax.set_yscale('symlog', linthresh=1e-2)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out, history, dataset, policy, settings, step_times, wall, cache):
    """loss_curves.png and report.md in out; returns the report's facts as a dict."""
    plot_losses(history, out / 'loss_curves.png')
    size = sum(p.stat().st_size for p in Path(dataset.root).glob('data/*/*.parquet'))
    last = {split: next((h for h in reversed(history) if h['split'] == split), None) for split in ('train', 'val')}
    report = {
        'policy': policy.name,
        'config': policy.config.to_dict(),
        'parameters': sum(p.numel() for p in policy.parameters()),
        'trainable_parameters': sum(p.numel() for p in policy.parameters() if p.requires_grad),
        'settings': settings.__dict__,
        'dataset': {
            'root': str(dataset.root),
            'episodes': len(dataset.episode_meta),
            'frames': len(dataset.frames),
            'tasks': sorted(dataset.tasks.values()),
            'parquet_bytes': size,
        },
        'feature_cache': cache['features'] and str(cache['features']),
        'frame_cache': cache['frames'] and str(cache['frames']),
        'steps': history[-1]['step'] if history else 0,
        'wall_s_this_run': round(wall, 1),
        'step_s_median_this_run': round(float(np.median(step_times)), 4) if step_times else None,
        'final_train': last['train'],
        'final_val': last['val'],
    }
    lines = [
        f'# Training report: {policy.name}',
        '',
        f'- dataset: {report["dataset"]["root"]} ({report["dataset"]["episodes"]} episodes, '
        f'{report["dataset"]["frames"]} frames, {size / 1e6:.1f} MB of parquet)',
        f'- tasks: {", ".join(report["dataset"]["tasks"])}',
        f'- parameters: {report["parameters"]:,} ({report["trainable_parameters"]:,} trainable)',
        f'- steps: {report["steps"]}; this run: {report["wall_s_this_run"]} s wall, '
        + (
            f'median step {report["step_s_median_this_run"]} s'
            if report['step_s_median_this_run'] is not None
            else 'no steps (resumed at its end)'
        ),
        f'- final train loss: {last["train"] and round(last["train"]["loss"], 4)}; '
        f'final validation loss: {last["val"] and round(last["val"]["loss"], 4)}',
        f'- feature cache: {report["feature_cache"]}; decoded-frame cache: {report["frame_cache"]}',
        '',
        '![loss curves](loss_curves.png)',
        '',
        '## Config',
        '```json',
        json.dumps({'policy': report['config'], 'training': report['settings']}, indent=2),
        '```',
    ]
    (out / 'report.md').write_text('\n'.join(lines) + '\n')
    return report


def parse_overrides(parser, items):
    """--set KEY=VALUE items -> {key: YAML value}; a malformed item is the parser's error."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            parser.error(f'--set {item!r}: expected KEY=VALUE')
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv=None):
    """Parse the command line and train."""
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description='Train a policy on a LeRobot dataset (accelerate)')
    parser.add_argument('--policy', default='vga')
    parser.add_argument('--dataset', required=True, help='LeRobot v2.1 dataset folder')
    parser.add_argument('--out', required=True, help='output folder (checkpoints, report)')
    parser.add_argument('--preset', default='small', help="a config preset ('small', 'large') or 'default'")
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override (YAML value)')
    parser.add_argument('--resume', action='store_true', help="continue from out's newest checkpoint")
    parser.add_argument(
        '--init-from',
        type=Path,
        help='a policy checkpoint to fine-tune (its config and statistics; --preset, --set unused)',
    )
    parser.add_argument('--cpu', action='store_true', help='train on the CPU even when a GPU is there')
    parser.add_argument('--mixed-precision', default='no', choices=['no', 'fp16', 'bf16'])
    parser.add_argument(
        '--no-cache',
        action='store_true',
        help='decode frames and run the frozen encoder every step instead of caching them',
    )
    for name, value in defaults.__dict__.items():
        if name != 'cache_features':
            parser.add_argument('--' + name.replace('_', '-'), type=type(value), default=value)
    args = parser.parse_args(argv)
    overrides = parse_overrides(parser, args.set)
    settings = TrainSettings(
        **{k: getattr(args, k) for k in defaults.__dict__ if k != 'cache_features'}, cache_features=not args.no_cache
    )
    result = train(
        args.dataset,
        args.out,
        args.policy,
        args.preset,
        overrides,
        settings,
        args.resume,
        args.cpu,
        args.mixed_precision,
        init_from=args.init_from,
    )
    if result.report:
        print(json.dumps({k: result.report[k] for k in ('steps', 'wall_s_this_run', 'final_train', 'final_val')}))


if __name__ == '__main__':
    main()
