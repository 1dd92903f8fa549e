"""How a failure is reported, by one process or by every rank of an MPI run.

A message of a USER_ERRORS type is meant for the user as it stands; any other is a bug,
reported with its type. Under mpiexec a failure must not leave the other ranks waiting
in a collective for the rank that left: either every rank learns of it (`agree`, which
raises a RankError alike on every rank) or the failing rank ends them all (`abort`,
MPI_Abort; `ending_every_rank` does that for an exception nothing catches).
"""

import sys
import time
import traceback

# Messages of these types are meant for the user as they stand; others are bugs,
# and their type is named.
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)

# How long a failing rank waits between writing its error and MPI_Abort.
ABORT_GRACE_SECONDS = 0.5


class RankError(RuntimeError):
    """Raised alike on every rank (by `World.agree`, `World.check_parameters_agree`):
    something failed on some ranks, and every rank knows it.

    `failures` maps each rank that failed to its message.
    """

    def __init__(self, failures, size):
        self.failures = dict(failures)
        messages = set(self.failures.values())
        if len(self.failures) == size and len(messages) == 1:
            text = messages.pop()   # the same on every rank: say it once, as one process would
        else:
            text = "; ".join(f"on rank {rank}: {message}"
                             for rank, message in sorted(self.failures.items()))
        super().__init__(text)


def agree(comm, function):
    """function() on every rank of `comm` (None: this process alone); if it raised on
    any rank, a RankError on every rank, saying which failed and why. See World.agree."""
    if comm is None:
        return function()
    try:
        result, failure = function(), None
    except Exception as exc:   # every failure is reported, on every rank
        if isinstance(exc, USER_ERRORS):
            failure = str(exc)
        else:
            traceback.print_exc()
            failure = f"{type(exc).__name__}: {exc}"
        result = None
    failures = comm.allgather(failure)
    if any(message is not None for message in failures):
        raise RankError({rank: message for rank, message in enumerate(failures)
                         if message is not None}, comm.Get_size())
    return result


def abort(comm, code):
    """End every rank of `comm` now with exit code `code` (no clean-up); this process
    alone where `comm` is None."""
    if comm is not None:
        # mpiexec forwards a rank's output on its own schedule, and MPI_Abort
        # ends the ranks at once: without a moment's wait the error this rank
        # just wrote can be lost (seen with MPICH: an empty stderr, 1 run in 3).
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)
        comm.Abort(code)
    raise SystemExit(code)


def ending_every_rank(excepthook, world):
    """An excepthook that, after `excepthook` has printed the error, ends every rank:
    an uncaught exception would otherwise leave the others waiting forever in
    their next collective (`python -m mpi4py script.py` does the same)."""
    def hook(kind, value, tb):
        excepthook(kind, value, tb)
        sys.stderr.write(f"(on rank {world.rank} of {world.size}: ending every rank)\n")
        sys.stderr.flush()
        world.abort(1)
    return hook
