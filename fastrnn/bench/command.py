"""`fastrnn bench` (and `python -m fastrnn.bench`): its flags and what they run."""

import argparse
import json
import os
import sys

from .. import _backends
from .._argtypes import positive_float, positive_int
from . import in_process, isolated, report, timing
from .cases import (CATALOGUE, CELLS, MODES, SHAPES, VARIANTS, case_by_name, make_cases,
                    missing_features, require_runnable)
from .runners import known_rivals, require_rivals, rival_names

DESCRIPTION = "time fastrnn's backends against torch and ONNX Runtime on this machine"


def _choices(text, allowed, what):
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"{what} must be a comma-separated list from {', '.join(allowed)}; got {text!r}")
    return list(dict.fromkeys(values))


def _case_names(text):
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--cases needs at least one case name")
    try:
        return [case_by_name(name) for name in dict.fromkeys(names)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser):
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for every rival (default: fastrnn's, "
                             "$FASTRNN_NUM_THREADS or the usable CPUs)")
    parser.add_argument("--cases", type=_case_names, default=None, metavar="NAME,...",
                        help="the cases to time by name, e.g. lstm-train-origin, "
                             "rnn-inference-medium, lstm-train-medium-lengths (see "
                             "--list-cases); instead of --shapes/--cells/--modes/--variants")
    parser.add_argument("--list-cases", action="store_true",
                        help="list every case name and whether it runs here, then stop")
    parser.add_argument("--shapes", type=lambda s: _choices(s, list(SHAPES), "--shapes"),
                        help="comma-separated from origin (T28 B100 I28 H128), medium "
                             "(T64 B128 I64 H256), large (T100 B256 I128 H512), tiny; "
                             "default origin")
    parser.add_argument("--cells", type=lambda s: _choices(s, CELLS, "--cells"),
                        help=f"comma-separated from {', '.join(CELLS)} (default: those "
                             f"this fastrnn has)")
    parser.add_argument("--modes", type=lambda s: _choices(s, MODES, "--modes"),
                        help="comma-separated from inference, train, latency (default all)")
    parser.add_argument("--variants", type=lambda s: _choices(s, list(VARIANTS), "--variants"),
                        help="comma-separated from plain (one layer), 2layer-bidir (two "
                             "stacked bidirectional layers), lengths (lengths uniform in "
                             "[T/4, T], timed beside the padded batch), bf16 (bfloat16 "
                             "products, timed beside float32; torch in torch.bfloat16), "
                             "int8 (frozen models); default plain")
    parser.add_argument("--rivals", default=None,
                        type=lambda s: _choices(s, known_rivals(), "--rivals"),
                        help="comma-separated subset of the fastrnn backends, torch, "
                             "onnxruntime (default: all that run here)")
    parser.add_argument("--quick", action="store_true",
                        help="about 1 s per case instead of 3 s, fewer peak runs")
    parser.add_argument("--seconds", type=positive_float, default=None,
                        help="time budget per case (default 3, or 1 with --quick)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--isolate", action="store_true",
                      help="each rival in its own process, the processes taking turns "
                           "(the default; kept so older commands still work)")
    mode.add_argument("--in-process", action="store_true",
                      help="every rival in this one process instead: their thread pools "
                           "compete, so multi-threaded figures of torch and ONNX Runtime "
                           "can be many times too slow")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-peak", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw GFLOP/s bars (matplotlib)")
    return parser


def selected_cases(args):
    """The cases the flags ask for; each must run on the installed fastrnn."""
    grid = {"--shapes": args.shapes, "--cells": args.cells, "--modes": args.modes,
            "--variants": args.variants}
    if args.cases is not None:
        given = [flag for flag, value in grid.items() if value is not None]
        if given:
            raise ValueError(f"--cases names the cases itself; leave out {', '.join(given)}")
        cases = args.cases
    else:
        cases = make_cases(args.shapes or ["origin"], args.cells or CELLS,
                           args.modes or list(MODES), args.variants or ["plain"])
        if args.cells is None:   # the cells this fastrnn has, whatever the variants ask
            cases = [case for case in cases
                     if missing_features(case._replace(variant="plain")) is None]
    if not cases:
        raise ValueError("no case to time: `fastrnn bench --list-cases` shows what runs here")
    require_runnable(cases)
    return cases


def list_cases():
    width = max(len(name) for name in CATALOGUE)
    for name, case in CATALOGUE.items():
        missing = missing_features(case)
        print(f"{name:<{width}}  {'runs here' if missing is None else 'needs ' + missing}")


def serve_one_rival(cases, rivals, threads):
    """`--serve`: this process is an isolated child, timing one rival for its parent."""
    if len(rivals) != 1:
        raise ValueError("--serve times exactly one rival")
    protocol, sys.stdout = sys.stdout, sys.stderr  # stray prints must not reach the parent
    try:
        isolated.serve(cases, rivals[0], threads, outfile=protocol)
    finally:
        sys.stdout = protocol


def run_from_args(args):
    if args.list_cases:
        list_cases()
        return 0
    if args.plot:
        report.import_pyplot()  # fail now, not after a minute of timing
    for path in (args.json, args.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ValueError(f"cannot write {path}: its directory does not exist")
    threads = args.threads or _backends.get_num_threads()
    cases = selected_cases(args)
    if args.rivals:
        require_rivals(args.rivals)
    rivals = args.rivals or rival_names()
    if args.serve:
        serve_one_rival(cases, rivals, threads)
        return 0
    budget, min_rounds, repeats = (1.0, 2, 3) if args.quick else (3.0, 3, 7)
    budget = args.seconds or budget

    def progress(message):
        print(message, file=sys.stderr, flush=True)

    peak = None
    if not args.no_peak:
        progress(f"measuring the SGEMM peak on {threads} thread(s) ...")
        peak = timing.measure_peak(threads, repeats=repeats)
        if any(case.layout.precision == "bf16" for case in cases):
            progress(f"measuring the bf16 GEMM peak on {threads} thread(s) ...")
            peak["bf16"] = timing.measure_bf16_peak(threads, repeats=repeats)
    if args.in_process:
        timed = in_process.run_in_process(cases, rivals, threads, budget, min_rounds, peak,
                                          progress)
    else:
        timed = isolated.run_isolated(cases, rivals, threads, peak, budget, min_rounds, progress)
    print(report.format_report(timed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(timed, f, indent=2)
    if args.plot:
        report.plot_report(timed, args.plot)
    return 0


def main(argv=None, prog="python -m fastrnn.bench"):
    parser = add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
