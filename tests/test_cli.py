"""retina.cli: every command's exit code and one-line error, run as a process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.cli import ROOT

MAIN = """
import sys
from retina.cli import run_command
from retina.errors import RetinaError

def main(argv):
    if sys.argv[1] == "fail":
        raise RetinaError("bad input; fix it")
    print("done")
    return int(sys.argv[1])

run_command(main)
"""


@pytest.mark.parametrize(
    "arg, code, out, err",
    [("0", 0, "done\n", ""), ("3", 3, "done\n", ""), ("fail", 2, "", "error: bad input; fix it\n")],
)
def test_a_command_exits_with_its_code_and_output(arg, code, out, err):
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, arg], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, err)
