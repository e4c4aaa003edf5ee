"""Corpora and formats: input discovery, PubMed XML and updates, PubTator, BioC, gold corpora and their metrics, exports, the annotation Parquet writer. No Ray."""
