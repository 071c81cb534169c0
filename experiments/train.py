"""Train an LSTM from a config file:

    python -m experiments.train configs/<name>.yaml [key=value ...] [--resume]

Writes runs/<name>/<timestamp>/ (see `jaxlstm.train.run`). Exit codes: 0 done, 1 stopped on a
non-finite loss or gradient, 2 bad config (one line on stderr, no traceback), 130 stopped by
Ctrl-C after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxlstm.train.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a YAML file in configs/")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.add_argument("--resume", action="store_true",
                        help="continue the newest run of this config from its last checkpoint")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    try:
        config = load_config(args.config, overrides)
        from jaxlstm.train.run import run_experiment

        result = run_experiment(config)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    summary = result.summary
    if result.status == "completed":
        metric = summary["metric"]
        print(f"{config.name}: {metric} {summary['final'][metric]:.4f} "
              f"(baseline {summary['baseline'][metric]:.4f}) after {result.step} steps, "
              f"{summary['wall_time_s']:.0f} s; run folder {result.run_dir}")
        print(json.dumps({"final": summary["final"], "baseline": summary["baseline"]},
                         sort_keys=True))
        return 0
    return 1 if result.status == "non_finite" else 130


if __name__ == "__main__":
    sys.exit(main())
