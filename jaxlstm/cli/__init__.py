"""The `jaxlstm` command: train from configs, launch jobs and sweeps, sample, list, benchmark.

    jaxlstm train CONFIG [key=value ...] [--resume]
    jaxlstm launch CONFIG [key=value[,value...] ...] [--executor slurm|local] [flags]
    jaxlstm sample RUN_DIR [--prompt TEXT] [--length N] [--temperature T] [--seed S]
    jaxlstm export RUN_DIR [--format stablehlo|onnx] [--what sequence|step] [--out PATH] ...
    jaxlstm runs [NAME] [--root DIR] [--json]
    jaxlstm compare RUN RUN [RUN ...] [--root DIR] [--out PATH]
    jaxlstm data convert SRC DEST | info PATH [--task NAME] [option=value ...]
    jaxlstm configs
    jaxlstm bench [--quick] ...

The top layer of the package: it calls `jaxlstm.train`, `jaxlstm.launch`, `jaxlstm.export`
and `jaxlstm.benchmark`, and nothing in the package imports it. Each command is a
`main(argv) -> int` in its own module; see `jaxlstm.cli.exits` for the exit codes they share.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _exit_at_once(signum: int, frame: object) -> None:
    cause = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    sys.stderr.write(f"jaxlstm: interrupted by {cause}.\n")
    os._exit(130)  # 128 + SIGINT, as a shell reports it; nothing has been written yet


# Importing the commands imports jax, flax and optax (seconds): a Ctrl-C meanwhile would be a
# traceback from deep inside their imports, a SIGTERM a silent death. Until they are in, both
# are one line and 130. (Handlers left as the process found them, e.g. SIGINT ignored by
# `nohup`, stay so.)
_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
_guarded = ([signum for signum, default in _DEFAULTS.items()
             if signal.getsignal(signum) is default]
            if threading.current_thread() is threading.main_thread() else [])
for _signum in _guarded:
    signal.signal(_signum, _exit_at_once)

from jaxlstm.cli import (
    bench,
    compare,
    data,
    export,
    launch,
    reference,
    runs,
    sample,
    shipped,
    train,
)
from jaxlstm.cli.exits import DONE, UsageError, command

for _signum in _guarded:
    signal.signal(_signum, _DEFAULTS[_signum])

COMMANDS = {"train": train, "launch": launch, "sample": sample, "export": export,
            "runs": runs, "compare": compare, "data": data, "configs": shipped, "bench": bench}


def overview() -> str:
    """`jaxlstm --help`: the commands, then the training reference."""
    commands = "\n".join(f"  {name} {module.USAGE}".rstrip() + f"\n      {module.SUMMARY}"
                         for name, module in COMMANDS.items())
    return (f"usage: jaxlstm COMMAND [ARGS ...]\n\n"
            f"LSTMs in JAX: train them from config files, here or as SLURM jobs and sweeps, "
            f"sample text from a trained run, time the library.\n\ncommands:\n{commands}\n"
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
