"""`python -m experiments.sample RUN_DIR [...]`: the same as `jaxlstm sample`.

Kept so the clone's commands keep working; the command lives in `jaxlstm.cli.sample`.
"""

import sys

from jaxlstm.cli.sample import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
