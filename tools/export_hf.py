"""Export a run as a Hugging Face Llama: see `python tools/export_hf.py --help`."""

import sys

from megarecipe.cli.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
