"""The `fastrnn` command line: train, eval, export, plot-diagnostics, info."""

import argparse
import dataclasses
import json
import os
import sys
import traceback

from ._argtypes import (_flag_type, check_dropout, check_int, check_number, finite_float,
                        non_negative_int, positive_float, positive_int)
from ._config import ADDED_IN_0_2, RECURRENT_INITS, check_bidirectional, check_recurrent_init
from .cells import CELLS, check_cell
from .optim import SCHEDULES

dropout_probability = _flag_type(float, check_dropout, "a number in [0, 1)")

# The original experiment's settings; `fastrnn train` without flags runs it.
ORIGIN_DEFAULTS = {
    "cell": "lstm",
    "hidden": 128,
    "layers": 1,
    "bidirectional": False,
    "dropout": 0.0,
    "batch_size": 100,
    "lr": 0.01,
    "lr_schedule": "constant",
    "clip": None,
    "forget_bias": 1.0,
    "recurrent_init": "uniform",
    "seed": 0,
    "train_limit": None,
}
DEFAULT_STEPS = 5000
# Settings that 0.1's checkpoints lack, with the value they had there: the model
# configuration's (ADDED_IN_0_2) under the flags' names.
SETTINGS_ADDED_IN_0_2 = {"layers" if key == "num_layers" else key: value
                         for key, value in ADDED_IN_0_2.items()}


# -- fastrnn info ----------------------------------------------------------------------


def _cmd_info(args):
    from . import info
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        print(f"{key:<{width}}  {value}")
    return 0


# -- shared pieces -------------------------------------------------------------------------


def _load_data(args):
    from .datasets import load_mnist
    x_train, y_train, x_test, y_test = load_mnist(args.data, download=not args.no_download)
    if getattr(args, "test_limit", None):
        x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    return x_train, y_train, x_test, y_test


def _write_json(path, payload):
    from .diagnostics import write_json
    write_json(path, payload)


def _set_threads(args, world):
    from . import set_num_threads
    # threads_per_rank is collective: every rank takes part, whatever its own flags say.
    shared = world.threads_per_rank() if world.size > 1 else None
    if args.threads is not None:
        set_num_threads(args.threads)
    elif shared is not None and not os.environ.get("FASTRNN_NUM_THREADS"):
        set_num_threads(shared)   # the ranks on a host share its CPUs


def _stack_words(layers, bidirectional, dropout):
    """" x2 layers bidirectional dropout 0.1", or "" for one forward layer."""
    return "".join([f" x{layers} layers" if layers > 1 else "",
                    " bidirectional" if bidirectional else "",
                    f" dropout {dropout}" if dropout else ""])


def _silent(*args, **kwargs):
    """print() for the ranks that do not report."""


def _read_on_rank0(world, read):
    """read() on rank 0 alone (the one that writes checkpoints), its result on every rank."""
    return world.broadcast(world.agree(lambda: read() if world.rank == 0 else None))


def _evaluate(model, x, y, world):
    """(test loss, test accuracy) over all of x, y: each rank evaluates its
    contiguous share and the sums are added up over the ranks."""
    share = world.share(len(y))
    count = share.stop - share.start
    loss_sum, correct = 0.0, 0
    if count:
        loss, accuracy = model.evaluate(x[share], y[share])
        loss_sum, correct = loss * count, round(accuracy * count)
    loss_sum, correct = world.allreduce([loss_sum, correct])
    return loss_sum / len(y), int(correct) / len(y)


# -- fastrnn train -----------------------------------------------------------------------


def _settings(args, checkpoint):
    """The training settings: flags, else the resumed checkpoint's, else the origin's.

    A flag that contradicts the checkpoint being resumed is an error: the run
    would no longer be the one that was interrupted.
    """
    saved = checkpoint.train_state["settings"] if checkpoint is not None else {}
    settings = {}
    for key, default in ORIGIN_DEFAULTS.items():
        given = getattr(args, key)
        if checkpoint is not None:
            if given is not None and given != saved.get(key):
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"{flag} {given} contradicts the checkpoint being resumed "
                                 f"({saved.get(key)}); leave it out to continue that run")
            settings[key] = saved.get(key, default)
        else:
            settings[key] = default if given is None else given
    return settings


