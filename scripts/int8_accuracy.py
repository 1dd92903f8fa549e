"""What freezing to int8 (and bf16) costs a trained classifier: its MNIST test accuracy in
float32 and frozen to int8 and bf16, side by side.

    fastrnn train --seed 0 --save lstm_s0.npz        # and so on, for each model
    python scripts/int8_accuracy.py lstm_s0.npz gru_s0.npz --data DIR [--json out.json]

For each checkpoint it prints the float32, int8 and bf16 test accuracy, the int8
change, and the float32 and int8 loss; int8 is model.freeze("int8")
(fastrnn/_quantize.py's arithmetic), bf16 model.freeze("bf16").
"""

import argparse
import json
import sys

import fastrnn
from fastrnn.datasets import load_mnist


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="written by `fastrnn train --save`")
    parser.add_argument("--data", default=None, help="the MNIST directory ($FASTRNN_DATA)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    _, _, x_test, y_test = load_mnist(args.data)
    rows = []
    print(f"{'checkpoint':<28} {'cell':<5} {'float32':>8} {'int8':>8} {'bf16':>8} "
          f"{'int8 change':>11} {'loss f32':>9} {'loss int8':>9}")
    for path in args.checkpoints:
        model = fastrnn.load(path)
        loss, accuracy = model.evaluate(x_test, y_test)
        loss8, accuracy8 = model.freeze("int8").evaluate(x_test, y_test)
        _, accuracy16 = model.freeze("bf16").evaluate(x_test, y_test)
        rows.append({"checkpoint": path, "cell": model.cell, "float32_accuracy": accuracy,
                     "int8_accuracy": accuracy8, "bf16_accuracy": accuracy16,
                     "float32_loss": loss, "int8_loss": loss8})
        print(f"{path:<28} {model.cell:<5} {accuracy:>8.4f} {accuracy8:>8.4f} "
              f"{accuracy16:>8.4f} {accuracy8 - accuracy:>+11.4f} {loss:>9.4f} {loss8:>9.4f}",
              flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
