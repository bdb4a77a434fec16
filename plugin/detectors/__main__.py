"""Build (or find) the int8 copy of each detector with a range table, default all; print paths.

python -m fiftyone_anonymizer.detectors [centerface] [yolov8-plates]
"""

from __future__ import annotations

import sys

from . import int8_model
from .quantize import INT8_MODELS


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(INT8_MODELS)
    for name in names:
        print(f"{name} int8: {int8_model(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