def _valid_settings(settings):
    """Whether settings read from a checkpoint are ones the flags could have given."""
    if not isinstance(settings, dict) or set(settings) != set(ORIGIN_DEFAULTS):
        return False
    try:
        check_cell(settings["cell"])
        check_recurrent_init(settings["recurrent_init"])
        check_number(settings["forget_bias"], "forget_bias")
        check_number(settings["lr"], "lr", positive=True)
        check_int(settings["hidden"], "hidden")
        check_int(settings["layers"], "layers")
        check_bidirectional(settings["bidirectional"])
        check_dropout(settings["dropout"])
        check_int(settings["batch_size"], "batch_size")
        check_int(settings["seed"], "seed", low=0)
        if settings["clip"] is not None:
            check_number(settings["clip"], "clip", positive=True)
        if settings["train_limit"] is not None:
            check_int(settings["train_limit"], "train_limit")
    except (TypeError, ValueError):
        return False
    return settings["lr_schedule"] in SCHEDULES


def _read_resume(path):
    from .checkpoint import read_checkpoint
    checkpoint = read_checkpoint(path)
    state = checkpoint.train_state
    if checkpoint.optimizer_state is None or not state or "settings" not in state:
        raise ValueError(f"{path}: not a training checkpoint (no optimizer state or training "
                         f"progress); write one with `fastrnn train --save PATH`")
    if isinstance(state["settings"], dict):   # a 0.1 run: one layer, one direction
        state["settings"] = {**SETTINGS_ADDED_IN_0_2, **state["settings"]}
    step, steps = state.get("step"), state.get("steps")
    if not _valid_settings(state["settings"]) or not isinstance(step, int) \
            or not isinstance(steps, int) or not 0 <= step <= steps \
            or step != checkpoint.optimizer_state["step"]:
        raise ValueError(f"{path}: malformed training progress in checkpoint")
    return checkpoint


@dataclasses.dataclass
class _Run:
    """A training run as `fastrnn train` prepares it: its settings, data, batch order,
    model and optimizer, the step it starts at and the resumed run's training state."""

    settings: dict
    steps: int
    x_train: object
    y_train: object
    x_test: object
    y_test: object
    order: object
    model: object
    optimizer: object
    start: int
    previous: dict


def _prepare_training(args, checkpoint, world):
    """Settings, data, model and optimizer of a run: everything that can fail on
    bad flags or files, done before the first step."""
    from .model import SequenceClassifier
    from .optim import Adam
    from .training import BatchOrder

    settings = _settings(args, checkpoint)
    steps = args.steps if args.steps is not None else (
        checkpoint.train_state.get("steps", DEFAULT_STEPS) if checkpoint else DEFAULT_STEPS)
    world.local_rows(settings["batch_size"])   # refuses a batch the ranks cannot share
    if world.rank == 0:
        for path in (args.save, args.metrics_out):
            if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise ValueError(f"the directory for {path} does not exist")
        if args.diagnostics:
            os.makedirs(args.diagnostics, exist_ok=True)

    x_train, y_train, x_test, y_test = _load_data(args)
    if settings["train_limit"]:
        x_train, y_train = x_train[:settings["train_limit"]], y_train[:settings["train_limit"]]
    order = BatchOrder(x_train.shape[0], settings["batch_size"], settings["seed"])

    if checkpoint is not None:
        model = SequenceClassifier.from_checkpoint(checkpoint, backend=args.backend)
        optimizer = Adam(model.parameters())
        optimizer.load_state_dict(checkpoint.optimizer_state)
        start_step = checkpoint.train_state["step"]
        previous = checkpoint.train_state
        if start_step > steps:
            raise ValueError(f"the checkpoint is at step {start_step}, beyond --steps {steps}")
    else:
        model = SequenceClassifier(x_train.shape[2], settings["hidden"], 10,
                                   cell=settings["cell"], num_layers=settings["layers"],
                                   bidirectional=settings["bidirectional"],
                                   dropout=settings["dropout"],
                                   forget_bias=settings["forget_bias"],
                                   recurrent_init=settings["recurrent_init"],
                                   backend=args.backend, seed=settings["seed"])
        optimizer = Adam(model.parameters(), lr=settings["lr"])
        start_step, previous = 0, {}
    return _Run(settings, steps, x_train, y_train, x_test, y_test, order, model, optimizer,
                start_step, previous)


