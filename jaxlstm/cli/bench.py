"""`jaxlstm bench [...]`: the benchmark (`jaxlstm.benchmark.harness`) as a command."""

from __future__ import annotations

from jaxlstm.cli.exits import DONE, command
from jaxlstm.cli.parser import OneLineParser

USAGE = "[--quick] [--sizes S1,S3] [--only IMPLS] [--memory] [--out DIR] ..."
SUMMARY = "time jaxlstm against Flax, Equinox and PyTorch LSTMs"


@command("jaxlstm bench")
def main(argv: list[str]) -> int:
    """Runs the benchmark on `argv`; writes results.json, results.md and results.png."""
    from jaxlstm.benchmark import harness

    parser = OneLineParser(prog="jaxlstm bench", description=harness.__doc__.split("\n")[0],
                           epilog="Exit codes: 0 done, 2 bad input (one line on stderr), "
                                  "130 Ctrl-C.")
    harness.add_arguments(parser)
    harness.run(parser.parse_args(argv), argv)
    return DONE
