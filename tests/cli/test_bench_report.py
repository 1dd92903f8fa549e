"""The report machinery of `fastrnn bench`: FLOP counts, derived figures, JSON, plot, options."""

import json
import sys
import time

import pytest

from fastrnn import bench, cli


# The benchmark code sets every library's threads; put them back for later tests.
pytestmark = pytest.mark.usefixtures("keep_thread_settings")


def test_forward_flops_by_hand():
    # LSTM, origin shape: 2 * T28 * B100 * (I28 + H128) * 4 gates * H128
    #   = 2 * 28 * 100 * 156 * 512 = 447,283,200
    assert bench.forward_flops("lstm", 28, 100, 28, 128) == 447_283_200
    # RNN: one gate, a quarter of that.
    assert bench.forward_flops("rnn", 28, 100, 28, 128) == 111_820_800
    # batch-1 latency: 2 * 28 * 1 * 156 * 512
    assert bench.case_flops("latency", "lstm", bench.LATENCY_SHAPE) == 4_472_832


def test_training_step_counts_three_forwards():
    shape = bench.SHAPES["medium"]   # T64 B128 I64 H256: 2*64*128*320*256 per gate
    forward = 2 * 64 * 128 * 320 * 256
    assert bench.case_flops("inference", "rnn", shape) == forward
    assert bench.case_flops("train", "rnn", shape) == 3 * forward
    assert bench.case_flops("train", "lstm", shape) == 3 * 4 * forward


def test_derived_figures():
    case = bench.Case("inference", "rnn", "origin", bench.SHAPES["origin"])
    samples = {"numpy": [2.0, 3.0, 1.0], "torch": [1.0], "fast": [0.5, 0.5]}
    peak = {"gflops": 0.5}
    rows = {row["rival"]: row for row in bench._case_results(case, samples, peak)}
    fast = rows["fast"]
    assert fast["median_s"] == 0.5
    assert fast["samples"] == 2
    assert fast["samples_per_s"] == 200.0                  # B=100 sequences in 0.5 s
    assert fast["gflops"] == pytest.approx(111_820_800 / 0.5 / 1e9)
    assert fast["percent_of_peak"] == pytest.approx(100 * fast["gflops"] / 0.5)
    assert fast["speedup_vs_numpy"] == 4.0                 # median 2.0 / 0.5
    assert fast["speedup_vs_torch"] == 2.0
    assert rows["numpy"]["speedup_vs_numpy"] == 1.0


def test_ratios_missing_without_their_rival():
    case = bench.Case("latency", "lstm", "batch1", bench.LATENCY_SHAPE)
    row, = bench._case_results(case, {"fast": [1e-3]}, None)
    assert row["speedup_vs_numpy"] is None and row["speedup_vs_torch"] is None
    assert row["percent_of_peak"] is None


def test_cases_follow_the_options():
    cases = bench.make_cases(["origin", "large"], ["lstm"], ["train", "latency"])
    assert [(c.mode, c.shape_name) for c in cases] == [
        ("train", "origin"), ("train", "large"), ("latency", "batch1")]
    assert cases[-1].shape == (28, 1, 28, 128)


def small_peak(monkeypatch):
    """measure_peak, but on a 128^3 product so tests stay fast."""
    real = bench.measure_peak
    monkeypatch.setattr(bench, "measure_peak",
                        lambda threads, repeats: real(threads, size=128, repeats=2))


