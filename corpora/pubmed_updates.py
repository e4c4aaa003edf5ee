"""PubMed's current state from a baseline and its update files, resolved with pyarrow.

NLM publishes an annual baseline (``pubmed26n0001`` ... ``pubmed26n1274``) and daily
update files that continue its numbering (``pubmed26n1275``, ...). A later file's
record of a PMID replaces an earlier one, and a file's ``DeleteCitation`` withdraws
the PMIDs it names. :func:`load_current` reads the output directories of
``jobs.pubmed_to_parquet`` (``citations/`` and ``deletions/``) and says which
citation rows are current; the texts stay in the files, so memory holds only
``pmid``, the file's rank and ``record_index`` per citation.

The rules:

- Files are ordered by (year, number) parsed from their names
  (``pubmedYYnNNNN`` / ``medlineYYnNNNN``). Within one annual release (one YY) this
  is the number order, which baseline and updates share. Across releases the year
  comes first because each annual baseline restarts at 0001 and holds the state at
  its release: ``pubmed26n0001`` must replace ``pubmed25n1400``, not the reverse.
  Two files with the same (year, number) are an error, as is a name without them.
- For each PMID the record from the latest file wins; within a file, the last one
  (highest ``record_index``).
- A ``DeleteCitation`` in a file at or after the winning record's file removes the
  PMID (a file's deletions come after its records). A record in a file after the
  deletion's is a re-addition and is kept. Deletions match by PMID, not by
  ``Version``: the store is keyed by PMID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from corpora.corpus import InputError, resolve_filesystem

CITATIONS_DIR, DELETIONS_DIR = "citations", "deletions"
PMID, RECORD_INDEX, RANK = "pmid", "record_index", "file_rank"
FILE_NAME = re.compile(r"^(?:pubmed|medline)(\d{2})n(\d{4,})$")


def file_order(stem: str) -> tuple[int, int]:
    """``pubmed26n0002`` -> ``(26, 2)``: the (year, number) key files are applied in."""
    found = FILE_NAME.match(stem)
    if not found:
        raise InputError(
            f"{stem}: not a PubMed file name (pubmedYYnNNNN or medlineYYnNNNN); "
            "the order of baseline and update files is read from it"
        )
    return int(found.group(1)), int(found.group(2))


def resolve_current(citations: pa.Table, deletions: pa.Table) -> pa.Table:
    """The current records: ``pmid, file_rank, record_index`` of each PMID that survives.

    ``citations`` has ``pmid, file_rank, record_index``; ``deletions`` has
    ``pmid, file_rank``; PMIDs are integers. Sorted with numpy, not grouped: each
    PMID's winner is the last of its run in (pmid, file_rank, record_index) order,
    its latest deletion the last of its run in (pmid, file_rank) order. Arrow's
    group-by and join peaked at about 185 bytes a record (7 GB for a 36 M-record
    baseline); this sort at about 75.
    """
    pmid = _numpy(citations[PMID])
    rank = _numpy(citations[RANK])
    index = _numpy(citations[RECORD_INDEX])
    order = np.lexsort((index, rank, pmid))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = pmid[order[1:]] != pmid[order[:-1]]
    wins = order[last]  # sorted by pmid
    gone_pmid, gone_rank = _numpy(deletions[PMID]), _numpy(deletions[RANK])
    by = np.lexsort((gone_rank, gone_pmid))
    gone_pmid, gone_rank = gone_pmid[by], gone_rank[by]
    final = np.ones(len(gone_pmid), dtype=bool)
    final[:-1] = gone_pmid[1:] != gone_pmid[:-1]
    gone_pmid, gone_rank = gone_pmid[final], gone_rank[final]
    alive = np.ones(len(wins), dtype=bool)
    if len(gone_pmid):
        at = np.minimum(np.searchsorted(gone_pmid, pmid[wins]), len(gone_pmid) - 1)
        deleted_later = (gone_pmid[at] == pmid[wins]) & (gone_rank[at] >= rank[wins])
        alive = ~deleted_later
    kept = wins[alive]
    kept = kept[np.argsort(rank[kept], kind="stable")]
    return pa.table(
        {
            PMID: pa.array(pmid[kept]),
            RANK: pa.array(rank[kept]),
            RECORD_INDEX: pa.array(index[kept]),
        }
    )


def _numpy(column) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.int64()).to_numpy(), dtype=np.int64)


@dataclass
class CurrentState:
    """Which rows of which citation files are PubMed's current state."""

    files: list[str]  # citation files, in PubMed order
    keep: dict[str, pa.Array] = field(default_factory=dict)  # file stem -> current record_index
    records: int = 0  # citation rows in all files
    deletions: int = 0  # DeleteCitation rows in all files
    current: int = 0
    missing: list[str] = field(default_factory=list)  # numbers absent inside a release

    def columns(self, read_columns: list[str]) -> list[str]:
        """The columns to read from a citation file: ``record_index`` added."""
        return list(dict.fromkeys([*read_columns, RECORD_INDEX]))

    def rows(self, path: str, batch: pa.RecordBatch, read_columns: list[str]) -> pa.RecordBatch:
        """The batch's current rows, with ``read_columns`` only."""
        mask = pc.is_in(batch.column(RECORD_INDEX), value_set=self.keep.get(_stem(path), _NONE))
        return batch.filter(mask).select(read_columns)

    def describe(self) -> str:
        names = [_stem(path) for path in self.files]
        span = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
        line = (
            f"PubMed: {len(names):,} file(s) {span}; {self.records:,} records, "
            f"{self.deletions:,} DeleteCitation PMIDs -> {self.current:,} current citations"
        )
        if self.missing:
            line += f"\nWARNING: file(s) missing from the sequence: {', '.join(self.missing[:10])}"
        return line


