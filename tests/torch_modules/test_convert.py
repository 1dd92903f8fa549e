"""convert(): every torch.nn.LSTM / GRU / RNN inside a model swapped in place for
fastrnn's, keeping the weights; state_dicts that load both ways."""

import numpy as np

from helpers import assert_close

from .twins import ft, torch


class Tagger(torch.nn.Module):
    """Recurrent modules at several depths and in every kind of container."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(6, 8)
        self.encoder = torch.nn.Sequential(torch.nn.GRU(8, 10, 2, bidirectional=True))
        self.stages = torch.nn.ModuleList([torch.nn.LSTM(20, 7, batch_first=False),
                                           torch.nn.RNN(7, 5, nonlinearity="relu")])
        self.heads = torch.nn.ModuleDict({"tag": torch.nn.Linear(5, 3)})
        self.shared = self.stages[1]   # one module reached by two names

    def forward(self, x):
        y, _ = self.encoder[0](torch.tanh(self.embed(x)))
        y, (h, _) = self.stages[0](y)
        y, _ = self.stages[1](y)
        y2, _ = self.shared(h.expand(y.shape[0], -1, -1))
        return self.heads["tag"](y + y2)


def test_convert_swaps_every_recurrent_module_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = Tagger().double()
    x = torch.randn(9, 4, 6, dtype=torch.float64)
    before = model(x).detach()
    parameters = dict(model.named_parameters())
    assert ft.convert(model) is model
    assert type(model.encoder[0]) is ft.GRU
    assert type(model.stages[0]) is ft.LSTM
    assert type(model.stages[1]) is ft.RNN and model.stages[1].nonlinearity == "relu"
    assert model.shared is model.stages[1]
    assert dict(model.named_parameters()) == parameters   # the very same Parameters
    assert_close(model(x).detach(), before, "output", np.float64)


def test_an_optimizer_built_before_convert_trains_the_converted_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.LSTM(3, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ft.convert(model)
    weight = model[0].weight_hh_l0.detach().clone()
    y, _ = model(torch.randn(5, 2, 3))
    y.sum().backward()
    optimizer.step()
    assert not torch.equal(model[0].weight_hh_l0, weight)


def test_convert_of_a_recurrent_module_returns_its_replacement():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, 2, batch_first=True, dropout=0.25).eval()
    new = ft.convert(lstm)
    assert type(new) is ft.LSTM and not new.training
    assert (new.num_layers, new.batch_first, new.dropout) == (2, True, 0.25)
    assert new.weight_ih_l1 is lstm.weight_ih_l1


def test_convert_leaves_subclasses_of_torch_modules_and_torch_random_state_alone():
    class MyLSTM(torch.nn.LSTM):
        pass

    model = torch.nn.Sequential(MyLSTM(3, 4), torch.nn.GRU(4, 4))
    state = torch.random.get_rng_state()
    ft.convert(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert type(model[0]) is MyLSTM and type(model[1]) is ft.GRU


def test_a_state_dict_of_a_converted_model_loads_into_the_original_and_back():
    torch.manual_seed(0)
    original = Tagger()
    torch.manual_seed(1)
    converted = ft.convert(Tagger())
    x = torch.randn(5, 2, 6)
    original.load_state_dict(converted.state_dict())
    assert_close(original(x).detach(), converted(x).detach(), "output", np.float32)
    torch.manual_seed(2)
    original = Tagger()
    converted.load_state_dict(original.state_dict())
    assert_close(converted(x).detach(), original(x).detach(), "output", np.float32)


def test_a_converted_model_saved_whole_with_torch_save_loads_and_runs(tmp_path):
    torch.manual_seed(0)
    model = ft.convert(Tagger())
    x = torch.randn(5, 2, 6)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert type(loaded.stages[0]) is ft.LSTM
    assert torch.equal(loaded(x), model(x))
