"""Data-parallel training in your own loop with fastrnn.distributed.

    python examples/distributed_training.py                 # one process
    mpiexec -n 2 python examples/distributed_training.py    # two ranks, the same model

Under mpiexec an exception that nothing catches on one rank ends every rank
(fastrnn.distributed sets that up when it finds more than one rank).

The task: tell whether a noisy sequence's first feature sums to more than zero.
Every rank builds the same data and the same model (same seed), reads the same
batches, computes its own rows of each, and averages the gradients with the
other ranks before clipping and Adam: the model trains as it would in one
process, and rank 0 alone prints.
"""

import numpy as np

import fastrnn
from fastrnn import distributed
from fastrnn.optim import Adam, clip_grad_norm

STEPS, BATCH, T, I, H = 60, 32, 12, 4, 24

rng = np.random.default_rng(0)   # the same data on every rank
x = rng.standard_normal((1024, T, I)).astype(np.float32)
y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)

model = fastrnn.SequenceClassifier(I, H, 2, seed=0)
optimizer = Adam(model.parameters(), lr=0.01)
rows = distributed.local_rows(BATCH)   # this rank's rows of every batch
say = print if distributed.rank() == 0 else (lambda *args: None)
say(f"{distributed.world_size()} rank(s), {rows.stop - rows.start} rows each of every "
    f"batch of {BATCH}")

for step in range(1, STEPS + 1):
    start = (step - 1) * BATCH % len(y)
    batch_x, batch_y = x[start:start + BATCH], y[start:start + BATCH]
    loss, grads = model.loss_and_grads(batch_x[rows], batch_y[rows])
    distributed.allreduce_grads(grads)   # the mean over the whole batch, on every rank
    clip_grad_norm(grads, 1.0)
    optimizer.step(grads)
    if step % 20 == 0:
        # Each rank's loss is the mean of its rows: their mean is the batch's.
        batch_loss = distributed.allreduce([loss])[0] / distributed.world_size()
        say(f"step {step}  loss {batch_loss:.6f}")

distributed.check_parameters_agree(model.parameters())   # every rank holds one model
accuracy = np.mean(model.predict(x) == y)
say(f"train accuracy {accuracy:.4f}")
