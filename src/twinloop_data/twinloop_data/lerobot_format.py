"""Demonstrations in the LeRobot dataset format, v2.1 layout (what LeRobotDataset reads):

    meta/info.json            fps, features (dtype, shape, names), paths, totals
    meta/tasks.jsonl          {"task_index", "task"}: the language instructions
    meta/episodes.jsonl       {"episode_index", "tasks", "length"}
    meta/episodes_stats.jsonl {"episode_index", "stats": {feature: {min, max, mean, std, count}}}
    data/chunk-000/episode_000000.parquet   one row per frame, images embedded as PNG

Parquet files are written with Hugging Face `datasets` (Image features embed PNG bytes), as
LeRobot does; `load` reads a dataset back the way LeRobotDataset does (the parquet files with the
features of info.json). LeRobotDataset itself is not installed here: its package needs
torchvision and huggingface-hub < 1, which the pinned transformers excludes.
"""

import json
from pathlib import Path

import numpy as np

CODEBASE_VERSION = 'v2.1'
CHUNK_SIZE = 1000
DATA_PATH = 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet'
DEFAULT_FEATURES = {
    'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
    'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
}


def gaze_feature(height, width):
    """The LeRobot feature of a gaze mask image (observation.gaze.<camera>)."""
    return {
        'dtype': 'image',
        'shape': [height, width, 1],
        'names': ['height', 'width', 'channel'],
        'info': {'encoding': '8-bit PNG, 255 = the gaze object (segmentation), 0 elsewhere'},
    }


def gaze_image(mask):
    """A bool mask (h, w) as the gaze feature's uint8 image."""
    return np.asarray(mask, bool).astype(np.uint8) * 255


def hf_features(features):
    """datasets.Features for LeRobot feature specs."""
    import datasets

    out = {}
    for key, spec in features.items():
        if spec['dtype'] == 'image':
            out[key] = datasets.Image()
        elif spec['shape'] == [1]:
            out[key] = datasets.Value(spec['dtype'])
        else:
            out[key] = datasets.Sequence(datasets.Value(spec['dtype']), length=spec['shape'][0])
    return datasets.Features(out)


def _stats(values):
    values = np.asarray(values, float)
    axes = tuple(range(values.ndim - 1)) if values.ndim > 1 else 0
    return {
        'min': np.min(values, axis=axes).tolist(),
        'max': np.max(values, axis=axes).tolist(),
        'mean': np.mean(values, axis=axes).tolist(),
        'std': np.std(values, axis=axes).tolist(),
        'count': [len(values)],
    }