def test_json_report_schema(tmp_path, monkeypatch, capsys):
    small_peak(monkeypatch)
    out = tmp_path / "report.json"
    code = cli.main(["bench", "--shapes", "tiny", "--cells", "rnn,lstm", "--modes", "inference",
                     "--rivals", "numpy", "--quick", "--seconds", "0.05", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert {"fastrnn_version", "threads", "peak", "flop_counting", "method", "results",
            "skipped"} <= set(report)
    assert report["timing"] == "interleaved" and report["method"] == bench.METHOD
    assert report["peak"]["gflops"] > 0 and report["peak"]["size"] == 128
    assert isinstance(report["peak"]["kernel"], str) and report["peak"]["kernel"]
    assert set(report["load"]) == {"cpus", "start", "end"} and report["load"]["cpus"] >= 1
    assert [r["case"] for r in report["results"]] == ["rnn inference tiny",
                                                      "lstm inference tiny"]
    for row in report["results"]:
        assert row["rival"] == "numpy" and row["samples"] >= 2
        assert (row["T"], row["B"], row["I"], row["H"]) == tuple(bench.SHAPES["tiny"])
        assert row["flops"] == bench.case_flops("inference", row["cell"], bench.SHAPES["tiny"])
        assert row["median_s"] > 0 and row["gflops"] == pytest.approx(
            row["flops"] / row["median_s"] / 1e9)
        assert row["speedup_vs_numpy"] == 1.0 and row["speedup_vs_torch"] is None
    printed = capsys.readouterr().out
    assert "rnn inference tiny" in printed and "GFLOP/s" in printed


def test_plot_without_matplotlib_fails_before_timing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail

    def must_not_run(*args, **kwargs):
        raise AssertionError("timing started although the plot cannot be drawn")
    monkeypatch.setattr(bench, "measure_peak", must_not_run)
    code = cli.main(["bench", "--plot", str(tmp_path / "bench.png")])
    assert code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "bench.png").exists()


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    case = bench.Case("train", "lstm", "origin", bench.SHAPES["origin"])
    rows = bench._case_results(case, {"numpy": [0.05], "torch": [0.02]}, {"gflops": 90.0})
    report = {"threads": 2, "peak": {"gflops": 90.0}, "results": rows}
    path = tmp_path / "bench.png"
    bench.plot_report(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_has_every_column():
    case = bench.Case("inference", "lstm", "origin", bench.SHAPES["origin"])
    report = {"fastrnn_version": "0", "threads": 1, "method": bench.METHOD, "skipped": [],
              "peak": {"gflops": 50.0, "size": 2048, "kernel": "Haswell"},
              "results": bench._case_results(case, {"numpy": [0.04], "torch": [0.01]},
                                             {"gflops": 50.0})}
    lines = bench.format_report(report).splitlines()
    header = next(line for line in lines if line.startswith("case"))
    assert header.split() == ["case", "rival", "median", "samples/s", "GFLOP/s", "%", "peak",
                              "vs", "numpy", "vs", "torch"]
    torch_row = next(line for line in lines if "torch" in line and "ms" in line)
    assert "10.00 ms" in torch_row and "4.00x" in torch_row and "1.00x" in torch_row
    assert any("2*B*(I+H)*G*H" in line for line in lines)
    assert any("alternating blocks" in line for line in lines)


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "huge"], "--shapes must be"),
    (["--cells", "gru"], "--cells must be"),
    (["--modes", ""], "--modes must be"),
    (["--threads", "0"], "positive integer"),
    (["--seconds", "-1"], "positive finite number"),
    (["--rivals", "tensorflow"], "--rivals must be"),
])
def test_bad_options_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench"] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_output_directory_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "measure_peak", lambda *a, **k: pytest.fail("timing started"))
    code = cli.main(["bench", "--json", str(tmp_path / "no" / "such" / "dir.json")])
    assert code == 2
    assert "directory does not exist" in capsys.readouterr().err


def test_peak_measurement_reports_its_kernel():
    pytest.importorskip("threadpoolctl")
    peak = bench.measure_peak(1, size=128, repeats=2)
    assert peak["gflops"] > 0 and len(peak["times"]) == 2
    assert peak["blas"] and peak["kernel"] != "unknown"
    assert all(lib["num_threads"] == 1 for lib in peak["blas"])


def test_rivals_take_turns_in_blocks():
    calls = []

    def runner(name):
        def run():
            calls.append(name)
            time.sleep(0.002)
        return run
    runners = {name: runner(name) for name in ("a", "b", "c")}
    # A call (>= 2 ms) outlasts block_seconds: blocks of one call, no wake-up call.
    samples = bench.time_interleaved(runners, budget=0.0, min_rounds=3, block_seconds=0.001,
                                     pause=0.0)
    # one sizing call each, then three rounds, each starting with the next rival
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    for times in samples.values():
        assert len(times) == 3 and all(t >= 0.002 for t in times)


def test_report_goes_on_when_a_rival_fails(monkeypatch):
    real = bench.make_runner

    def make_runner(rival, case, threads, seed=0):
        if rival == "torch":
            def run():
                raise MemoryError("cannot allocate")
            return run
        return real(rival, case, threads, seed)
    monkeypatch.setattr(bench, "make_runner", make_runner)
    case = bench.Case("inference", "rnn", "tiny", bench.SHAPES["tiny"])
    report = bench.run_report([case], ["numpy", "torch"], threads=1, budget=0.0,
                              min_rounds=1, peak=None)
    assert [r["rival"] for r in report["results"]] == ["numpy"]
    assert report["skipped"] == [{"case": "rnn inference tiny", "rival": "torch",
                                  "reason": "failed: MemoryError: cannot allocate"}]


