"""Whether sub-tasks are done, judged on object states {id: (position, quat wxyz, size xyz)}:
picked objects raised, placed ones inside their destination's footprint. Used on perceived
state by the orchestrator and on ground truth by evaluations."""

from types import SimpleNamespace

import numpy as np


def judge(subtasks, before, after):
    """(done, detail) for every sub-task (SubTasks or their dicts) between two object states."""
    notes = []
    for s in (SimpleNamespace(**t) if isinstance(t, dict) else t for t in subtasks):
        (p0, _, _), (p1, _, _) = before[s.object_id], after[s.object_id]
        if s.action == 'pick':
            ok = p1[2] - p0[2] > 0.05
            notes.append(f'{s.object_id} raised {100 * (p1[2] - p0[2]):.1f} cm')
        else:
            d, _, size = after[s.destination_id]
            horizontal = float(np.hypot(p1[0] - d[0], p1[1] - d[1]))
            ok = horizontal < max(size[0], size[1]) / 2 and p1[2] < d[2] + size[2] + 0.05
            notes.append(f'{s.object_id} {100 * horizontal:.1f} cm from {s.destination_id}')
        if not ok:
            return False, 'not done: ' + '; '.join(notes)
    return True, 'done: ' + '; '.join(notes)
