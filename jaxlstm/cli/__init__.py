"""The `jaxlstm` command: train from configs, sample from text runs, list configs, benchmark.

    jaxlstm train CONFIG [key=value ...] [--resume]
    jaxlstm sample RUN_DIR [--prompt TEXT] [--length N] [--temperature T] [--seed S]
    jaxlstm configs
    jaxlstm bench [--quick] ...

The top layer of the package: it calls `jaxlstm.train` and `jaxlstm.benchmark`, and nothing in
the package imports it. Each command is a `main(argv) -> int` in its own module; see
`jaxlstm.cli.exits` for the exit codes they share.
"""

from __future__ import annotations

from jaxlstm.cli import bench, reference, sample, shipped, train
from jaxlstm.cli.exits import DONE, UsageError, command

COMMANDS = {"train": train, "sample": sample, "configs": shipped, "bench": bench}


def overview() -> str:
    """`jaxlstm --help`: the commands, then the training reference."""
    commands = "\n".join(f"  {name} {module.USAGE}".rstrip() + f"\n      {module.SUMMARY}"
                         for name, module in COMMANDS.items())
    return (f"usage: jaxlstm COMMAND [ARGS ...]\n\n"
            f"LSTMs in JAX: train them from config files, sample text from a trained run, time "
            f"the library.\n\ncommands:\n{commands}\n"
            f"`jaxlstm COMMAND --help` describes one command; `jaxlstm --version` prints the "
            f"version.\n\n{reference.train_reference()}")


@command("jaxlstm")
def main(argv: list[str]) -> int:
    """The console script: `jaxlstm COMMAND ARGS...` runs `COMMANDS[COMMAND].main(ARGS)`."""
    if not argv:
        raise UsageError(f"missing COMMAND, one of {', '.join(COMMANDS)} (see jaxlstm --help).")
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help"):
        print(overview())
        return DONE
    if name == "--version":
        from jaxlstm import __version__

        print(f"jaxlstm {__version__}")
        return DONE
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}; expected one of {', '.join(COMMANDS)} "
                         "(see jaxlstm --help).")
    return COMMANDS[name].main(rest)


__all__ = ["COMMANDS", "main"]
