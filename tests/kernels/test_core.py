"""The compiled module's own contract: in-place strided x and out=, bits that do not
depend on the thread count, argument checks and their messages, the workspace object,
threads, the ISA paths, the stubs.

Its numerics against the reference, on every ISA path, are in test_kernels.py; what
every backend refuses, a foreign workspace among it, in test_kernel_arguments.py.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from fastrnn import _backends
from helpers import OUTSIDE_REPO, KERNEL_CELLS, make_kernel_args, run_kernels

core = pytest.importorskip("fastrnn._core")

ISAS = core.build_info()["isa_supported"]


# 2 threads split a forward's 37 rows between them (19 and 18: uneven, a row panel
# and a part), and its 5 rows' hidden units.
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("B", [37, 5])
def test_the_bits_do_not_depend_on_the_thread_count(isa, cell, B, precision):
    a = make_kernel_args(cell, 11, B, 19, 70, np.float32, seed=2)
    results = []
    for n in (1, 2, 2, 1):
        core.set_num_threads(n)
        outs, grads = run_kernels(core, cell, a, precision=precision)
        results.append(outs + grads)
    core.set_num_threads(2)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


def strided_views(x):
    """x's values in other memory layouts the kernels read in place (last axis contiguous)."""
    T, B, I = x.shape
    batch_first = np.ascontiguousarray(x.transpose(1, 0, 2))    # (B, T, I) memory
    wide = np.zeros((2 * T, B + 3, I), x.dtype)
    wide[::2, 1:B + 1] = x                                       # gaps between steps and rows
    return {"batch_first": batch_first.transpose(1, 0, 2), "gaps": wide[::2, 1:B + 1]}


# Input sizes below, between and at whole vectors (the strided copy of x has a
# vector loop, an overlapping last vector and a scalar path).
@pytest.mark.parametrize("I", [7, 28, 32])
@pytest.mark.parametrize("need_dx", [False, True])
def test_strided_x_gives_the_bits_of_a_contiguous_copy(isa, threads, cell, need_dx, I):
    a = make_kernel_args(cell, 5, 13, I, 20, np.float32, seed=4)
    outs, grads = run_kernels(core, cell, a, need_dx=need_dx)
    for layout, view in strided_views(a["x"]).items():
        assert not view.flags.c_contiguous
        got_outs, got_grads = run_kernels(core, cell, dict(a, x=view), need_dx=need_dx)
        for got, want in zip(got_outs + got_grads, outs + grads):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, want, err_msg=layout)
    # T = 1 and B = 1: axes of one entry, whose strides numpy leaves free
    for T, B in ((1, 4), (4, 1)):
        b = make_kernel_args(cell, T, B, 3, 5, np.float32, seed=5)
        outs, grads = run_kernels(core, cell, b)
        view = strided_views(b["x"])["batch_first"]
        got_outs, got_grads = run_kernels(core, cell, dict(b, x=view))
        for got, want in zip(got_outs + got_grads, outs + grads):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make_view", [lambda x: x[:, :, ::-1], lambda x: x[::-1],
                                       lambda x: np.repeat(x, 2, axis=2)[:, :, ::2]],
                         ids=["reversed-last-axis", "negative-step", "strided-last-axis"])
def test_x_with_unreadable_strides_is_rejected(make_view):
    args = lstm_args()
    args[0] = make_view(np.ascontiguousarray(np.arange(24, dtype=np.float32).reshape(3, 2, 4)))
    with pytest.raises(ValueError, match="contiguous last axis and non-negative strides"):
        core.lstm_forward(*args, True)


# ------------------------------------------------------------- argument checks


