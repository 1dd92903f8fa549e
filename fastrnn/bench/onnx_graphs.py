"""ONNX Runtime as a rival: one operator of the cell holding fastrnn's weights, or for an
int8 case com.microsoft DynamicQuantizeLSTM holding the int8 codes and scales of
fastrnn's frozen int8 model (fastrnn.onnx writes the same node into exported graphs).

ONNX keeps the two biases apart, B = [Wb, Rb], and orders the gates its own
way; the table of cells (fastrnn.cells) gives each cell's operator, gate order
and the attributes that make it compute torch's form of the cell.
"""

import numpy as np

from ..cells import CELLS
from .cases import make_batch


def onnx_model(cell, state_dict, quantize=None):
    """Serialized ONNX graph of one `cell` operator with `state_dict`'s weights (torch's keys);
    with quantize="int8" a DynamicQuantizeLSTM (the LSTM only).

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
    initializers = [numpy_helper.from_array(bias[None], "B")]
    if quantize == "int8":
        from .._quantize import QuantizedWeights
        q = QuantizedWeights(weight_ih, weight_hh, state_dict["bias_ih_l0"],
                             state_dict["bias_hh_l0"])
        for name, codes, scales in (("W", q.q_ih, q.s_ih), ("R", q.q_hh, q.s_hh)):
            initializers += [numpy_helper.from_array(onnx_order(codes).T[None], name),
                             numpy_helper.from_array(onnx_order(scales)[None], f"{name}_scale"),
                             numpy_helper.from_array(np.zeros((1, 4 * H), np.int8),
                                                     f"{name}_zero_point")]
    else:
        initializers += [numpy_helper.from_array(onnx_order(weight_ih)[None], "W"),
                         numpy_helper.from_array(onnx_order(weight_hh)[None], "R")]

    def tensor(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    initial = [f"initial_{state}" for state in states]
    finals = [f"Y_{state}" for state in states]
    if quantize == "int8":
        node = helper.make_node("DynamicQuantizeLSTM",
                                # sequence_lens and P absent
                                ["X", "W", "R", "B", "", *initial, "", "W_scale",
                                 "W_zero_point", "R_scale", "R_zero_point"],
                                ["Y"] + finals, hidden_size=H, domain="com.microsoft")
    else:
        node = helper.make_node(operator.name, ["X", "W", "R", "B", ""] + initial,
                                ["Y"] + finals, hidden_size=H, **operator.attributes)
    graph = helper.make_graph(
        [node], f"fastrnn_bench_{cell}",
        [tensor("X", ["T", "B", I])] + [tensor(name, [1, "B", H]) for name in initial],
        [tensor("Y", ["T", 1, "B", H])] + [tensor(name, [1, "B", H]) for name in finals],
        initializer=initializers)
    # Opset 14 / IR 7: old enough for any ONNX Runtime this code meets.
    opsets = [helper.make_opsetid("", 14)]
    if quantize == "int8":
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 7
    if quantize is None:   # the checker knows the standard operators only
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
    """ONNX Runtime's forward of a plain inference, latency or frozen case from zero state,
    or for a stream case one frame with the state of the call before."""
    T, B, I, H = case.shape
    session = onnx_session(onnx_model(case.cell, weights, case.layout.precision), threads)
    x, _, _ = make_batch(case, seed, batch_first=False)
    zeros = np.zeros((1, B, H), dtype=np.float32)
    states = CELLS[case.cell].states
    feeds = {"X": x, **{f"initial_{state}": zeros for state in states}}
    if case.mode != "stream":
        def forward():
            return session.run(["Y"], feeds)[0][:, 0]
        return forward

    frames = [np.ascontiguousarray(x[t:t + 1]) for t in range(T)]
    finals = [f"Y_{state}" for state in states]
    position = [0]

    def step():
        t = position[0]
        feeds["X"] = frames[t]
        new_states = session.run(finals, feeds)
        feeds.update((f"initial_{state}", value) for state, value in zip(states, new_states))
        position[0] = (t + 1) % T
        return new_states[0][0]
    return step
