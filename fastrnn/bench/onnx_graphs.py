"""ONNX Runtime as a rival: one operator of the cell holding fastrnn's weights.

ONNX keeps the two biases apart, B = [Wb, Rb], and orders the gates its own
way; the table of cells (fastrnn.cells) gives each cell's operator, gate order
and the attributes that make it compute torch's form of the cell.
"""

import numpy as np

from ..cells import CELLS
from .cases import make_batch


def onnx_model(cell, state_dict):
    """Serialized ONNX graph of one `cell` operator with `state_dict`'s weights (torch's keys).

    Inputs X (T, B, I), initial_h (1, B, H) and, for the LSTM, initial_c;
    outputs Y (T, 1, B, H), Y_h and, for the LSTM, Y_c.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    operator, states = CELLS[cell].onnx, CELLS[cell].states
    weight_ih = np.asarray(state_dict["weight_ih_l0"], dtype=np.float32)
    weight_hh = np.asarray(state_dict["weight_hh_l0"], dtype=np.float32)
    H, I = weight_hh.shape[1], weight_ih.shape[1]

    def onnx_order(array):
        return np.concatenate([array[k * H:(k + 1) * H] for k in operator.gate_order])

    bias = np.concatenate([onnx_order(np.asarray(state_dict["bias_ih_l0"], np.float32)),
                           onnx_order(np.asarray(state_dict["bias_hh_l0"], np.float32))])
    initializers = [
        numpy_helper.from_array(onnx_order(weight_ih)[None], "W"),
        numpy_helper.from_array(onnx_order(weight_hh)[None], "R"),
        numpy_helper.from_array(bias[None], "B"),
    ]

    def tensor(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    initial = [f"initial_{state}" for state in states]
    finals = [f"Y_{state}" for state in states]
    node = helper.make_node(operator.name, ["X", "W", "R", "B", ""] + initial,
                            ["Y"] + finals, hidden_size=H, **operator.attributes)
    graph = helper.make_graph(
        [node], f"fastrnn_bench_{cell}",
        [tensor("X", ["T", "B", I])] + [tensor(name, [1, "B", H]) for name in initial],
        [tensor("Y", ["T", 1, "B", H])] + [tensor(name, [1, "B", H]) for name in finals],
        initializer=initializers)
    # Opset 14 / IR 7: old enough for any ONNX Runtime this code meets.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_session(model_bytes, threads):
    """An ONNX Runtime CPU session running on `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def onnxruntime_runner(case, threads, weights, seed=0):
    """ONNX Runtime's forward of a plain inference or latency case, from zero state."""
    T, B, I, H = case.shape
    session = onnx_session(onnx_model(case.cell, weights), threads)
    x, _, _ = make_batch(case, seed, batch_first=False)
    zeros = np.zeros((1, B, H), dtype=np.float32)
    feeds = {"X": x, **{f"initial_{state}": zeros for state in CELLS[case.cell].states}}

    def forward():
        return session.run(["Y"], feeds)[0][:, 0]
    return forward
