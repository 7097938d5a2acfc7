"""Pose estimation accuracy and speed against the simulated world's ground truth: random layouts of
the four scenes, the fixed cameras rendered with RealSense-like depth noise (sigma = std * z^2)
and dropout, then detection (global) and tracking (warm start after a small random motion of every
movable object). Errors are modulo each object's symmetry. Prints the table and writes
bench/results/pose-<time>.json; --results appends to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/pose_bench.py [--scenes 40] [--noise 0.001] [--dropout 0.01] [--results]
"""

import argparse
import json
import os
import time
from pathlib import Path

import mujoco
import numpy as np

from twinloop_core import evaluation
from twinloop_perception import pose_estimation as pe
from twinloop_twin import cameras, scene, world

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
SCENES = ('tabletop', 'clutter', 'sorting', 'stacking')


def frames(w, rng, noise, dropout):
    out = []
    for c in w.config.cameras:
        if c.mount == 'world':
            f = w.render(c.name, c.width, c.height)
            out.append(
                pe.Frame(
                    f.rgb,
                    cameras.realsense_noise(f.depth, rng, noise, dropout),
                    f.intrinsics.matrix,
                    f.position,
                    f.rotation,
                )
            )
    return out


def nudge(w, rng):
    """Move every movable object a little (tracking's job): up to 2 cm and 15 degrees about z."""
    for oid in w.object_ids:
        joint = mujoco.mj_name2id(w.model, mujoco.mjtObj.mjOBJ_JOINT, f'{oid}_joint')
        if joint < 0:
            continue
        adr = w.model.jnt_qposadr[joint]
        w.data.qpos[adr : adr + 2] += rng.uniform(-0.02, 0.02, 2)
        turn = np.zeros(4)
        mujoco.mju_axisAngle2Quat(turn, np.array([0, 0, 1.0]), rng.uniform(-0.26, 0.26))
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, turn, w.data.qpos[adr + 3 : adr + 7].copy())
        w.data.qpos[adr + 3 : adr + 7] = quat
    mujoco.mj_forward(w.model, w.data)


def evaluate(found, w, models, scene_name):
    rows = []
    for m in models:
        position, quat = w.object_pose(m.id)
        e = found.get(m.id)
        rows.append(
            {
                'scene': scene_name,
                'object': m.id,
                'static': m.static,
                'found': e is not None,
                'translation_m': float(np.linalg.norm(e.position - position)) if e else None,
                'rotation_deg': float(np.degrees(pe.rotation_error(m, e.quat, quat))) if e else None,
            }
        )
    return rows


def summary(rows, times):
    found = [r for r in rows if r['found']]
    wrong = [r for r in found if r['translation_m'] > 0.05]  # placed on another object's cluster
    t = np.array([r['translation_m'] for r in found if r['translation_m'] <= 0.05])
    a = np.array([r['rotation_deg'] for r in found if r['translation_m'] <= 0.05])
    return {
        'objects': len(rows),
        'detection_rate': round(len(found) / len(rows), 4),
        'wrong_identity_rate': round(len(wrong) / max(1, len(found)), 4),
        'translation_cm_median': round(100 * float(np.median(t)), 3),
        'translation_cm_p90': round(100 * float(np.percentile(t, 90)), 3),
        'rotation_deg_median': round(float(np.median(a)), 3),
        'rotation_deg_p90': round(float(np.percentile(a, 90)), 3),
        'ms_per_frame_median': round(1000 * float(np.median(times)), 1),
        'ms_per_frame_p90': round(1000 * float(np.percentile(times, 90)), 1),
    }


