"""fastrnn's kernels inside a torch process: torch's thread count, torch's OpenMP team."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrnn
from fastrnn import _backends
from fastrnn.torch import _threads
from helpers import OUTSIDE_REPO

from .twins import ft, torch


def run_python(code):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=OUTSIDE_REPO, timeout=300,
                          env={k: v for k, v in os.environ.items()
                               if k != "FASTRNN_NUM_THREADS"})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_kernels_follow_torch_s_thread_count_until_the_user_sets_fastrnn_s():
    out = run_python("""
        import torch, fastrnn, fastrnn.torch
        rnn = fastrnn.torch.GRU(3, 4)
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            rnn(torch.randn(5, 2, 3))
            print(fastrnn.get_num_threads())
        fastrnn.set_num_threads(2)
        rnn(torch.randn(5, 2, 3))
        print(fastrnn.get_num_threads())
    """)
    assert out == ["1", "2", "1", "2"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/task")
def test_the_kernels_run_on_torch_s_openmp_team_without_threads_of_their_own():
    out = run_python("""
        import os, torch, fastrnn.torch
        torch.set_num_threads(2)
        torch.randn(256, 256) @ torch.randn(256, 256)   # torch's team exists
        before = len(os.listdir("/proc/self/task"))
        rnn = fastrnn.torch.LSTM(64, 256, batch_first=True, bidirectional=True)
        y, _ = rnn(torch.randn(64, 20, 64))
        y.sum().backward()
        print(fastrnn.torch._threads.share_torch_openmp(), fastrnn.get_num_threads(),
              before, len(os.listdir("/proc/self/task")))
    """)
    shared, threads, before, after = out
    if shared != "True":
        pytest.skip("torch here does not run on an OpenMP runtime fastrnn can share")
    assert threads == "2" and after == before


def test_torch_s_team_and_fastrnn_s_own_pool_give_the_same_bits(keep_thread_settings):
    if not _threads.share_torch_openmp():
        pytest.skip("torch here does not run on an OpenMP runtime fastrnn can share")
    core = _backends.compiled_module()
    torch.manual_seed(0)
    module = ft.LSTM(16, 40, 2, bidirectional=True, batch_first=True)
    x = torch.randn(30, 12, 16, requires_grad=True)
    results = []
    for runtime in ("own pool", "torch's team"):
        if runtime == "own pool":
            core._use_openmp_runtime(0, 0, 0)
        else:
            _threads.share_torch_openmp.cache_clear()
            _threads.share_torch_openmp()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fastrnn.set_num_threads(threads)
            module.zero_grad()
            x.grad = None
            y, _ = module(x)
            y.square().sum().backward()
            results.append([y.detach().numpy(), x.grad.numpy()] +
                           [p.grad.numpy() for p in module.parameters()])
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))