def _say_what_runs(run, world, say):
    """The banner: what is trained, how, where; under mpiexec, which pid is which rank."""
    from . import get_num_threads
    settings = run.settings
    ranks = (f", ranks {world.size} ({settings['batch_size'] // world.size} rows each)"
             if world.size > 1 else "")
    stack = _stack_words(settings["layers"], settings["bidirectional"], settings["dropout"])
    say(f"fastrnn train: {settings['cell'].upper()} H={settings['hidden']}{stack} on "
        f"{run.x_train.shape[0]} images, {run.steps} steps of {settings['batch_size']}, "
        f"Adam lr {settings['lr']} ({settings['lr_schedule']}), clip {settings['clip']}, "
        f"seed {settings['seed']}, backend {run.model.backend}, threads {get_num_threads()}"
        + ranks + (f", resuming at step {run.start}" if run.start else ""), flush=True)
    if world.size > 1:
        # mpiexec names a rank that dies by its pid: this line maps pids to ranks.
        say("ranks: " + ", ".join(f"{rank} = pid {pid} on {host}"
                                  for rank, (host, pid) in enumerate(world.processes())),
            flush=True)


def _train_steps(args, run, world):
    """The steps of the run (training.train); its summary."""
    from .training import Progress, StartingPoint, TrainingConfig, train
    settings = run.settings
    config = TrainingConfig(
        steps=run.steps, batch_size=settings["batch_size"], seed=settings["seed"],
        lr=settings["lr"], lr_schedule=settings["lr_schedule"], clip=settings["clip"],
        log_every=args.log_every,
        diagnostics_every=args.diagnostics_every if args.diagnostics else 0,
        checkpoint_path=args.save if world.rank == 0 else None,
        checkpoint_every=args.save_every, check_params_every=args.check_params_every)
    start = StartingPoint(run.start, tuple(run.previous.get("history") or ()),
                          tuple(run.previous.get("diagnostics") or ()),
                          {"settings": settings, "steps": run.steps})
    diagnostics_batch = (run.x_train[:100], run.y_train[:100]) if args.diagnostics else None
    progress = Progress(run.steps, run.start, enabled=not args.no_progress,
                        quiet=world.rank != 0)
    try:
        return train(run.model, run.optimizer, run.x_train, run.y_train, config, start=start,
                     order=run.order, progress=progress, diagnostics_batch=diagnostics_batch,
                     world=world)
    finally:
        progress.close()


def _save_trained(path, run, summary, total_seconds):
    """The final checkpoint, which `fastrnn train --resume` continues from."""
    from .checkpoint import save_checkpoint
    state = {"settings": run.settings, "steps": run.steps, "step": run.steps,
             "history": summary["history"], "diagnostics": summary["diagnostics"],
             "train_seconds_total": total_seconds}
    save_checkpoint(path, run.model, run.optimizer, state)
    print(f"saved {path}")


def _train_metrics(run, summary, test_loss, test_accuracy, total_seconds, world):
    """What `--metrics-out` writes of a run."""
    from . import get_num_threads
    seconds = summary["train_seconds"]
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "test_examples": int(len(run.y_test)),
        "steps": run.steps,
        "steps_this_run": summary["steps_run"],
        "resumed_from_step": run.start,
        "train_seconds": seconds,
        "train_seconds_total": total_seconds,
        "steps_per_second": summary["steps_run"] / seconds if seconds > 0 else None,
        "final_train_loss": summary["final_loss"],
        "backend": run.model.backend,
        "threads": get_num_threads(),
        "world_size": world.size,
        **run.settings,
        "train_examples": int(run.x_train.shape[0]),
        "history": summary["history"],
    }


