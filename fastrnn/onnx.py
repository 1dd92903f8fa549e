"""Export a SequenceClassifier to ONNX, as a graph of standard operators for ONNX Runtime.

The graph (opset OPSET), for x (B, T, I) float32 with B and T dynamic:

    x (B, T, I) -> Transpose -> (T, B, I)
        ONNX Runtime's CPU kernels refuse the batch-first layout (layout=1) of the
        recurrent operators, so the graph turns x time-major once.
    layer k: the cell's operator node (fastrnn.cells), direction "forward" or "bidirectional"
        between layers: Y (T, D, B, H) -> Transpose (T, B, D, H) -> Reshape (T, B, D*H)
    last layer's Y_h (D, B, H) -> Transpose (B, D, H) -> Reshape (B, D*H), forward first
    Gemm with fc.weight^T and fc.bias -> logits (B, num_classes)

Weights come from torch's layout (fastrnn's state_dict): W = weight_ih, R = weight_hh and
B = [bias_ih, bias_hh], each with its gate blocks reordered to ONNX's order (the table of
cells gives each cell's operator, gate order and attributes) and stacked over directions.

Lengths: the graph takes full-length batches, every sequence all T steps. Variable-length
batches need `lengths_input=True`, which adds a second input `lengths` (B,) int32, each in
[1, T], that every recurrent node reads as its sequence_lens: the last layer's state is
then each sequence's state after its own last step (the reverse direction's after x[b, 0]),
as torch gives with packed sequences.

Dropout acts in training only, so the graph has none. The graph computes in float32.
"""

import os

import numpy as np

from ._files import write_atomically
from ._info import __version__
from .cells import CELLS

OPSET = 17
# The IR version that came with opset 17 (onnx 1.12): runtimes of that age and later load
# the file, where the onnx package's newest IR version would shut out older ONNX Runtimes.
IR_VERSION = 8
# protobuf refuses to serialize a message of 2 GiB or more; keep room for the graph itself.
MAX_PARAMETER_BYTES = 2**31 - 2**24

# ONNX's names of a cell's nonlinearities, where the cell has more than one (the RNN).
ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu"}
DIRECTION_SUFFIXES = ("", "_reverse")


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise RuntimeError("exporting to ONNX needs the onnx package: "
                           "pip install 'fastrnn[onnx]'") from None
    return onnx, helper, numpy_helper


# -- the parameters -------------------------------------------------------------------------


def _layout(params, cell):
    """(L, D, I, H, C) of a classifier's parameters; refuses anything off torch's layout."""
    if cell not in CELLS:
        raise ValueError(f"cannot export cell {cell!r} to ONNX: the standard operators are "
                         f"for {sorted(CELLS)}")
    for key in ("weight_ih_l0", "weight_hh_l0", "fc.weight"):
        if key not in params or np.ndim(params[key]) != 2:
            raise ValueError(f"cannot export: the parameters have no 2-D {key!r}, so they are "
                             f"not a fastrnn SequenceClassifier's")
    L = 1
    while f"weight_ih_l{L}" in params:
        L += 1
    D = 2 if "weight_ih_l0_reverse" in params else 1
    G, H = CELLS[cell].G, np.shape(params["weight_hh_l0"])[1]
    I, C = np.shape(params["weight_ih_l0"])[1], np.shape(params["fc.weight"])[0]

    shapes = {}   # in torch's state_dict order
    for k in range(L):
        for suffix in DIRECTION_SUFFIXES[:D]:
            shapes[f"weight_ih_l{k}{suffix}"] = (G * H, I if k == 0 else D * H)
            shapes[f"weight_hh_l{k}{suffix}"] = (G * H, H)
            shapes[f"bias_ih_l{k}{suffix}"] = (G * H,)
            shapes[f"bias_hh_l{k}{suffix}"] = (G * H,)
    shapes.update({"fc.weight": (C, D * H), "fc.bias": (C,)})
    missing, unexpected = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"cannot export: the parameters do not form a {cell} classifier of "
                         f"{L} layer(s){', bidirectional' if D == 2 else ''}: missing "
                         f"{missing}, unexpected {unexpected}")
    for key, shape in shapes.items():
        if np.shape(params[key]) != shape:
            raise ValueError(f"cannot export: {key} has shape {np.shape(params[key])}, a {cell} "
                             f"classifier with H={H} needs {shape}")
    return L, D, I, H, C


def _float32(params, key):
    value = np.asarray(params[key])
    if value.dtype.kind != "f":
        raise ValueError(f"cannot export: {key} holds {value.dtype}, not floats")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"cannot export: {key} holds non-finite values")
    if value.size and np.abs(value).max() > np.finfo(np.float32).max:
        raise ValueError(f"cannot export: {key} holds values beyond float32's range, "
                         f"and the graph computes in float32")
    return value.astype(np.float32)


def _onnx_gates(array, cell, H):
    """Rows of a (G*H, ...) torch array with its gate blocks in ONNX's order."""
    return np.concatenate([array[g * H:(g + 1) * H] for g in CELLS[cell].onnx.gate_order])


# -- the graph ----------------------------------------------------------------------------------


