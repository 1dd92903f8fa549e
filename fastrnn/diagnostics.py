"""How the gradient travels back in time: dL/dh_t for every t, and unit saturation.

The loss of a SequenceClassifier reads only the last layer's final state, so
dL/dh_t of that layer is the gradient that BPTT carries from its last step back
to step t; a bidirectional layer's reverse direction ends at t = 1, and its
record is kept beside the forward one's. The kernels return only its
value at t = 0 (dstate0), so we ask them T times: for each t, run the layer
on the suffix x_{t+1..T} starting from the state (h_t, c_t) and backpropagate
dL/dh_T through it; the dstate0 it returns is exactly dL/dh_t (and dL/dc_t).
That is O(T^2) cell steps instead of O(T), affordable for T = 28 at a few
points during training, and it needs no change to the kernel contract and no
finite differences.

Saturation: the fraction of units whose tanh on the gradient's path back in time has
|value| > 0.99, where tanh' = 1 - value^2 < 0.02 passes less than 2% of the gradient.
Which value that is, and which gate's mean is recorded beside it where the cell has a
path around the tanh, is the cell's `saturation` in the table of cells (fastrnn.cells).
The fraction of |h_t| > 0.99 is recorded for every cell.
"""

import json
import os

import numpy as np

from . import _reference, _stack
from .cells import CELLS

SATURATION_THRESHOLD = 0.99


DIRECTIONS = ("forward", "reverse")


def _states_over_time(layer, x):
    """[(h_t, c_t or None)] (B, H) each for t = 1..T of a one-layer one-way `layer`, one
    step at a time (the kernels keep c_t to themselves, so the sequence is walked with
    the layer's single-step API)."""
    states, state = [], None
    for t in range(x.shape[1]):
        state = layer.step(x[:, t], state)
        states.append(tuple(s[0] for s in state) if isinstance(state, tuple)
                      else (state[0], None))
    return states


def _gates_over_time(layer, x):
    """{gate name: (T, B, H)} of a one-layer one-way `layer` on x (B, T, I), from zero
    states.

    The fast kernels keep their gates to themselves, so the reference forward, whose
    workspace holds the activated gates (T, B, G*H), computes them again on this batch.
    """
    cell, (T, B) = CELLS[layer.cell], x.shape[1::-1]
    H = layer.hidden_size
    stack = _stack.Stack(_reference, layer.kernel, num_layers=1, num_directions=1,
                         hidden_size=H)
    zeros = tuple(np.zeros((1, B, H), dtype=layer.dtype) for _ in cell.states)
    _, _, tape = _stack.forward(stack, layer.parameters(), x.transpose(1, 0, 2), zeros,
                                _stack.PADDED, True)
    gates = next(saved for saved in tape.workspace(0, 0).arrays
                 if saved.shape == (T, B, cell.G * H))
    return {name: gates[:, :, g * H:(g + 1) * H] for g, name in enumerate(cell.gates)}


def _last_layer_direction(model, x, direction):
    """(one-way view of the last layer's `direction`, its input (B, T, I_k) in the order
    that direction reads it): the earlier layers' output, reversed in time for "reverse"."""
    layer = model.layer
    L = layer.num_layers
    inputs = x
    if L > 1:
        inputs, _ = layer.sublayer(range(L - 1)).forward(x, training=False)
    d = DIRECTIONS.index(direction)
    if d >= layer.num_directions:
        raise ValueError(f"the model's layers have no {direction} direction")
    return layer.sublayer(range(L - 1, L), d), np.ascontiguousarray(inputs[:, ::-1] if d
                                                                     else inputs)


def _head_gradient(model, x, y):
    """(loss, dL/d(head features) (B, D*H)) of the batch."""
    _, state = model.layer.forward(x, training=False)
    return model.head_loss_and_state_grad(model.head_features(state), y)


def hidden_state_gradients(model, x, y, direction="forward"):
    """(loss, dL/dh_t list, dL/dc_t list or None, states) for one batch x (B, T, I), of
    the last layer's `direction` ("forward", or "reverse" where bidirectional).

    The t-th entries (t = 1..T) are (B, H) arrays: the gradient of the batch's mean
    cross-entropy with respect to that direction's hidden (and cell) state after it
    read x[t-1] (the reverse direction reads x[T-1] first, so its entry 1 is the
    farthest from its final state), and the states themselves.
    """
    x = np.ascontiguousarray(x, dtype=model.layer.dtype)
    if x.ndim != 3 or x.shape[1] < 1:
        raise ValueError(f"x must be (B, T, I) with T >= 1, got shape {x.shape}")
    view, inputs = _last_layer_direction(model, x, direction)
    loss, dfeatures = _head_gradient(model, x, y)
    H = view.hidden_size
    d = DIRECTIONS.index(direction)
    dh_T = np.ascontiguousarray(dfeatures[:, d * H:(d + 1) * H])
    states = _states_over_time(view, inputs)
    has_cell_state = states[0][1] is not None   # (h, c): c_t gets its gradient too
    T = x.shape[1]
    dh = [None] * T
    dc = [None] * T if has_cell_state else None
    dh[-1] = dh_T
    if has_cell_state:
        dc[-1] = np.zeros_like(dh_T)   # c_T does not reach the loss directly
    # The gradient of the state after step t+1 of this direction's run: its run on the
    # suffix inputs[t+1:] from that state, backpropagating dL/dh_T to dstate0.
    for t in range(T - 1):
        h, c = states[t]
        view.forward(inputs[:, t + 1:], (h, c) if has_cell_state else h, training=True)
        _, dstate0 = view.backward(dy=None, dstate=(dh_T, None) if has_cell_state else dh_T,
                                   need_input_grad=False)
        if has_cell_state:
            dh[t], dc[t] = dstate0[0][0], dstate0[1][0]
        else:
            dh[t] = dstate0[0]
    if d:   # in time order: entry t after reading x[t-1]
        dh, states = dh[::-1], states[::-1]
        dc = dc[::-1] if dc is not None else None
    return loss, dh, dc, states


