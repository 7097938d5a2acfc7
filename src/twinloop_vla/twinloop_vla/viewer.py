"""A one-page HTML view of a LeRobot dataset: per episode its language, a few frames of every
camera (the gaze region tinted yellow where the dataset has `observation.gaze.<camera>` masks) and
a plot of its actions (and state), all embedded (PNG as data URIs), no server needed.

    . ./twinloop_env.sh && python -m twinloop_vla.viewer ~/.cache/twinloop/datasets/sim_pick_place --out page.html
"""

import argparse
import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from twinloop_data.lerobot_format import load


def data_uri(png_bytes):
    """A PNG as an inline data URI."""
    return 'data:image/png;base64,' + base64.b64encode(png_bytes).decode()


def image_png(image):
    """A PIL image (any mode) as RGB PNG bytes."""
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, format='PNG')
    return buffer.getvalue()


def with_gaze(image, mask):
    """A PIL image with the gaze mask's pixels blended half-way to yellow."""
    rgb = np.asarray(image.convert('RGB'), np.float32)
    seen = np.asarray(mask).reshape(rgb.shape[:2]) > 0
    rgb[seen] = 0.5 * rgb[seen] + 0.5 * np.array([255.0, 220.0, 0.0])
    return Image.fromarray(rgb.astype(np.uint8))


def plot_png(actions, action_names, states=None, state_names=None, fps=None):
    """Actions (T, A) and optionally states (T, S) over time, one line per dimension, as PNG bytes."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [('action', actions, action_names)] + ([('state', states, state_names)] if states is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.0), squeeze=False)
    t = np.arange(len(actions)) / fps if fps else np.arange(len(actions))
    for ax, (title, values, names) in zip(axes[0], panels):
        for j in range(values.shape[1]):
            ax.plot(t, values[:, j], label=names[j] if names else str(j), linewidth=1)
        ax.set_title(title)
        ax.set_xlabel('time [s]' if fps else 'frame')
        ax.legend(fontsize=6, ncol=2, loc='best')
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def render(root, frames_per_episode=4, max_episodes=None):
    """The HTML page of the dataset at root."""
    info, tasks, episodes, frames = load(root)
    features = info['features']
    cameras = [k for k in features if k.startswith('observation.images.')]
    episode_of = np.asarray(frames['episode_index'])
    actions = np.asarray(frames['action'], np.float32)
    states = np.asarray(frames['observation.state'], np.float32) if 'observation.state' in features else None
    action_names = features['action'].get('names')
    state_names = features.get('observation.state', {}).get('names')
    shown = episodes[:max_episodes] if max_episodes else episodes
    parts = [
        '<!doctype html><html><head><meta charset="utf-8">',
        f'<title>{html.escape(Path(root).name)}</title>',
        '<style>body{font-family:sans-serif;margin:1em}section{border-top:1px solid #ccc;padding:.5em 0}'
        'img{margin:2px}figure{display:inline-block;margin:2px;font-size:11px}</style></head><body>',
        f'<h1>{html.escape(Path(root).name)}</h1>',
        f'<p>{info["total_episodes"]} episodes, {info["total_frames"]} frames at {info["fps"]} fps, '
        f'{info["total_tasks"]} tasks; cameras: {html.escape(", ".join(c.split(".")[-1] for c in cameras))}; '
        f'LeRobot {html.escape(info["codebase_version"])}. Showing {len(shown)} episodes.</p>',
    ]
    for episode in shown:
        index = episode['episode_index']
        rows = np.flatnonzero(episode_of == index)
        picks = rows[np.unique(np.linspace(0, len(rows) - 1, frames_per_episode).round().astype(int))]
        language = ' / '.join(episode['tasks'])
        parts.append(f'<section class="episode" id="episode-{index}"><h2>Episode {index}</h2>')
        parts.append(f'<p class="language">{html.escape(language)}</p><p>{len(rows)} frames</p>')
        for camera in cameras:
            selected = frames.select(picks.tolist())
            column = selected[camera]
            gaze = camera.replace('.images.', '.gaze.')
            if gaze in features:
                column = [with_gaze(image, mask) for image, mask in zip(column, selected[gaze])]
            for row, image in zip(picks, column):
                caption = f'{camera.split(".")[-1]} frame {row - rows[0]}'
                parts.append(
                    f'<figure><img src="{data_uri(image_png(image))}" alt="{caption}"><figcaption>{caption}'
                    '</figcaption></figure>'
                )
            parts.append('<br>')
        plot = plot_png(actions[rows], action_names, None if states is None else states[rows], state_names, info['fps'])
        parts.append(f'<img class="plot" src="{data_uri(plot)}" alt="actions of episode {index}"></section>')
    parts.append('</body></html>')
    return '\n'.join(parts)


def main(argv=None):
    """Parse the command line and write the page."""
    parser = argparse.ArgumentParser(description='Write one HTML page showing a LeRobot dataset')
    parser.add_argument('dataset', help='LeRobot v2.1 dataset folder')
    parser.add_argument('--out', required=True, help='HTML file to write')
    parser.add_argument('--frames', type=int, default=4, help='frames shown per episode and camera')
    parser.add_argument('--max-episodes', type=int, default=None, help='show only the first episodes')
    args = parser.parse_args(argv)
    page = render(args.dataset, args.frames, args.max_episodes)
    Path(args.out).write_text(page)
    print(f'{args.out}: {len(page) / 1e6:.1f} MB')


if __name__ == '__main__':
    main()
