"""The report: one row per case and rival, as a dict for JSON, a text table and a plot."""

import math

import numpy as np

from .._info import __version__
from .cases import FLOP_COUNTING, VARIANTS, case_flops, sequence_lengths
from .timing import BF16_PEAK_MEANING, PEAK_MEANING, machine_load, usable_cpus

COLUMNS = ("case", "rival", "median", "samples/s", "GFLOP/s", "% peak",
           "vs numpy", "vs torch")

MODES = {
    "isolated": (
        "mode: isolated (the default): each rival in its own process, the processes "
        "taking turns"),
    "in-process": (
        "mode: in-process (--in-process): every rival in this one process, so their thread "
        "pools compete for the cores and multi-threaded rivals (torch, ONNX Runtime) can "
        "time many times too slow; leave out --in-process for figures to compare"),
}
METHODS = {
    "isolated": (
        "Each rival ran in its own process; the processes took turns in alternating blocks "
        "(rotating order, an untimed wake-up call before each block of short calls, a pause "
        "after it while the others slept), so no two thread pools shared a process or ran at "
        "once, and the machine's changing load fell on every rival alike; times are medians "
        "of the timed calls."),
    "in-process": (
        "All rivals of a case ran in one process in alternating blocks (rotating order, "
        "an untimed wake-up call before each block of short calls, a pause after it), so the "
        "torch, ONNX Runtime and fastrnn thread pools were timed in turns under the same "
        "load; times are medians of the timed calls."),
}


def case_peak(case, peak):
    """The peak `case` is held to: the bf16 one (peak["bf16"]) for a bf16 case, else the SGEMM
    peak; None when not measured."""
    if peak and case.layout.precision == "bf16":
        return peak.get("bf16")
    return peak


def case_rows(case, samples, peak):
    """One report row per rival of `case` from {rival: [seconds of each timed call]}."""
    T, B, I, H = case.shape
    flops = case_flops(case)
    lengths = sequence_lengths(case)
    medians = {rival: float(np.median(times)) for rival, times in samples.items()}
    peak = case_peak(case, peak)
    rows = []
    for rival, median in medians.items():
        gflops = flops / median / 1e9
        rows.append({
            "case": case.name, "mode": case.mode, "cell": case.cell,
            "shape": case.shape_name, "variant": case.variant, "T": T, "B": B, "I": I, "H": H,
            "num_layers": case.layout.num_layers, "bidirectional": case.layout.bidirectional,
            "sequence_steps": int(lengths.sum()) if lengths is not None else T * B,
            "rival": rival, "median_s": median, "samples": len(samples[rival]),
            "samples_per_s": B / median, "flops": flops, "gflops": gflops,
            "percent_of_peak": 100.0 * gflops / peak["gflops"] if peak else None,
            "speedup_vs_numpy": medians["numpy"] / median if "numpy" in medians else None,
            "speedup_vs_torch": medians["torch"] / median if "torch" in medians else None,
            "speedup_vs_padded": None, "speedup_vs_fp32": None,
        })
    return rows


def group_rows(group, samples, peak):
    """Rows of a timing group's cases from {(case name, rival): [seconds of each call]}."""
    rows = []
    for case in group:
        timed = {rival: times for (name, rival), times in samples.items() if name == case.name}
        if timed:
            rows.extend(case_rows(case, timed, peak))
    return rows


def add_twin_speedups(cases, rows):
    """Fill speedup_vs_padded of each lengths case's rows and speedup_vs_fp32 of each bf16
    case's: its twin's median over its own, rival by rival."""
    medians = {(row["case"], row["rival"]): row["median_s"] for row in rows}
    twins = {case.name: ("speedup_vs_padded" if case.padded_twin else "speedup_vs_fp32",
                         case.twin.name) for case in cases if case.twin}
    for row in rows:
        key, twin = twins.get(row["case"], (None, None))
        twin_median = medians.get((twin, row["rival"]))
        if twin_median is not None:
            row[key] = twin_median / row["median_s"]
    return rows


def build_report(mode, cases, threads, peak, results, skipped, load_at_start):
    """The report as a dict ready for JSON; `mode` is "isolated" or "in-process"."""
    return {
        "fastrnn_version": __version__,
        "threads": threads,
        "peak": peak,
        "flop_counting": FLOP_COUNTING,
        "timing": mode,
        "method": METHODS[mode],
        "results": add_twin_speedups(cases, results),
        "skipped": skipped,
        "load": {"cpus": usable_cpus(), "start": load_at_start, "end": machine_load()},
    }


def busy_machine(load, threads):
    """True when other work kept more than half the CPUs busy around the benchmark.

    The load at the end counts the benchmark's own `threads`; they are taken off.
    """
    if load["start"] is None or load["end"] is None:
        return False
    return max(load["start"], load["end"] - threads) > 0.5 * load["cpus"]