_NONE = pa.array([], pa.int64())


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".parquet")


def _list(inputs: list[str], folder: str) -> tuple[pafs.FileSystem, dict[str, str]]:
    """stem -> path of the Parquet files in ``<input>/<folder>/`` of every input."""
    found: dict[str, str] = {}
    filesystem = None
    for item in inputs:
        filesystem, root = resolve_filesystem(item)
        if filesystem.get_file_info(f"{root}/{CITATIONS_DIR}").type != pafs.FileType.Directory:
            raise InputError(f"{item}: no {CITATIONS_DIR}/ (an output of jobs.pubmed_to_parquet?)")
        selector = pafs.FileSelector(f"{root}/{folder}", allow_not_found=True)
        for entry in filesystem.get_file_info(selector):
            if entry.is_file and entry.path.endswith(".parquet"):
                if _stem(entry.path) in found:
                    raise InputError(f"{found[_stem(entry.path)]} and {entry.path}: one file twice")
                found[_stem(entry.path)] = entry.path
    return filesystem, found


def _missing(orders: list[tuple[int, int]]) -> list[str]:
    present: dict[int, set[int]] = {}
    for year, number in orders:
        present.setdefault(year, set()).add(number)
    return [
        f"{year:02d}n{n:04d}"
        for year, numbers in sorted(present.items())
        for n in range(min(numbers), max(numbers))
        if n not in numbers
    ]


def load_current(inputs: list[str]) -> CurrentState:
    """PubMed's current state over the ``jobs.pubmed_to_parquet`` output directories ``inputs``."""
    if not inputs:
        raise InputError("input must name jobs.pubmed_to_parquet output directories")
    filesystem, citations = _list(inputs, CITATIONS_DIR)
    _, deletions = _list(inputs, DELETIONS_DIR)
    orders = {stem: file_order(stem) for stem in {*citations, *deletions}}
    if len(set(orders.values())) < len(orders):
        raise InputError("two files share a year and number: " + ", ".join(sorted(orders)))
    if not citations:
        raise InputError(f"no citation files in {', '.join(inputs)}")
    rank = {stem: k for k, stem in enumerate(sorted(orders, key=orders.__getitem__))}

    def read(files: dict[str, str], columns: list[str]) -> pa.Table:
        parts = [pa.table({PMID: pa.array([], pa.int64()), RECORD_INDEX: _NONE, RANK: _NONE})]
        for stem, path in files.items():
            table = pq.read_table(path, columns=columns, filesystem=filesystem)
            # PMIDs are digits: grouped as integers, a 36 M-record baseline is resolved
            # in a fraction of the memory that strings take.
            table = table.set_column(0, PMID, _as_integers(table[PMID], path))
            parts.append(table.append_column(RANK, pa.repeat(pa.scalar(rank[stem]), len(table))))
        return pa.concat_tables(
            [t.select([*columns, RANK]) for t in parts], promote_options="permissive"
        )

    cited = read(citations, [PMID, RECORD_INDEX])
    withdrawn = read(deletions, [PMID])
    current = resolve_current(cited, withdrawn)
    ordered = sorted(citations, key=rank.__getitem__)
    scheme = "" if isinstance(filesystem, pafs.LocalFileSystem) else f"{filesystem.type_name}://"
    state = CurrentState(files=[scheme + citations[stem] for stem in ordered])
    state.records, state.deletions, state.current = len(cited), len(withdrawn), len(current)
    state.missing = _missing([orders[stem] for stem in ordered])
    stem_of = {k: stem for stem, k in rank.items()}
    ranks = current[RANK].to_numpy()
    indexes = current[RECORD_INDEX].combine_chunks()
    starts = [0, *(np.flatnonzero(np.diff(ranks)) + 1).tolist(), len(ranks)]
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        if end > begin:  # one run of records per file, the table being sorted by rank
            state.keep[stem_of[int(ranks[begin])]] = indexes.slice(begin, end - begin)
    return state


def _as_integers(pmids: pa.ChunkedArray, path: str) -> pa.ChunkedArray:
    try:
        return pc.cast(pmids, pa.int64())
    except pa.ArrowInvalid:
        raise InputError(f"{path}: a PMID that is not a number") from None


def read_current(state: CurrentState, columns: list[str]) -> pa.Table:
    """The current citations' ``columns``, file by file (for checks and small corpora)."""
    parts = []
    for path in state.files:
        filesystem, local = resolve_filesystem(path)
        table = pq.read_table(local, columns=state.columns(columns), filesystem=filesystem)
        parts.extend(state.rows(path, batch, columns) for batch in table.to_batches())
    return pa.Table.from_batches(parts) if parts else pa.table({c: [] for c in columns})
