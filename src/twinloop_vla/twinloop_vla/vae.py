"""A small continuous VAE: ReconVLA's frozen visual tokenizer (shared/seeds/001, Sec. 3.2), trained here.

ReconVLA turns gaze regions into latent tokens with Stable Diffusion's VAE. No such weights ship on
this machine, so the project trains its own at small size on its own images: the gaze crops ReconVLA
reconstructs and whole views (for the whole-image ablation), `size` px in [-1, 1], to a `channels` x
size/4 x size/4 latent (two stride-2 conv stages), trained with L1 + MSE reconstruction and a small KL
term (beta). Its latents are the posterior means times `scale`, set after training to 1 / their
standard deviation over the training crops (Stable Diffusion's 0.18215 plays that part).

    . ./twinloop_env.sh && python -m twinloop_vla.vae --dataset ~/.cache/twinloop/datasets/sim_pick_place_gaze \\
        --out ~/.cache/twinloop/vae/sim32 [--steps 1500 --size 32]

A trained VAE is a folder (config.json, model.safetensors, report.md, reconstructions.png) that a
ReconVLA config names in `vae_weights`. A folder of diffusers' AutoencoderKL (Stable Diffusion's or
Flux's VAE, as the paper uses, saved with save_pretrained or downloaded elsewhere) loads there too
(`DiffusersVAE`: 8x downsampling, 4 or 16 latent channels; never saved into policy checkpoints).
"""

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from twinloop_core.engine import load_config


@dataclass
class VAEConfig:
    """Shape and training weight of the VAE."""

    size: int = 32  # crops are size x size px
    channels: int = 4  # latent channels
    hidden: int = 32  # conv width (doubled after the first downsampling)
    beta: float = 1e-4  # KL weight
    scale: float = 1.0  # latent scale, set by training

    def __post_init__(self):
        if self.size % 4 or self.size < 8 or self.channels < 1 or self.hidden < 1:
            raise ValueError(f'VAEConfig: size must be a multiple of 4 and >= 8, channels and hidden >= 1: {self}')

    @property
    def grid(self):
        """Latent side."""
        return self.size // 4


class SmallVAE(nn.Module):
    """Conv encoder to (mean, log-variance) of a size/4 latent grid, conv-transpose decoder back."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        h, c = config.hidden, config.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, h, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(h, h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(h, 2 * h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * h, 2 * c, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 2 * h, 3, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * h, h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(h, 3, 3, padding=1),
        )
        self.register_buffer('scale', torch.tensor(float(config.scale)))  # saved with the weights

    def encode(self, images):
        """(N, 3, size, size) in [-1, 1] -> posterior (mean, log-variance), each (N, channels, grid, grid)."""
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)

    @property
    def grid(self):
        """Latent side."""
        return self.config.grid

    @torch.no_grad()
    def latents(self, images):
        """The tokenizer's output: posterior means times scale (no gradient)."""
        return self.encode(images)[0] * self.scale

    def decode(self, latents):
        """Scaled latents -> images (N, 3, size, size)."""
        return self.decoder(latents / self.scale)

    def loss(self, images):
        """(total, {'reconstruction', 'kl'}) of a batch: L1 + MSE of a sampled latent's decoding, beta KL."""
        mean, logvar = self.encode(images)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        decoded = self.decoder(z)
        reconstruction = F.l1_loss(decoded, images) + F.mse_loss(decoded, images)
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).mean()
        return reconstruction + self.config.beta * kl, {'reconstruction': reconstruction.detach(), 'kl': kl.detach()}

    def save(self, directory):
        """config.json and model.safetensors into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / 'config.json').write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / 'model.safetensors')

    @classmethod
    def load(cls, directory):
        """The VAE saved in directory, in eval mode."""
        directory = Path(directory).expanduser()
        missing = [f for f in ('config.json', 'model.safetensors') if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f'{directory} is not a VAE folder (python -m twinloop_vla.vae): missing {missing}')
        config = load_config(VAEConfig, json.loads((directory / 'config.json').read_text()), 'VAEConfig')
        vae = cls(config)
        vae.load_state_dict(load_file(directory / 'model.safetensors'))
        return vae.eval()


class DiffusersVAE(nn.Module):
    """A Stable Diffusion or Flux VAE (diffusers' AutoencoderKL, a folder with config.json and its weights,
    loaded from disk only) as the frozen tokenizer: latents are (posterior mean - shift_factor) times
    scaling_factor, as those pipelines scale them; `grid` is size over its downsampling factor."""

    def __init__(self, directory, size):
        super().__init__()
        from diffusers import AutoencoderKL

        self.model = AutoencoderKL.from_pretrained(str(Path(directory).expanduser()), local_files_only=True)
        self.model.requires_grad_(False).eval()
        config = self.model.config
        self.scale, self.shift = float(config.scaling_factor), float(config.shift_factor or 0.0)
        self.channels = int(config.latent_channels)
        self.grid = size // 2 ** (len(config.block_out_channels) - 1)

    @torch.no_grad()
    def latents(self, images):
        """(N, 3, size, size) in [-1, 1] -> scaled posterior means (N, channels, grid, grid)."""
        return (self.model.encode(images).latent_dist.mean - self.shift) * self.scale


def is_diffusers_vae(directory):
    """Whether a folder holds a diffusers AutoencoderKL (its config.json names the class)."""
    config = Path(directory).expanduser() / 'config.json'
    return config.is_file() and json.loads(config.read_text()).get('_class_name') == 'AutoencoderKL'


def unit_range(pixels, mean, std):
    """Standardised pixels (..., 3, H, W) back to [-1, 1]."""
    mean = torch.as_tensor(mean, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels * std + mean) * 2 - 1


def crops_of_dataset(root, size, episodes, margin, limit=None):
    """(N, 3, size, size) training images in [-1, 1] from a LeRobot dataset's frames: every view's gaze crop
    (processor_reconvla.gaze_crops; the whole view where the dataset has no gaze masks) and the whole view."""
    from twinloop_vla.datasets import ChunkDataset
    from twinloop_vla.policies.processor_reconvla import gaze_crops
    from twinloop_vla.processing import to_pixels

    data = ChunkDataset(root, 1, episodes)
    rows = range(len(data)) if limit is None else np.linspace(0, len(data) - 1, limit).astype(int)
    out = []
    for i in tqdm(rows, desc='crops', unit='frame', leave=False):
        sample = data[int(i)]
        side = sample['images'].shape[1]  # square views of the frame's height, as the policies see them
        images = to_pixels(sample['images'], side, (0.5,) * 3, (0.5,) * 3)  # [-1, 1]
        masks = None
        if 'gaze' in sample:
            masks = torch.as_tensor(np.asarray(sample['gaze']), dtype=torch.float32)[:, None]
            masks = F.interpolate(masks, size=(side, side), mode='nearest')[:, 0]
        out.append(gaze_crops(images, masks, size, margin))
        out.append(F.interpolate(images, size=(size, size), mode='bilinear', antialias=True, align_corners=False))
    return torch.cat(out)


def train_vae(crops, config, steps, batch_size=64, lr=2e-3, seed=0, held_out=None, progress=True):
    """Train a SmallVAE on crops (N, 3, size, size); returns it (scale set) and its history."""
    torch.manual_seed(seed)
    vae = SmallVAE(config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for step in tqdm(range(1, steps + 1), desc='vae', unit='step', disable=not progress):
        batch = crops[torch.randint(0, len(crops), (batch_size,), generator=generator)]
        loss, parts = vae.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == steps:
            entry = {'step': step, 'loss': float(loss.detach()), **{k: float(v) for k, v in parts.items()}}
            if held_out is not None:
                entry['held_out_psnr'] = psnr(vae, held_out)
            history.append(entry)
    vae.eval()
    with torch.no_grad():
        vae.config.scale = float(1.0 / vae.encode(crops[:2048])[0].std().clamp(min=1e-6))
        vae.scale.fill_(vae.config.scale)
    return vae, history


@torch.no_grad()
def psnr(vae, images):
    """Mean PSNR [dB] of the VAE's reconstructions (posterior means) of images in [-1, 1]."""
    decoded = vae.decoder(vae.encode(images)[0]).clamp(-1, 1)
    mse = ((decoded - images) / 2).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return float((-10 * torch.log10(mse)).mean())


