"""A sequence classifier: recurrent layers, a Linear head on the last layer's final state
(both directions side by side, forward first), softmax cross-entropy. The recurrence
and its BPTT run in the backend kernels; the small head runs in one compiled call on the
cpp backend, else here.
"""

import numpy as np

from . import _backends
from ._config import check_model_config
from .checkpoint import read_checkpoint, save_checkpoint
from ._arrays import as_real_array, check_lengths, load_parameters
from .cells import CELLS
from .layers import LAYERS

# predict/evaluate run the test set in chunks of this many sequences, so
# memory stays bounded (an LSTM forward keeps T*B*4H activations).
EVAL_CHUNK = 1000


def _log_softmax(logits):
    # Shift by the row maximum so exp never overflows.
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class SequenceClassifier:
    """Recurrent layers of a cell (fastrnn.cells), then logits = h W^T + b
    with h (B, D*H) the last layer's final state, both directions, forward first.

    `recurrent_init` ("uniform": torch's init; "orthogonal" or "identity": each
    gate's block of every weight_hh set to a random orthogonal or the identity matrix)
    is an option for training the vanilla RNN on long sequences.
    """

    def __init__(self, input_size, hidden_size, num_classes, *, cell="lstm", num_layers=1,
                 bidirectional=False, dropout=0.0, forget_bias=1.0, backend=None, seed=None,
                 recurrent_init="uniform"):
        config = check_model_config({
            "input_size": input_size, "hidden_size": hidden_size, "num_classes": num_classes,
            "cell": cell, "num_layers": num_layers, "bidirectional": bidirectional,
            "dropout": dropout, "forget_bias": forget_bias, "recurrent_init": recurrent_init})
        # forget_bias means something only to a cell whose layer takes it (the LSTM)
        options = {"forget_bias": config["forget_bias"]} \
            if "forget_bias" in CELLS[cell].layer_options else {}
        self.layer = LAYERS[cell](config["input_size"], config["hidden_size"],
                                 config["num_layers"], bidirectional=config["bidirectional"],
                                 dropout=config["dropout"], backend=backend, seed=seed,
                                 **options)
        self.cell = cell
        self.forget_bias = options.get("forget_bias", 0.0)
        self.num_classes = config["num_classes"]
        self.recurrent_init = recurrent_init
        features, C = self.layer.num_directions * self.layer.hidden_size, self.num_classes
        # A stream of its own, so the recurrent layer equals fastrnn.LSTM(..., seed=seed).
        rng = np.random.default_rng(None if seed is None else [int(seed), 1])
        if recurrent_init != "uniform":
            self._init_recurrent(recurrent_init, rng)
        k = 1.0 / np.sqrt(features)   # torch.nn.Linear's init
        self.fc_weight = rng.uniform(-k, k, (C, features)).astype(self.layer.dtype)
        self.fc_bias = rng.uniform(-k, k, (C,)).astype(self.layer.dtype)
        # The head in one compiled call where the layer's backend has one: between two
        # kernels, a dozen small NumPy calls cost more than the arithmetic.
        self._compiled_head = _backends.optional_kernel(self.layer.backend, "classifier_head")

    def _init_recurrent(self, how, rng):
        H = self.layer.hidden_size
        for key, weight_hh in self.layer.parameters().items():
            if not key.startswith("weight_hh"):
                continue
            for gate in range(self.layer.gates):
                if how == "identity":
                    block = np.eye(H)
                else:
                    q, r = np.linalg.qr(rng.standard_normal((H, H)))
                    block = q * np.sign(np.diag(r))   # uniform over orthogonal matrices
                weight_hh[gate * H:(gate + 1) * H] = block

    # -- configuration and parameters ----------------------------------------

    @property
    def input_size(self):
        return self.layer.input_size

    @property
    def hidden_size(self):
        return self.layer.hidden_size

    @property
    def backend(self):
        return self.layer.backend

    def config(self):
        """The constructor arguments that rebuild this model's shapes and options."""
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_classes": self.num_classes,
            "cell": self.cell,
            "num_layers": self.layer.num_layers,
            "bidirectional": self.layer.bidirectional,
            "dropout": self.layer.dropout,
            "forget_bias": self.forget_bias,
            "recurrent_init": self.recurrent_init,
        }

    def parameters(self):
        """Every live parameter array: the layer's state_dict keys, fc.weight, fc.bias."""
        params = dict(self.layer.parameters())
        params["fc.weight"] = self.fc_weight
        params["fc.bias"] = self.fc_bias
        return params

    def state_dict(self):
        return {key: value.copy() for key, value in self.parameters().items()}

    def load_state_dict(self, state_dict):
        """Copy every parameter in from array-likes; all checked before any is changed."""
        load_parameters(self.parameters(), state_dict)

    # -- forward, loss, gradients ------------------------------------------------

    def _check_labels(self, y, batch):
        y = np.asarray(y)
        if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"labels must be integers, got dtype {y.dtype}")
        if y.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), "
                             f"got range [{y.min()}, {y.max()}]")
        return y.astype(np.intp)

    def head_features(self, state_T):
        """The head's input (B, D*H) from a layer's state_T: the last layer's final h,
        both directions side by side, forward first."""
        h_T = state_T[0] if isinstance(state_T, tuple) else state_T   # h first, then c
        D = self.layer.num_directions
        if D == 1:
            return h_T[-1]
        return np.ascontiguousarray(h_T[-D:].transpose(1, 0, 2)).reshape(h_T.shape[1], -1)

    def _state_grad(self, dfeatures):
        """dL/dstate_T of the layer from dL/d(head features) (B, D*H): only the last
        layer's h_T reaches the loss (the LSTM's c_T only through h)."""
        layer = self.layer
        D, H = layer.num_directions, layer.hidden_size
        B = dfeatures.shape[0]
        last = dfeatures[None] if D == 1 else dfeatures.reshape(B, D, H).transpose(1, 0, 2)
        if layer.num_layers == 1:
            dh_T = last
        else:
            dh_T = np.zeros((layer.num_layers * D, B, H), dtype=layer.dtype)
            dh_T[-D:] = last
        more = len(layer.state_names) - 1
        return (dh_T,) + (None,) * more if more else dh_T

    def _last_hidden(self, x, lengths, training):
        _, state = self.layer.forward(x, lengths=lengths, training=training)
        return self.head_features(state)

    def logits(self, x, lengths=None):
        """Class scores (B, num_classes) for x (B, T, I), without keeping anything for BPTT."""
        h_T = self._last_hidden(x, lengths, training=False)
        return h_T @ self.fc_weight.T + self.fc_bias

    def _head(self, h_T, y):
        """Loss (mean cross-entropy of the Linear head on h_T), predicted classes,
        d loss/d logits and d loss/d h_T."""
        B = h_T.shape[0]
        y = self._check_labels(y, B)
        log_probs = _log_softmax(h_T @ self.fc_weight.T + self.fc_bias)
        rows = np.arange(B)
        loss = -float(log_probs[rows, y].astype(np.float64).mean())
        # d(mean CE)/dlogits = (softmax - onehot) / B
        dlogits = np.exp(log_probs)
        dlogits[rows, y] -= 1.0
        dlogits /= B
        return loss, np.argmax(log_probs, axis=1), dlogits, dlogits @ self.fc_weight

    def head_loss_and_state_grad(self, h_T, y):
        """(loss, dL/dh_T) for given head features h_T (B, D*H) (see `head_features`)."""
        loss, _, _, dh_T = self._head(h_T, y)
        return loss, dh_T

    def _head_and_grads(self, h_T, y):
        """(loss, predictions, dL/dh_T, dL/dfc.weight, dL/dfc.bias) for one batch.

        One compiled call on the cpp backend (between two kernels, a dozen
        small NumPy calls cost more than the arithmetic); NumPy on the others.
        """
        if self._compiled_head is not None:
            labels = np.asarray(y)
            if labels.dtype.kind in "iu" and labels.shape == (h_T.shape[0],):
                return self._compiled_head(h_T, self.fc_weight, self.fc_bias,
                                           labels.astype(np.int64, copy=False))
        loss, predictions, dlogits, dh_T = self._head(h_T, y)
        return loss, predictions, dh_T, dlogits.T @ h_T, dlogits.sum(axis=0)

    def loss_and_grads(self, x, y, lengths=None):
        """Mean cross-entropy on one batch and its gradients, keyed like `parameters()`.

        Keeps the batch's head features (B, D*H) and predictions in `self.last_hidden`
        and `self.last_predictions` (for training logs).
        """
        h_T = self._last_hidden(x, lengths, training=True)
        loss, predictions, dh_T, dweight, dbias = self._head_and_grads(h_T, y)
        self.layer.backward(None, self._state_grad(dh_T), need_input_grad=False)
        grads = {**self.layer.grads, "fc.weight": dweight, "fc.bias": dbias}
        self.last_hidden = h_T
        self.last_predictions = predictions
        return loss, grads

    def _chunks(self, x, lengths):
        """(x, lengths) in chunks of EVAL_CHUNK sequences."""
        x = as_real_array(x, self.layer.dtype, "x")
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D (B, T, I), got shape {x.shape}")
        if lengths is not None:
            lengths = check_lengths(lengths, x.shape[1], x.shape[0])
        for start in range(0, x.shape[0], EVAL_CHUNK):
            chunk = slice(start, start + EVAL_CHUNK)
            yield x[chunk], None if lengths is None else lengths[chunk]

    def predict(self, x, lengths=None):
        """Class ids (B,) for x (B, T, I) (sequence b: x[b, :lengths[b]]); any batch size."""
        out = [np.argmax(self.logits(*chunk), axis=1) for chunk in self._chunks(x, lengths)]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def evaluate(self, x, y, lengths=None):
        """(mean cross-entropy, accuracy) over all of x, y."""
        y = self._check_labels(y, np.asarray(x).shape[0] if np.ndim(x) else -1)
        if y.size == 0:
            raise ValueError("evaluate needs at least one example")
        total_loss, correct, start = 0.0, 0, 0
        for chunk in self._chunks(x, lengths):
            labels = y[start:start + chunk[0].shape[0]]
            log_probs = _log_softmax(self.logits(*chunk))
            total_loss -= float(log_probs[np.arange(len(labels)), labels].astype(np.float64).sum())
            correct += int((np.argmax(log_probs, axis=1) == labels).sum())
            start += chunk[0].shape[0]
        return total_loss / y.size, correct / y.size

    # -- checkpoints -------------------------------------------------------------

    def save(self, path, **extra):
        """Write a checkpoint that `fastrnn.load(path)` reads back (atomically)."""
        save_checkpoint(path, self, **extra)

    @classmethod
    def from_checkpoint(cls, checkpoint, *, backend=None):
        """The model that a checkpoint read by `read_checkpoint` holds, on `backend`."""
        model = cls(**checkpoint.config, backend=backend)
        model.load_state_dict(checkpoint.params)
        return model

    def __repr__(self):
        return (f"SequenceClassifier({self.input_size}, {self.hidden_size}, {self.num_classes}, "
                f"cell={self.cell!r}{self.layer._options_repr()}, backend={self.backend!r})")


def load(path, *, backend=None):
    """The SequenceClassifier saved at `path` (by model.save or `fastrnn train --save`)."""
    return SequenceClassifier.from_checkpoint(read_checkpoint(path), backend=backend)
