"""What fastrnn does not do raises a clear error naming torch.nn's module; wrong
arguments raise what torch's modules raise."""

import pytest

from .twins import ft, torch


def test_an_lstm_with_projections_is_refused_naming_torch_nn_lstm():
    with pytest.raises(ValueError, match=r"proj_size.*torch\.nn\.LSTM"):
        ft.LSTM(4, 8, proj_size=2)
    with pytest.raises(ValueError, match=r"proj_size=2.*keep torch\.nn\.LSTM"):
        ft.convert(torch.nn.Sequential(torch.nn.LSTM(4, 8, proj_size=2)))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_other_devices_are_refused_naming_torch_nn(name):
    with pytest.raises(ValueError, match=rf"CPU.*torch\.nn\.{name}"):
        getattr(ft, name)(3, 4, device="cuda")
    module = getattr(ft, name)(3, 4)
    with pytest.raises(RuntimeError, match=rf"CPU.*input is on meta.*torch\.nn\.{name}"):
        module(torch.empty(2, 1, 3, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_modules_are_refused_naming_torch_nn_and_autocast(dtype):
    with pytest.raises(TypeError, match=r"float32 or float64.*torch\.nn\.GRU.*autocast"):
        ft.GRU(3, 4, dtype=dtype)
    module = ft.GRU(3, 4).to(dtype)
    with pytest.raises(TypeError, match=r"parameters are torch\.(float16|bfloat16).*"
                                        r"torch\.nn\.GRU"):
        module(torch.randn(2, 1, 3, dtype=dtype))


def test_an_input_of_another_dtype_than_the_parameters_is_refused_as_torch_does():
    module = ft.RNN(3, 4)
    with pytest.raises(ValueError, match="does not match weight dtype"):
        module(torch.randn(2, 1, 3, dtype=torch.float64))


def test_double_backward_is_refused_naming_torch_nn():
    module = ft.LSTM(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    y, _ = module(x)
    with pytest.raises(RuntimeError, match=r"no double backward.*torch\.nn"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_wrong_shapes_raise_what_torch_raises(name):
    module, reference = getattr(ft, name)(3, 4, 2), getattr(torch.nn, name)(3, 4, 2)
    bad_calls = [
        (torch.randn(5, 2, 7), None),                     # input_size
        (torch.randn(5, 2, 3, 1), None),                  # 4-D input
        (torch.randn(5, 2, 3), torch.randn(2, 3, 4)),     # batch of hx
        (torch.randn(5, 3), torch.randn(2, 1, 4)),        # 3-D hx for unbatched input
    ]
    for x, h in bad_calls:
        hx = (h, h) if name == "LSTM" and h is not None else h
        with pytest.raises(Exception) as want:
            reference(x, hx)
        with pytest.raises(type(want.value)):
            module(x, hx)


def test_an_lstm_hx_that_is_not_a_pair_is_refused():
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        ft.LSTM(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))


def test_a_packed_sequence_with_impossible_batch_sizes_is_refused():
    from torch.nn.utils.rnn import PackedSequence
    module = ft.GRU(3, 4)
    # growing, an empty step, 4 rows of data for batch sizes that sum to 5
    for batch_sizes, rows in (([1, 2], 3), ([2, 0], 2), ([3, 2], 4)):
        packed = PackedSequence(torch.randn(rows, 3), torch.tensor(batch_sizes))
        with pytest.raises(ValueError, match="batch_sizes must be positive, non-increasing"):
            module(packed)