@torch.no_grad()
def picture(vae, images, path, count=16):
    """A PNG: count images (top row) over their reconstructions (bottom row)."""
    images = images[:count]
    decoded = vae.decoder(vae.encode(images)[0]).clamp(-1, 1)
    rows = [torch.cat(list(x), dim=-1) for x in (images, decoded)]
    grid = ((torch.cat(rows, dim=-2) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


def main(argv=None):
    """Train a VAE on a dataset's gaze crops and views; write the folder and its report."""
    parser = argparse.ArgumentParser(description="Train ReconVLA's small VAE on a LeRobot dataset's images")
    parser.add_argument('--dataset', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--size', type=int, default=32, help='crop side [px] (the ReconVLA config gaze_size)')
    parser.add_argument('--channels', type=int, default=4)
    parser.add_argument('--frames', type=int, default=3000, help='frames sampled evenly from the dataset')
    parser.add_argument('--margin', type=float, default=0.25, help='gaze crop margin (the ReconVLA config gaze_margin)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    from twinloop_vla.datasets import split_episodes
    from twinloop_data.lerobot_format import load

    started = time.monotonic()
    episodes = len(load(args.dataset)[2])
    train_episodes, val_episodes = split_episodes(episodes, 0.1, args.seed)
    crops = crops_of_dataset(args.dataset, args.size, train_episodes, args.margin, args.frames)
    held_out = crops_of_dataset(args.dataset, args.size, val_episodes, args.margin, 128)
    config = VAEConfig(size=args.size, channels=args.channels)
    vae, history = train_vae(crops, config, args.steps, seed=args.seed, held_out=held_out)
    out = Path(args.out)
    vae.save(out)
    picture(vae, held_out[torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0))], out / 'recon.png')
    wall = time.monotonic() - started
    (out / 'history.json').write_text(json.dumps(history, indent=2))
    (out / 'report.md').write_text(
        f'# VAE: {args.dataset}\n\n`python -m twinloop_vla.vae {" ".join(sys.argv[1:] if argv is None else argv)}`\n\n'
        f'- crops: {len(crops)} from {len(train_episodes)} episodes (held out: {len(val_episodes)} episodes)\n'
        f'- latent: {config.channels} x {config.grid} x {config.grid}, scale {vae.config.scale:.4f}\n'
        f'- held-out PSNR: {history[-1]["held_out_psnr"]:.2f} dB after {args.steps} steps; {wall:.0f} s in all\n\n'
        '![held-out crops over their reconstructions](recon.png)\n'
    )
    print(json.dumps({'out': str(out), 'held_out_psnr': history[-1]['held_out_psnr'], 'seconds': round(wall)}))


if __name__ == '__main__':
    main()