def lstm_args(dtype=np.float32, T=3, B=2, I=4, H=5):
    a = make_kernel_args("lstm", T, B, I, H, dtype)
    return [a[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]


@pytest.mark.parametrize("position, bad, error, match", [
    (0, np.zeros((3, 2, 4), np.float16), TypeError, "float32 or float64"),
    (0, np.zeros((3, 2, 4), np.int64), TypeError, "float32 or float64"),
    (0, [[[0.0]]], TypeError, "numpy.ndarray"),
    (0, np.zeros((2, 4), np.float32), ValueError, "3-D"),
    (0, np.zeros((0, 2, 4), np.float32), ValueError, "at least one"),
    (1, np.zeros((2, 5), np.float64), TypeError, "h0 has dtype float64"),
    (1, np.zeros((3, 5), np.float32), ValueError, r"h0 must have shape \(2, "),
    (1, np.zeros((2, 0), np.float32), ValueError, "at least one hidden"),
    (2, None, TypeError, "c0 must be a numpy.ndarray"),
    (3, np.zeros((20, 3), np.float32), ValueError, r"w_ih must have shape \(20, 4\)"),
    (4, np.zeros((5, 5), np.float32), ValueError, r"w_hh must have shape \(20, 5\)"),
    (5, np.zeros((20, 1), np.float32), ValueError, r"b_ih must have shape \(20,\)"),
    (6, np.zeros(19, np.float32), ValueError, r"b_hh must have shape \(20,\)"),
    (3, np.zeros((4, 20), np.float32).T, ValueError, "C-contiguous"),
])
def test_lstm_forward_rejects(position, bad, error, match):
    args = lstm_args()
    args[position] = bad
    with pytest.raises(error, match=match):
        core.lstm_forward(*args, True)


def test_unaligned_array_is_rejected():
    raw = np.zeros(3 * 2 * 4 * 4 + 1, np.uint8)[1:]
    x = raw.view(np.float32).reshape(3, 2, 4)
    assert not x.flags.aligned
    args = lstm_args()
    args[0] = x
    with pytest.raises(ValueError, match="aligned"):
        core.lstm_forward(*args, True)


def lstm_backward_args(**kw):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = lstm_args(**kw)
    y, cT, saved = core.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, True)
    return [saved, h0, c0, w_ih, w_hh, y, None, np.zeros_like(h0), np.zeros_like(c0), True]


def test_lstm_backward_accepts_its_workspace():
    args = lstm_backward_args()
    assert "lstm float32 T=3 B=2 I=4 H=5" in repr(args[0])
    assert len(core.lstm_backward(*args)) == 7


@pytest.mark.parametrize("position, bad, match", [
    (5, np.zeros((3, 2, 6), np.float32), r"y must have shape \(3, 2, 5\)"),
    (6, np.zeros((3, 2), np.float32), r"dy must have shape \(3, 2, 5\)"),
    (7, np.zeros((2, 5, 1), np.float32), r"dhT must have shape \(2, 5\)"),
    (8, np.zeros((1, 5), np.float32), r"dcT must have shape \(2, 5\)"),
    (5, np.zeros((3, 2, 10), np.float32)[:, :, ::2], "y must have a contiguous last axis"),
])
def test_lstm_backward_rejects_bad_arrays(position, bad, match):
    args = lstm_backward_args()
    args[position] = bad
    with pytest.raises(ValueError, match=match):
        core.lstm_backward(*args)


def test_a_reverse_workspace_says_so():
    x, *rest = lstm_args()
    _, _, saved = core.lstm_forward(x, *rest, True, reverse=True)
    assert "lstm float32 reverse T=3" in repr(saved)


@pytest.mark.parametrize("overlapping", ["x", "h0", "w_hh", "b_hh"])
def test_out_overlapping_an_input_is_refused(overlapping):
    """The kernel reads its inputs while it writes y: out= must lie apart from them."""
    args = lstm_args()
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    memory = np.zeros(10_000, np.float32)
    k = names.index(overlapping)
    args[k] = memory[:args[k].size].reshape(args[k].shape)
    args[k][...] = lstm_args()[k]
    out = memory[args[k].size // 2:][:30].reshape(3, 2, 5)
    with pytest.raises(ValueError, match="out must not overlap an input"):
        core.lstm_forward(*args, True, out=out)


def test_a_read_only_out_is_refused():
    out = np.zeros((3, 2, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        core.lstm_forward(*lstm_args(), True, out=out)


def test_workspace_cannot_be_made_from_python():
    with pytest.raises(TypeError):
        core.Workspace()


@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (1025, ValueError),
                                      (10**6, ValueError), (2.0, TypeError), (True, TypeError),
                                      ("2", TypeError)])
def test_set_num_threads_rejects(n, error):
    with pytest.raises(error, match="number of threads"):
        core.set_num_threads(n)


def test_the_thread_limit_is_the_one_the_package_states():
    assert core.max_threads == _backends.MAX_THREADS == 1024


def test_set_num_threads_round_trip():
    before = core.get_num_threads()
    try:
        core.set_num_threads(3)
        assert core.get_num_threads() == 3
        assert core.build_info()["threads"] == 3
    finally:
        core.set_num_threads(before)


def test_build_info_names_the_kernel_path():
    info = core.build_info()
    assert info["kernel_path"] in info["isa_supported"]
    assert info["isa_supported"][0] == "generic"
    assert set(info["isa_supported"]) <= set(info["isa_compiled"])
    assert isinstance(info["cpu_features"], list)


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match="unknown FASTRNN_ISA value 'sse9'"):
        core._set_isa("sse9")


