"""Adam, clip_grad_norm and the lr schedules against torch."""

import numpy as np
import pytest

from fastrnn.optim import Adam, clip_grad_norm, scheduled_lr

torch = pytest.importorskip("torch")

SHAPES = {"weight": (7, 5), "bias": (7,), "scalar_like": (1,)}
# Same arithmetic, different rounding order inside torch's vectorised loops.
ADAM_TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}


def random_arrays(rng, dtype, scale=1.0):
    return {k: (scale * rng.standard_normal(s)).astype(dtype) for k, s in SHAPES.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lr,betas,eps", [(1e-3, (0.9, 0.999), 1e-8), (0.01, (0.8, 0.99), 1e-6)],
                         ids=["defaults", "custom"])
def test_adam_matches_torch_over_25_steps(dtype, lr, betas, eps):
    rng = np.random.default_rng(0)
    params = random_arrays(rng, dtype)
    torch_params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    ours = Adam(params, lr=lr, betas=betas, eps=eps)
    theirs = torch.optim.Adam(list(torch_params.values()), lr=lr, betas=betas, eps=eps)
    for step in range(25):
        # Gradients of wildly varying size, some exactly zero, as in training.
        grads = random_arrays(rng, dtype, scale=10.0 ** rng.integers(-4, 3))
        grads["bias"][:2] = 0
        for k, p in torch_params.items():
            p.grad = torch.tensor(grads[k])
        ours.step(grads)
        theirs.step()
        for k, p in torch_params.items():
            expected = p.detach().numpy()
            err = np.abs(params[k] - expected).max() / np.abs(expected).max()
            assert err <= ADAM_TOL[np.dtype(dtype)], f"step {step} {k}: {err:.3g}"
    assert ours.step_count == 25


def test_adam_updates_in_place_and_checks_grads():
    w = np.ones(3, np.float32)
    opt = Adam({"w": w}, lr=0.1)
    opt.step({"w": np.ones(3, np.float32)})
    assert np.allclose(w, 0.9)   # the first Adam step moves each coordinate by lr
    with pytest.raises(ValueError, match="missing"):
        opt.step({})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.ones(4)})
    with pytest.raises(ValueError, match="lr"):
        Adam({"w": w}, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam({"w": w}, betas=(1.0, 0.9))
    with pytest.raises(TypeError):
        Adam({"w": [1.0, 2.0]})


def test_adam_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    grads = [random_arrays(rng, np.float32) for _ in range(6)]
    straight = random_arrays(np.random.default_rng(2), np.float32)
    opt = Adam(straight, lr=0.01)
    for g in grads:
        opt.step(g)

    resumed = random_arrays(np.random.default_rng(2), np.float32)
    first = Adam(resumed, lr=0.01)
    for g in grads[:3]:
        first.step(g)
    second = Adam(resumed, lr=0.5)
    second.load_state_dict(first.state_dict())
    assert second.step_count == 3 and second.lr == 0.01
    for g in grads[3:]:
        second.step(g)
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_adam_load_state_dict_rejects_bad_state():
    opt = Adam({"w": np.zeros(2, np.float32)})
    good = opt.state_dict()
    with pytest.raises(ValueError):
        opt.load_state_dict({"lr": 0.1})
    with pytest.raises(ValueError, match="step"):
        opt.load_state_dict({**good, "step": -1})
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({**good, "exp_avg": {"w": np.zeros(3)}})
    with pytest.raises(ValueError, match="non-negative"):
        opt.load_state_dict({**good, "exp_avg_sq": {"w": -np.ones(2)}})
    assert opt.step_count == 0


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(3)
    grads = random_arrays(rng, np.float32)
    torch_params = [torch.zeros(s, requires_grad=True) for s in SHAPES.values()]
    for p, g in zip(torch_params, grads.values()):
        p.grad = torch.tensor(g.copy())
    expected_norm = float(torch.nn.utils.clip_grad_norm_(torch_params, max_norm))
    norm = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(expected_norm, rel=1e-6)
    for p, g in zip(torch_params, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6, atol=1e-7)
    clipped = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    assert clipped <= max_norm * (1 + 1e-5)


def test_clip_grad_norm_rejects_bad_max_norm():
    with pytest.raises(ValueError):
        clip_grad_norm({"w": np.ones(2)}, 0)
    with pytest.raises(ValueError):
        clip_grad_norm({"w": np.ones(2)}, float("nan"))


def test_schedules():
    assert scheduled_lr("constant", 0.01, 4000, 5000) == 0.01
    assert scheduled_lr("cosine", 0.01, 0, 5000) == pytest.approx(0.01)
    assert scheduled_lr("cosine", 0.01, 2500, 5000) == pytest.approx(0.005)
    assert scheduled_lr("cosine", 0.01, 5000, 5000) == pytest.approx(0.0, abs=1e-12)
    assert [scheduled_lr("step", 1.0, s, 100) for s in (0, 49, 50, 74, 75, 99)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="schedule"):
        scheduled_lr("linear", 0.01, 0, 10)
