"""LeRobot v2.1 datasets as training samples for chunked policies, their decoded-frame cache and the
frozen-encoder feature cache.

A sample is frame i of an episode with the raw keys the policy processors take (processor_vga):
  images      uint8 (V, H, W, 3)   every `observation.images.<camera>` (or `patch_tokens` from the cache)
  state       (S,)                 `observation.state`
  action      (C, A)               the actions of frames i .. i + C - 1, the episode's last one repeated past its end
  instruction str                  the episode's task
  camera      (V, 9)               `observation.camera.<camera>` where the dataset has them
  depth       (V, H, W) metres     `observation.depth.<camera>` (mm PNG) where the dataset has them
  gaze        (V, H, W) 0 or 1     `observation.gaze.<camera>`, the gaze object's pixels, where the dataset has them
Validation holds out whole episodes (`split_episodes`), never frames of a training episode.

Decoding a batch's PNGs costs about a fifth of a small policy's training step on 2 cores, so training
decodes every frame once into uncompressed arrays on disk (`use_decoded_frames`) and reads them mapped.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from twinloop_data.lerobot_format import load
from twinloop_vla.processing import to_pixels

CACHE_VERSION = 1  # bump when the cached tokens' or frames' meaning changes


def plane(array):
    """A single-channel image's (H, W) plane, whether stored with a channel axis or not."""
    return array[..., 0] if array.ndim == 3 else array


FRAME_FIELDS = {  # sample key: (column prefix, one camera's stored value -> array, dtype on disk, dtype in samples)
    'images': ('observation.images', lambda v: np.asarray(v.convert('RGB')), np.uint8, np.uint8),
    'camera': ('observation.camera', lambda v: np.asarray(v, np.float32), np.float32, np.float32),
    'depth': ('observation.depth', lambda v: plane(np.asarray(v, np.float32)) / 1000.0, np.float32, np.float32),
    'gaze': ('observation.gaze', lambda v: plane(np.asarray(v)) > 0, np.uint8, np.float32),
}


def split_episodes(num_episodes, val_fraction, seed):
    """(train, val) episode indices: a seeded shuffle, at least one of each when there are two or more episodes."""
    order = np.random.default_rng(seed).permutation(num_episodes).tolist()
    val = min(max(1, round(num_episodes * val_fraction)), num_episodes - 1) if val_fraction > 0 else 0
    return sorted(order[val:]), sorted(order[:val])


