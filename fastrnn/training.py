"""The training loop behind `fastrnn train`: batches, Adam, clipping, logs, progress,
periodic checkpoints and diagnostics. The model computes; this file only orders.

Data order is a pure function of (seed, step): epoch e is the permutation
drawn from default_rng([seed, e]), and step s takes batch s mod (N // B) of
epoch s // (N // B). A resumed run therefore needs only the step count to
see exactly the batches the uninterrupted run would have seen. Dropout masks are a
pure function of (seed, step, layer, row of the batch) too (fastrnn._dropout), so a
resumed run also draws the masks the uninterrupted one would have drawn.

Under MPI (a `fastrnn.distributed.World` of N ranks) every rank draws the same
batches and computes its N-th of the rows of each, with those rows' dropout masks;
the gradients are averaged over the ranks before clipping and Adam, so every rank
takes the step one process would take with the whole batch.
"""

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import diagnostics as diag
from ._stack import parameter_count
from .cells import CELLS
from .checkpoint import save_checkpoint
from .distributed import World
from .optim import clip_grad_norm, scheduled_lr


def memory_needed(config, batch_size, T):
    """{what: bytes} of the largest float32 arrays that training a SequenceClassifier of
    `config` (its config()) with Adam takes, on batches of `batch_size` sequences of T
    steps: below all it takes, and known before any of it is allocated."""
    cell = CELLS[config["cell"]]
    I, H, L = config["input_size"], config["hidden_size"], config["num_layers"]
    D = 2 if config["bidirectional"] else 1
    layer_parameters = parameter_count(cell.G, I, H, L, config["bidirectional"])
    P = layer_parameters + config["num_classes"] * (D * H + 1)
    # What a training forward keeps for BPTT per row and step: each direction's copy of
    # its layer's input (in its workspace), and each direction's y and the cell's record.
    kept = D * (I + (L - 1) * D * H) + L * D * H * (1 + cell.saved_width)
    weight_matrices = layer_parameters - L * D * 2 * cell.G * H   # less its biases
    return {"parameters": 4 * P,
            "their gradients and Adam's two moments": 3 * 4 * P,
            f"BPTT's record of {batch_size} sequences of {T} steps": 4 * batch_size * T * kept,
            "the copy of the weight matrices a training forward runs on": 4 * weight_matrices}


class TrainingDiverged(RuntimeError):
    """The loss of a step was NaN or infinite: training stopped before that step's update."""


class BatchOrder:
    """Indices of the training batch for each step, shuffled per epoch from the seed."""

    def __init__(self, num_examples, batch_size, seed):
        if batch_size > num_examples:
            raise ValueError(f"batch size {batch_size} exceeds the {num_examples} "
                             f"training examples")
        self.batch_size = batch_size
        self.num_examples = num_examples
        self.seed = seed
        self.batches_per_epoch = num_examples // batch_size
        self._epoch = None
        self._permutation = None

    def indices(self, step):
        epoch, batch = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._permutation = rng.permutation(self.num_examples)
            self._epoch = epoch
        start = batch * self.batch_size
        return self._permutation[start:start + self.batch_size]


def _format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """A progress bar on stderr: steps, rate, time left.

    On a terminal the bar redraws in place a few times a second; otherwise
    (a log file, CI) it prints a plain line every `plain_interval` seconds.
    Log lines go to stdout through `log()`, which keeps them off the bar.
    `quiet` prints nothing at all, log lines included (every rank but rank 0).
    """

    def __init__(self, total, start=0, stream=None, plain_interval=30.0, enabled=True,
                 quiet=False):
        self.total = total
        self.start = start
        self.done = start
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and not quiet
        self.quiet = quiet
        self.tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.plain_interval = plain_interval
        self.started = time.perf_counter()
        self._last_draw = None   # the first update always draws
        self._drawn = False

    def _line(self):
        elapsed = time.perf_counter() - self.started
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        fraction = self.done / self.total if self.total else 1.0
        return (f"{self.done}/{self.total} steps ({100 * fraction:3.0f}%)  "
                f"{rate:.2f} steps/s  elapsed {_format_duration(elapsed)}  "
                f"left {_format_duration(left)}"), fraction

    def update(self, done):
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        interval = 0.2 if self.tty else self.plain_interval
        if self._last_draw is not None and now - self._last_draw < interval \
                and done < self.total:
            return
        self._last_draw = now
        text, fraction = self._line()
        if self.tty:
            width = 24
            filled = int(round(width * fraction))
            self.stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (width - filled)}] {text}")
            self._drawn = True
        else:
            self.stream.write(f"train: {text}\n")
        self.stream.flush()

    def _clear(self):
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def log(self, line):
        if self.quiet:
            return
        self._clear()
        print(line, flush=True)
        if self.tty:
            self._last_draw = None   # the bar was cleared: redraw it at the next update

    def close(self):
        self._clear()


@dataclass(frozen=True)
class TrainingConfig:
    """How a run trains: its steps and batches, Adam's learning rate and schedule, the
    gradient clipping, and how often it logs, records diagnostics (on the fixed batch
    given to `train`), writes a checkpoint to `checkpoint_path` (None: never) and checks
    that all ranks hold the same parameters (0: never)."""

    steps: int
    batch_size: int
    seed: int
    lr: float
    lr_schedule: str = "constant"
    clip: Optional[float] = None
    log_every: int = 100
    diagnostics_every: int = 0
    checkpoint_path: Optional[str] = None
    checkpoint_every: int = 0
    check_params_every: int = 0


