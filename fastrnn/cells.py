"""The cells fastrnn runs, in one table: everything about a cell but its math.

The math is the kernels' (csrc/, fastrnn/_numba.py, fastrnn/_reference.py), and so is
how a cell holds its biases: every kernel takes b_ih and b_hh and adds them where its
cell sums them. What the rest of the package needs to know of a cell (its gates, its
states, its torch module, its ONNX operator, what its diagnostics plot) is written once,
here: the layers, the model, checkpoints, ONNX export, diagnostics, the command line, the
bench and the tests read `CELLS`. A new cell is its kernels and one entry below.
"""

from typing import NamedTuple


class OnnxOperator(NamedTuple):
    """How ONNX's standard operator for a cell holds it."""

    name: str             # the operator ("LSTM"), one node per layer
    gate_order: tuple     # for each of ONNX's gate blocks, the torch gate block it takes
    attributes: dict      # set on every node of the cell


class Saturation(NamedTuple):
    """What diagnostics record and plot of a cell at each time step (fastrnn.diagnostics):
    the fraction of units where the tanh on the gradient's way back has |value| > 0.99."""

    of: str               # that value: "h" (h_t itself), "tanh(c)" or a gate by name
    label: str            # how the plot names it
    mean_gate: tuple = ()  # (gate, record key) of a gate whose mean is recorded too: a
                          # path for the gradient around the tanh (dashed in the plot)


class Cell(NamedTuple):
    name: str             # SequenceClassifier(cell=...), checkpoints, `--cell`
    layer: str            # the layer class: fastrnn.<layer>
    torch_module: str     # torch's module of the same cell: torch.nn.<torch_module>
    gates: tuple          # gate names in the order of the weights' row blocks (torch's);
                          # the RNN's one block computes h itself
    states: tuple         # what the recurrence carries: ("h",) or ("h", "c")
    kernels: dict         # nonlinearity -> kernel name: backend functions <name>_forward,
                          # <name>_backward
    layer_options: tuple  # the layer's keyword options beyond those every cell has
    saved_width: int      # BPTT's record beyond x and y, per row and step, in units of H
                          # (memory estimates read it)
    onnx: OnnxOperator
    saturation: Saturation

    @property
    def G(self):
        return len(self.gates)

    @property
    def kernel(self):
        """The kernel of the cell's default nonlinearity."""
        return self.kernels["tanh"]


CELLS = {cell.name: cell for cell in (
    Cell("rnn", "RNN", "RNN",
         gates=("h",), states=("h",), kernels={"tanh": "rnn", "relu": "rnn_relu"},
         layer_options=("nonlinearity",), saved_width=0,      # BPTT reads h from y
         onnx=OnnxOperator("RNN", (0,), {}),
         saturation=Saturation("h", "|h_t| > 0.99")),     # h_t = tanh(...) itself
    Cell("lstm", "LSTM", "LSTM",
         gates=("i", "f", "g", "o"), states=("h", "c"), kernels={"tanh": "lstm"},
         layer_options=("forget_bias",), saved_width=5,      # c_t and 4 gates
         onnx=OnnxOperator("LSTM", (0, 3, 1, 2), {}),          # ONNX i, o, f, c
         # tanh(c_t), on the output path h_t = o tanh(c_t)
         saturation=Saturation("tanh(c)", "|tanh(c_t)| > 0.99")),
    Cell("gru", "GRU", "GRU",
         gates=("r", "z", "n"), states=("h",), kernels={"tanh": "gru"},
         layer_options=(), saved_width=4,                    # 3 gates and hn
         # ONNX z, r, h; linear_before_reset: r scales (h W_hn^T + b_hn), as in torch
         onnx=OnnxOperator("GRU", (1, 0, 2), {"linear_before_reset": 1}),
         # The candidate n_t, the one tanh between h_{t-1} W_hh and h_t; but dL/dh_{t-1}
         # also gets z_t dL/dh_t directly: near z = 1 the unit keeps its state and passes
         # the gradient back undiminished, near 0 the gradient must cross the candidate.
         saturation=Saturation("n", "|n_t| > 0.99\n(dashed: mean update gate z_t)",
                               mean_gate=("z", "update_gate"))),
)}

# Every kernel name of every cell, each with its cell: "rnn_relu" -> the RNN.
KERNELS = {kernel: cell for cell in CELLS.values() for kernel in cell.kernels.values()}


def check_cell(cell):
    """`cell` if it names a cell, else ValueError listing them."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    return cell
