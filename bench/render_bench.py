"""Multi-view render speed of the twin's scene: SimWorld.render vs raw mujoco.Renderer.

One multi-view frame = every camera rendered once (RGB only, the scoring path). The raw
baseline is a bare mujoco.Renderer with the same settings as the fast mode (no MSAA, collision-
mesh robot), so the ratio is the cost of twinloop's wrapper; the pretty mode (4x MSAA, detailed
robot meshes, as used for reports) is measured too. Prints the figures and writes
bench/results/render.json.

    . ./twinloop_env.sh && python bench/render_bench.py [--size 224] [--frames 60]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import mujoco

from twinloop_twin import scene, world

CAMERAS = [
    {'name': 'front', 'pos': [1.25, 0.0, 0.65], 'look_at': [0.5, 0.0, 0.0]},
    {'name': 'left', 'pos': [0.55, 0.75, 0.6], 'look_at': [0.5, 0.0, 0.0]},
    {'name': 'right', 'pos': [0.55, -0.75, 0.6], 'look_at': [0.5, 0.0, 0.0]},
    {'name': 'wrist', 'mount': 'hand', 'fovy': 75},
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--frames', type=int, default=60)
    args = parser.parse_args()
    root = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
    data = scene.SceneConfig.from_yaml(root / 'config' / 'scenes' / 'tabletop.yaml')
    data.cameras = [scene.CameraConfig(**{**c, 'width': args.size, 'height': args.size}) for c in CAMERAS]
    sim = world.SimWorld(data)
    names = [c.name for c in data.cameras]

    def twin_frame():
        for name in names:
            sim.render(name, args.size, args.size, depth=False)

    def pretty_frame():
        for name in names:
            sim.render(name, args.size, args.size, depth=False, fast=False)

    sim.model.vis.quality.offsamples = 0
    raw = mujoco.Renderer(sim.model, args.size, args.size)
    option = scene.scene_option(fast_render=True)

    def raw_frame():
        for name in names:
            raw.update_scene(sim.data, name, scene_option=option)
            raw.render()

    results = {}
    for label, frame in (('raw_mujoco_renderer', raw_frame), ('simworld_render', twin_frame), ('pretty', pretty_frame)):
        frame()  # warm up (context creation, first upload)
        start = time.perf_counter()
        for _ in range(args.frames):
            sim.step(5)
            frame()
        results[label] = args.frames / (time.perf_counter() - start)
    raw.close()
    sim.close()
    report = {
        'benchmark': 'multi-view render',
        'views': len(names),
        'size': args.size,
        'frames': args.frames,
        'multiview_fps_simworld': round(results['simworld_render'], 2),
        'multiview_fps_pretty': round(results['pretty'], 2),
        'multiview_fps_raw': round(results['raw_mujoco_renderer'], 2),
        'ratio_to_raw': round(results['simworld_render'] / results['raw_mujoco_renderer'], 3),
        'mujoco': mujoco.__version__,
        'cpu': platform.processor() or platform.machine(),
        'cores': os.cpu_count(),
        'mujoco_gl': os.environ.get('MUJOCO_GL', ''),
        'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    }
    print(json.dumps(report, indent=2))
    out = root / 'bench' / 'results' / 'render.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
    main()
