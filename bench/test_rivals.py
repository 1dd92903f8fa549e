"""Every case on every rival: fastrnn's backends, torch, ONNX Runtime.

Tests are named `test_case[<case>-<rival>]` with the case names of `fastrnn
bench`; each case is one pytest-benchmark group (a lengths case shares its
padded twin's, a bf16 case its float32 twin's), so its rivals are one table. FLOPs per call are in each
benchmark's extra_info (fastrnn/bench/cases.py says how they are counted).
"""

import math


def test_case(time_case, case, rival):
    output = time_case(case, rival)
    if case.mode == "train":
        assert math.isfinite(output["loss"]) and output["loss"] > 0
    else:
        T, B, _, H = case.shape
        shape = [B, H] if case.mode == "stream" else [T, B, case.directions * H]
        assert output["shape"] == shape and output["finite"]
        assert output["max_abs"] <= 1.0 + 1e-6    # h = tanh(.), o*tanh(c) or a GRU's blend
