"""`jaxlstm export RUN_DIR`: a trained run's model as a file that runs without jaxlstm.

    jaxlstm export RUN_DIR [--format stablehlo|onnx] [--what sequence|step] [--out PATH]
                           [--checkpoint best|latest] [--mode MODE]

Everything that can be checked without jax is checked first (the options, the run folder and
its config, the output path), each failure one line with exit code 2; so is a run without the
checkpoint asked for, and a model the format's converter cannot express. The run folder is only
read; the export folder appears whole or not at all (`jaxlstm.export.run`).
"""

from __future__ import annotations

import argparse
import os

from jaxlstm.cli.exits import DONE, UsageError, command
from jaxlstm.cli.parser import OneLineParser

USAGE = ("RUN_DIR [--format stablehlo|onnx] [--what sequence|step] [--out PATH] "
         "[--checkpoint best|latest] [--mode MODE]")
SUMMARY = "export a run's model: StableHLO (XLA on cpu, cuda, tpu) or ONNX, whole or per step"


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="jaxlstm export", usage=f"jaxlstm export {USAGE}",
        description="Writes the run's trained model (its stack and head, params inside) into "
                    "a folder: the program file and export.json, which lists its inputs, "
                    "outputs and state in order. The batch (and, for a sequence, the length) "
                    "is symbolic: any size runs.",
        epilog="Exit codes: 0 done, 2 bad input (one line on stderr), 130 Ctrl-C.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. "
                        "runs/quickstart/<time>")
    parser.add_argument("--format", choices=("stablehlo", "onnx"), default="stablehlo",
                        help="stablehlo: jax.export's serialised program for cpu, cuda and "
                             "tpu; onnx: converted by jax2onnx (pip install 'jaxlstm[onnx]') "
                             "(default %(default)s)")
    parser.add_argument("--what", choices=("sequence", "step"), default="sequence",
                        help="sequence: (inputs, lengths) -> outputs; step: one time step with "
                             "the state as inputs and outputs, for streaming "
                             "(default %(default)s)")
    parser.add_argument("--out", metavar="PATH",
                        help="the folder to write (an older export there is replaced); "
                             "default RUN_DIR/export/<format>-<what>")
    parser.add_argument("--checkpoint", choices=("best", "latest"),
                        help="the best validation state or the newest checkpoint (default: "
                             "best where the run kept one, else latest)")
    parser.add_argument("--mode", metavar="MODE",
                        help="the form the families run in instead of the run's model.mode, "
                             "e.g. recurrent for an ONNX mLSTM sequence (the forms agree to "
                             "float tolerance)")
    return parser


def _check_run(args: argparse.Namespace) -> None:
    """Raises UsageError for a missing run folder or an output path that cannot be one."""
    from jaxlstm.export import onnx as onnx_format
    from jaxlstm.export.run import check_out, default_out

    if not os.path.isdir(args.run_dir):
        raise UsageError(f"{args.run_dir}: no such run folder.")
    if not os.path.isfile(os.path.join(args.run_dir, "config.yaml")):
        raise UsageError(f"{args.run_dir}: not a run folder (it has no config.yaml).")
    if args.format == "onnx" and not onnx_format.available():
        raise UsageError(f"--format onnx needs jax2onnx: {onnx_format.INSTALL}")
    out = os.path.abspath(args.out or default_out(args.run_dir, args.format, args.what))
    try:
        check_out(out)
    except ValueError as err:
        raise UsageError(f"--out {err}") from None
    args.out = out


@command("jaxlstm export")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm export` on `argv`; returns 0, or 2 after one line for bad input."""
    args = _parser().parse_args(argv)
    _check_run(args)

    from jaxlstm.export import export_run

    try:
        exported = export_run(args.run_dir, format=args.format, what=args.what, out=args.out,
                              checkpoint=args.checkpoint, mode=args.mode)
    except FileNotFoundError as err:  # no such checkpoint
        raise UsageError(str(err)) from None
    except NotImplementedError as err:  # the converter has no form for an operation
        raise UsageError(f"{err} (where the model's families have several forms, --mode "
                         "picks another)") from None
    except ValueError as err:  # a bidirectional model's step, a damaged checkpoint
        from jaxlstm.train.config import ConfigError

        if isinstance(err, ConfigError):
            raise
        raise UsageError(str(err)) from None
    except OSError as err:  # the disk, after the checks above
        raise UsageError(f"--out {args.out}: {err.strerror or err}.") from None
    source = exported.description["source"]
    print(f"exported {args.format} {args.what} of {args.run_dir} ({source['checkpoint']} "
          f"checkpoint, step {source['step']}) to {exported.out}")
    return DONE
