"""The isolated mode, `fastrnn bench`'s default: each rival its own process, taking turns.

Small shapes and a few repetitions: what is checked is the protocol and the
report, never a timing (the machine is shared).
"""

import io
import json
import os
import pathlib
import subprocess
import sys

import pytest

import fastrnn
from helpers import BACKENDS
from fastrnn import cli
from fastrnn.bench import in_process, isolated, report, suite, timing
from fastrnn.bench.cases import CATALOGUE

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("keep_thread_settings")


def small_peak(monkeypatch):
    """measure_peak, but on a 128^3 product so tests stay fast."""
    real = timing.measure_peak
    monkeypatch.setattr(timing, "measure_peak",
                        lambda threads, repeats: real(threads, size=128, repeats=2))


@pytest.mark.parametrize("flags, mode", [([], "isolated"), (["--isolate"], "isolated"),
                                         (["--in-process"], "in-process")])
def test_isolated_is_the_default_and_isolate_still_asks_for_it(monkeypatch, flags, mode):
    chosen = []
    monkeypatch.setattr(isolated, "run_isolated", lambda *a, **k: chosen.append("isolated"))
    monkeypatch.setattr(in_process, "run_in_process",
                        lambda *a, **k: chosen.append("in-process"))
    monkeypatch.setattr(report, "format_report", lambda timed: "")
    assert cli.main(["bench", *flags, "--cases", "rnn-inference-tiny", "--no-peak"]) == 0
    assert chosen == [mode]


def test_bench_times_each_rival_in_its_own_process_by_default(tmp_path, monkeypatch, capsys):
    small_peak(monkeypatch)
    children = []
    real = isolated.child_command

    def child_command(rival, case_names, threads):
        children.append((rival, case_names))
        return real(rival, case_names, threads)
    monkeypatch.setattr(isolated, "child_command", child_command)
    out = tmp_path / "report.json"
    rivals = ["numpy"] + [name for name in BACKENDS if name != "numpy"][:1]
    code = cli.main(["bench", "--shapes", "tiny", "--cells", "rnn",
                     "--modes", "inference", "--rivals", ",".join(rivals), "--quick",
                     "--seconds", "0.05", "--threads", "1", "--json", str(out)])
    assert code == 0
    assert children == [(rival, ["rnn-inference-tiny"]) for rival in rivals]   # one process each
    written = json.loads(out.read_text())
    assert written["timing"] == "isolated" and written["method"] == report.METHODS["isolated"]
    assert written["peak"]["size"] == 128 and written["skipped"] == []
    rows = {row["rival"]: row for row in written["results"]}
    assert list(rows) == rivals
    for row in rows.values():
        assert row["samples"] >= 2 and row["speedup_vs_torch"] is None
        assert row["speedup_vs_numpy"] == pytest.approx(
            rows["numpy"]["median_s"] / row["median_s"])
        assert row["percent_of_peak"] == pytest.approx(
            100 * row["gflops"] / written["peak"]["gflops"])
    printed = capsys.readouterr().out
    assert report.MODES["isolated"] in printed and report.METHODS["isolated"] in printed


def test_in_process_flag_times_in_this_process(monkeypatch, capsys):
    monkeypatch.setattr(isolated, "Child", lambda *args: pytest.fail("a child was started"))
    code = cli.main(["bench", "--in-process", "--cases", "lstm-inference-tiny", "--rivals",
                     "numpy", "--quick", "--seconds", "0.02", "--threads", "1", "--no-peak"])
    assert code == 0
    printed = capsys.readouterr().out
    assert report.MODES["in-process"] in printed and "lstm-inference-tiny  numpy" in printed


class FakeChild:
    """A serving child that answers at once: cpp's calls take 1 ms, the others' 4 ms."""

    requests = []

    def __init__(self, rival, command, workdir):
        self.rival = rival
        self.names = command[command.index("--cases") + 1].split(",")

    def receive(self):
        return {"ready": self.names, "skipped": [],
                "outputs": {name: {"loss": 1.0} for name in self.names}}

    def request(self, case_name, block_seconds):
        FakeChild.requests.append((case_name, self.rival))
        return [0.001 if self.rival == "cpp" else 0.004]

    def close(self):
        pass


@pytest.fixture
def fake_children(monkeypatch):
    FakeChild.requests = []
    monkeypatch.setattr(isolated, "Child", FakeChild)
    return FakeChild.requests


