"""Quick check of a normaliser: ``python -m fishtune.text fi "Olen 3. luokalla."`` prints the normalised text.

``-v`` also prints the rules that changed it on stderr. Without a text argument, lines are read from stdin.
"""

from __future__ import annotations

import argparse
import sys

from fishtune.errors import UsageError
from fishtune.text import NORMALIZERS, normalize_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fishtune.text", description=__doc__.splitlines()[0])
    parser.add_argument("language", help=f"normaliser: {', '.join(n for n in NORMALIZERS if n)}")
    parser.add_argument("text", nargs="*", help="text to normalise (default: lines from stdin)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the rules that fired on stderr")
    args = parser.parse_intermixed_args(argv)
    lines = [" ".join(args.text)] if args.text else sys.stdin.read().splitlines()
    try:
        for line in lines:
            text, rules = normalize_report(line, args.language)
            print(text)
            if args.verbose:
                print("rules: " + (", ".join(rules) or "none"), file=sys.stderr)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
