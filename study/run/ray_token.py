"""Keep Ray's dashboard token private: whoever reads it can run code as you through the Jobs API.

    token_file()                  # $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray 2.60)
    make_token(token_file())      # before a new local Ray: a missing token, made private, once
    make_private(token_file())    # an older token others can read: chmod 600, said once
    warn_if_shared(token_file())  # after joining a cluster: warn with the chmod that fixes it

Ray writes the token with a plain open(): mode 0666 minus the umask, 0644 under the usual
umask, readable by every local user. Where it is: Ray's token loader reads $RAY_AUTH_TOKEN (no
file), else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (`Path.home()`, so $HOME),
which is also where `ray.init()` writes a new one
(ray/_private/authentication/authentication_token_setup.py).

`ray.init()` checks for the file, then writes it: two sweeps started at once on a fresh machine
each write their own token, and the node whose token was overwritten times out at start
("The current node timed out during startup", measured: 35 s, then exit 1). `make_token` writes
the token the same way Ray would (`secrets.token_hex(32)`), but whole and at once (a link of a
finished file, which fails if another process made it first), so every Ray finds one token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path

PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TOKEN_ENV = "RAY_AUTH_TOKEN"  # the token itself: no file is read or written
MODE_ENV = "RAY_AUTH_MODE"  # unset: Ray 2.60 turns token authentication on for a new local Ray


def token_file() -> Path:
    """The token file Ray reads and writes, whether or not it exists yet."""
    custom = os.environ.get(PATH_ENV)
    return Path(custom).expanduser() if custom else Path.home() / ".ray" / "auth_token"


def make_token(path: Path, log=None) -> bool:
    """Before a new local Ray: write the token Ray would write, readable by you only from its
    first byte, unless there is one already (or authentication is off, or the token comes from
    $RAY_AUTH_TOKEN). Safe when several processes do it at once: one token wins and every
    process reads that one. True if this call made it."""
    if os.environ.get(TOKEN_ENV) or os.environ.get(MODE_ENV, "token").lower() != "token":
        return False
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))  # what Ray's own generator writes: 256 random bits
    try:
        os.link(draft, path)  # atomic, and refuses to replace a token another process made
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            draft.unlink()
    print(f"Ray token file {path}: new, readable by you only", file=log or sys.stdout)
    return True


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
