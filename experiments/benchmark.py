"""`python -m experiments.benchmark [...]`: the same as `jaxlstm bench`.

Kept so the clone's commands keep working; the benchmark lives in `jaxlstm.benchmark`.
"""

import sys

from jaxlstm.cli.bench import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
