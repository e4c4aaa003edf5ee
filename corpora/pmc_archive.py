"""PMC input files, streamed: a plain ``.nxml``/``.xml`` file, or a ``.tar.gz`` package of them.

PMC's Open Access bulk packages are ``.tar.gz`` archives of many articles
(``PMC000xxxxxx/PMC176545.xml``); the per-article packages hold one ``.nxml`` with
its images and PDF. :func:`iter_pmc` reads an archive member by member in
``tarfile``'s stream mode, so one article is held at a time whatever the
archive's size. A member named ``.nxml``/``.xml`` that cannot be read (not XML,
another encoding than declared, no PMCID) is one bad item, with its reason, and
the other members are read; members with other names (images, PDFs) are skipped
and counted. A file that cannot be read to its end (a plain file's bad XML, a
truncated or corrupt archive) raises :class:`corpora.pmc.PmcXmlError`.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from corpora.pmc import PmcXmlError, read_articles

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
XML_SUFFIXES = (".nxml", ".xml")


@dataclass(frozen=True)
class Item:
    """One member of an input: ``kind`` is ``"article"`` (``row``), ``"bad"`` or ``"skipped"``."""

    kind: str
    member: str | None
    row: dict[str, Any] | None = None
    reason: str | None = None
    has_body: bool = True


def is_archive(path: str) -> bool:
    return path.endswith(ARCHIVE_SUFFIXES)


def iter_pmc(path: str, filesystem=None, keep=frozenset()) -> Iterator[Item]:
    """The items of one input file, streamed: a plain file's article(s), or an archive's members.

    An archive is read member by member (``tarfile`` stream mode): one article is
    held at a time. Raises :class:`PmcXmlError` for a file that cannot be read to
    its end (a plain file's bad XML, a truncated or corrupt archive).
    """
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    try:
        raw = _open(path, filesystem)
    except OSError as err:
        raise PmcXmlError(name, f"cannot open: {err}") from err
    with raw:
        if not is_archive(name):
            yield from _items(raw.read(), name, None, keep)
            return
        try:
            with tarfile.open(fileobj=raw, mode="r|gz") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    if not member.name.endswith(XML_SUFFIXES):
                        yield Item("skipped", member.name)
                        continue
                    data = archive.extractfile(member).read()
                    try:
                        yield from _items(data, member.name, member.name, keep)
                    except PmcXmlError as err:
                        yield Item("bad", member.name, reason=err.reason)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise PmcXmlError(name, f"truncated or corrupt archive: {err}") from err


def _items(data: bytes, name: str, member: str | None, keep) -> Iterator[Item]:
    for row, has_body in read_articles(data, name, keep):
        yield Item("article", member, row=row, has_body=has_body)


def _open(path: str, filesystem):
    if filesystem is None:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's with
    return filesystem.open_input_stream(path, compression=None)  # not gunzipped: tarfile does