def _write_diagnostics(directory, metrics, records):
    """diagnostics.json and its picture in `directory`; returns the run's record."""
    from .diagnostics import plot_runs
    run = {key: metrics[key] for key in ("cell", "lr", "lr_schedule", "clip", "hidden",
                                         "seed", "recurrent_init", "test_accuracy")}
    run["records"] = records
    json_path = os.path.join(directory, "diagnostics.json")
    _write_json(json_path, run)
    try:
        png = plot_runs([json_path], os.path.join(directory, "diagnostics.png"))
        print(f"diagnostics: {json_path}, {png}")
    except RuntimeError as exc:   # matplotlib missing: the numbers are still written
        print(f"diagnostics: {json_path} (no picture: {exc})")
    return run


def _cmd_train(args):
    from .distributed import world as this_world

    world = this_world()
    _set_threads(args, world)
    checkpoint = _read_on_rank0(world, lambda: _read_resume(args.resume) if args.resume
                                else None)
    run = world.agree(lambda: _prepare_training(args, checkpoint, world))
    _say_what_runs(run, world, print if world.rank == 0 else _silent)
    summary = _train_steps(args, run, world)

    test_loss, test_accuracy = _evaluate(run.model, run.x_test, run.y_test, world)
    if world.rank != 0:
        return 0   # rank 0 alone reports and writes
    print(f"test loss {test_loss:.4f}  test accuracy {test_accuracy:.4f} "
          f"({len(run.y_test)} images)", flush=True)
    total_seconds = run.previous.get("train_seconds_total", 0.0) + summary["train_seconds"]
    if args.save:
        _save_trained(args.save, run, summary, total_seconds)
    metrics = _train_metrics(run, summary, test_loss, test_accuracy, total_seconds, world)
    if args.diagnostics:
        metrics["diagnostics"] = _write_diagnostics(args.diagnostics, metrics,
                                                    summary["diagnostics"])
    if args.metrics_out:
        _write_json(args.metrics_out, metrics)
        print(f"metrics: {args.metrics_out}")
    return 0


# -- fastrnn eval ------------------------------------------------------------------------


def _cmd_eval(args):
    from . import get_num_threads
    from .checkpoint import read_checkpoint
    from .model import SequenceClassifier
    from .distributed import world as this_world
    world = this_world()
    _set_threads(args, world)
    checkpoint = _read_on_rank0(world, lambda: read_checkpoint(args.path))
    model, (_, _, x_test, y_test) = world.agree(
        lambda: (SequenceClassifier.from_checkpoint(checkpoint, backend=args.backend), _load_data(args)))
    test_loss, test_accuracy = _evaluate(model, x_test, y_test, world)
    if world.rank != 0:
        return 0
    stack = _stack_words(model.layer.num_layers, model.layer.bidirectional, 0.0)
    print(f"{args.path}: {model.cell.upper()} H={model.hidden_size}{stack}  "
          f"test loss {test_loss:.4f}  "
          f"test accuracy {test_accuracy:.4f} ({len(y_test)} images, backend {model.backend})")
    if args.metrics_out:
        _write_json(args.metrics_out, {
            "test_accuracy": test_accuracy, "test_loss": test_loss,
            "test_examples": int(len(y_test)), "backend": model.backend, "cell": model.cell,
            "threads": get_num_threads(), "world_size": world.size,
            "checkpoint": os.path.abspath(args.path)})
    return 0


# -- fastrnn export ----------------------------------------------------------------------


def _cmd_export(args):
    from .model import load
    from .onnx import OPSET, export_onnx
    # Exporting reads the parameters and runs no kernel: the reference backend always loads.
    model = load(args.checkpoint, backend="numpy")
    export_onnx(model, args.output, lengths_input=args.lengths)
    inputs = "x (B, T, I) float32" + (", lengths (B,) int32" if args.lengths else "")
    print(f"wrote {args.output}: {model.cell.upper()} classifier H={model.hidden_size} as ONNX "
          f"opset {OPSET}; inputs {inputs}; output logits (B, {model.num_classes})")
    return 0


