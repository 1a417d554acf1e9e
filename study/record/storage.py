"""Where Ray writes a study's trial folders and checkpoints: a local folder (the results folder
by default) or S3 and any S3-compatible store (MinIO, Ceph), through `pyarrow.fs`.

    storage = Storage.resolve("s3://bucket/runs?endpoint_override=http://127.0.0.1:9000", root)
    storage.check()                           # the preflight: one line naming the URI and the fix
    storage.study_path("demo")                # "bucket/runs/demo": Ray's storage_path, in storage.fs
    local = local_copy(storage.fs, path)      # a checkpoint folder as a local path (downloaded once)

`--storage URI` (or `storage:` in the YAML) names the parent of `<study>/`, as `--results`
does. Credentials come the ordinary way (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, or the machine's role); a URI that carries one is refused, so the URI
recorded in study.json, Ray's state and the logs never holds a secret.
"""

from __future__ import annotations

import atexit
import hashlib
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from retina.errors import RetinaError
from study.record.disk import check_writable

SECRET_PARAMS = ("access_key", "secret_key", "session_token")
CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
EXAMPLE = (
    "s3://BUCKET/PREFIX (for MinIO or Ceph: s3://BUCKET/PREFIX?endpoint_override=http://HOST:PORT)"
)


@dataclass(frozen=True)
class Storage:
    """A resolved storage: `uri` as given (never a secret), its file system and root in it."""

    uri: str
    fs: pafs.FileSystem
    root: str  # the folder in `fs` that holds <study>/

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def study_path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    @staticmethod
    def resolve(uri: str | None, results: Path) -> Storage:
        """`uri` (None: the results folder `results`, the parent of results/<study>)."""
        if uri is None:
            return Storage(str(results), pafs.LocalFileSystem(), str(Path(results).resolve()))
        return _resolve(uri)

    def check(self) -> None:
        """The preflight: the storage is reachable, its bucket exists, and we may write there.

        Writes one probe object under the root and deletes it; raises `RetinaError` naming
        the URI and the fix.
        """
        if self.local:
            return check_writable(Path(self.root))
        bucket = self.root.split("/", 1)[0]
        try:
            if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise self._error(f"the bucket {bucket} does not exist", _create_bucket(bucket))
            probe = f"{self.root.rstrip('/')}/.write-check-{secrets.token_hex(8)}"
            with self.fs.open_output_stream(probe) as out:
                out.write(b"retina-study storage check\n")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise self._explain(exc) from None

    def _error(self, what: str, fix: str) -> RetinaError:
        return RetinaError(f"storage {self.uri}: {what}; {fix}")

    def _explain(self, exc: OSError) -> RetinaError:
        text = str(exc)
        if "NETWORK_CONNECTION" in text or "curlCode" in text:
            return self._error(
                "its endpoint cannot be reached",
                "start the server, or fix endpoint_override in the URI (or the network)",
            )
        refused = ("ACCESS_DENIED", "INVALID_ACCESS_KEY", "SIGNATURE", "InvalidAccessKeyId",
                   "SignatureDoesNotMatch", "Forbidden", "403", "EXPIRED_TOKEN")  # fmt: skip
        if any(word in text for word in refused):
            return self._error(
                "the credentials were refused",
                f"set {CREDENTIALS} to credentials allowed to read and write it",
            )
        if "NO_SUCH_BUCKET" in text:
            bucket = self.root.split("/", 1)[0]
            return self._error(f"the bucket {bucket} does not exist", _create_bucket(bucket))
        return self._error(text.splitlines()[0][:300], "check the URI and the server")


def _create_bucket(bucket: str) -> str:
    return f"create it first (e.g. `aws s3 mb s3://{bucket}`) or name another in --storage"


def _resolve(uri: str) -> Storage:
    parts = urlsplit(uri)
    if not parts.scheme:  # a local folder, as --results
        root = Path(uri).expanduser().resolve()
        return Storage(str(root), pafs.LocalFileSystem(), str(root))
    if parts.scheme == "file":
        return Storage(uri, pafs.LocalFileSystem(), str(Path(parts.path).resolve()))
    if parts.scheme != "s3":
        raise RetinaError(
            f"storage {_without_query(uri)}: the scheme {parts.scheme}:// is not supported; give "
            f"a local folder or {EXAMPLE}"
        )
    given = set(parse_qs(parts.query))
    if given & set(SECRET_PARAMS):
        raise RetinaError(
            f"storage {_without_query(uri)}: the URI carries credentials "
            f"({', '.join(sorted(given & set(SECRET_PARAMS)))}), which would be written into the "
            f"study's files; remove them from the URI and set {CREDENTIALS} instead"
        )
    if not parts.netloc:
        raise RetinaError(f"storage {uri}: names no bucket; give {EXAMPLE}")
    # One request per small object (PutObject) instead of a multipart upload's three: the
    # journal's segments and the Parquet tables are small (measured against moto: 11 ms, not 22).
    opened = uri if "allow_delayed_open" in given else _with_param(uri, "allow_delayed_open=true")
    try:
        fs, path = _from_uri(opened)
    except (ValueError, OSError) as exc:  # ArrowInvalid is a ValueError
        raise RetinaError(f"storage {uri}: {str(exc).splitlines()[0]}; give {EXAMPLE}") from None
    return Storage(uri, fs, path.rstrip("/"))


@lru_cache(maxsize=8)
def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    # One file system per URI per process: each S3FileSystem holds its own connection pool.
    return pafs.FileSystem.from_uri(uri)


def _with_param(uri: str, param: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{param}"


def _without_query(uri: str) -> str:
    return uri.split("?", 1)[0]


# ---- reading checkpoints where they are -------------------------------------------------
_DOWNLOADS: Path | None = None


def _downloads() -> Path:
    global _DOWNLOADS
    if _DOWNLOADS is None:
        _DOWNLOADS = Path(tempfile.mkdtemp(prefix="retina-checkpoints-"))
        atexit.register(shutil.rmtree, _DOWNLOADS, ignore_errors=True)
    return _DOWNLOADS


def local_copy(fs: pafs.FileSystem, path: str) -> Path:
    """The folder `path` of `fs` as a local folder: itself on a local disk, else downloaded
    (once per process, into a temporary folder removed at exit)."""
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    target = _downloads() / hashlib.sha256(path.encode()).hexdigest()[:24]
    if not target.is_dir():
        partial = target.with_name(target.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        pafs.copy_files(path, str(partial), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        partial.rename(target)
    return target


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def checkpoint_dirs(fs: pafs.FileSystem, trial_dir: str) -> list[str]:
    """The `checkpoint_*` folders of one trial folder in `fs`, by name."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.Directory
                  and i.base_name.startswith("checkpoint_"))  # fmt: skip
