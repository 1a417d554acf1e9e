"""`python -m study.sweep ARGS`, counting the `ResultsStore` objects its driver process makes:

    python -m tests.helpers.count_stores search_spaces/demo.yaml --data DATA ...

The sweep is the real one; the count is printed last ("results stores made by the driver:
N"), so a test can hold the lifecycle to one store per driver.
"""

from __future__ import annotations

import sys

from retina.cli import run_main
from study.record import results


def main() -> int:
    made = []
    construct = results.ResultsStore.__init__

    def counted(self, *args, **kwargs):
        made.append(type(self).__name__)
        construct(self, *args, **kwargs)

    results.ResultsStore.__init__ = counted
    from study.sweep import main as sweep

    try:
        return run_main(sweep, sys.argv[1:])
    finally:
        print(f"results stores made by the driver: {len(made)}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