# -- fastrnn plot-diagnostics ------------------------------------------------------------


def _cmd_plot(args):
    from .diagnostics import plot_runs
    plot_runs(args.runs, args.output)
    print(f"wrote {args.output}")
    return 0


# -- fastrnn bench ----------------------------------------------------------------------


def _cmd_bench(args):
    from .bench.command import main as bench_main
    return bench_main(args.bench_argv, prog="fastrnn bench")


# -- the parser -----------------------------------------------------------------------------


def _add_runtime_flags(p):
    p.add_argument("--backend", metavar="NAME",
                   help="cpp, numba or numpy (default: best available, or $FASTRNN_BACKEND)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="kernel threads of each process (default: $FASTRNN_NUM_THREADS, "
                        "else all CPUs, shared out among the ranks on a host under mpiexec)")
    p.add_argument("--data", metavar="DIR",
                   help="directory with the MNIST IDX files (default: $FASTRNN_DATA, "
                        "else ~/.cache/fastrnn/mnist)")
    p.add_argument("--no-download", action="store_true",
                   help="fail instead of downloading missing MNIST files")
    p.add_argument("--test-limit", type=positive_int, metavar="N",
                   help="evaluate on the first N test images only (default: all 10,000)")
    p.add_argument("--metrics-out", metavar="FILE.json", help="write the results as JSON")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastrnn", description=f"Fast CPU {', '.join(c.layer for c in CELLS.values())} "
                                    f"kernels: train, evaluate, inspect.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "train", help="train a sequence classifier on MNIST (rows as time steps)",
        description=f"Train a classifier of a recurrent cell ({', '.join(CELLS)}) on MNIST, "
                    "one image row per time step. Without flags: the original experiment "
                    "(LSTM, 128 units, batch 100, Adam 0.01, 5000 steps, forget bias 1.0).")
    p.add_argument("--cell", choices=tuple(CELLS), help="recurrent cell (default lstm)")
    p.add_argument("--hidden", type=positive_int, metavar="H", help="hidden units (128)")
    p.add_argument("--layers", type=positive_int, metavar="N",
                   help="stacked recurrent layers (1)")
    p.add_argument("--bidirectional", action="store_true", default=None,
                   help="each layer reads the sequence both ways (default: forward only)")
    p.add_argument("--dropout", type=dropout_probability, metavar="P",
                   help="dropout on the outputs between layers, training only (0.0)")
    p.add_argument("--steps", type=positive_int, metavar="N",
                   help=f"total optimizer steps ({DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="batch size (100)")
    p.add_argument("--lr", type=positive_float, help="Adam learning rate (0.01)")
    p.add_argument("--lr-schedule", choices=SCHEDULES,
                   help="constant (default); cosine decay to 0 over --steps; step: x0.1 at "
                        "50%% and x0.01 at 75%% of the steps")
    p.add_argument("--clip", type=positive_float, metavar="NORM",
                   help="clip the global gradient norm to NORM (default: no clipping)")
    p.add_argument("--forget-bias", type=finite_float, metavar="F",
                   help="added to the LSTM forget-gate bias at init (1.0)")
    p.add_argument("--recurrent-init", choices=RECURRENT_INITS,
                   help="weight_hh init: torch's uniform (default), or each gate block "
                        "orthogonal / identity")
    p.add_argument("--seed", type=non_negative_int, help="weights and data order (0)")
    p.add_argument("--train-limit", type=positive_int, metavar="N",
                   help="train on the first N training images only")
    p.add_argument("--save", metavar="PATH", help="write a checkpoint at the end (atomically)")
    p.add_argument("--save-every", type=non_negative_int, default=0, metavar="N",
                   help="also checkpoint to --save every N steps, for --resume (default: off)")
    p.add_argument("--resume", metavar="PATH",
                   help="continue a run from its checkpoint: weights, Adam state, data order")
    p.add_argument("--log-every", type=non_negative_int, default=100, metavar="N",
                   help="log loss, batch accuracy, mean W_hh and mean h_T every N steps (100)")
    p.add_argument("--diagnostics", metavar="DIR",
                   help="record ||dL/dh_t|| and saturation during training into DIR "
                        "(JSON, and a PNG if matplotlib is installed)")
    p.add_argument("--diagnostics-every", type=positive_int, default=500, metavar="N",
                   help="steps between diagnostics records (500)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--check-params-every", type=non_negative_int, default=0, metavar="N",
                   help="under mpiexec: every N steps check that all ranks hold the same "
                        "parameters (a CRC-32 of their bytes; default: off)")
    _add_runtime_flags(p)
    p.set_defaults(run=_cmd_train)

    p = commands.add_parser("eval", help="test loss and accuracy of a saved checkpoint")
    p.add_argument("path", metavar="PATH", help="checkpoint written by `fastrnn train --save`")
    _add_runtime_flags(p)
    p.set_defaults(run=_cmd_eval)

    from .onnx import OPSET
    p = commands.add_parser(
        "export", help="write a checkpoint as an ONNX graph for ONNX Runtime",
        description=f"Write the model of a checkpoint as an ONNX graph of standard operators "
                    f"(opset {OPSET}): input x (B, T, I) float32 batch-first, B and T "
                    f"dynamic, every sequence all T steps unless --lengths; output the "
                    f"logits. Needs onnx (pip install 'fastrnn[onnx]').")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="written by `fastrnn train --save`")
    p.add_argument("output", metavar="OUT.onnx", help="the graph to write (atomically)")
    p.add_argument("--lengths", action="store_true",
                   help="a second input `lengths` (B,) int32 for variable-length batches")
    p.set_defaults(run=_cmd_export)

    p = commands.add_parser(
        "plot-diagnostics", help="draw the gradient-norm curves of runs side by side (PNG)",
        description="Draw ||dL/dh_t|| over t and saturation for each run, side by side. "
                    "Each RUN is a diagnostics.json or a metrics JSON of `fastrnn train "
                    "--diagnostics`. Needs matplotlib (pip install 'fastrnn[plot]').")
    p.add_argument("runs", nargs="+", metavar="RUN.json")
    p.add_argument("-o", "--output", default="diagnostics.png", metavar="OUT.png")
    p.set_defaults(run=_cmd_plot)

    p = commands.add_parser("info", help="version, backends, CPU features, kernel path, threads")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=_cmd_info)
    # The harness parses its own flags (`fastrnn bench --help`): only this command imports it.
    p = commands.add_parser("bench", add_help=False,
                            help="time the backends against torch and ONNX Runtime here")
    p.set_defaults(run=_cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_argv = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args)
    except BaseException as exc:
        return _failed(args.command, exc)


def _failed(command, exc):
    """Say why `command` failed; returns the exit code.

    Under mpiexec a failure of this rank alone ends every rank (MPI_Abort):
    the others would wait for it forever. A RankError is known to every rank
    alike: they all return, and rank 0 says why.
    """
    from ._failures import USER_ERRORS, RankError
    from .distributed import current_world
    world = current_world()
    alone = world is None or world.size == 1
    if isinstance(exc, KeyboardInterrupt):
        message, code = "interrupted", 130
    elif isinstance(exc, USER_ERRORS):
        message, code = f"error: {exc}", 2
    elif alone:
        raise exc   # a bug: its traceback says where
    else:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        message, code = f"error: {type(exc).__name__}: {exc}", 1
    if alone or isinstance(exc, RankError):
        if alone or world.rank == 0:
            print(f"fastrnn {command}: {message}", file=sys.stderr)
        return code
    sys.stdout.flush()
    print(f"fastrnn {command}: {message} (on rank {world.rank} of {world.size}; "
          f"ending every rank)", file=sys.stderr, flush=True)
    world.abort(code)


if __name__ == "__main__":
    sys.exit(main())
