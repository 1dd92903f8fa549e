"""Checks of fastrnn.distributed across real ranks; the tests run it under mpiexec.

Prints "rank R ok" on each rank that passed them all; a failed check on any
rank ends every rank (MPI_Abort), so none waits for it in a collective.
"""

import os
import sys
import traceback

import numpy as np

from fastrnn import distributed


def check():
    world = distributed.world()
    rank, size = distributed.rank(), distributed.world_size()
    assert (rank, size) == (world.rank, world.size) and size >= 2

    # Rank r holds gradients r + 1: their mean is (size + 1) / 2, their sum size (size + 1) / 2.
    grads = {"w": np.full((5, 3), rank + 1.0, np.float32),
             "b": np.full(7, rank + 1.0, np.float32),
             "strided": np.full((4, 6), rank + 1.0, np.float32)[:, ::2]}
    arrays = dict(grads)
    assert distributed.allreduce_grads(grads) is grads
    for key, array in grads.items():
        assert array is arrays[key], key   # summed in place
        np.testing.assert_allclose(array, (size + 1) / 2, rtol=1e-6, err_msg=key)
    doubles = {"w": np.full(3, rank + 1.0)}
    distributed.allreduce_grads(doubles, average=False)
    np.testing.assert_array_equal(doubles["w"], size * (size + 1) / 2)
    assert doubles["w"].dtype == np.float64

    np.testing.assert_array_equal(distributed.allreduce([1.0, rank]),
                                  [size, size * (size - 1) / 2])

    rows = distributed.local_rows(6 * size)
    assert (rows.start, rows.stop) == (6 * rank, 6 * rank + 6)
    try:
        distributed.local_rows(6 * size + 1)
    except ValueError as exc:
        assert f"across {size} ranks" in str(exc)
    else:
        raise AssertionError("a batch the ranks cannot share was accepted")

    params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    distributed.check_parameters_agree(params)
    params["w"][1, 2] += rank   # rank 0 unchanged, every other rank off
    try:
        distributed.check_parameters_agree(params, step=7)
    except distributed.RankError as exc:
        assert sorted(exc.failures) == list(range(1, size)), exc.failures
        assert "at step 7" in str(exc)
    else:
        raise AssertionError("differing parameters went unnoticed")

    cpus = len(os.sched_getaffinity(0))
    assert world.threads_per_rank() == max(1, cpus // size), world.threads_per_rank()
    assert world.broadcast(f"from {rank}") == "from 0"
    assert [pid for _, pid in world.processes()][rank] == os.getpid()


try:
    check()
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    distributed.world().abort(1)
print(f"rank {distributed.rank()} ok", flush=True)
