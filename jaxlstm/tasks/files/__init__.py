"""A user's own data as tasks: sequences in NumPy files, any text file, tables of time series,
and datasets converted to ArrayRecord shards for streaming.

    arrays      `.npz` or a folder of `.npy` files: inputs (N, T, I), targets, optional
                lengths (`arrays`)
    text_file   any text, by bytes or UTF-8 characters (`text_file`)
    table       a CSV or Parquet file of one or more time series (`table`)

Each is a task like the built-in ones (`jaxlstm.tasks.base.Task`): batches are pure functions
of (seed, step), so resume, data parallelism, several processes and sweeps work on them
unchanged. `path` may also name a folder written by `jaxlstm data convert` (`shards`): the
same task then streams its examples from disk, holding a bounded buffer instead of the
dataset. Bad data raises `DataError`: one line naming the file (and row or column) and what was
expected.
"""

from jaxlstm.tasks.files.arrays import ArraysTask
from jaxlstm.tasks.files.errors import DataError
from jaxlstm.tasks.files.table import TableTask
from jaxlstm.tasks.files.task import FileTask
from jaxlstm.tasks.files.text_file import TextFileTask

FILE_TASKS = {"arrays": ArraysTask, "text_file": TextFileTask, "table": TableTask}

__all__ = ["FILE_TASKS", "ArraysTask", "DataError", "FileTask", "TableTask", "TextFileTask"]
