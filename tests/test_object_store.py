"""Annotation with an object store far smaller than the data that streams through it."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from corpora.pubtator import read_pubtator
from ner import columns as C
from tests.failure_support import (
    ROOT,
    PeakPss,
    content_checksum,
    doc_ids,
    shutdown_in_process_ray,
    spilled_mib,
)

# The suite's slowest test, 3.5 to 5 minutes on 2 cores: the tight run crawls under
# back-pressure, and that crawl is what it must survive.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SAMPLE = ROOT.parent / "shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt"
COPIES = 4  # 2,000 real abstracts, about 0.6 M sub-tokens
# Each document also carries a 96 KiB pass-through column (think full text kept beside
# the abstract): about 190 MiB that every stage hands on, for little model work.
BODY_KIB = 96
TIGHT_MB, ROOMY_MB = 80, 2048  # Ray's smallest object store is 75 MiB
# A write batch must fit the store: 2,000 rows of 96 KiB (the default write_batch_size)
# are 190 MiB, and Ray Data waits for ever for room to assemble them (docs/reliability.md).
WRITE_ROWS = 100
# The limit on what a run adds to summed PSS of the driver and every Ray process, over
# what the test process held before Ray started (earlier tests in the same pytest
# process leave the driver larger: test_fulltext's 75 articles added 1.2 GiB). Alone,
# the whole tree peaks at about 2.7 GiB roomy (a dozen Python processes with torch) and
# 3.4 GiB tight (spilling adds Ray's spill and restore workers), the driver included.
PSS_LIMIT_MIB = 3584


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pressure") / "corpus"
    root.mkdir()
    sample = read_pubtator(SAMPLE)
    for c in range(COPIES):
        body = [(d["abstract"] * (BODY_KIB * 1024 // max(1, len(d["abstract"])) + 1))[
            : BODY_KIB * 1024] for d in sample]  # fmt: skip
        table = pa.table({"pmid": [f"{d['pmid']}-{c}" for d in sample],
                          "title": [d["title"] for d in sample],
                          "abstract": [d["abstract"] for d in sample], "body": body})  # fmt: skip
        pq.write_table(table, root / f"part-{c}.parquet")
    return root


def _run(corpus, output, model, store_mb: int):
    import ray

    shutdown_in_process_ray()
    before = PeakPss().sample()  # this process, and anything earlier tests left running
    ray.init(address="local", num_cpus=2, object_store_memory=store_mb << 20,
             include_dashboard=False, log_to_driver=False)  # fmt: skip
    config = AnnotateConfig(input=[str(corpus)], output=str(output), model=str(model),
                            id_column="pmid", text_columns=["title", "abstract"],
                            passthrough=["body"], write_batch_size=WRITE_ROWS,
                            progress_bars=False)  # fmt: skip
    try:
        with PeakPss() as memory:
            summary = run_annotate(config)
        spilled = spilled_mib()
    finally:
        ray.shutdown()
    tables = [pq.read_table(path) for path in summary.files]
    print(f"before the run: {before >> 20} MiB")
    added = (memory.peak - before) >> 20
    return summary, doc_ids(tables), content_checksum(tables), added, spilled, tables


def test_a_small_object_store_spills_and_changes_nothing(corpus, tiny_model_dir, tmp_path):
    roomy = _run(corpus, tmp_path / "roomy", tiny_model_dir, ROOMY_MB)
    tight = _run(corpus, tmp_path / "tight", tiny_model_dir, TIGHT_MB)
    print(f"roomy: peak PSS added {roomy[3]} MiB, spilled {roomy[4]} MiB; "
          f"tight: peak PSS {tight[3]} MiB, spilled {tight[4]} MiB")  # fmt: skip
    summary, ids, checksum, peak_mib, spilled, tables = tight
    assert summary.balanced and summary.rows_out == summary.rows_in == 500 * COPIES
    assert ids == roomy[1] and len(set(ids)) == len(ids)
    assert checksum == roomy[2]
    # What streamed under pressure arrives whole: each pass-through body as it was read
    # (the checksum above compares two runs, which one bug could damage alike).
    bodies = pa.concat_tables([t.select([C.DOC_ID, "body"]) for t in tables]).sort_by(C.DOC_ID)
    given = pq.read_table(corpus, columns=["pmid", "body"]).sort_by("pmid")
    assert bodies.column(C.DOC_ID).to_pylist() == given.column("pmid").to_pylist()
    assert bodies.column("body").cast(pa.string()).equals(given.column("body").cast(pa.string()))
    assert spilled > 0  # the data did not fit: Ray spilled it, and nothing changed
    assert peak_mib <= PSS_LIMIT_MIB
