"""Adam, gradient-norm clipping and learning-rate schedules for dicts of NumPy arrays.

The arithmetic follows torch.optim.Adam and torch.nn.utils.clip_grad_norm_
with their defaults, step for step, so a model trained here and the same model
trained in torch take the same path (up to float rounding).
"""

import math

import numpy as np

from . import _backends
from ._arrays import check_keys

SCHEDULES = ("constant", "cosine", "step")


def _matching_arrays(params, grads):
    """{key: grads[key] as an array} (each converted once), checked to match `params`'
    keys and shapes; else TypeError or ValueError."""
    check_keys(grads, params, "grads")
    arrays = {}
    for key, param in params.items():
        grad = arrays[key] = np.asarray(grads[key])
        if grad.shape != param.shape:
            raise ValueError(f"grads[{key!r}] has shape {grad.shape}, "
                             f"the parameter {param.shape}")
    return arrays


def _positive_float(value, what, *, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be finite and {bound}, got {value!r}")
    return value


class Adam:
    """Adam (Kingma & Ba) with torch's defaults: no weight decay, no amsgrad.

    `params` is a dict of NumPy arrays; `step(grads)` updates them in place.
    Per parameter p with gradient g, at step t (counting from 1):
        m = m + (1 - beta1) (g - m)
        v = beta2 v + (1 - beta2) g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    `fused`: None (default) updates each contiguous float32/float64 parameter
    in one compiled pass where the cpp backend loads, with NumPy's rounding
    bit for bit, and everything else with NumPy ufuncs; False always uses
    NumPy; True requires the compiled pass to be available.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, fused=None):
        if not hasattr(params, "items"):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        for key, value in params.items():
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                raise TypeError(f"params[{key!r}] must be a floating NumPy array "
                                f"(updated in place), got {type(value).__name__}")
        self.params = params
        self.lr = _positive_float(lr, "lr", allow_zero=True)
        try:
            beta1, beta2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ValueError(f"betas must be two numbers, got {betas!r}") from None
        for beta in (beta1, beta2):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.betas = (beta1, beta2)
        self.eps = _positive_float(eps, "eps", allow_zero=True)
        self.step_count = 0
        self.exp_avg = {key: np.zeros_like(p) for key, p in params.items()}
        self.exp_avg_sq = {key: np.zeros_like(p) for key, p in params.items()}
        # The compiled backend's one-pass update; it rounds as the ufuncs in
        # step() do, so which one runs never changes a result.
        if fused not in (None, True, False):
            raise ValueError(f"fused must be None, True or False, got {fused!r}")
        self._fused_update = None
        if fused is not False:
            self._fused_update = getattr(_backends.compiled_module(), "adam_update", None)
            if fused and self._fused_update is None:
                raise ValueError("fused=True needs the compiled backend, which is not "
                                 f"available here: {_backends.unavailable_backends().get('cpp')}")

    def step(self, grads):
        """One update of every parameter from `grads` (a dict keyed like params)."""
        grads = _matching_arrays(self.params, grads)
        self.step_count += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1.0 - beta1 ** self.step_count
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** self.step_count)
        step_size = self.lr / bias_correction1
        fused = self._fused_update
        for key, param in self.params.items():
            dtype = param.dtype.type
            grad = grads[key]
            if grad.dtype != param.dtype:
                grad = grad.astype(param.dtype)
            m, v = self.exp_avg[key], self.exp_avg_sq[key]
            if fused is not None and fused(param, grad, m, v, beta1, beta2, step_size,
                                           bias_correction2_sqrt, self.eps):
                continue
            # The update below, in place through one scratch array (same
            # operations in the same order, so the same rounding as spelled out):
            #   m += (1 - beta1) * (grad - m)
            #   v = beta2 * v + (1 - beta2) * grad * grad
            #   param += -step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps))
            # Scalars are in the parameter's precision, as torch casts them.
            work = np.subtract(grad, m)
            work *= dtype(1.0 - beta1)
            m += work
            v *= dtype(beta2)
            np.multiply(dtype(1.0 - beta2), grad, out=work)
            work *= grad
            v += work
            np.sqrt(v, out=work)
            work /= dtype(bias_correction2_sqrt)
            work += dtype(self.eps)
            np.divide(m, work, out=work)
            work *= dtype(-step_size)
            param += work

    def state_dict(self):
        """Everything needed to continue exactly: hyperparameters, step count, moments."""
        return {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "step": self.step_count,
            "exp_avg": {key: m.copy() for key, m in self.exp_avg.items()},
            "exp_avg_sq": {key: v.copy() for key, v in self.exp_avg_sq.items()},
        }

    def load_state_dict(self, state):
        """Restore from `state_dict()` output; checked completely before anything changes."""
        try:
            lr, betas, eps = state["lr"], state["betas"], state["eps"]
            step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an Adam state_dict: {exc!r}") from None
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"Adam state step must be a non-negative integer, got {step!r}")
        restored = Adam(self.params, lr=lr, betas=betas, eps=eps)
        for name, moments in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            moments = _matching_arrays(self.params, moments)
            for key, value in moments.items():
                if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
                    raise ValueError(f"Adam state {name}[{key!r}] must be finite floats")
                getattr(restored, name)[key][...] = value
        if np.any([np.any(v < 0) for v in restored.exp_avg_sq.values()]):
            raise ValueError("Adam state exp_avg_sq must be non-negative")
        self.lr, self.betas, self.eps = restored.lr, restored.betas, restored.eps
        self.exp_avg, self.exp_avg_sq = restored.exp_avg, restored.exp_avg_sq
        self.step_count = int(step)


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place so their joint L2 norm is at most max_norm.

    As torch.nn.utils.clip_grad_norm_: returns the norm before clipping and
    scales by max_norm / (norm + 1e-6) when that is below 1.
    """
    max_norm = _positive_float(max_norm, "max_norm")
    if not hasattr(grads, "values"):
        raise TypeError(f"grads must be a dict of arrays, got {type(grads).__name__}")
    arrays = list(grads.values())
    if not arrays:
        return 0.0
    # Each array's norm in its own precision, then the norm of those norms (torch's order).
    norms = [np.linalg.norm(np.ravel(g)) for g in arrays]
    total_norm = float(np.linalg.norm(np.asarray(norms, dtype=np.result_type(*arrays))))
    clip_coef = max_norm / (total_norm + 1e-6)
    if clip_coef < 1.0:
        for g in arrays:
            g *= g.dtype.type(clip_coef)
    return total_norm


def scheduled_lr(schedule, base_lr, step, total_steps):
    """Learning rate for optimizer step `step` (0-based) out of `total_steps`.

    constant: base_lr throughout.
    cosine:   base_lr * (1 + cos(pi * step / total_steps)) / 2, from base_lr down to ~0.
    step:     base_lr, then x0.1 from 50% of the steps and x0.01 from 75%.
    """
    if schedule == "constant":
        return base_lr
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps!r}")
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "step":
        if step >= 0.75 * total_steps:
            return base_lr * 0.01
        if step >= 0.5 * total_steps:
            return base_lr * 0.1
        return base_lr
    raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {list(SCHEDULES)}")