def per_scene(rows, name):
    """Detection counts of one scene file: objects, missed, wrong identity (> 5 cm off)."""
    mine = [r for r in rows if r['scene'] == name]
    return {
        'objects': len(mine),
        'missed': sum(not r['found'] for r in mine),
        'wrong_identity': sum(r['found'] and r['translation_m'] > 0.05 for r in mine),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scenes', type=int, default=40, help='random layouts (spread over the scene files)')
    parser.add_argument('--scene-names', nargs='+', default=list(SCENES), help='config/scenes/<name>.yaml to lay out')
    parser.add_argument('--noise', type=float, default=0.001, help='depth noise std at 1 m [m] (world_sim default)')
    parser.add_argument('--dropout', type=float, default=0.01, help='fraction of depth pixels without a reading')
    parser.add_argument('--results', action='store_true', help='append the table to bench/RESULTS.md')
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    robot = pe.RobotFilter(
        scene.build_spec(scene.SceneConfig([], [])).compile(),
        scene.ARM_JOINTS,
        scene.FINGER_JOINTS,
        pe.EstimatorConfig().robot_margin,
    )
    detect_rows, track_rows, detect_times, track_times, tabletop_track = [], [], [], [], []
    for i in range(args.scenes):
        name = args.scene_names[i % len(args.scene_names)]
        config = scene.randomize_layout(
            scene.SceneConfig.from_yaml(ROOT / 'config' / 'scenes' / f'{name}.yaml'), np.random.default_rng(1000 + i)
        )
        w = world.SimWorld(config)
        models = pe.build_models(config.objects)
        estimator = pe.PoseEstimator(models, robot_filter=robot)
        views = frames(w, rng, args.noise, args.dropout)
        started = time.perf_counter()
        found = estimator.detect(views, w.arm_positions())
        detect_times.append(time.perf_counter() - started)
        detect_rows += evaluate(found, w, models, name)
        nudge(w, rng)
        views = frames(w, rng, args.noise, args.dropout)
        started = time.perf_counter()
        found = estimator.track(views, w.arm_positions())
        track_times.append(time.perf_counter() - started)
        tabletop_track.extend([track_times[-1]] if name == 'tabletop' else [])
        track_rows += evaluate(found, w, models, name)
        w.close()
        print(
            f'scene {i + 1}/{args.scenes} ({name}): detect {1000 * detect_times[-1]:.0f} ms, '
            f'{sum(r["found"] for r in detect_rows[-len(models) :])}/{len(models)} found',
            flush=True,
        )
    result = {
        'command': f'python bench/pose_bench.py --scenes {args.scenes} --noise {args.noise} --dropout {args.dropout}'
        + (f' --scene-names {" ".join(args.scene_names)}' if args.scene_names != list(SCENES) else ''),
        'commit': evaluation.git_commit(ROOT),
        'cpu_cores': os.cpu_count(),
        'detection': summary(detect_rows, detect_times),
        'tracking': summary(track_rows, track_times),
        'tracking_ms_4_objects_median': round(1000 * float(np.median(tabletop_track)), 1) if tabletop_track else None,
        'detection_by_scene': {name: per_scene(detect_rows, name) for name in args.scene_names},
        'rows': {'detect': detect_rows, 'track': track_rows},
    }
    print(json.dumps({k: v for k, v in result.items() if k != 'rows'}, indent=2))
    out = ROOT / 'bench' / 'results' / f'pose-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.write_text(json.dumps(result, indent=2))
    if args.results:
        d, t = result['detection'], result['tracking']
        lines = [
            f'\n## Pose estimation accuracy and speed, {time.strftime("%Y-%m-%d %H:%M")}\n',
            f'Command: `{result["command"]}`  ',
            f'Commit {result["commit"]}. {args.scenes} random layouts of {", ".join(args.scene_names)}; '
            f'fixed cameras fused; {os.cpu_count()} cores, '
            'no GPU. Errors modulo symmetry; a pose more than 5 cm off counts as a wrong identity '
            '(excluded from the error statistics).\n',
            '| mode | objects | detection rate | wrong identity | translation median / p90 [cm] '
            '| rotation median / p90 [deg] | ms per frame median / p90 |',
            '|---|---|---|---|---|---|---|',
        ]
        for label, s in (('detect (global)', d), ('track (warm start)', t)):
            lines.append(
                f'| {label} | {s["objects"]} | {100 * s["detection_rate"]:.1f} % '
                f'| {100 * s["wrong_identity_rate"]:.1f} % | '
                f'{s["translation_cm_median"]:.2f} / {s["translation_cm_p90"]:.2f} '
                f'| {s["rotation_deg_median"]:.2f} / {s["rotation_deg_p90"]:.2f} | '
                f'{s["ms_per_frame_median"]:.0f} / {s["ms_per_frame_p90"]:.0f} |'
            )
        lines.append(
            '\nDetection per scene (objects / missed / more than 5 cm off): '
            + ', '.join(
                f'{k} {v["objects"]}/{v["missed"]}/{v["wrong_identity"]}'
                for k, v in result['detection_by_scene'].items()
            )
            + '.'
        )
        if result['tracking_ms_4_objects_median']:
            lines.append(
                f'\nTracking the tabletop scenes (4 objects): median {result["tracking_ms_4_objects_median"]} ms '
                f'per frame ({1000 / result["tracking_ms_4_objects_median"]:.0f} Hz). The ms columns are per frame.'
            )
        with open(ROOT / 'bench' / 'RESULTS.md', 'a') as f:
            f.write('\n'.join(lines) + '\n')
    print(f'results: {out}')


if __name__ == '__main__':
    main()
