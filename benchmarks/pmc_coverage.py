"""How much of CRAFT's own plain text the PMC reader keeps, in order (issue #31).

python -m benchmarks.pmc_coverage [--data ../shared/data/pmc-oa/craft] [--min-total 0.99]

For each of the 67 CRAFT articles (``PMC*.nxml`` with CRAFT's rendering ``PMC*.txt``)
it compares, over the same sections (title, abstracts, body; no references, back
matter, figures, tables or supplementary files):

- the reader's side: :func:`corpora.pmc.read_article` on the XML without its
  ``<back>`` and ``<floats-group>``, its FIG, TABLE and SUPPL passages left out;
- CRAFT's side: the ``.txt`` lines that are not back matter, captions or tables.
  CRAFT renders those too (acknowledgements, abbreviations, "Figures and Tables" at
  the end), so a line is dropped when its text (whitespace removed) is found in one
  of those XML parts and is not itself a title or paragraph of the kept sections; a
  line found in no part of the XML (CRAFT's "Click here for additional data file."),
  or found as both (a section title repeated as a figure's), goes with the line
  before it.

Coverage is the length of the longest common subsequence of the two sides'
non-whitespace characters over the number of CRAFT's non-whitespace characters:
what the reader keeps, in order. The LCS is computed exactly, bit-parallel over
Python integers (Hyyro 2004), in about a second per article. Prints each article,
the minimum and the total (sum of LCS over sum of lengths); exits 1 under
``--min-total``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lxml import etree

from corpora.pmc import read_article

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pmc-oa" / "craft"
LEFT_OUT_TYPES = {"FIG", "TABLE", "SUPPL"}
# The XML parts CRAFT renders but the comparison leaves out.
LEFT_OUT_XPATH = (
    "back | floats-group | .//fig | .//fig-group | .//table-wrap | .//table-wrap-group"
    " | .//supplementary-material | .//sec[@sec-type='display-objects']"
    " | .//sec[@sec-type='supplementary-material'] | front//abstract[@abstract-type='toc']"
)
KEPT_LINES = ".//p | .//title | .//article-title | .//label"


def squeeze(text: str) -> str:
    """The non-whitespace characters of ``text``."""
    return "".join(text.split())


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of two strings, exactly.

    Bit-parallel (Hyyro 2004): one bit per character of ``a``, one big-integer step
    per character of ``b``; O(len(a) * len(b) / 64) machine-word operations.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def reader_side(xml: bytes, name: str) -> str:
    """The reader's text of title, abstracts and body (no back matter, floats or files)."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, huge_tree=True))
    for element in root.xpath("back | floats-group"):
        element.getparent().remove(element)
    row = read_article(etree.tostring(root), name)
    text = row["text"]
    kept = [text[p["start"] : p["end"]] for p in row["passages"]]
    types = [p["section_type"] for p in row["passages"]]
    return "\n".join(t for t, kind in zip(kept, types, strict=True) if kind not in LEFT_OUT_TYPES)


def craft_side(xml: bytes, txt: str) -> str:
    """CRAFT's lines of title, abstracts and body (see the module docstring)."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, huge_tree=True))
    left_out = root.xpath(LEFT_OUT_XPATH)
    left_out_blob = "\x00".join(squeeze("".join(e.itertext())) for e in left_out)
    for element in left_out:
        element.getparent().remove(element)
    kept_lines = {squeeze("".join(e.itertext())) for e in root.xpath(KEPT_LINES)}
    kept_blob = "\x00".join(sorted(kept_lines))
    lines, keep = [], True
    for line in txt.splitlines():
        key = squeeze(line)
        if not key:
            continue
        in_kept, in_left_out = key in kept_lines, key in left_out_blob
        if in_kept != in_left_out:
            keep = in_kept
        elif not in_kept and key in kept_blob:
            keep = True
        if keep:  # a line found nowhere, or as a kept title and a caption, goes with the one before
            lines.append(line)
    return "\n".join(lines)


def measure(data: Path) -> list[tuple[str, int, int, int, int]]:
    """(article, CRAFT's characters, the reader's, common in order, CRAFT's whole .txt's)."""
    rows = []
    for xml_path in sorted(data.glob("PMC*.nxml")):
        xml = xml_path.read_bytes()
        txt = xml_path.with_suffix(".txt").read_text(encoding="utf-8")
        craft = squeeze(craft_side(xml, txt))
        ours = squeeze(reader_side(xml, xml_path.name))
        whole = len(squeeze(txt))
        rows.append((xml_path.stem, len(craft), len(ours), lcs_length(ours, craft), whole))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of PMC*.nxml/.txt")
    parser.add_argument("--min-total", type=float, default=0.99, help="exit 1 below this total")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = measure(args.data)
    if not rows:
        print(f"error: no PMC*.nxml in {args.data}", file=sys.stderr)
        return 2
    print(f"{'article':<12} {'craft':>8} {'reader':>8} {'in order':>9} {'coverage':>9}")
    for name, craft, ours, common, _ in rows:
        print(f"{name:<12} {craft:>8,} {ours:>8,} {common:>9,} {common / craft:>9.4%}")
    worst = min(rows, key=lambda r: r[3] / r[1])
    total = sum(r[3] for r in rows) / sum(r[1] for r in rows)
    print(
        f"\n{len(rows)} articles, {sum(r[1] for r in rows):,} non-whitespace characters of CRAFT's "
        f"text compared (of {sum(r[4] for r in rows):,} in the whole .txt files); minimum {worst[3] / worst[1]:.4%} ({worst[0]}); total {total:.4%}; "
        f"wall {time.perf_counter() - started:.1f} s"
    )
    if total < args.min_total:
        print(f"error: total coverage {total:.4%} is under {args.min_total:.2%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