def _seconds(value):
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    if value >= 1e-5:
        return f"{value * 1e6:.0f} us"
    return f"{value * 1e6:.2f} us"   # a stream's frame: a few microseconds


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def _table(results):
    rows = [COLUMNS]
    for r in results:
        rows.append((r["case"], r["rival"], _seconds(r["median_s"]), f"{r['samples_per_s']:.1f}",
                     f"{r['gflops']:.2f}",
                     "-" if r["percent_of_peak"] is None else f"{r['percent_of_peak']:.1f}",
                     _ratio(r["speedup_vs_numpy"]), _ratio(r["speedup_vs_torch"])))
    widths = [max(len(row[k]) for row in rows) for k in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def format_report(report):
    """The report as a text table with a header and a footer that explain it."""
    peak = report["peak"]
    lines = [f"fastrnn {report['fastrnn_version']} bench, {report['threads']} thread(s)",
             MODES[report["timing"]]]
    if peak:
        lines.append(f"peak SGEMM {peak['gflops']:.1f} GFLOP/s "
                     f"(numpy {peak['size']}^3 float32, OpenBLAS kernel: {peak['kernel']})")
    if peak and peak.get("bf16"):
        lines.append(f"peak bf16 GEMM {peak['bf16']['gflops']:.1f} GFLOP/s "
                     f"(torch {peak['bf16']['size']}^3 bfloat16, {peak['bf16']['library']})")
    load = report.get("load")
    if load and load["start"] is not None:
        lines.append(f"load average {load['start']:.1f} at start, {load['end']:.1f} at end, "
                     f"{load['cpus']} CPU(s)")
        if busy_machine(load, report["threads"]):
            lines.append("warning: other work was running on this machine; the times, "
                         "above all with more than one thread, are not reliable")
    lines += _table(report["results"])
    skipped = {}
    for skip in report["skipped"]:
        skipped.setdefault((skip["rival"], skip["reason"]), []).append(skip["case"])
    for (rival, reason), cases in skipped.items():
        lines.append(f"skipped {rival} on {', '.join(cases)}: {reason}")
    for r in report["results"]:
        if r["speedup_vs_padded"] is not None:
            how = " (pack_padded_sequence)" if r["rival"] in ("torch", "fastrnn.torch") else ""
            lines.append(f"{r['case']}: {r['rival']}{how} {r['speedup_vs_padded']:.2f}x as fast "
                         f"as on the same batch padded to T")
    for r in report["results"]:
        if r.get("speedup_vs_fp32") is not None:
            lines.append(f"{r['case']}: {r['rival']} in bf16 {r['speedup_vs_fp32']:.2f}x as fast "
                         f"as in float32")
    lines.append("")
    lines.append("samples/s = sequences per second; speedups compare median times in one case "
                 "(in a bf16 case torch runs in torch.bfloat16).")
    lines.append(FLOP_COUNTING)
    if peak:
        lines.append(PEAK_MEANING.format(n=peak["size"], blas=f"OpenBLAS {peak['kernel']}"))
    if peak and peak.get("bf16"):
        lines.append(BF16_PEAK_MEANING.format(n=peak["bf16"]["size"],
                                              library=peak["bf16"]["library"]))
    lines.append(report["method"])
    return "\n".join(lines)


def import_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib, which is not installed here; "
                         "`pip install matplotlib` (or fastrnn[bench]) and run again") from None
    return plt


def plot_report(report, path):
    """Bars of achieved GFLOP/s per rival, one panel per case, peak as a line."""
    plt = import_pyplot()
    cases = list(dict.fromkeys(r["case"] for r in report["results"]))
    if not cases:
        raise ValueError("nothing was timed, so there is nothing to plot")
    columns = min(3, len(cases))
    rows = math.ceil(len(cases) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows),
                                squeeze=False)
    for ax, case in zip(axes.flat, cases):
        results = [r for r in report["results"] if r["case"] == case]
        ax.barh([r["rival"] for r in results], [r["gflops"] for r in results])
        peak = report["peak"]
        if peak and VARIANTS[results[0]["variant"]].precision == "bf16":
            peak = peak.get("bf16")
        if peak:
            ax.axvline(peak["gflops"], linestyle="--", color="gray")
        ax.set_title(case, fontsize=10)
        ax.set_xlabel("GFLOP/s (matrix products only)")
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    peak = ", dashed: SGEMM peak (bf16 cases: bf16 GEMM)" if report["peak"] else ""
    figure.suptitle(f"fastrnn bench, {report['threads']} thread(s), {report['timing']}{peak}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
