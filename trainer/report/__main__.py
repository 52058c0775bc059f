"""``python -m trainer.report BUNDLE``: rebuild a bundle's report without training again."""

from __future__ import annotations

import sys
from pathlib import Path

from device.errors import SightwireError
from trainer.report.html import write_report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m trainer.report BUNDLE_DIR", file=sys.stderr)
        return 2
    try:
        print(write_report(Path(args[0])))
    except SightwireError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
