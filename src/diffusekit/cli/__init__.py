"""The `diffusekit` command: parse (parser.py), call the library, write (commands.py). Anything it does is a few lines of
Python (docs/). The library's errors name parameters; `flag_message` says them as this command's flags."""
from __future__ import annotations

import csv
import re
import sys
import zipfile

from ..errors import DiffusekitError
from ..runtime import leave_process_group
from .parser import build_parser

# parameter names whose flag is not --name-with-dashes
FLAGS = {"label": "--class", "grid": "--schedule", "runs": "--run", "labels": "labels", "path": "--out",
         "task": "task", "run": "RUN",
         "n_boot": "--bootstrap"}


def flag_message(e: DiffusekitError) -> str:
    """The library's message with the parameters it names written as this command's flags."""
    msg = str(e)
    for p in e.params:
        flag = FLAGS.get(p, "--" + p.replace("_", "-"))
        msg = re.sub(rf"(?<![\w-]){re.escape(p)}(?![\w-])", flag, msg)
    return msg


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        leave_process_group()
    except (DiffusekitError, OSError, zipfile.BadZipFile, csv.Error) as e:
        # our own errors, and files that cannot be read or written (missing folder, full disk, corrupt zip)
        msg = flag_message(e) if isinstance(e, DiffusekitError) else f"{type(e).__name__}: {e}"
        print(f"diffusekit {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(1)
    except (MemoryError, RuntimeError) as e:  # allocation failures only: any other RuntimeError is a bug to see
        if not isinstance(e, MemoryError) and not any(s in str(e) for s in ("allocate memory", "out of memory")):
            raise
        print(f"diffusekit {args.command}: error: out of memory ({str(e).splitlines()[0][:200]}); try a smaller "
              f"--batch-size or model", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"diffusekit {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)

