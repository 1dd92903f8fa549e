"""`fastrnn bench`: how fast each backend is on this machine, next to its peers.

Imported by `fastrnn bench` and the suites in bench/ only, never by `import fastrnn`.

    cases.py        the case names, shapes, variants, FLOP counts; what fastrnn must have
    runners.py      each rival's call of a case (fastrnn's backends, torch)
    onnx_graphs.py  ONNX Runtime's call: one operator of the cell
    timing.py       blocks of calls, rivals taking turns, the SGEMM peak
    isolated.py     the default mode: each rival in its own process, taking turns
    in_process.py   --in-process: every rival in this process
    report.py       the rows, the table, the JSON and the plot
    suite.py        the pytest-benchmark suites' use of the isolated mode
    command.py      the flags

Run `fastrnn bench --help`; bench/README.md says what the figures mean.
"""
