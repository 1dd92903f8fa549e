"""The report of `fastrnn bench`: FLOP counts, derived figures, the table, JSON, plot, options."""

import json
import sys
import time

import numpy as np
import pytest

from fastrnn import cli
from fastrnn.bench import in_process, report, runners, timing
from fastrnn.bench.cases import CATALOGUE, case_flops, forward_flops, make_batch, sequence_lengths

# The benchmark code sets every library's threads; put them back for later tests.
pytestmark = pytest.mark.usefixtures("keep_thread_settings")


def test_forward_flops_by_hand():
    # LSTM, origin shape: 2 * T28 * B100 * (I28 + H128) * 4 gates * H128
    #   = 2 * 28 * 100 * 156 * 512 = 447,283,200
    assert forward_flops("lstm", 28, 100, 28, 128) == 447_283_200
    # RNN: one gate, a quarter of that; GRU: three gates, three quarters.
    assert forward_flops("rnn", 28, 100, 28, 128) == 111_820_800
    assert forward_flops("gru", 28, 100, 28, 128) == 335_462_400
    # batch-1 latency: 2 * 28 * 1 * 156 * 512
    assert case_flops(CATALOGUE["lstm-latency-batch1"]) == 4_472_832


def test_training_step_counts_three_forwards():
    forward = 2 * 64 * 128 * 320 * 256   # medium, T64 B128 I64 H256, per gate
    assert case_flops(CATALOGUE["rnn-inference-medium"]) == forward
    assert case_flops(CATALOGUE["rnn-train-medium"]) == 3 * forward
    assert case_flops(CATALOGUE["lstm-train-medium"]) == 3 * 4 * forward


def test_stacked_bidirectional_flops_count_every_layer_and_direction():
    # layer 0 reads x (I=64), layer 1 both directions of layer 0 (2H=512); two directions each
    per_step = 2 * (2 * (64 + 256) * 4 * 256) + 2 * (2 * (512 + 256) * 4 * 256)
    assert case_flops(CATALOGUE["lstm-inference-medium-2layer-bidir"]) == 64 * 128 * per_step
    assert case_flops(CATALOGUE["lstm-train-medium-2layer-bidir"]) == 3 * 64 * 128 * per_step


def test_lengths_case_is_its_padded_twin_with_shorter_sequences():
    case = CATALOGUE["lstm-train-medium-lengths"]
    assert case.padded_twin.name == "lstm-train-medium"
    lengths = sequence_lengths(case)
    assert lengths.shape == (128,) and lengths.min() >= 16 and lengths.max() <= 64
    assert len(set(lengths.tolist())) > 10           # spread over the range, not one value
    x, labels, given = make_batch(case)
    x_padded, labels_padded, none = make_batch(case.padded_twin)
    assert np.array_equal(x, x_padded) and np.array_equal(labels, labels_padded)
    assert np.array_equal(given, lengths) and none is None
    # only the steps inside each sequence count
    assert case_flops(case) == 3 * int(lengths.sum()) * 2 * (64 + 256) * 4 * 256


def test_derived_figures():
    case = CATALOGUE["rnn-inference-origin"]
    samples = {"numpy": [2.0, 3.0, 1.0], "torch": [1.0], "fast": [0.5, 0.5]}
    rows = {row["rival"]: row for row in report.case_rows(case, samples, {"gflops": 0.5})}
    fast = rows["fast"]
    assert fast["case"] == "rnn-inference-origin"
    assert fast["median_s"] == 0.5 and fast["samples"] == 2
    assert fast["samples_per_s"] == 200.0                  # B=100 sequences in 0.5 s
    assert fast["gflops"] == pytest.approx(111_820_800 / 0.5 / 1e9)
    assert fast["percent_of_peak"] == pytest.approx(100 * fast["gflops"] / 0.5)
    assert fast["speedup_vs_numpy"] == 4.0                 # median 2.0 / 0.5
    assert fast["speedup_vs_torch"] == 2.0
    assert rows["numpy"]["speedup_vs_numpy"] == 1.0


def test_ratios_missing_without_their_rival():
    row, = report.case_rows(CATALOGUE["lstm-latency-batch1"], {"fast": [1e-3]}, None)
    assert row["speedup_vs_numpy"] is None and row["speedup_vs_torch"] is None
    assert row["percent_of_peak"] is None and row["speedup_vs_padded"] is None


