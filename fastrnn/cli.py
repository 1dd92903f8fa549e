"""The `fastrnn` command line."""

import argparse
import json
import sys


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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastrnn", description="Fast CPU RNN and LSTM kernels: train, evaluate, inspect.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("info", help="version, backends, CPU features, kernel path, threads")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=_cmd_info)
    from . import bench
    p = commands.add_parser("bench", help="time the backends against torch and ONNX Runtime here")
    bench.add_arguments(p).set_defaults(run=bench.run_from_args)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"fastrnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
