"""Export the annotation job's output as PubTator or BioC XML.

python -m jobs.export annotations=ANNOTATIONS_DIR out=OUT_FILE [format=pubtator|bioc]
                      [input=[PARQUET, ...]] [type_map.LABEL=NAME ...]

Documents are title + abstract with PubTator offsets; a run over one text column
(full texts: ``text_columns=[text]``) exports each article with its passages
(corpora/fulltext_export.py: BioC passages per section, document offsets). The texts come from the
annotation output when it has ``title`` and ``abstract`` columns
(``passthrough=[title,abstract]``), else from the annotation input joined by id:
``input``, or by default the inputs the run's ``_manifest.json`` names. Labels
are exported as GO_CellularComponent (our Gene), GeneOrGeneProduct (our Protein),
Chemical, CellType, SequenceFeature, Taxon; ``type_map`` changes them.
"""

from __future__ import annotations

import io
import sys

from annotation.manifest import read_manifest
from corpora.corpus import expand_inputs, resolve_filesystem
from corpora.export import (
    ExportConfig,
    ExportError,
    bioc_document,
    export_type_map,
    read_documents,
    write_bioc_xml,
    write_pubtator,
)
from corpora.fulltext_export import bioc_fulltext, read_fulltexts
from corpora.writer import REJECTED_DIR, list_written
from plumbing.atomic import atomic_write
from plumbing.config import job_main


@job_main(ExportConfig)
def main(args: ExportConfig) -> int:
    fs, root = resolve_filesystem(args.annotations)
    manifest = read_manifest(fs, root) or {}
    run = manifest.get("config", {})
    files = [
        f for f in manifest.get("files") or list_written(fs, root) if f"/{REJECTED_DIR}/" not in f
    ]
    try:
        if not files:
            raise ExportError(f"no annotation files in {args.annotations}")
        type_map = export_type_map(args.type_map)
        input_files = args.input if args.input is not None else run.get("input", [])
        if input_files:
            input_files = expand_inputs(input_files)[1]
        text_columns = run.get("text_columns", ["title", "abstract"])
        id_column = args.id_column or run.get("id_column", "pmid")
        full = len(text_columns) == 1  # a full text and its passages (corpora.fulltext_export)
        if full:
            column, passages = text_columns[0], run.get("passages_column", "")
            documents = read_fulltexts(
                files, type_map, column, passages, input_files, id_column, fs
            )
        else:
            documents = read_documents(
                files, type_map, text_columns, run.get("separator", " "), input_files, id_column, fs
            )
        counts = None

        def write(stream) -> None:  # into a temporary file, published whole or not at all
            nonlocal counts
            if args.format == "bioc":
                to_bioc = bioc_fulltext if full else bioc_document
                counts = write_bioc_xml(documents, stream, type_map, args.annotations, to_bioc)
                return
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
            counts = write_pubtator((d.titled() for d in documents) if full else documents, text)
            text.flush()
            text.detach()

        atomic_write(args.out, write)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    types = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.types.items())) or "none"
    print(f"{counts.documents:,} documents, {counts.mentions:,} mentions ({types}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