def _image_stats(images, samples=10):
    """Per-channel statistics over a few frames (uint8 images scaled to 0..1, as LeRobot does)."""
    picked = np.stack(images[:: max(1, len(images) // samples)]).astype(float)
    channels = picked.shape[-1] if picked.ndim == 4 else 1
    return _stats(picked.reshape(-1, channels) / (255.0 if images[0].dtype == np.uint8 else 1.0))


class LeRobotWriter:
    """Frames in, episodes out. features: {key: {dtype, shape, names}} besides the default ones;
    images are uint8 (h, w, 3) or uint16 (h, w) arrays (16-bit PNG, e.g. depth in mm)."""

    def __init__(self, root, fps, features, robot_type='panda'):
        self.root, self.fps, self.robot_type = Path(root), fps, robot_type
        self.features = {**features, **DEFAULT_FEATURES}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / 'meta').mkdir(exist_ok=True)
        if (self.root / 'meta' / 'info.json').exists():
            raise FileExistsError(f'{self.root} already holds a dataset; choose another folder')
        self.tasks, self.episodes, self.frames = {}, [], []

    def add_frame(self, frame):
        """Buffer one frame ({feature key: value}) of the current episode; ValueError if a feature is missing."""
        missing = set(self.features) - set(DEFAULT_FEATURES) - set(frame)
        if missing:
            raise ValueError(f'frame lacks features {sorted(missing)}')
        self.frames.append(frame)

    def discard_episode(self):
        """Drop the buffered frames (a failed demonstration)."""
        self.frames = []

    def save_episode(self, task):
        """Write the buffered frames as the next episode of `task` (its language instruction)."""
        import datasets
        from PIL import Image

        if not self.frames:
            raise ValueError('an episode needs at least one frame')
        task_index = self.tasks.setdefault(task, len(self.tasks))
        episode_index = len(self.episodes)
        first = sum(e['length'] for e in self.episodes)
        columns = {key: [] for key in self.features}
        for i, frame in enumerate(self.frames):
            for key, spec in self.features.items():
                if key in DEFAULT_FEATURES:
                    continue
                value = frame[key]
                columns[key].append(
                    Image.fromarray(value) if spec['dtype'] == 'image' else np.asarray(value, spec['dtype']).tolist()
                )
            columns['timestamp'].append(i / self.fps)
            columns['frame_index'].append(i)
            columns['episode_index'].append(episode_index)
            columns['index'].append(first + i)
            columns['task_index'].append(task_index)
        path = self.root / DATA_PATH.format(episode_chunk=episode_index // CHUNK_SIZE, episode_index=episode_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns, features=hf_features(self.features)).to_parquet(str(path))
        stats = {key: _stats(columns[key]) for key, spec in self.features.items() if spec['dtype'] != 'image'}
        stats.update(
            {
                key: _image_stats([f[key] for f in self.frames])
                for key, spec in self.features.items()
                if spec['dtype'] == 'image'
            }
        )
        self._add_episode(task, len(self.frames), stats)
        self.frames = []
        return episode_index

    def add_episode_file(self, path, task, stats):
        """Append an episode already written as parquet by another writer (path: its file; task: its
        instruction; stats: its episodes_stats entry), renumbered as this dataset's next episode."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        episode_index, first = len(self.episodes), sum(e['length'] for e in self.episodes)
        n = table.num_rows
        renumbered = {
            'episode_index': np.full(n, episode_index),
            'index': np.arange(first, first + n),
            'task_index': np.full(n, self.tasks.setdefault(task, len(self.tasks))),
        }
        for key, values in renumbered.items():
            table = table.set_column(table.schema.get_field_index(key), key, pa.array(values, pa.int64()))
        stats = {**stats, **{key: _stats(values) for key, values in renumbered.items()}}
        out = self.root / DATA_PATH.format(episode_chunk=episode_index // CHUNK_SIZE, episode_index=episode_index)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        self._add_episode(task, n, stats)
        return episode_index

    def _add_episode(self, task, length, stats):
        """Record an episode written to data/ in the meta files."""
        self.tasks.setdefault(task, len(self.tasks))
        episode_index = len(self.episodes)
        self.episodes.append({'episode_index': episode_index, 'tasks': [task], 'length': length})
        with open(self.root / 'meta' / 'episodes.jsonl', 'a') as f:
            f.write(json.dumps(self.episodes[-1]) + '\n')
        with open(self.root / 'meta' / 'episodes_stats.jsonl', 'a') as f:
            f.write(json.dumps({'episode_index': episode_index, 'stats': stats}) + '\n')
        self._write_meta()

    def _write_meta(self):
        (self.root / 'meta' / 'tasks.jsonl').write_text(
            ''.join(json.dumps({'task_index': i, 'task': t}) + '\n' for t, i in self.tasks.items())
        )
        total = len(self.episodes)
        info = {
            'codebase_version': CODEBASE_VERSION,
            'robot_type': self.robot_type,
            'total_episodes': total,
            'total_frames': sum(e['length'] for e in self.episodes),
            'total_tasks': len(self.tasks),
            'total_videos': 0,
            'total_chunks': (total - 1) // CHUNK_SIZE + 1,
            'chunks_size': CHUNK_SIZE,
            'fps': self.fps,
            'splits': {'train': f'0:{total}'},
            'data_path': DATA_PATH,
            'video_path': None,
            'features': self.features,
        }
        (self.root / 'meta' / 'info.json').write_text(json.dumps(info, indent=2))


def merge(roots, out):
    """Concatenate datasets of the same features and fps into a new dataset at out, episodes renumbered in
    the order given, tasks united by their text. Returns {(root, old episode index): new episode index}."""
    infos = [json.loads((Path(r) / 'meta' / 'info.json').read_text()) for r in roots]
    for root, info in zip(roots, infos):
        if (info['features'], info['fps']) != (infos[0]['features'], infos[0]['fps']):
            raise ValueError(f'{root}: features or fps differ from {roots[0]}; only alike datasets merge')
    features = {k: v for k, v in infos[0]['features'].items() if k not in DEFAULT_FEATURES}
    writer = LeRobotWriter(out, infos[0]['fps'], features, infos[0]['robot_type'])
    renumbered = {}
    for root, info in zip(roots, infos):
        meta = Path(root) / 'meta'
        stats = {e['episode_index']: e['stats'] for e in map(json.loads, (meta / 'episodes_stats.jsonl').open())}
        for episode in map(json.loads, (meta / 'episodes.jsonl').open()):
            index = episode['episode_index']
            path = Path(root) / info['data_path'].format(
                episode_chunk=index // info['chunks_size'], episode_index=index
            )
            renumbered[(str(root), index)] = writer.add_episode_file(path, episode['tasks'][0], stats[index])
    return renumbered


def load(root):
    """(info, tasks {index: text}, episodes [dict], datasets.Dataset of every frame) of a dataset."""
    import datasets

    root = Path(root)
    info = json.loads((root / 'meta' / 'info.json').read_text())
    if info['codebase_version'] != CODEBASE_VERSION:
        raise ValueError(f'{root}: codebase_version {info["codebase_version"]}, this reader reads {CODEBASE_VERSION}')
    tasks = {
        t['task_index']: t['task'] for t in map(json.loads, (root / 'meta' / 'tasks.jsonl').read_text().splitlines())
    }
    episodes = [json.loads(line) for line in (root / 'meta' / 'episodes.jsonl').read_text().splitlines()]
    files = [
        str(
            root
            / info['data_path'].format(
                episode_chunk=e['episode_index'] // info['chunks_size'], episode_index=e['episode_index']
            )
        )
        for e in episodes
    ]
    frames = datasets.load_dataset(
        'parquet',
        data_files=files,
        features=hf_features(info['features']),
        split='train',
        cache_dir=str(root / '.cache'),
    )
    return info, tasks, episodes, frames
