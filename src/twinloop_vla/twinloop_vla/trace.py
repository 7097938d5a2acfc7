"""What a policy saw and did on the robot, chunk by chunk, for looking at afterwards.

The vla_policy node's `trace_dir` parameter (empty: off) hands run_policy a ChunkTrace: every
inferred chunk is written to <trace_dir>/<stream id>/chunk_NNN.npz with the observation (views as
the node received them, the policy state, the frame stamp), the robot clock when the chunk was
ready, the raw actions, and - when it was sent - the stream points (times from the splice, positions)
and the splice time. Files are written on a thread of their own, off the control loop's timing.
`python -m twinloop_vla.trace DIR` reads one goal's folder (or the newest goal under a trace_dir) and
prints, per chunk: the frame's age when the chunk was ready, how far the
first target lies from the observed joints, how far the observed joints lag what the stream commanded
at the frame's stamp, and how much the chunk disagrees with the one before at
the same robot times (targets lie at stamp + (k + 1) control_period); `--sheet PNG` draws every n-th
observation's views in rows with those figures.

    . ./twinloop_env.sh && python -m twinloop_vla.trace /tmp/vla_trace --sheet /tmp/sheet.png
"""

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from twinloop_vla.blending import ARM_DOF


class ChunkTrace:
    """Writes one goal's chunks under root/<stream id>/ (see the module docstring)."""

    def __init__(self, root, control_period):
        self.root, self.control_period = Path(root), control_period
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix='chunk_trace')
        self._pending = []

    def chunk(self, stream_id, index, observation, ready_clock, actions, sent=None, commanded=None):
        """One inferred chunk; sent: (times from the splice, positions, splice stream time) or None;
        commanded: the arm position the stream commanded at the frame's stamp (None: the arm rested)."""
        folder = self.root / stream_id
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {  # copies: the writer thread must not see later changes
            'images': np.array(observation.images),
            'state': np.array(observation.state, np.float32),
            'stamp': np.float64(observation.stamp),
            'ready_clock': np.float64(ready_clock),
            'actions': np.array(actions, np.float32),
            'control_period': np.float64(self.control_period),
        }
        if commanded is not None:
            arrays['commanded'] = np.array(commanded, float)
        if sent is not None:
            arrays.update(sent_times=np.array(sent[0]), sent_positions=np.array(sent[1]), splice=sent[2])
        self._pending.append(self._writer.submit(np.savez, folder / f'chunk_{index:03d}.npz', **arrays))

    def flush(self):
        """Waits until every chunk handed over so far is on disk; raises the first write error."""
        pending, self._pending = self._pending, []
        for write in pending:
            write.result()


def load_goal(folder):
    """[dict of arrays] of one goal's chunks, in order."""
    return [dict(np.load(path)) for path in sorted(Path(folder).glob('chunk_*.npz'))]


def goal_folder(path):
    """path itself when it holds chunks, else its newest sub-folder that does."""
    path = Path(path)
    if any(path.glob('chunk_*.npz')):
        return path
    goals = [p for p in path.iterdir() if p.is_dir() and any(p.glob('chunk_*.npz'))]
    if not goals:
        raise FileNotFoundError(f'{path}: no traced chunks (chunk_*.npz) in it or its sub-folders')
    return max(goals, key=lambda p: p.stat().st_mtime)


def summary(chunks):
    """Per chunk: age [s] of its frame when it was ready, |first target - observed joints| (max over
    the arm joints) [rad], how far the observed joints lag the commanded ones at the frame's stamp [rad]
    (nan when the arm rested), its largest disagreement with the chunk before at the robot times both
    cover [rad] (nan for the first and where they do not overlap), and whether it was sent."""
    rows, before = [], None
    for chunk in chunks:
        dt, targets = float(chunk['control_period']), chunk['actions'][:, :ARM_DOF]
        times = float(chunk['stamp']) + dt * np.arange(1, len(targets) + 1)
        disagreement = np.nan
        if before is not None:
            inside = (times >= before[0][0]) & (times <= before[0][-1])
            if inside.any():
                earlier = np.stack([np.interp(times[inside], before[0], before[1][:, j]) for j in range(ARM_DOF)], 1)
                disagreement = float(np.abs(earlier - targets[inside]).max())
        rows.append(
            {
                'age': float(chunk['ready_clock'] - chunk['stamp']),
                'first_step': float(np.abs(targets[0] - chunk['state'][:ARM_DOF]).max()),
                'lag': float(np.abs(chunk['commanded'] - chunk['state'][:ARM_DOF]).max())
                if 'commanded' in chunk
                else np.nan,
                'disagreement': disagreement,
                'sent': 'sent_times' in chunk,
            }
        )
        before = times, targets
    return rows


def contact_sheet(chunks, rows, every=1, height=120):
    """Every `every`-th chunk's views side by side, one row each, captioned with its summary row."""
    strips = []
    for index in range(0, len(chunks), every):
        views = [Image.fromarray(view) for view in chunks[index]['images']]
        views = [v.resize((max(1, round(v.width * height / v.height)), height)) for v in views]
        strip = Image.new('RGB', (sum(v.width for v in views), height + 14), 'white')
        x = 0
        for view in views:
            strip.paste(view, (x, 14))
            x += view.width
        row = rows[index]
        ImageDraw.Draw(strip).text(
            (2, 1),
            f'chunk {index}: frame age {row["age"]:.2f} s, first step {row["first_step"]:.3f} rad, '
            f'lag {row["lag"]:.3f} rad, '
            f'vs previous {row["disagreement"]:.3f} rad{"" if row["sent"] else ", not sent"}',
            fill='black',
        )
        strips.append(strip)
    sheet = Image.new('RGB', (max(s.width for s in strips), sum(s.height for s in strips)), 'white')
    y = 0
    for strip in strips:
        sheet.paste(strip, (0, y))
        y += strip.height
    return sheet


def main(argv=None):
    """Print one goal's summary; optionally draw its contact sheet."""
    parser = argparse.ArgumentParser(description="Summarise a traced RunPolicy goal (vla_policy's trace_dir)")
    parser.add_argument('path', help='a goal folder, or a trace_dir (its newest goal)')
    parser.add_argument('--sheet', help='write a contact sheet PNG here')
    parser.add_argument('--every', type=int, default=1, help='every n-th chunk on the sheet')
    args = parser.parse_args(argv)
    folder = goal_folder(args.path)
    chunks = load_goal(folder)
    rows = summary(chunks)
    print(f'{folder}: {len(chunks)} chunks, {sum(r["sent"] for r in rows)} sent')
    for index, row in enumerate(rows):
        print(
            f'{index:3d}  age {row["age"]:.2f} s  first step {row["first_step"]:.3f} rad  lag {row["lag"]:.3f} rad  '
            f'vs previous {row["disagreement"]:.3f} rad  {"sent" if row["sent"] else "not sent"}'
        )
    if args.sheet:
        contact_sheet(chunks, rows, args.every).save(args.sheet)
        print(f'sheet: {args.sheet}')


if __name__ == '__main__':
    main()
