"""A SequenceClassifier's configuration, checked in one place.

The constructor, a checkpoint being read and a `fastrnn train --resume` all
take a configuration from outside; each checks it with `check_model_config`.
"""

from ._argtypes import check_int, check_number
from .layers import CELLS

RECURRENT_INITS = ("uniform", "orthogonal", "identity")

# The keys of SequenceClassifier.config(): its constructor's shape and option arguments.
CONFIG_KEYS = ("input_size", "hidden_size", "num_classes", "cell", "forget_bias",
               "recurrent_init")


def check_cell(cell):
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    return cell


def check_recurrent_init(recurrent_init):
    if recurrent_init not in RECURRENT_INITS:
        raise ValueError(f"recurrent_init must be one of {list(RECURRENT_INITS)}, "
                         f"got {recurrent_init!r}")
    return recurrent_init


def check_model_config(config):
    """`config` (a dict with exactly CONFIG_KEYS) with its numbers as int and float.

    Raises ValueError naming the first entry that no SequenceClassifier could have.
    """
    if not isinstance(config, dict) or set(config) != set(CONFIG_KEYS):
        raise ValueError(f"a model config has exactly the keys {sorted(CONFIG_KEYS)}, "
                         f"got {config!r}")
    return {
        "input_size": check_int(config["input_size"], "input_size"),
        "hidden_size": check_int(config["hidden_size"], "hidden_size"),
        "num_classes": check_int(config["num_classes"], "num_classes", low=2),
        "cell": check_cell(config["cell"]),
        "forget_bias": check_number(config["forget_bias"], "forget_bias"),
        "recurrent_init": check_recurrent_init(config["recurrent_init"]),
    }
