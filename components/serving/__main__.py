"""``python -m aicd.components.serving --base URI [--adapter NAME=URI ...]`` (docs/contracts.md)."""

import sys

from aicd.components.serving.server import serve

if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
