"""Errors raised by the dataset factory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DataNotFoundError(ValueError):
    """Files of a real dataset are missing under ``data.root``.

    Attributes:
        dataset: Name of the dataset that was asked for.
        expected_dir: The folder where the files were expected.
        missing: The expected paths that do not exist.
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str,
        expected_dir: Path | str,
        missing: Sequence[Path | str] = (),
    ) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.expected_dir = Path(expected_dir)
        self.missing = [Path(path) for path in missing]


def missing_files_error(
    dataset: str, expected_dir: Path, missing: Sequence[Path], how_to_get: str
) -> DataNotFoundError:
    """Build the one clear message for a dataset whose files are missing.

    Args:
        dataset: Dataset name as used in ``data.name``.
        expected_dir: Folder that should hold the files.
        missing: Paths that do not exist (listed in full).
        how_to_get: One or two sentences on how to obtain the files.

    Returns:
        The error, ready to be raised.
    """
    listed = "\n".join(f"  {path}" for path in missing)
    message = (
        f"data.name={dataset!r}: the dataset files are missing under {expected_dir}. "
        f"Expected these files:\n{listed}\n{how_to_get}"
    )
    return DataNotFoundError(message, dataset=dataset, expected_dir=expected_dir, missing=missing)
