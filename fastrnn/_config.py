"""A SequenceClassifier's configuration, checked in one place.

The constructor, a checkpoint being read and a `fastrnn train --resume` all
take a configuration from outside; each checks it with `check_model_config`.
"""

from ._argtypes import check_dropout, check_int, check_number
from ._stack import parameter_shapes as layer_parameter_shapes
from .cells import CELLS, check_cell

RECURRENT_INITS = ("uniform", "orthogonal", "identity")

# The keys of SequenceClassifier.config(): its constructor's shape and option arguments.
CONFIG_KEYS = ("input_size", "hidden_size", "num_classes", "cell", "num_layers",
               "bidirectional", "dropout", "forget_bias", "recurrent_init")
# What 0.1 had not: its checkpoints' configs lack these keys and mean these values.
ADDED_IN_0_2 = {"num_layers": 1, "bidirectional": False, "dropout": 0.0}


def check_recurrent_init(recurrent_init):
    if recurrent_init not in RECURRENT_INITS:
        raise ValueError(f"recurrent_init must be one of {list(RECURRENT_INITS)}, "
                         f"got {recurrent_init!r}")
    return recurrent_init


def check_bidirectional(bidirectional):
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
    return bidirectional


def check_model_config(config):
    """`config` (a dict with CONFIG_KEYS; a 0.1 config without ADDED_IN_0_2's keys means
    their values) complete, with its numbers as int and float.

    Raises ValueError naming the first entry that no SequenceClassifier could have.
    """
    if isinstance(config, dict):
        config = {**ADDED_IN_0_2, **config}
    if not isinstance(config, dict) or set(config) != set(CONFIG_KEYS):
        raise ValueError(f"a model config has exactly the keys {sorted(CONFIG_KEYS)}, "
                         f"got {config!r}")
    try:
        dropout = check_dropout(config["dropout"])
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return {
        "input_size": check_int(config["input_size"], "input_size"),
        "hidden_size": check_int(config["hidden_size"], "hidden_size"),
        "num_classes": check_int(config["num_classes"], "num_classes", low=2),
        "cell": check_cell(config["cell"]),
        "num_layers": check_int(config["num_layers"], "num_layers"),
        "bidirectional": check_bidirectional(config["bidirectional"]),
        "dropout": dropout,
        "forget_bias": check_number(config["forget_bias"], "forget_bias"),
        "recurrent_init": check_recurrent_init(config["recurrent_init"]),
    }


def parameter_shapes(config):
    """{key: shape} of every parameter of a checked config's SequenceClassifier."""
    shapes = layer_parameter_shapes(CELLS[config["cell"]].G, config["input_size"],
                                    config["hidden_size"], config["num_layers"],
                                    config["bidirectional"])
    D = 2 if config["bidirectional"] else 1
    shapes["fc.weight"] = (config["num_classes"], D * config["hidden_size"])
    shapes["fc.bias"] = (config["num_classes"],)
    return shapes
