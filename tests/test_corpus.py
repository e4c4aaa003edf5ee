import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpora.corpus import InputError, expand_inputs, validate_inputs


def _write(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_directories_expand_to_their_parquet_files(tmp_path):
    a = _write(tmp_path / "in" / "a.parquet", id=[1], text=["x"])
    b = _write(tmp_path / "in" / "sub" / "b.parquet", id=[2], text=["y"])
    _write(tmp_path / "in" / "_tmp" / "c.parquet", id=[3], text=["z"])
    _write(tmp_path / "in" / ".hidden.parquet", id=[4], text=["w"])
    (tmp_path / "in" / "_SUCCESS").write_text("")
    fs, files = expand_inputs([str(tmp_path / "in"), str(a)])
    assert files == [str(a), str(b)]  # sorted, hidden skipped, a named twice read once


def test_missing_input_and_empty_directory_fail(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .parquet files"):
        expand_inputs(str(tmp_path / "empty"))


def test_fsspec_uris_work(tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    with memory.open("/corpus/one.parquet", "wb") as handle:
        pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), handle)
    fs, files = expand_inputs("memory://corpus")
    assert files == ["/corpus/one.parquet"]
    assert validate_inputs(fs, files, "id", ["text"])[0].num_rows == 2


def test_missing_columns_name_the_file_and_the_column(tmp_path):
    good = _write(tmp_path / "good.parquet", pmid=[1], title=["t"], abstract=["a"])
    bad = _write(tmp_path / "bad.parquet", pmid=[1], title=["t"])
    fs, files = expand_inputs([str(good), str(bad)])
    with pytest.raises(InputError, match=r"bad\.parquet has no text column 'abstract'"):
        validate_inputs(fs, files, "pmid", ["title", "abstract"])
    with pytest.raises(InputError, match=r"good\.parquet has no id column 'doc_id'"):
        validate_inputs(fs, [str(good)], "doc_id", ["title"])
    with pytest.raises(InputError, match="pass-through column 'year'"):
        validate_inputs(fs, [str(good)], "pmid", ["title"], ["year"])


def test_unreadable_and_mistyped_files_fail(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    fs, files = expand_inputs(str(broken))
    with pytest.raises(InputError, match=r"broken\.parquet is not readable Parquet"):
        validate_inputs(fs, files, "id", ["text"])
    numbers = _write(tmp_path / "numbers.parquet", id=[1], text=[3])
    with pytest.raises(InputError, match="text column 'text' has type int64"):
        validate_inputs(fs, [str(numbers)], "id", ["text"])
