"""What every tool's command line shares."""

from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """A bad flag is one `error: ...` line and exit status 2, not argparse's usage dump."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