def test_isolated_children_take_turns(fake_children):
    # Each request gets one block from one child; the children alternate, in
    # rotating order, until the budget and the minimum of rounds are both met.
    built = isolated.run_isolated([CATALOGUE["rnn-inference-tiny"]], ["numpy", "cpp"],
                                  threads=1, peak=None, budget=0.0, min_rounds=3, pause=0.0)
    assert [rival for _, rival in fake_children] == ["numpy", "cpp", "cpp", "numpy",
                                                     "numpy", "cpp"]
    rows = {row["rival"]: row for row in built["results"]}
    assert rows["cpp"]["speedup_vs_numpy"] == pytest.approx(4.0)
    assert rows["cpp"]["samples"] == rows["numpy"]["samples"] == 3


def test_a_lengths_case_takes_turns_with_its_padded_twin(fake_children):
    lengths_case = CATALOGUE["lstm-train-medium-lengths"]
    built = isolated.run_isolated([lengths_case], ["cpp", "torch"], threads=1, peak=None,
                                  budget=0.0, min_rounds=1, pause=0.0)
    assert fake_children == [("lstm-train-medium", "cpp"), ("lstm-train-medium", "torch"),
                             ("lstm-train-medium-lengths", "cpp"),
                             ("lstm-train-medium-lengths", "torch")]
    ratios = {(r["case"], r["rival"]): r["speedup_vs_padded"] for r in built["results"]}
    assert ratios[("lstm-train-medium-lengths", "cpp")] == pytest.approx(1.0)
    assert ratios[("lstm-train-medium", "cpp")] is None


def test_a_failing_child_is_reported_as_skipped(monkeypatch):
    monkeypatch.setattr(isolated, "child_command", lambda rival, names, threads: [
        sys.executable, "-c", "import sys; print('noise', file=sys.stderr); sys.exit('boom')"])
    built = isolated.run_isolated([CATALOGUE["rnn-inference-tiny"]], ["torch"], threads=1,
                                  peak=None)
    assert built["results"] == [] and built["timing"] == "isolated"
    assert built["skipped"] == [{"case": "rnn-inference-tiny", "rival": "torch",
                                 "reason": "failed in its own process (exit 1): boom",
                                 "failed": True}]
    assert "skipped torch on rnn-inference-tiny" in report.format_report(built)


def test_a_child_serves_blocks_on_request():
    requests = io.StringIO("".join(json.dumps({"case": "rnn-train-tiny", "block_seconds": 0.0})
                                   + "\n" for _ in range(2)))
    answers = io.StringIO()
    cases = [CATALOGUE["rnn-train-tiny"], CATALOGUE["rnn-inference-tiny"]]
    isolated.serve(cases, "numpy", 1, infile=requests, outfile=answers)
    hello, *blocks = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert hello["ready"] == ["rnn-train-tiny", "rnn-inference-tiny"] and hello["skipped"] == []
    assert hello["outputs"]["rnn-train-tiny"]["loss"] > 0
    assert hello["outputs"]["rnn-inference-tiny"]["shape"] == [3, 2, 5]
    assert len(blocks) == 2
    assert all(len(block["times"]) == 1 and block["times"][0] > 0 for block in blocks)


def test_a_child_names_the_rival_it_cannot_run():
    answers = io.StringIO()
    isolated.serve([CATALOGUE["lstm-train-tiny"]], "onnxruntime", 1, infile=io.StringIO(),
                   outfile=answers)
    hello = json.loads(answers.getvalue())
    assert hello["ready"] == [] and hello["skipped"] == [{
        "case": "lstm-train-tiny", "rival": "onnxruntime", "failed": False,
        "reason": "ONNX Runtime's recurrent operators do inference only"}]


def test_suites_report_the_timings_of_the_rivals_own_processes(tmp_path):
    """`pytest bench` in its default mode: pytest-benchmark records the children's timed calls."""
    package_parent = str(pathlib.Path(fastrnn.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    rivals = ["numpy"] + [name for name in BACKENDS if name != "numpy"][:1]
    out = tmp_path / "suite.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "--bench-cases",
         "rnn-inference-tiny", "--bench-seconds", "0.05", "--bench-threads", "1", "-q",
         "-p", "no:cacheprovider", "-k", " or ".join(rivals), f"--benchmark-json={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = json.loads(out.read_text())
    benchmarks = {b["param"]: b for b in written["benchmarks"]}
    assert set(benchmarks) == {f"rnn-inference-tiny-{rival}" for rival in rivals}
    for timed in benchmarks.values():
        assert timed["group"] == "rnn-inference-tiny"
        assert timed["options"]["timer"] == suite.replay_clock.__name__
        assert timed["extra_info"]["timing"] == "isolated"
        # every round is one call timed by the child: 3 blocks of at least one call
        assert timed["stats"]["rounds"] >= 3 and timed["stats"]["min"] > 0


def test_suites_refuse_a_timer_they_cannot_honour(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "--benchmark-timer=time.time",
         "-q", "-p", "no:cacheprovider", "--collect-only"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--benchmark-timer needs --bench-in-process" in done.stdout + done.stderr