class ChunkDataset(torch.utils.data.Dataset):
    """Frames of chosen episodes of a LeRobot dataset as chunked samples (see the module docstring)."""

    def __init__(self, root, chunk_size, episodes=None, cameras=None):
        """episodes: episode indices to use (default all); cameras: camera names in view order (default all)."""
        self.root = Path(root)
        self.info, self.tasks, self.episode_meta, self.frames = load(root)
        features = self.info['features']
        found = [k.removeprefix('observation.images.') for k in features if k.startswith('observation.images.')]
        self.cameras = list(cameras) if cameras is not None else found
        missing = [c for c in self.cameras if c not in found]
        if missing:
            raise ValueError(f'{root}: no cameras {missing} (it has {found})')
        self.fields = [
            name
            for name, (prefix, *_) in FRAME_FIELDS.items()
            if all(f'{prefix}.{c}' in features for c in self.cameras)
        ]
        self.has_camera, self.has_depth, self.has_gaze = (name in self.fields for name in ('camera', 'depth', 'gaze'))
        self.chunk_size = chunk_size
        columns = self.frames.select_columns(['episode_index', 'task_index', 'observation.state', 'action'])
        self.episode_of = np.asarray(columns['episode_index'])
        self.task_of = np.asarray(columns['task_index'])
        self.states = np.asarray(columns['observation.state'], np.float32)
        self.actions = np.asarray(columns['action'], np.float32)
        wanted = set(range(len(self.episode_meta)) if episodes is None else episodes)
        self.indices = np.flatnonzero(np.isin(self.episode_of, sorted(wanted)))
        self.episode_last = {e: int(np.flatnonzero(self.episode_of == e)[-1]) for e in np.unique(self.episode_of)}
        self.patch_tokens = None
        self.decoded = None

    @property
    def state_dim(self):
        """Size of observation.state."""
        return self.states.shape[1]

    @property
    def action_dim(self):
        """Size of action."""
        return self.actions.shape[1]

    def __len__(self):
        return len(self.indices)

    def chunk(self, row):
        """Actions of rows row .. row + C - 1, the episode's last action repeated past its end: (C, A)."""
        return self.chunks([row])[0]

    def chunks(self, rows, size=None):
        """Action chunks of `size` (default C) starting at each of rows: (N, size, A)."""
        rows = np.asarray(rows)
        last = np.array([self.episode_last[int(e)] for e in self.episode_of[rows]])
        steps = rows[:, None] + np.arange(size or self.chunk_size)[None]
        return self.actions[np.minimum(steps, last[:, None])]

    def __getitem__(self, i):
        row = int(self.indices[i])
        sample = {
            'state': self.states[row],
            'action': self.chunk(row),
            'instruction': self.tasks[int(self.task_of[row])],
        }
        if self.patch_tokens is not None:
            sample['patch_tokens'] = np.asarray(self.patch_tokens[row], np.float32)
        fields = self.frame_fields()
        if self.decoded is not None:
            values = {name: self.decoded[name][row] for name in fields}
        else:
            frame = self.frames[row] if fields else {}
            values = {name: self.decode(name, frame) for name in fields}
        sample.update({name: np.asarray(values[name], FRAME_FIELDS[name][3]) for name in fields})
        return sample

    def frame_fields(self):
        """The FRAME_FIELDS a sample carries: the images unless cached tokens replace them, and whichever
        of camera, depth and gaze the dataset has."""
        return [name for name in self.fields if not (name == 'images' and self.patch_tokens is not None)]

    def decode(self, name, frame):
        """One field of a frame (a row's stored values), every camera stacked: (V, ...) in its disk dtype."""
        prefix, convert, dtype, _ = FRAME_FIELDS[name]
        return np.stack([convert(frame[f'{prefix}.{c}']) for c in self.cameras]).astype(dtype)

    def use_decoded_frames(self, cache_dir, batch_size=256, progress=True):
        """Serve the frame fields from arrays on disk, decoded once for every frame of the dataset and
        keyed by its fingerprint, the cameras and the fields (an interrupted decoding starts over).
        Returns the cache folder's path (None when a sample has no frame fields)."""
        fields = self.frame_fields()
        if not fields:
            return None
        key = json.dumps([CACHE_VERSION, self.fingerprint(), self.cameras, fields])
        path = Path(cache_dir).expanduser() / f'{self.root.name}-frames-{hashlib.sha256(key.encode()).hexdigest()[:16]}'
        if not path.is_dir():
            self._decode_frames(path, fields, batch_size, progress)
        self.decoded = {name: np.load(path / f'{name}.npy', mmap_mode='r') for name in fields}
        return path

    def _decode_frames(self, path, fields, batch_size, progress):
        """Write <field>.npy of every frame into path (through path.partial, renamed when complete)."""
        partial = path.with_name(path.name + '.partial')
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        columns = self.frames.select_columns([f'{FRAME_FIELDS[name][0]}.{c}' for name in fields for c in self.cameras])
        first = columns[0]
        arrays = {
            name: np.lib.format.open_memmap(
                partial / f'{name}.npy',
                mode='w+',
                dtype=FRAME_FIELDS[name][2],
                shape=(len(columns), *self.decode(name, first).shape),
            )
            for name in fields
        }
        for start in tqdm(
            range(0, len(columns), batch_size), desc='decoding frames', unit='batch', disable=not progress
        ):
            rows = columns[start : start + batch_size]
            for offset in range(len(next(iter(rows.values())))):
                frame = {column: values[offset] for column, values in rows.items()}
                for name in fields:
                    arrays[name][start + offset] = self.decode(name, frame)
        for array in arrays.values():
            array.flush()
        del arrays
        partial.rename(path)

    def _compute_features(self, encoder, path, shape, batch_size, progress):
        """Fill path with the encoder's tokens of every frame, batch by batch; <name>.partial.json
        counts the rows done so that a killed run resumes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial, done_file = path.with_suffix('.partial.npy'), path.with_suffix('.partial.json')
        done = json.loads(done_file.read_text())['rows'] if partial.is_file() and done_file.is_file() else 0
        mode = 'r+' if done else 'w+'
        tokens = np.lib.format.open_memmap(partial, mode=mode, dtype=np.float16, shape=None if done else shape)
        keys = [f'observation.images.{c}' for c in self.cameras]
        images = self.frames.select_columns(keys)
        starts = range(done, len(self.frames), batch_size)
        for start in tqdm(starts, desc='caching features', unit='batch', disable=not progress):
            rows = images[start : start + batch_size]
            views = np.stack([[np.asarray(im.convert('RGB')) for im in rows[k]] for k in keys], axis=1)
            pixels = to_pixels(views, encoder.image_size, encoder.mean, encoder.std)
            out = encoder(pixels.flatten(0, 1)).reshape(len(views), *shape[1:])
            tokens[start : start + len(views)] = out.numpy().astype(np.float16)
            tokens.flush()
            done_file.write_text(json.dumps({'rows': start + len(views)}))
        del tokens
        partial.rename(path)
        done_file.unlink()

    def fingerprint(self):
        """A key of the dataset's content: its info, episodes and parquet files (names, sizes, times)."""
        digest = hashlib.sha256()
        for name in ('info.json', 'episodes.jsonl', 'tasks.jsonl'):
            digest.update((self.root / 'meta' / name).read_bytes())
        for path in sorted(self.root.glob('data/*/*.parquet')):
            stat = path.stat()
            digest.update(f'{path.relative_to(self.root)}:{stat.st_size}:{stat.st_mtime_ns}'.encode())
        return digest.hexdigest()[:16]

    def use_cached_features(self, encoder, cache_dir, batch_size=16, progress=True):
        """Serve `patch_tokens` instead of images from a float16 cache of a frozen encoder's output for
        every frame, computed once and keyed by the dataset's and the encoder's fingerprints and the
        cameras (an interrupted computation continues where it stopped). Returns the cache file's path."""
        key = json.dumps([CACHE_VERSION, self.fingerprint(), encoder_fingerprint(encoder), self.cameras])
        name = f'{self.root.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy'
        path = Path(cache_dir).expanduser() / name
        shape = (len(self.frames), len(self.cameras), encoder.grid**2, encoder.dim)
        if not path.is_file():
            self._compute_features(encoder, path, shape, batch_size, progress)
        self.patch_tokens = np.load(path, mmap_mode='r')
        if self.patch_tokens.shape != shape:
            raise ValueError(f'{path} holds {self.patch_tokens.shape}, expected {shape}; delete it to rebuild')
        return path


def encoder_fingerprint(encoder):
    """Name, input size and a digest of the weights (a parameter-free encoder such as dinov2_onnx is
    known by its name: its weights come with its package)."""
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    return [encoder.name, encoder.image_size, encoder.patch_size, encoder.dim, digest.hexdigest()[:16]]


def collate(samples):
    """Samples -> a raw batch: arrays stacked, instructions as a list."""
    return {
        key: [s[key] for s in samples] if key == 'instruction' else np.stack([s[key] for s in samples])
        for key in samples[0]
    }
