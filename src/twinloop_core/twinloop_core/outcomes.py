"""How a goal ends, and the exceptions that end it early (engine-neutral; the numbers are
twinloop_interfaces/ExecuteInstruction.Result.OUTCOME_*)."""

from enum import IntEnum

WATCHDOG = 'watchdog'  # the safety gate's check of state freshness; refusals read 'safety gate (watchdog): ...'


class Outcome(IntEnum):
    """The outcome of an instruction goal."""

    SUCCEEDED = 0
    REJECTED = 1  # the goal was invalid or could not be grounded
    FAILED = 2  # ran but did not reach the goal within its limits
    CANCELED = 3
    ERROR = 4  # a component failed (perception, twin, scorer, execution)


class GoalEnded(Exception):
    """The goal ends now with this outcome and reason (raised by ports and engines)."""

    def __init__(self, outcome, reason):
        super().__init__(reason)
        self.outcome, self.reason = Outcome(outcome), reason


class Canceled(GoalEnded):
    """The user canceled the goal; whatever was moving holds."""

    def __init__(self, reason='canceled: the arm holds its position'):
        super().__init__(Outcome.CANCELED, reason)


class ExecutionFailed(Exception):
    """A motion was refused by the safety gate or stopped on the arm. refused: the failing segment was
    refused before it started (the arm stands where the segments before it left it); before_motion:
    refused before anything moved. Either way an engine may try another motion, unless the refusal is
    about the state every motion starts from (`stale_state`)."""

    def __init__(self, reason, before_motion=False, refused=None):
        super().__init__(reason)
        self.before_motion = before_motion
        self.refused = before_motion if refused is None else refused

    @property
    def stale_state(self):
        """The gate's watchdog refused (stale joint states or object poses): any other motion would be too."""
        return f'safety gate ({WATCHDOG})' in str(self)
