"""Where a file task's splits come from: fractions of one file, or one file per split.

Every file task takes the same split options:

    path                 one file, cut into train / valid / test by `valid_fraction` and
                         `test_fraction` (defaults 0.1 and 0.1): by position for text, by time
                         for tables, shuffled with `split_seed` for arrays
    train_path, valid_path[, test_path]
                         one file per split instead (no test_path: no test split)

Relative paths are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import os

from jaxlstm.tasks.files.errors import DataError


@dataclasses.dataclass(frozen=True)
class SplitCounts:
    """How many examples (or rows, characters) each split gets, in file order."""

    train: int
    valid: int
    test: int


def source_paths(task: str, path: str | None, train_path: str | None, valid_path: str | None,
                 test_path: str | None) -> dict[str, str]:
    """{"all": path} or {"train": ..., "valid": ...[, "test": ...]}, checked; ValueError
    naming the option for a missing or contradictory choice."""
    if path and (train_path or valid_path or test_path):
        raise ValueError(f"task.path: give either path (split by fraction) or train_path / "
                         f"valid_path / test_path, not both (got path={path!r} and "
                         f"train_path={train_path!r}).")
    if path:
        return {"all": path}
    if not train_path:
        raise ValueError(f"task.path: the {task} task needs a data file: path (split by "
                         "fraction), or train_path and valid_path (one file per split).")
    if not valid_path:
        raise ValueError("task.valid_path: with train_path, the validation split needs its "
                         "own file too (valid_path).")
    paths = {"train": train_path, "valid": valid_path}
    if test_path:
        paths["test"] = test_path
    return paths


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """ValueError naming the option unless 0 < valid < 1, 0 <= test < 1 and valid + test < 1."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"task.valid_fraction: expected a fraction in (0, 1), got "
                         f"{valid_fraction!r}.")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"task.test_fraction: expected a fraction in [0, 1), got "
                         f"{test_fraction!r}.")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"task.valid_fraction: valid_fraction + test_fraction must leave "
                         f"training data (< 1), got {valid_fraction} + {test_fraction}.")


def split_counts(total: int, valid_fraction: float, test_fraction: float, path: str,
                 what: str) -> SplitCounts:
    """`total` items cut by the fractions (rounded); DataError when a split comes out empty.

    `what` names the items in the message ("sequences", "characters", ...)."""
    test = round(test_fraction * total)
    valid = round(valid_fraction * total)
    train = total - valid - test
    for name, count, fraction in (("valid", valid, valid_fraction),
                                  ("test", test, test_fraction)):
        if fraction > 0 and count == 0:
            raise DataError(path, f"{name}_fraction {fraction} of {total} {what} leaves the "
                                  f"{name} split empty; expected more data or a larger "
                                  f"fraction.")
    if train < 1:
        raise DataError(path, f"the fractions leave no training {what} (of {total}).")
    return SplitCounts(train, valid, test)


def resolve(path: str) -> str:
    """`path` made absolute against the current directory (where the command runs)."""
    return os.path.abspath(os.path.expanduser(path))


def existing_file(path: str, expected: str) -> str:
    """The absolute path of a non-empty file; DataError for a missing, empty or unreadable
    one. `expected` says what the file should be ("a .npz file", "UTF-8 text", ...)."""
    full = resolve(path)
    if os.path.isdir(full):
        raise DataError(path, f"is a folder; expected {expected}.")
    if not os.path.exists(full):
        raise DataError(path, f"no such file; expected {expected}.")
    if not os.access(full, os.R_OK):
        raise DataError(path, "cannot be read (permission denied).")
    if os.path.getsize(full) == 0:
        raise DataError(path, f"the file is empty; expected {expected}.")
    return full
