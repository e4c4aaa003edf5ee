"""The main job on the embedded default, as run by `make run`.

For now it builds the CRAFT dataset (original + augmented training data) and
prints its statistics; training and annotation extend it.
"""

from __future__ import annotations

import sys

from jobs import build_dataset


def main(argv: list[str] | None = None) -> int:
    return build_dataset.main(argv)


if __name__ == "__main__":
    sys.exit(main())