def classifier_graph(params, cell, *, nonlinearity="tanh", lengths_input=False):
    """The onnx.ModelProto of a classifier given by its parameters in torch's layout.

    `params` maps the recurrent keys (weight_ih_l{k}[_reverse], ...; the layer count and
    directions are read from them) and fc.weight (C, D*H), fc.bias (C,) to arrays;
    `nonlinearity` ("tanh" or "relu") applies to the RNN cell only.
    """
    onnx, helper, numpy_helper = _import_onnx()
    L, D, I, H, C = _layout(params, cell)
    operator = CELLS[cell].onnx
    has_activations = len(CELLS[cell].kernels) > 1
    if has_activations and nonlinearity not in ACTIVATIONS:
        raise ValueError(f"cannot export an {operator.name} with nonlinearity {nonlinearity!r}: "
                         f"ONNX's {operator.name} operator is exported for {sorted(ACTIVATIONS)}")
    total = sum(np.asarray(value).size for value in params.values()) * 4
    if total > MAX_PARAMETER_BYTES:
        raise ValueError(f"cannot export: the parameters take {total / 2**30:.2f} GiB as "
                         f"float32, and one ONNX file holds less than 2 GiB")

    initializers, nodes = [], []

    def constant(name, array):
        initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(op, inputs, outputs, **attributes):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[-1], **attributes))
        return outputs[-1]

    direction = "bidirectional" if D == 2 else "forward"
    lengths = ["lengths"] if lengths_input else []
    if L > 1:
        constant("shape_T_B_DH", np.array([0, 0, -1], dtype=np.int64))
    sequence = node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2])
    for k in range(L):
        def stacked(name):   # (D, G*H, ...) over directions, gates in ONNX's order
            return np.stack([_onnx_gates(_float32(params, f"{name}_l{k}{suffix}"), cell, H)
                             for suffix in DIRECTION_SUFFIXES[:D]])

        attributes = {"hidden_size": H, "direction": direction, **operator.attributes}
        if has_activations:
            attributes["activations"] = [ACTIVATIONS[nonlinearity]] * D
        last = k == L - 1
        # The last layer's Y (every step) is not needed: only its final state feeds the head.
        outputs = ["" if last else f"layer{k}.Y", f"layer{k}.Y_h"]
        node(operator.name,
             [sequence, constant(f"layer{k}.W", stacked("weight_ih")),
              constant(f"layer{k}.R", stacked("weight_hh")),
              constant(f"layer{k}.B", np.concatenate([stacked("bias_ih"), stacked("bias_hh")],
                                                     axis=1)),
              *lengths],
             outputs, **attributes)
        if not last:   # (T, D, B, H) -> (T, B, D*H), the forward direction's H first
            node("Transpose", [outputs[0]], [f"layer{k}.Y_batch_major"], perm=[0, 2, 1, 3])
            sequence = node("Reshape", [f"layer{k}.Y_batch_major", "shape_T_B_DH"],
                            [f"layer{k}.output"])
    # (D, B, H) -> (B, D*H), the forward direction's H first
    node("Transpose", [outputs[1]], ["final_state_batch_major"], perm=[1, 0, 2])
    node("Reshape", ["final_state_batch_major",
                     constant("shape_B_DH", np.array([0, -1], dtype=np.int64))],
         ["final_state"])
    node("Gemm", ["final_state", constant("fc.weight", _float32(params, "fc.weight")),
                  constant("fc.bias", _float32(params, "fc.bias"))], ["logits"], transB=1)

    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["B", "T", I])]
    if lengths_input:
        inputs.append(helper.make_tensor_value_info("lengths", onnx.TensorProto.INT32, ["B"]))
    graph = helper.make_graph(
        nodes, "fastrnn_sequence_classifier", inputs,
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["B", C])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="fastrnn",
                              producer_version=__version__,
                              doc_string=f"fastrnn SequenceClassifier: {cell}, {L} layer(s), "
                                         f"{direction}, H={H}")
    onnx.checker.check_model(model, full_check=True)
    return model


def _model_options(model):
    """(cell, nonlinearity, config) of a SequenceClassifier, refusing anything else."""
    if not callable(getattr(model, "config", None)) or not callable(
            getattr(model, "parameters", None)):
        raise TypeError(f"export_onnx takes a fastrnn.SequenceClassifier, got "
                        f"{type(model).__name__}; a recurrent layer alone has no head to export, "
                        f"so put it in a SequenceClassifier (load_state_dict its weights)")
    config = model.config()
    nonlinearity = config.get("nonlinearity", getattr(getattr(model, "layer", None),
                                                      "nonlinearity", "tanh"))
    return config.get("cell"), nonlinearity, config


def to_onnx(model, *, lengths_input=False):
    """The onnx.ModelProto of a fastrnn.SequenceClassifier (see the module docstring)."""
    cell, nonlinearity, config = _model_options(model)
    params = model.parameters()
    L, D = _layout(params, cell)[:2]
    expected = (config.get("num_layers", 1), 2 if config.get("bidirectional", False) else 1)
    if (L, D) != expected:
        raise ValueError(f"cannot export: the model's config says {expected[0]} layer(s) and "
                         f"{expected[1]} direction(s), its parameters hold {L} and {D}")
    return classifier_graph(params, cell, nonlinearity=nonlinearity, lengths_input=lengths_input)


def _write_bytes(file, data):
    """Write the serialized graph; a function of its own so tests can interrupt it."""
    file.write(data)


def export_onnx(model, path, *, lengths_input=False):
    """Write `model` (a fastrnn.SequenceClassifier) to `path` as an ONNX graph, atomically.

    The graph's input is x (B, T, I) float32, batch-first, B and T dynamic, and it takes
    full-length batches: every sequence has all T steps. `lengths_input=True` adds a second
    input `lengths` (B,) int32 for variable-length batches. The output is the logits
    (B, num_classes). Opset OPSET; standard operators only (the cell's own, and Gemm). A
    failure at any point leaves `path` as it was.
    """
    data = to_onnx(model, lengths_input=lengths_input).SerializeToString()
    try:
        write_atomically(path, lambda file: _write_bytes(file, data))
    except OSError as exc:
        raise OSError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from None