def test_lengths_rows_compare_with_the_same_rival_padded():
    lengths_case = CATALOGUE["lstm-train-medium-lengths"]
    group = [lengths_case.padded_twin, lengths_case]
    samples = {("lstm-train-medium", "cpp"): [0.10], ("lstm-train-medium", "torch"): [0.12],
               ("lstm-train-medium-lengths", "cpp"): [0.05],
               ("lstm-train-medium-lengths", "torch"): [0.20],
               ("lstm-train-medium-lengths", "numba"): [0.30]}   # numba has no padded figure
    built = report.build_report("isolated", group, 2, None,
                                report.group_rows(group, samples, None), [], None)
    ratios = {(r["case"], r["rival"]): r["speedup_vs_padded"] for r in built["results"]}
    assert ratios == {("lstm-train-medium", "cpp"): None, ("lstm-train-medium", "torch"): None,
                      ("lstm-train-medium-lengths", "cpp"): 2.0,
                      ("lstm-train-medium-lengths", "torch"): pytest.approx(0.6),
                      ("lstm-train-medium-lengths", "numba"): None}
    text = report.format_report(built)
    assert "lstm-train-medium-lengths: cpp 2.00x as fast as on the same batch padded" in text
    assert "torch (pack_padded_sequence) 0.60x" in text


def small_peak(monkeypatch):
    """measure_peak, but on a 128^3 product so tests stay fast."""
    real = timing.measure_peak
    monkeypatch.setattr(timing, "measure_peak",
                        lambda threads, repeats: real(threads, size=128, repeats=2))


def test_json_report_schema(tmp_path, monkeypatch, capsys):
    small_peak(monkeypatch)
    out = tmp_path / "report.json"
    code = cli.main(["bench", "--in-process", "--shapes", "tiny", "--cells", "rnn,lstm",
                     "--modes", "inference", "--rivals", "numpy", "--quick", "--seconds", "0.05",
                     "--json", str(out)])
    assert code == 0
    written = json.loads(out.read_text())
    assert {"fastrnn_version", "threads", "peak", "flop_counting", "timing", "method",
            "results", "skipped", "load"} <= set(written)
    assert written["timing"] == "in-process"
    assert written["method"] == report.METHODS["in-process"]
    assert written["peak"]["gflops"] > 0 and written["peak"]["size"] == 128
    assert isinstance(written["peak"]["kernel"], str) and written["peak"]["kernel"]
    assert set(written["load"]) == {"cpus", "start", "end"} and written["load"]["cpus"] >= 1
    assert [r["case"] for r in written["results"]] == ["rnn-inference-tiny",
                                                       "lstm-inference-tiny"]
    for row in written["results"]:
        case = CATALOGUE[row["case"]]
        assert row["rival"] == "numpy" and row["samples"] >= 2
        assert (row["T"], row["B"], row["I"], row["H"]) == tuple(case.shape)
        assert row["flops"] == case_flops(case)
        assert row["median_s"] > 0 and row["gflops"] == pytest.approx(
            row["flops"] / row["median_s"] / 1e9)
        assert row["speedup_vs_numpy"] == 1.0 and row["speedup_vs_torch"] is None
    printed = capsys.readouterr().out
    assert "rnn-inference-tiny" in printed and "GFLOP/s" in printed
    assert report.MODES["in-process"] in printed


def test_plot_without_matplotlib_fails_before_timing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail
    monkeypatch.setattr(timing, "measure_peak", lambda *a, **k: pytest.fail("timing started"))
    code = cli.main(["bench", "--plot", str(tmp_path / "bench.png")])
    assert code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "bench.png").exists()


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = report.case_rows(CATALOGUE["lstm-train-origin"], {"numpy": [0.05], "torch": [0.02]},
                            {"gflops": 90.0})
    path = tmp_path / "bench.png"
    report.plot_report({"threads": 2, "timing": "isolated", "peak": {"gflops": 90.0},
                        "results": rows}, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def table_report(mode):
    case = CATALOGUE["lstm-inference-origin"]
    results = report.case_rows(case, {"numpy": [0.04], "torch": [0.01]}, {"gflops": 50.0})
    built = report.build_report(mode, [case], 1, None, results, [], None)
    built["peak"] = {"gflops": 50.0, "size": 2048, "kernel": "Haswell"}
    return built


def test_table_has_every_column():
    lines = report.format_report(table_report("isolated")).splitlines()
    header = next(line for line in lines if line.startswith("case"))
    assert header.split() == ["case", "rival", "median", "samples/s", "GFLOP/s", "%", "peak",
                              "vs", "numpy", "vs", "torch"]
    torch_row = next(line for line in lines if "torch" in line and "ms" in line)
    assert "10.00 ms" in torch_row and "4.00x" in torch_row and "1.00x" in torch_row
    assert any("2*B*(I_k+H)*G*H" in line for line in lines)
    assert any("alternating blocks" in line for line in lines)


@pytest.mark.parametrize("mode, says", [
    ("isolated", "each rival in its own process"),
    ("in-process", "leave out --in-process"),
])
def test_report_says_which_mode_it_ran_in(mode, says):
    text = report.format_report(table_report(mode))
    assert text.splitlines()[1].startswith(f"mode: {mode}") and says in text.splitlines()[1]
    assert text.endswith(report.METHODS[mode])


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "huge"], "--shapes must be"),
    (["--cells", "cnn"], "--cells must be"),
    (["--modes", ""], "--modes must be"),
    (["--variants", "3layer"], "--variants must be"),
    (["--threads", "0"], "positive integer"),
    (["--seconds", "-1"], "positive finite number"),
    (["--isolate", "--in-process"], "not allowed with argument"),
])
def test_bad_options_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench"] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_output_directory_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(timing, "measure_peak", lambda *a, **k: pytest.fail("timing started"))
    code = cli.main(["bench", "--json", str(tmp_path / "no" / "such" / "dir.json")])
    assert code == 2
    assert "directory does not exist" in capsys.readouterr().err