def _direction_record(model, x, y, direction):
    loss, dh, dc, states = hidden_state_gradients(model, x, y, direction)
    record = {
        "loss": float(loss),
        "grad_norm": [float(np.linalg.norm(g)) for g in dh],
        "h_saturated": [float(np.mean(np.abs(h) > SATURATION_THRESHOLD)) for h, _ in states],
    }
    if dc is not None:
        record["cell_grad_norm"] = [float(np.linalg.norm(g)) for g in dc]
    saturation = CELLS[model.cell].saturation
    if saturation.of == "h":
        record["saturated"] = record["h_saturated"]
    elif saturation.of == "tanh(c)":
        record["saturated"] = [float(np.mean(np.abs(np.tanh(c)) > SATURATION_THRESHOLD))
                               for _, c in states]
    else:   # a gate
        view, inputs = _last_layer_direction(model, np.asarray(x, dtype=model.layer.dtype),
                                             direction)
        gates = _gates_over_time(view, inputs)
        if direction == "reverse":   # in time order
            gates = {name: values[::-1] for name, values in gates.items()}
        record["saturated"] = [float(np.mean(np.abs(g_t) > SATURATION_THRESHOLD))
                               for g_t in gates[saturation.of]]
        if saturation.mean_gate:
            gate, key = saturation.mean_gate
            record[key] = [float(np.mean(g_t)) for g_t in gates[gate]]
    return record


def diagnose(model, x, y, step=None):
    """One diagnostics record (plain JSON types) for the batch x, y: the last layer's
    forward direction at the top level, its reverse direction (where bidirectional)
    under "reverse", each list in time order."""
    record = {"step": step, "layer": model.layer.num_layers - 1,
              **_direction_record(model, x, y, "forward")}
    if model.layer.bidirectional:
        reverse = _direction_record(model, x, y, "reverse")
        del reverse["loss"]
        record["reverse"] = reverse
    return record


def write_json(path, payload):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=1)
        file.write("\n")


# -- the picture ----------------------------------------------------------------------


def _load_run(path):
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read diagnostics from {path}: {exc}") from None
    run = data.get("diagnostics", data) if isinstance(data, dict) else None
    if not isinstance(run, dict) or not run.get("records"):
        raise ValueError(f"{path} holds no diagnostics records (run `fastrnn train "
                         f"--diagnostics DIR` and pass DIR/diagnostics.json or the metrics JSON)")
    return run


def plot_runs(paths, out_path):
    """Draw the runs side by side: ||dL/dh_t|| over t (log scale) and saturation over t,
    one curve per recorded training step, early steps light and late steps dark."""
    runs = [_load_run(p) for p in paths]  # bad input is reported before a missing extra
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("drawing needs matplotlib: pip install 'fastrnn[plot]'") from None
    # Shared y axes: the runs' gradient norms are compared on one scale.
    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 7.5), squeeze=False,
                             sharex="col", sharey="row")
    for column, (path, run) in enumerate(zip(paths, runs)):
        records = run["records"]
        colors = plt.cm.viridis(np.linspace(0.9, 0.0, len(records)))
        top, bottom = axes[0, column], axes[1, column]
        cell = run.get("cell", "?")
        saturation = CELLS[cell].saturation if cell in CELLS else None
        # dashed beside the saturation: the mean of the gate that lets the gradient pass
        mean_gate = saturation.mean_gate[1] if saturation and saturation.mean_gate else None
        for record, color in zip(records, colors):
            norms = np.asarray(record["grad_norm"], dtype=float)
            t = np.arange(1, norms.size + 1)
            label = f"step {record['step']}"
            # Zero gradients cannot be drawn on a log scale; the floor marks them.
            top.semilogy(t, np.maximum(norms, 1e-30), color=color, label=label)
            bottom.plot(t, record["saturated"], color=color, label=label)
            if "reverse" in record:   # the reverse direction, dotted
                top.semilogy(t, np.maximum(record["reverse"]["grad_norm"], 1e-30),
                             color=color, linestyle=":")
                bottom.plot(t, record["reverse"]["saturated"], color=color, linestyle=":")
            if mean_gate in record:
                bottom.plot(t, record[mean_gate], color=color, linestyle="--")
        title = f"{cell.upper()}  lr {run.get('lr', '?')}"
        if run.get("lr_schedule") not in (None, "constant"):
            title += f" {run['lr_schedule']}"
        if run.get("clip"):
            title += f"  clip {run['clip']:g}"
        if run.get("recurrent_init") not in (None, "uniform"):
            title += f"  {run['recurrent_init']} W_hh"
        if run.get("test_accuracy") is not None:
            title += f"  test acc {run['test_accuracy']:.4f}"
        name = os.path.basename(path)
        if name == "diagnostics.json":   # the run is named by its directory
            name = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), name)
        top.set_title(f"{title}\n{name}", fontsize=10)
        top.set_ylabel("||dL/dh_t||  (batch, log scale)")
        what = saturation.label if saturation is not None else "|h_t| > 0.99"
        bottom.set_ylabel(f"fraction saturated: {what}")
        bottom.set_xlabel("time step t (T = loss)")
        bottom.set_ylim(-0.02, 1.02)
        top.grid(True, which="both", alpha=0.3)
        bottom.grid(True, alpha=0.3)
        top.legend(fontsize=7, loc="best")
    fig.suptitle("Gradient reaching each time step, through training", fontsize=12)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