@dataclass(frozen=True)
class StartingPoint:
    """Where a run starts: step 0 with nothing behind it, or a resumed run's step with
    its log history and diagnostics so far. `train_state` (a dict) goes into every
    periodic checkpoint with the step, the history and the diagnostics."""

    step: int = 0
    history: tuple = ()
    diagnostics: tuple = ()
    train_state: dict = field(default_factory=dict)


def train(model, optimizer, x_train, y_train, config, *, start=StartingPoint(), order=None,
          progress=None, diagnostics_batch=None, world=None):
    """Run optimizer steps start.step .. config.steps - 1; returns a summary dict.

    `order`: the BatchOrder of x_train (default: built from the config's batch size and
    seed); `diagnostics_batch` (x, y): the fixed batch diagnostics are computed on.

    `world` (default: this process alone) trains data-parallel across its ranks;
    the logged loss, accuracy and mean h_T are then the whole batch's, on every
    rank. Which rank writes is the caller's choice: give `checkpoint_path` and
    a loud `progress` to one rank only. `config.check_params_every` N > 0 checks
    every N steps that all ranks hold the same parameters.

    A NaN or infinite loss raises TrainingDiverged before that step's update, so the
    model keeps the weights of the step before and the last checkpoint stays as it is.
    """
    world = world or World()
    steps, batch_size = config.steps, config.batch_size
    order = order or BatchOrder(x_train.shape[0], batch_size, config.seed)
    rows = world.local_rows(batch_size)
    progress = progress or Progress(steps, start.step, enabled=False)
    history = list(start.history)
    records = list(start.diagnostics)
    diagnostics_seconds = 0.0
    window_loss, window_correct, window_count = 0.0, 0, 0
    started = time.perf_counter()
    step = start.step
    loss = float("nan")
    saved_step = None   # of the last periodic checkpoint this run wrote

    def record_diagnostics(at_step):
        nonlocal diagnostics_seconds
        began = time.perf_counter()
        record = diag.diagnose(model, *diagnostics_batch, step=at_step)
        records.append(record)
        diagnostics_seconds += time.perf_counter() - began
        return record

    diagnostics_every = config.diagnostics_every if diagnostics_batch is not None else 0
    if diagnostics_every and start.step == 0:
        record_diagnostics(0)
    while step < steps:
        indices = order.indices(step)[rows]
        x, y = x_train[indices], y_train[indices]
        model.layer.seed_dropout(config.seed, step, first_row=rows.start)
        optimizer.lr = scheduled_lr(config.lr_schedule, config.lr, step, steps)
        loss, grads = model.loss_and_grads(x, y)
        if not math.isfinite(loss):
            # Its gradients would put NaN into every weight for good, and the next
            # checkpoint would hold nothing worth keeping.
            kept = (f"; the checkpoint of step {saved_step}, {config.checkpoint_path}, is kept"
                    if saved_step is not None else "")
            raise TrainingDiverged(f"training diverged at step {step + 1}: the loss is "
                                   f"{loss}; stopped before that step's update{kept}; try a "
                                   f"lower --lr or --clip NORM")
        world.allreduce_grads(grads)
        grad_norm = clip_grad_norm(grads, config.clip) if config.clip else None
        optimizer.step(grads)
        step += 1
        window_loss += loss
        window_correct += int((model.last_predictions == y).sum())
        window_count += 1
        if config.log_every and (step % config.log_every == 0 or step == steps):
            # Each rank's loss and mean h_T are over an equal share of the rows.
            loss_sum, correct, hidden_sum = world.allreduce(
                [window_loss, window_correct, float(model.last_hidden.mean())])
            entry = {
                "step": step,
                "loss": loss_sum / world.size / window_count,
                "batch_accuracy": int(correct) / (window_count * batch_size),
                "lr": optimizer.lr,
                "weight_hh_mean": float(model.layer.weight_hh.mean()),
                "h_T_mean": hidden_sum / world.size,
            }
            if grad_norm is not None:
                entry["grad_norm"] = grad_norm
            history.append(entry)
            progress.log(
                f"step {step:5d}  loss {entry['loss']:.4f}  batch acc "
                f"{entry['batch_accuracy']:.3f}  lr {entry['lr']:.2e}  "
                f"mean W_hh {entry['weight_hh_mean']:+.5f}  mean h_T {entry['h_T_mean']:+.4f}")
            window_loss, window_correct, window_count = 0.0, 0, 0
        if diagnostics_every and (step % diagnostics_every == 0 or step == steps):
            record = record_diagnostics(step)
            norms = record["grad_norm"]
            progress.log(f"step {step:5d}  diagnostics: ||dL/dh_1|| {norms[0]:.3e}  "
                         f"||dL/dh_T|| {norms[-1]:.3e}  "
                         f"saturated {np.mean(record['saturated']):.3f}")
        if config.check_params_every and step % config.check_params_every == 0:
            world.check_parameters_agree(model.parameters(), step)
        if config.checkpoint_path and config.checkpoint_every \
                and step % config.checkpoint_every == 0 and step < steps:
            save_checkpoint(config.checkpoint_path, model, optimizer,
                            dict(start.train_state, step=step, history=history,
                                 diagnostics=records))
            saved_step = step
        progress.update(step)
    # Diagnostics are measurement, not training: their time is not counted.
    seconds = time.perf_counter() - started - diagnostics_seconds
    return {
        "steps_run": step - start.step,
        "train_seconds": seconds,
        "final_loss": float(world.allreduce([loss])[0]) / world.size,
        "history": history,
        "diagnostics": records,
    }