def import_with_isa(value):
    env = dict(os.environ, FASTRNN_ISA=value)
    code = "import fastrnn._core as c; print(c.build_info()['kernel_path'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=OUTSIDE_REPO)


@pytest.mark.parametrize("value", ISAS)
def test_fastrnn_isa_forces_a_path(value):
    done = import_with_isa(value)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == value


@pytest.mark.parametrize("value", ["avx1024", "AVX2 "] +
                         [isa for isa in core.build_info()["isa_compiled"] if isa not in ISAS])
def test_fastrnn_isa_beyond_the_cpu_is_an_error(value):
    done = import_with_isa(value)
    assert done.returncode != 0
    assert "ValueError: " in done.stderr and repr(value) in done.stderr.replace('"', "'")
    assert "supports generic" in done.stderr


def test_fastrnn_isa_error_is_not_a_silent_fallback():
    env = dict(os.environ, FASTRNN_ISA="avx1024")
    code = "import fastrnn; fastrnn.available_backends()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=OUTSIDE_REPO)
    assert done.returncode != 0
    assert "ValueError: unknown FASTRNN_ISA value 'avx1024'" in done.stderr


def stub_tree():
    import ast
    import pathlib
    stub = pathlib.Path(core.__file__).with_name("_core.pyi")
    if not stub.exists():  # an editable install keeps the stub in the source tree
        import fastrnn
        stub = pathlib.Path(fastrnn.__file__).with_name("_core.pyi")
    return ast.parse(stub.read_text())


def test_type_stubs_name_exactly_what_the_module_defines():
    import ast
    tree = stub_tree()
    stubbed = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    stubbed |= {node.target.id for node in tree.body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    stubbed -= {"Array", "BatchSizes"}
    defined = {name for name in dir(core) if not name.startswith("__")}
    assert stubbed == defined, (sorted(stubbed - defined), sorted(defined - stubbed))


@pytest.mark.parametrize("stage", ["forward", "backward"])
@pytest.mark.parametrize("cell", core.cells)
def test_the_stubs_give_every_cell_entry_the_module_arguments(cell, stage):
    """The module's entries come from the C++ list of cells (csrc/cells.h): each needs
    its stub, with the module's arguments in the module's order."""
    import ast
    import re
    name = f"{cell}_{stage}"
    stub = next(node for node in stub_tree().body
                if isinstance(node, ast.FunctionDef) and node.name == name)
    stubbed = [arg.arg for arg in stub.args.args] + ["*"] + \
        [arg.arg for arg in stub.args.kwonlyargs]
    signature = getattr(core, name).__doc__.splitlines()[0]
    assert signature.startswith(name + "(")
    defined = [re.match(r"\s*(\*|\w+)", part).group(1)
               for part in signature[len(name) + 1:signature.rindex(")")].split(",")]
    assert stubbed == defined


def test_every_cell_of_the_list_has_its_kernels():
    assert set(core.cells) == set(KERNEL_CELLS)
    for cell in core.cells:
        assert callable(getattr(core, f"{cell}_forward"))
        assert callable(getattr(core, f"{cell}_backward"))


@pytest.mark.parametrize("threads, error", [(0, ValueError), (10**6, ValueError),
                                            ("2", TypeError), (True, TypeError), (1.0, TypeError)])
def test_a_calls_thread_count_outside_one_to_the_pools_is_refused(threads, error):
    with pytest.raises(error, match="threads"):
        core.lstm_forward(*lstm_args(), True, threads=threads)


def test_one_thread_calls_from_many_threads_run_at_once_with_the_bits_of_one_at_a_time():
    from concurrent.futures import ThreadPoolExecutor
    core.set_num_threads(2)
    problems = [make_kernel_args(cell, 9, 13, 7, 40, np.float32, seed=s)
                for s, cell in enumerate(["lstm", "rnn", "lstm", "rnn"] * 2)]
    cells = ["lstm", "rnn"] * 4

    def one(i, threads):
        outputs, grads = run_kernels(core, cells[i], problems[i], threads=threads)
        return outputs + grads

    expected = [one(i, None) for i in range(len(problems))]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda i: one(i, 1), range(len(problems))))
            for g, e in zip(got, expected):
                for a, b in zip(g, e):
                    assert np.array_equal(a, b)
