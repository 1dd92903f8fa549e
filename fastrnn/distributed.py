"""Data-parallel training under MPI (through mpi4py): N ranks, one model.

Every rank holds the whole model and reads the same global batch order; rank r
takes rows [r*b, (r+1)*b) of each batch of B rows, b = B / N. A rank's loss is
the mean over its b rows, so scaling its gradients by 1/N and summing them over
the ranks gives the gradient of the mean over all B rows: what one process
computes from the whole batch, up to the order of the sums. Clipping and Adam
then run on every rank on the same numbers, so the parameters stay the same
everywhere.

    from fastrnn import distributed
    rows = distributed.local_rows(len(batch_y))     # this rank's share of a batch
    loss, grads = model.loss_and_grads(batch_x[rows], batch_y[rows])
    distributed.allreduce_grads(grads)              # now the whole batch's mean
    optimizer.step(grads)

A process that no MPI launcher started (see `launched_by_mpi`) never imports
mpi4py: it is a world of one rank, and every collective here returns its input.
How a failure on some ranks reaches them all is fastrnn/_failures.py's: under
mpiexec an exception that nothing catches ends every rank (MPI_Abort) rather
than leave the others waiting for the rank that left.
"""

import os
import sys
import zlib

import numpy as np

from . import _failures
from ._failures import RankError

# Variables an MPI launcher sets in every process it starts: MPICH's and Intel
# MPI's Hydra and Slurm's srun (PMI_*), Open MPI (OMPI_*), PMIx launchers (PMIX_*).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")

def launched_by_mpi():
    """Whether this process was started by mpiexec (or srun, mpirun, ...).

    FASTRNN_MPI=1 says yes for a launcher that sets none of LAUNCHER_VARIABLES;
    FASTRNN_MPI=0 says no (every process then trains on its own).
    """
    forced = os.environ.get("FASTRNN_MPI")
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"FASTRNN_MPI must be 0 or 1, got {forced!r}")
        return forced == "1"
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _world_communicator():
    try:
        import mpi4py
    except ImportError:
        raise RuntimeError("this process was started by an MPI launcher, but mpi4py is not "
                           "installed: pip install 'fastrnn[mpi]' (or set FASTRNN_MPI=0 "
                           "to run each process on its own)") from None
    # Only the main thread calls MPI; a lower thread level costs MPI no locking.
    mpi4py.rc.thread_level = "funneled"
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:
        raise RuntimeError(f"mpi4py could not load an MPI library ({exc}): pip install mpich, "
                           f"or build mpi4py against your cluster's MPI") from None
    return MPI.COMM_WORLD


