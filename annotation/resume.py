"""Resume state: what an earlier attempt of a run wrote, read from the files' footers alone.

Every file the writer publishes records its run id, model fingerprint, the Ray Data
row hashes of its input rows and their counts (:mod:`corpora.writer`). A rerun with
the same ``run_id`` and model therefore knows which input rows are done without a
separate progress file: :class:`ResumeState` sums their counts and
:class:`SkipWrittenRows` drops them right after the read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from corpora.writer import REJECTED_DIR, WrittenFile, list_written, merge_stats, read_footer
from ner import columns as C


def written_by_run(
    filesystem: pafs.FileSystem, root: str, run_id: str, fingerprint: str
) -> list[WrittenFile]:
    """Files an earlier attempt of ``run_id`` wrote with this model (their footers say so).

    Files of other runs or models are not reused: they are replaced, and removed at
    the end of the run as stale. Files from before row identities were recorded
    (no row hashes in the footer), and unreadable ones, are not reused either.
    """
    done = []
    for path in list_written(filesystem, root):
        try:
            footer = read_footer(filesystem, path)
        except (OSError, pa.ArrowInvalid):
            continue  # unreadable: not counted as done, so its rows are annotated again
        if (
            footer.run_id == run_id
            and footer.model_fingerprint == fingerprint
            and footer.stats is not None
            and len(footer.row_hashes) == footer.stats["rows"] + footer.stats["rejected"]
        ):
            done.append(footer)
    return done


@dataclass
class ResumeState:
    """The files an earlier attempt of this run wrote, and what they hold."""

    files: list[WrittenFile] = field(default_factory=list)

    @classmethod
    def load(
        cls, filesystem: pafs.FileSystem, root: str, run_id: str, fingerprint: str
    ) -> ResumeState:
        return cls(written_by_run(filesystem, root, run_id, fingerprint))

    @property
    def stats(self) -> dict:
        """Their summed counts (:func:`corpora.writer.merge_stats`)."""
        return merge_stats([f.stats for f in self.files])

    @property
    def documents(self) -> int:
        stats = self.stats
        return stats["rows"] + stats["rejected"]

    @property
    def row_hashes(self) -> np.ndarray:
        """Sorted, unique uint64 row hashes of the input rows already written."""
        if not self.files:
            return np.array([], np.uint64)
        return np.unique(np.concatenate([f.row_hashes for f in self.files]))

    def paths(self, rejected: bool) -> list[str]:
        return [f.path for f in self.files if (f"/{REJECTED_DIR}/" in f.path) == rejected]


class SkipWrittenRows:
    """Pipeline stage: drop input rows whose Ray Data row hash an earlier attempt wrote.

    The hash set can hold millions of entries; it arrives once per actor, with the
    stage's constructor arguments, instead of once per batch.
    """

    def __init__(self, row_hashes: np.ndarray):
        self.row_hashes = np.asarray(row_hashes, dtype=np.uint64)

    def __call__(self, batch: pa.Table) -> pa.Table:
        C.require_columns(batch, [C.ROW_HASH], "SkipWrittenRows")
        hashes = batch.column(C.ROW_HASH).to_numpy(zero_copy_only=False)
        return batch.filter(pa.array(~np.isin(hashes, self.row_hashes)))


def remove_stale(filesystem: pafs.FileSystem, root: str, keep: set[str]) -> list[str]:
    """Delete written files (and ``.tmp-*`` leftovers of killed writers) not in ``keep``."""
    removed = [p for p in list_written(filesystem, root, temporary=True) if p not in keep]
    for path in removed:
        filesystem.delete_file(path)
    return removed
