"""Files that cannot be half-written or silently wrong.

Writes are atomic: a killed run leaves the old file or the new one, never half of one (the new
content goes to a temporary ``.<name>.<pid>-<token>.tmp`` beside it and is renamed into place).
Files that a later run trusts carry a checksum of their content: JSON records a
``content_sha256`` field over the rest of the object, safetensors files a ``pfdist_sha256``
metadata entry over every tensor (dtype, shape, bytes) and the other metadata. Reading one back
with :func:`read_json_checked` / :func:`load_tensors_checked` raises :class:`CorruptFileError`
when it is unreadable, truncated or edited; callers that cache treat that as a miss and say so
in one line with :func:`warn_corrupt`.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

from pfdist.errors import PFDistError

CHECKSUM_KEY = "content_sha256"
TENSORS_CHECKSUM_KEY = "pfdist_sha256"
CACHE_KEY = "pfdist_cache_key"  # the key a cache entry was written under


class CorruptFileError(PFDistError):
    """A file pfdist wrote earlier is unreadable, truncated, or fails its checksum."""


class CorruptFileWarning(UserWarning):
    """A cached or results file was corrupt and is being recomputed."""


def warn_corrupt(error: Exception, action: str = "recomputing it") -> None:
    warnings.warn(f"{error} ({action})", CorruptFileWarning, stacklevel=2)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


def _host() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name(path: Path) -> Path:
    """Where the content of ``path`` is written before the rename: ``.<name>.<host>-<pid>-<token>.tmp``."""
    return path.with_name(f".{path.name}.{_host()}-{os.getpid()}-{os.urandom(4).hex()}.tmp")


def _owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) of the process that writes the temporary ``path``, if it follows our naming."""
    parts = path.name[: -len(".tmp")].rsplit(".", 1)[-1].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.*.tmp`` files under ``directory`` whose writer (a process on this host) is dead.

    Temporaries of live processes, and of other hosts, are left alone: each writer removes its
    own when a write fails, and a killed writer's are removed by the next run.
    """
    removed, host = [], _host()
    for path in Path(directory).rglob(".*.tmp"):
        owner = _owner(path)
        if owner is not None and owner[0] == host and owner[1] != os.getpid() and not _alive(owner[1]) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (mode as a plain open()).

    An OSError (disk full, read-only directory, ...) is re-raised naming ``path``, never the temporary.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        if isinstance(e, FileExistsError) and not path.parent.is_dir():  # mkdir met a file on the way
            raise NotADirectoryError(errno.ENOTDIR, f"{e.filename} is a file, not a directory", str(path)) from e
        if e.filename is None or str(tmp) in (str(e.filename), str(e.filename2)):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: Path) -> None:
    """Remove a temporary after a failed write; its directory may not exist or be writable."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def _json_checksum(obj: dict) -> str:
    import hashlib

    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def atomic_write_json(path: str | os.PathLike, obj: Any, *, checksum: bool = False) -> Path:
    """Write ``obj`` as JSON; with ``checksum`` (``obj`` a dict) add its ``content_sha256``."""
    if checksum:
        obj = {**obj, CHECKSUM_KEY: _json_checksum(obj)}
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_checked(path: str | os.PathLike) -> dict:
    """A JSON object written with ``atomic_write_json(..., checksum=True)``, verified."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(CHECKSUM_KEY), str):
        raise CorruptFileError(f"{path} has no {CHECKSUM_KEY} to verify")
    if obj[CHECKSUM_KEY] != _json_checksum(obj):
        raise CorruptFileError(f"{path} fails its checksum (edited or damaged)")
    del obj[CHECKSUM_KEY]
    return obj


def _tensors_checksum(tensors: dict, metadata: dict) -> str:
    from pfdist.hashing import content_hash

    return content_hash("tensors/v1", tensors or [], {k: v for k, v in metadata.items() if k != TENSORS_CHECKSUM_KEY})


def atomic_save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None, *,
                        checksum: bool = False, key: str | None = None) -> Path:
    """Save a dict of tensors with safetensors, atomically; ``checksum`` adds ``pfdist_sha256``.

    ``key``: a cache entry's key, stored (under the checksum) so that a read can tell the entry
    asked for from another valid entry copied over it (see :func:`load_tensors_checked`).
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = dict(metadata or {})
    if key is not None:
        metadata[CACHE_KEY] = key
    if checksum:
        metadata[TENSORS_CHECKSUM_KEY] = _tensors_checksum(tensors, metadata)

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata or None)
        except OSError:
            raise
        except Exception as e:  # safetensors reports I/O failures (disk full) as its own error type
            raise OSError(errno.EIO, f"could not write tensors ({e})", str(path)) from e

    return atomic_write(path, write)


def load_tensors_checked(path: str | os.PathLike, *, key: str | None = None) -> tuple[dict, dict]:
    """Tensors and metadata of a file written with ``atomic_save_tensors(..., checksum=True)``, verified.

    With ``key``, the file must also be the cache entry of that key: another entry (a valid file
    copied or renamed over this one) is a CorruptFileError like a damaged file.
    """
    from safetensors.torch import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except OSError:
        raise
    except Exception as e:  # SafetensorError, header JSON errors, truncation
        raise CorruptFileError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None
    if TENSORS_CHECKSUM_KEY not in metadata:
        raise CorruptFileError(f"{path} has no {TENSORS_CHECKSUM_KEY} to verify")
    if metadata[TENSORS_CHECKSUM_KEY] != _tensors_checksum(tensors, metadata):
        raise CorruptFileError(f"{path} fails its checksum (edited or damaged)")
    del metadata[TENSORS_CHECKSUM_KEY]
    if key is not None and metadata.get(CACHE_KEY) != key:
        found = metadata.get(CACHE_KEY)
        raise CorruptFileError(f"{path} is not the cache entry asked for (it holds "
                               f"{'no key' if found is None else 'key ' + found[:16] + '...'}, not {key[:16]}...; "
                               "a cache file was copied or renamed)")
    return tensors, metadata


def check_writable(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: an existing path of the
    wrong kind (a directory for a file, a file for a directory) or a parent that is not writable."""
    path = Path(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise PFDistError(f"{path} exists and is not a directory; choose another output directory.")
    elif path.is_dir():
        raise PFDistError(f"{path} is a directory; give a file name for the output, e.g. {path / 'result.json'}.")
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PFDistError(f"cannot create {path}: {existing} is a file, not a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PFDistError(f"cannot write {path}: {existing} is not writable.")
    return path
