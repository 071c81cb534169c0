"""`python -m experiments.train CONFIG [key=value ...] [--resume]`: the same as `jaxlstm train`.

Kept so the clone's commands keep working; the command lives in `jaxlstm.cli.train`.
"""

import sys

from jaxlstm.cli.train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
