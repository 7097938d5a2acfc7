"""The parallel gripper's facts: widths, the commands that keep them, and the gripper events a
candidate trajectory carries (the values of twinloop_interfaces/CandidateTrajectory.GRIPPER_*)."""

OPEN_WIDTH = 0.08  # [m] the Panda hand fully open
CLOSED_WIDTH = 0.0  # [m] commanded to shut (the fingers stop on what they hold)
KEEP = -1.0  # a gripper command that leaves the fingers as they are
THIN_WALL = 0.002  # [m] fingers closed wider than this hold something (a LIBERO bowl's rim squeezes to 4 mm)
# The Panda hand's body (urdf/meshes/hand.stl): its length lies along the axis the fingers open on
HAND_LENGTH = 0.208  # [m]
HAND_WIDTH = 0.063  # [m]
HAND_UNDERSIDE = 0.031  # [m] the body's underside above the TCP (the TCP is 9.7 cm below the flange)

EVENT_NONE, EVENT_OPEN, EVENT_CLOSE = 0, 1, 2
EVENT_WIDTH = {EVENT_OPEN: OPEN_WIDTH, EVENT_CLOSE: CLOSED_WIDTH}


def closed_on_something(width):
    """Fingers stopped short of open and of shut: the gripper holds something (width [m])."""
    return THIN_WALL < width < OPEN_WIDTH - 0.005


def is_open(width, tolerance=0.01):
    """The fingers are (nearly) fully open."""
    return width > OPEN_WIDTH - tolerance


def open_or_shut(width):
    """A learned policy's regressed opening [m] as the command its demonstrations gave: shut
    (CLOSED_WIDTH) below half open, else open (OPEN_WIDTH); NaN stays NaN (for the gate to refuse)."""
    return width if width != width else (CLOSED_WIDTH if width < OPEN_WIDTH / 2 else OPEN_WIDTH)
