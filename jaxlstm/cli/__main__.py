"""`python -m jaxlstm.cli COMMAND ...`, the same as the `jaxlstm` console script."""

import sys

from jaxlstm.cli import main

sys.exit(main())
