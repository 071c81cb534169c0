"""The benchmark: jaxlstm against Flax, Equinox and PyTorch LSTMs, run as `jaxlstm bench`.

    harness   the command: sizes x implementations x passes, results.json/.md/.png
    anchors   the implementations timed (each optional one skipped when not installed)
    sizes     the problems (S1-S4 and the quick size) and their FLOP counts
    timing    compile, warm up, then median of many calls under a time budget
    memory    peak memory of one long-sequence training step, each in a fresh process
    report    the markdown tables, ratios and the chart

Nothing here is imported by `import jaxlstm`; the anchors' libraries are imported only when
their rows are built.
"""
