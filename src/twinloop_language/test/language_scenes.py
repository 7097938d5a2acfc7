"""Scenes for the language tests (ids, labels, positions and sizes as the perception reports them)."""

import os

from twinloop_language.scene import Scene

ROOT = os.environ.get('TWINLOOP_ROOT', os.path.join(os.path.dirname(__file__), '..', '..', '..'))
CONFIG = os.path.join(ROOT, 'config')


def scene(objects):
    """A Scene from (id, label, (x, y), size) rows, everything on the table."""
    return Scene(
        {oid: label for oid, label, _, _ in objects},
        {oid: ((x, y, 0.0), (1.0, 0.0, 0.0, 0.0), tuple(size)) for oid, _, (x, y), size in objects},
    )


TABLETOP = scene(
    [
        ('red_cube', 'red cube', (0.50, 0.12), (0.05, 0.05, 0.05)),
        ('blue_cube', 'blue cube', (0.42, -0.15), (0.04, 0.04, 0.04)),
        ('green_block', 'green block', (0.62, -0.02), (0.08, 0.04, 0.04)),
        ('bowl', 'bowl', (0.55, -0.30), (0.15, 0.15, 0.05)),
    ]
)
POURING = scene(
    [
        ('cup', 'cup', (0.45, 0.15), (0.062, 0.062, 0.09)),
        ('bowl', 'bowl', (0.55, -0.25), (0.16, 0.16, 0.05)),
    ]
)
SORTING = scene(
    [
        ('recycling_bin', 'blue recycling bin', (0.45, -0.38), (0.18, 0.18, 0.12)),
        ('compost_bin', 'green compost bin', (0.66, -0.38), (0.18, 0.18, 0.12)),
        ('trash_bin', 'black trash bin', (0.66, 0.38), (0.18, 0.18, 0.12)),
        ('can', 'soda can', (0.50, 0.10), (0.06, 0.06, 0.08)),
        ('banana', 'banana peel', (0.60, 0.00), (0.10, 0.03, 0.03)),
        ('wrapper', 'crumpled wrapper', (0.42, 0.20), (0.05, 0.04, 0.03)),
    ]
)
LIBERO_SPATIAL = scene(
    [
        ('bowl_1', 'akita black bowl', (0.60, 0.20), (0.12, 0.12, 0.05)),
        ('bowl_2', 'akita black bowl', (0.47, 0.32), (0.12, 0.12, 0.05)),
        ('plate_1', 'plate', (0.71, 0.21), (0.18, 0.18, 0.02)),
        ('ramekin_1', 'glazed rim porcelain ramekin', (0.46, 0.19), (0.08, 0.08, 0.04)),
        ('cookies_1', 'cookies', (0.72, 0.03), (0.10, 0.06, 0.04)),
    ]
)
SLIPPERS = scene(  # the left slipper lies right of the right one: labels, not positions, name them
    [
        ('left_slipper', 'left slipper', (0.45, -0.20), (0.2, 0.07, 0.05)),
        ('right_slipper', 'right slipper', (0.55, 0.25), (0.2, 0.07, 0.05)),
    ]
)
SHOE_RACK = scene(  # IKER's three-stage scene with the left shoe unseen: no other object may stand in for it
    [
        ('shoe_box', 'shoe box', (0.72, 0.0), (0.2, 0.3, 0.1)),
        ('right_shoe', 'right shoe', (0.40, 0.2), (0.18, 0.07, 0.06)),
        ('rack', 'shoe rack', (0.72, 0.0), (0.26, 0.6, 0.12)),
    ]
)
SHELF = scene(  # IKER's Book Reorient scene
    [
        ('book', 'blue book', (0.40, 0.15), (0.16, 0.07, 0.03)),
        ('shelf', 'shelf', (0.66, -0.05), (0.24, 0.5, 0.15)),
    ]
)