def test_peak_measurement_reports_its_kernel():
    pytest.importorskip("threadpoolctl")
    peak = timing.measure_peak(1, size=128, repeats=2)
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
    runners_by_name = {name: runner(name) for name in ("a", "b", "c")}
    # A call (>= 2 ms) outlasts block_seconds: blocks of one call, no wake-up call.
    samples = timing.take_turns(lambda name: timing.time_block(runners_by_name[name], 0.002,
                                                               block_seconds=0.001),
                                ["a", "b", "c"], budget=0.0, min_rounds=3, pause=0.0)
    # three rounds, each starting with the next rival
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    for times in samples.values():
        assert len(times) == 3 and all(t >= 0.002 for t in times)


def test_a_short_call_gets_a_wake_up_call_before_its_block():
    calls = []
    times = timing.time_block(lambda: calls.append(1), per_call=1e-3, block_seconds=5e-3)
    assert len(times) == 5 and len(calls) == 6


def test_blocks_are_sized_from_the_calls_of_the_block_before():
    durations = iter([0.2] + [0.001] * 200)   # slow at first, as a cold library can be
    blocks = timing.Blocks(lambda: time.sleep(next(durations)))
    assert len(blocks.time(block_seconds=0.05)) == 1
    assert len(blocks.time(block_seconds=0.05)) > 1


def test_report_goes_on_when_a_rival_fails(monkeypatch):
    real = runners.make_runner

    def make_runner(rival, case, threads, seed=0):
        if rival == "torch":
            def run():
                raise MemoryError("cannot allocate")
            return run
        return real(rival, case, threads, seed)
    monkeypatch.setattr(runners, "make_runner", make_runner)
    built = in_process.run_in_process([CATALOGUE["rnn-inference-tiny"]], ["numpy", "torch"],
                                      threads=1, budget=0.0, min_rounds=1, peak=None)
    assert [r["rival"] for r in built["results"]] == ["numpy"]
    assert built["skipped"] == [{"case": "rnn-inference-tiny", "rival": "torch",
                                 "reason": "failed: MemoryError: cannot allocate",
                                 "failed": True}]


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
    assert report.busy_machine(load, threads) == busy
    built = dict(table_report("isolated"), threads=threads, load=load)
    assert ("warning: other work was running" in report.format_report(built)) == busy


def test_bf16_rows_are_held_to_the_bf16_peak_and_compare_with_float32():
    bf16_case = CATALOGUE["gru-train-origin-bf16"]
    group = [bf16_case.fp32_twin, bf16_case]
    samples = {("gru-train-origin", "cpp"): [0.010], ("gru-train-origin", "torch"): [0.030],
               ("gru-train-origin-bf16", "cpp"): [0.008],
               ("gru-train-origin-bf16", "torch"): [0.020]}
    peak = {"gflops": 100.0, "size": 2048, "kernel": "SkylakeX",
            "bf16": {"gflops": 400.0, "size": 2048, "library": "torch, oneDNN"}}
    built = report.build_report("isolated", group, 2, peak,
                                report.group_rows(group, samples, peak), [], None)
    rows = {(r["case"], r["rival"]): r for r in built["results"]}
    fast = rows["gru-train-origin-bf16", "cpp"]
    assert fast["percent_of_peak"] == pytest.approx(100 * fast["gflops"] / 400.0)
    assert rows["gru-train-origin", "cpp"]["percent_of_peak"] == pytest.approx(
        100 * rows["gru-train-origin", "cpp"]["gflops"] / 100.0)
    assert fast["speedup_vs_fp32"] == pytest.approx(1.25)
    assert fast["speedup_vs_torch"] == pytest.approx(2.5)       # torch in bf16, same case
    assert rows["gru-train-origin", "cpp"]["speedup_vs_fp32"] is None
    text = report.format_report(built)
    assert "peak bf16 GEMM 400.0 GFLOP/s" in text
    assert "gru-train-origin-bf16: cpp in bf16 1.25x as fast as in float32" in text
    assert "gru-train-origin-bf16: torch in bf16 1.50x as fast as in float32" in text


def test_bf16_peak_measurement_runs_torch_in_bfloat16():
    pytest.importorskip("torch")
    peak = timing.measure_bf16_peak(1, size=128, repeats=2)
    assert peak["gflops"] > 0 and len(peak["times"]) == 2 and "torch" in peak["library"]
