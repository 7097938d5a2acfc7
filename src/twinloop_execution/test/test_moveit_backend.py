"""The MoveIt backend, where moveit_py exists (a ROS 2 workstation); skipped with the reason here."""

import pytest

from twinloop_execution import moveit_backend


def test_reports_why_unavailable_or_constructs():
    if not moveit_backend.available():
        assert 'moveit_py' in moveit_backend.why_unavailable()
        pytest.skip(moveit_backend.why_unavailable())
    executor = moveit_backend.MoveItPlanner()
    assert executor.component is not None