class World:
    """The ranks that train one model: this process's `rank`, their number `size`,
    and the few collectives data-parallel training needs.

    `comm` is an mpi4py communicator, or None for a process on its own (rank 0
    of 1), where every collective returns its input.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self._flat = None   # the gradient buffer, kept between steps
        self._flat_layout = None

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    # -- splitting the work ------------------------------------------------------

    def local_rows(self, batch_size):
        """The slice of rows of every batch of `batch_size` that this rank computes."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
        if batch_size % self.size:
            smaller = batch_size - batch_size % self.size
            raise ValueError(f"batch size {batch_size} cannot be split evenly across "
                             f"{self.size} ranks: use a multiple of {self.size} (such as "
                             f"{smaller or self.size}) or a number of ranks that divides "
                             f"{batch_size}")
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def share(self, count):
        """This rank's contiguous part of `count` items split as evenly as can be
        (for work such as evaluation, where parts may differ by one)."""
        return slice(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def threads_per_rank(self):
        """Kernel threads for this rank: its CPUs shared among the ranks on its host
        that may run on the same CPUs (all of them, unless the launcher bound each
        rank to its own cores). Collective over the ranks."""
        try:
            mine = frozenset(os.sched_getaffinity(0))
        except AttributeError:   # no affinity masks here (macOS): count the CPUs
            mine = frozenset(range(os.cpu_count() or 1))
        if self.comm is None:
            return len(mine)
        from mpi4py import MPI
        host = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            masks = host.allgather(mine)
        finally:
            host.Free()
        sharing = sum(mask == mine for mask in masks)
        return max(1, len(mine) // sharing)

    # -- the collectives ---------------------------------------------------------

    def allreduce_grads(self, grads, *, average=True):
        """Sum `grads` (a dict of float arrays, all of one dtype) over the ranks, in place,
        with one Allreduce of one flat buffer; returns `grads`.

        average=True scales each rank's gradients by 1/size first: with every rank's
        loss the mean over an equal share of a batch, the result is the gradient of
        the mean over the whole batch.
        """
        if self.comm is None:
            return grads   # a process alone: the sum is its own gradients
        arrays = _gradient_arrays(grads)
        if not arrays:
            return grads
        flat, views = self._flat_views(arrays)
        scale = arrays[0].dtype.type(1.0 / self.size if average else 1.0)
        for array, view in zip(arrays, views):
            np.multiply(array, scale, out=view)
        from mpi4py import MPI
        self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        for array, view in zip(arrays, views):
            array[...] = view
        return grads

    def _flat_views(self, arrays):
        """One contiguous buffer for all of `arrays` and a view of it shaped like each."""
        layout = (arrays[0].dtype, tuple(array.shape for array in arrays))
        if layout != self._flat_layout:
            self._flat = np.empty(sum(array.size for array in arrays), dtype=arrays[0].dtype)
            self._flat_layout = layout
        views, start = [], 0
        for array in arrays:
            views.append(self._flat[start:start + array.size].reshape(array.shape))
            start += array.size
        return self._flat, views

    def allreduce(self, values):
        """The sum over the ranks of a few numbers (float64), as a new array."""
        total = np.array(values, dtype=np.float64)
        if self.comm is not None:
            from mpi4py import MPI
            self.comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        return total

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every rank."""
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def processes(self):
        """(host, pid) of every rank, in rank order. Collective over the ranks."""
        me = (os.uname().nodename if hasattr(os, "uname") else "localhost", os.getpid())
        return [me] if self.comm is None else self.comm.allgather(me)

    def check_parameters_agree(self, params, step=None):
        """Raise a RankError on every rank if any rank's parameters differ from rank 0's.

        Compares a CRC-32 of the bytes of every parameter (a dict of arrays); a
        mismatch means some rank computed other numbers than the rest, for
        example under an MPI whose Allreduce gives the ranks results that differ
        in the last bit. Collective over the ranks.
        """
        checksum = 0
        for key in sorted(params):
            checksum = zlib.crc32(np.ascontiguousarray(params[key]).view(np.uint8), checksum)
        checksums = [checksum] if self.comm is None else self.comm.allgather(checksum)
        when = f" at step {step}" if step is not None else ""
        differing = {rank: f"its parameters differ from rank 0's{when}; the ranks no longer "
                           f"train one model"
                     for rank, value in enumerate(checksums) if value != checksums[0]}
        if differing:
            raise RankError(differing, self.size)

    def agree(self, function):
        """Call function() on every rank and return its result; if it raised on any
        rank, raise a RankError on every rank, saying which failed and why.

        For work such as reading flags and files before training, which can fail
        on some ranks only: the others then stop with the same error instead of
        waiting in a collective for a rank that has left. `function` must not
        itself call collectives. Collective over the ranks.
        """
        return _failures.agree(self.comm, function)

    def abort(self, code):
        """End every rank of the run now with exit code `code` (no clean-up)."""
        _failures.abort(self.comm, code)


def _gradient_arrays(grads):
    if not hasattr(grads, "values"):
        raise TypeError(f"grads must be a dict of arrays, got {type(grads).__name__}")
    arrays = list(grads.values())
    for key, array in grads.items():
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"grads[{key!r}] must be a floating NumPy array (summed in "
                            f"place), got {type(array).__name__}")
        if not array.flags.writeable:
            raise ValueError(f"grads[{key!r}] is read-only; the sum is written into it")
        if array.dtype != arrays[0].dtype:
            raise TypeError(f"grads must share one dtype (one buffer is summed): "
                            f"{key!r} is {array.dtype}, the first is {arrays[0].dtype}")
    return arrays


_world = None


def world():
    """This process's World: every process mpiexec started, else this one alone.

    Importing mpi4py (which initializes MPI) happens here, on the first call,
    and only when an MPI launcher started the process.
    """
    global _world
    if _world is None:
        _world = World(_world_communicator() if launched_by_mpi() else None)
        if _world.size > 1:
            sys.excepthook = _failures.ending_every_rank(sys.excepthook, _world)
    return _world


def current_world():
    """The World made by `world()`, or None where nothing has asked for one yet."""
    return _world


def rank():
    """This process's rank: 0 .. world_size() - 1 (0 alone)."""
    return world().rank


def world_size():
    """How many ranks train together (1 for a process on its own)."""
    return world().size


def local_rows(batch_size):
    """The slice of each batch of `batch_size` rows that this rank computes;
    a size that the number of ranks does not divide is a ValueError."""
    return world().local_rows(batch_size)


def allreduce_grads(grads, *, average=True):
    """Sum (average=True: average) `grads` over the ranks in place; see World.allreduce_grads."""
    return world().allreduce_grads(grads, average=average)


def allreduce(values):
    """The sum over the ranks of a few numbers, as a float64 array."""
    return world().allreduce(values)


def check_parameters_agree(params, step=None):
    """A RankError on every rank if any rank's `params` differ from rank 0's."""
    world().check_parameters_agree(params, step)