@pytest.mark.parametrize("start, end, cpus, threads, busy", [
    (0.3, 2.1, 2, 2, False),     # only this benchmark's own two threads
    (0.2, 2.2, 2, 1, True),      # a second job beside it on 2 CPUs
    (1.5, 1.0, 2, 1, True),      # something ran just before
    (9.0, 10.0, 64, 8, False),
    (40.0, 20.0, 64, 8, True),
    (None, None, 2, 1, False),   # the OS does not tell
])
def test_busy_machine_warning(start, end, cpus, threads, busy):
    load = {"cpus": cpus, "start": start, "end": end}
    assert bench.busy_machine(load, threads) == busy
    report = {"fastrnn_version": "0", "threads": threads, "method": bench.METHOD,
              "skipped": [], "peak": None, "results": [], "load": load}
    assert ("warning: other work was running" in bench.format_report(report)) == busy


def test_isolate_times_each_rival_in_its_own_process(tmp_path, monkeypatch, capsys):
    small_peak(monkeypatch)
    children = []
    real = bench._child_command

    def child_command(rival, options):
        children.append(rival)
        return real(rival, options)
    monkeypatch.setattr(bench, "_child_command", child_command)
    out = tmp_path / "report.json"
    code = cli.main(["bench", "--isolate", "--shapes", "tiny", "--cells", "rnn",
                     "--modes", "inference", "--rivals", "numpy,cpp", "--quick",
                     "--seconds", "0.05", "--threads", "1", "--json", str(out)])
    assert code == 0
    assert children == ["numpy", "cpp"]          # one process per rival
    report = json.loads(out.read_text())
    assert report["timing"] == "isolated" and report["method"] == bench.METHOD_ISOLATED
    assert report["peak"]["size"] == 128 and report["skipped"] == []
    rows = {row["rival"]: row for row in report["results"]}
    assert list(rows) == ["numpy", "cpp"]
    assert rows["numpy"]["speedup_vs_numpy"] == 1.0
    assert rows["cpp"]["speedup_vs_numpy"] == pytest.approx(
        rows["numpy"]["median_s"] / rows["cpp"]["median_s"])
    for row in rows.values():
        assert row["samples"] >= 2 and row["speedup_vs_torch"] is None
        assert row["percent_of_peak"] == pytest.approx(
            100 * row["gflops"] / report["peak"]["gflops"])
    assert "each rival ran in its own process" in capsys.readouterr().out.lower()


def test_isolated_children_take_turns(monkeypatch):
    # Each request gets one block from one child; the children alternate, in
    # rotating order, until the budget and the minimum of rounds are both met.
    requests = []

    class FakeChild:
        def __init__(self, rival, command, workdir):
            self.rival = rival

        def receive(self):
            return {"ready": ["rnn inference tiny"], "skipped": []}

        def request(self, label, block_seconds):
            requests.append(self.rival)
            return [0.001 if self.rival == "cpp" else 0.004]

        def close(self):
            pass
    monkeypatch.setattr(bench, "_Child", FakeChild)
    cases = [bench.Case("inference", "rnn", "tiny", bench.SHAPES["tiny"])]
    report = bench.run_isolated(cases, ["numpy", "cpp"], threads=1, peak=None,
                                child_options=[], budget=0.0, min_rounds=3, pause=0.0)
    assert requests == ["numpy", "cpp", "cpp", "numpy", "numpy", "cpp"]
    rows = {row["rival"]: row for row in report["results"]}
    assert rows["cpp"]["speedup_vs_numpy"] == pytest.approx(4.0)
    assert rows["cpp"]["samples"] == rows["numpy"]["samples"] == 3


def test_isolate_reports_a_failing_child_as_skipped(monkeypatch):
    monkeypatch.setattr(bench, "_child_command", lambda rival, options: [
        sys.executable, "-c", "import sys; print('noise', file=sys.stderr); sys.exit('boom')"])
    cases = [bench.Case("inference", "rnn", "tiny", bench.SHAPES["tiny"])]
    report = bench.run_isolated(cases, ["torch"], threads=1, peak=None, child_options=[])
    assert report["results"] == [] and report["timing"] == "isolated"
    assert report["skipped"] == [{"case": "rnn inference tiny", "rival": "torch",
                                  "reason": "failed in its own process (exit 1): boom"}]
    assert "skipped torch on rnn inference tiny" in bench.format_report(report)
