"""`fastrnn train` with a probe in its training step, for the tests to run under mpiexec:

    python mpi_train_probe.py raise|kill RANK STEP [train flags...]
    python mpi_train_probe.py labels STEPS [train flags...]

raise, kill: at its STEP-th training step (counting from 1) rank RANK raises a
RuntimeError or sends itself SIGKILL; every other rank trains on.
labels: for each of the first STEPS steps every rank prints the labels of the
rows it computes, as "rank R step S labels 3,1,4".
"""

import os
import signal
import sys

from fastrnn import distributed
from fastrnn.cli import main
from fastrnn.model import SequenceClassifier

how = sys.argv[1]
if how == "labels":
    faulty_rank, probe_steps, flags = None, int(sys.argv[2]), sys.argv[3:]
else:
    faulty_rank, probe_steps, flags = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
real_loss_and_grads = SequenceClassifier.loss_and_grads
steps_taken = 0


def probed_loss_and_grads(self, x, y):
    global steps_taken
    steps_taken += 1
    rank = distributed.rank()
    if how == "labels" and steps_taken <= probe_steps:
        print(f"rank {rank} step {steps_taken} labels {','.join(map(str, y))}", flush=True)
    elif steps_taken == probe_steps and rank == faulty_rank:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {probe_steps}")
    return real_loss_and_grads(self, x, y)


SequenceClassifier.loss_and_grads = probed_loss_and_grads
sys.exit(main(["train", *flags]))
