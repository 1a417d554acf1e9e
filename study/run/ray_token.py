"""Keep Ray's dashboard token private: whoever reads it can run code as you through the Jobs API.

    token_file()                  # $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray 2.60)
    make_private(token_file())    # after the sweep started its own Ray: chmod 600, said once
    warn_if_shared(token_file())  # after joining a cluster: warn with the chmod that fixes it

Ray writes the token with a plain open(): mode 0666 minus the umask, 0644 under the usual
umask, readable by every local user. Where it is: Ray's token loader reads $RAY_AUTH_TOKEN (no
file), else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (`Path.home()`, so $HOME),
which is also where `ray.init()` writes a new one
(ray/_private/authentication/authentication_token_setup.py).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def token_file() -> Path:
    """The token file Ray reads and writes, whether or not it exists yet."""
    custom = os.environ.get(PATH_ENV)
    return Path(custom).expanduser() if custom else Path.home() / ".ray" / "auth_token"


def _shared(mode: int) -> bool:
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def make_private(path: Path, log=None) -> bool:
    """chmod 600 a token file others can read; says so on one line. True if it changed it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:  # token authentication off, or the token is in $RAY_AUTH_TOKEN
        return False
    if not _shared(mode):
        return False
    os.chmod(path, 0o600)
    print(
        f"Ray token file {path}: made readable by you only (chmod 600; it was {mode:04o})",
        file=log or sys.stdout,
    )
    return True


def warn_if_shared(path: Path, log=None) -> bool:
    """On a cluster someone else started: warn when its token file is readable by others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not _shared(mode):
        return False
    print(
        f"warning: the Ray token file {path} is readable by other users (mode {mode:04o}); "
        "anyone who reads it can run code as you through the dashboard's Jobs API. "
        f"Fix: chmod 600 {path}",
        file=log or sys.stderr,
    )
    return True
