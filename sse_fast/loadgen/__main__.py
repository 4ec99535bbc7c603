import os
import sys

from ._cli import main

os.environ.setdefault("PYTHONHASHSEED", "0")  # the client processes inherit it
sys.exit(main(prog="python -m sse_fast.loadgen"))
