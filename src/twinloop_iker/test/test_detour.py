"""The via point of a push whose straight way crosses another object (the keypoint twin knows only the
pushed one): footprints swept along the way, the shortest clear detour around what blocks it."""

import math

import numpy as np

from twinloop_iker.detour import clear_at, corners, overlap, via_point, way_is_clear

BOOK = (0.2, 0.13)
LOW, HIGH = (0.15, -0.55), (0.9, 0.55)


def test_rectangles_overlap_only_where_no_axis_separates_them():
    a = corners((0.0, 0.0), 0.0, (0.2, 0.1))
    assert overlap(a, corners((0.15, 0.0), 0.0, (0.2, 0.1)))
    assert not overlap(a, corners((0.25, 0.0), 0.0, (0.2, 0.1)))
    assert not overlap(a, corners((0.16, 0.11), math.pi / 4, (0.1, 0.1)))  # a diamond beyond the corner
    assert overlap(a, corners((0.12, 0.08), math.pi / 4, (0.1, 0.1)))


def test_a_clear_way_needs_no_via_point():
    obstacles = [((0.45, 0.3), 0.0, BOOK)]
    assert way_is_clear((0.6, -0.2), (0.45, 0.05), (0.0, 0.0), BOOK, obstacles, 0.01)
    assert via_point((0.6, -0.2), (0.45, 0.05), (0.0, 0.0), BOOK, obstacles, 0.01, LOW, HIGH) is None


def test_a_way_across_another_book_goes_around_it():
    """Held-out layout 1006 through ROS: the red book's spot lies beyond the green one, the straight push
    shoved the green book away."""
    start, end, green = (0.62, -0.28), (0.45, 0.31), ((0.45, 0.07), 0.0, BOOK)
    assert not way_is_clear(start, end, (-0.22, 0.0), BOOK, [green], 0.01)
    via = via_point(start, end, (-0.22, 0.0), BOOK, [green], 0.01, LOW, HIGH)
    assert via is not None and np.all(via >= LOW) and np.all(via <= HIGH)
    assert clear_at(via, 0.0, BOOK, [green], 0.01) and not clear_at((0.45, 0.12), 0.0, BOOK, [green], 0.01)
    assert way_is_clear(start, via, (-0.22, 0.0), BOOK, [green], 0.01)  # turning to the target's yaw on the way
    assert way_is_clear(via, end, (0.0, 0.0), BOOK, [green], 0.01)
    straight = np.linalg.norm(np.subtract(end, start))
    assert np.linalg.norm(via - start) + np.linalg.norm(end - via) < 2 * straight  # a detour, not a tour


def test_no_via_point_inside_the_workspace_means_straight_on():
    start, end, wall = (0.3, 0.0), (0.7, 0.0), ((0.5, 0.0), 0.0, (0.1, 1.2))  # blocked across the whole table
    assert via_point(start, end, (0.0, 0.0), BOOK, [wall], 0.01, LOW, HIGH) is None
