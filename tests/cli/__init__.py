"""The command line: train, eval, plot-diagnostics, info, bench."""
