"""A run's report: report.json with every number, report.html with the multi-view images of each
step (candidates coloured by score, red 0 .. green 1), per-dimension scores, the chosen candidate
and timings; PNGs beside it."""

import html
import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def _plain(value):
    """JSON for numpy values in a report (a numpy bool or float from a check), else the usual TypeError."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f'Object of type {type(value).__name__} is not JSON serializable')


def _timing_totals(records):
    totals = {}
    for r in records:
        for k, v in getattr(r, 'timings', {}).items():
            totals[k] = totals.get(k, 0.0) + v
    return {k: round(v, 3) for k, v in totals.items()}


def run_folder(runs_dir):
    """runs/<date-time>-<ms>: a new folder name per run."""
    folder = Path(runs_dir) / time.strftime('%Y%m%d-%H%M%S')
    return folder.with_name(f'{folder.name}-{int(time.time() * 1000) % 1000:03d}')


def write(folder, meta, records):
    """Write report.json, report.html and step PNGs into folder; return the HTML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = []
    for index, r in enumerate(records):
        images = []
        for name, rgb in getattr(r, 'images', []):
            png = f'step{index:03d}_{name}.png'
            Image.fromarray(np.asarray(rgb, np.uint8)).save(folder / png)
            images.append(png)
        data = {k: v for k, v in (asdict(r) if is_dataclass(r) else dict(r)).items() if k != 'images'}
        data['images'] = images
        steps.append(data)
    planning = [
        sum(v for k, v in getattr(r, 'timings', {}).items() if k not in ('execution', 'report_render')) for r in records
    ]
    summary = {
        **meta,
        'steps': steps,
        'timing_totals': _timing_totals(records),
        'planning_s_per_step': {
            'mean': round(float(np.mean(planning)), 3) if planning else None,
            'max': round(float(np.max(planning)), 3) if planning else None,
            'each': [round(float(p), 4) for p in planning],
        },
    }
    (folder / 'report.json').write_text(json.dumps(summary, indent=2, default=_plain))
    (folder / 'report.html').write_text(_html(summary))
    return folder / 'report.html'


def _html(summary):
    e = html.escape
    out = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>twinloop run: {e(summary["instruction"])}</title>',
        '<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;'
        'padding:2px 6px;font-size:13px}img{margin:2px;border:1px solid #999}.chosen{background:#dfd}'
        '</style></head><body>',
        f'<h1>{e(summary["instruction"])}</h1>',
        f'<p><b>Outcome:</b> {e(summary["outcome"])} - {e(summary["reason"])}'
        f'<br><b>Strategy:</b> {e(summary["strategy"])}'
        f'<br><b>Scorer:</b> {e(summary.get("scorer", ""))}<br><b>Elapsed:</b> {summary["elapsed_s"]:.1f} s'
        f'<br><b>Planning time per step:</b> mean {summary["planning_s_per_step"]["mean"]} s, '
        f'max {summary["planning_s_per_step"]["max"]} s</p>',
        f'<p><b>Task parsed by:</b> {e(summary.get("parser", ""))}</p>',
        f'<p><b>Sub-tasks:</b> {e(json.dumps(summary.get("subtasks", [])))}</p>',
        f'<p><b>Constraints:</b> {e(json.dumps(summary.get("constraints", {})))}</p>',
        f'<p><b>Time per MPC stage (all steps):</b> {e(json.dumps(summary["timing_totals"]))}</p>',
    ]
    for s in summary['steps']:
        if 'candidates' not in s:  # an engine's own record: shown as it is
            out.append(f'<pre>{e(json.dumps(s, indent=1, default=_plain))}</pre>')
            continue
        out.append(
            f'<h2>Step {s["step"]}: {e(s["stage"])}</h2><p>chose {e(s["note"])} (score {s["best_score"]:.2f}, '
            f'{e(s["backend"])}); timings {e(json.dumps(s["timings"], default=_plain))}</p>'
        )
        out += [f'<img src="{e(png)}" width="224">' for png in s['images']]
        dims = list(s['candidates'][0]['dimensions']) if s['candidates'] else []
        out.append(
            '<table><tr><th>id</th><th>motion</th><th>total</th>'
            + ''.join(f'<th>{e(d)}</th>' for d in dims)
            + '<th>collisions</th><th>holding</th></tr>'
        )
        for c in sorted(s['candidates'], key=lambda c: -c['total']):
            row = 'class="chosen"' if c['id'] == s['chosen'] else ''
            out.append(
                f'<tr {row}><td>{e(c["id"])}</td><td>{e(c["description"])}</td><td>{c["total"]:.3f}</td>'
                + ''.join(f'<td>{c["dimensions"].get(d, "")}</td>' for d in dims)
                + f'<td>{e(", ".join(c["collisions"]))}</td><td>{e(c["holding"])}</td></tr>'
            )
        out.append('</table>')
    out.append('</body></html>')
    return '\n'.join(out)
