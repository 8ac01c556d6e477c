"""Local-or-download access to public benchmark files, cached, failing fast when offline.

A loader names the files it needs relative to a *root*. The root is a local folder when the user
has the files, else the files are downloaded once from a base URL into ``download_dir`` and read
from there. Without network and without a local copy the error says which file is missing, where
to put it and where it would have been downloaded from; a connection that does not answer within
``timeout`` seconds counts as offline, so nothing hangs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock

DOWNLOAD_TIMEOUT_S = 15.0


class DataUnavailableError(FileNotFoundError):
    """A benchmark file is neither in the given folder nor downloadable; the message says where to put it."""


def resolve_files(
    relative_paths: list[str],
    local_dir: str | os.PathLike | None,
    base_url: str,
    download_dir: str | os.PathLike,
    dataset: str,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> dict[str, Path]:
    """Local paths of ``relative_paths``: from ``local_dir`` if given, else downloaded into the cache.

    ``local_dir`` given but lacking a file is an error (never a silent download), so that an
    explicit folder always means exactly those files.
    """
    if local_dir is not None:
        root = Path(local_dir).expanduser()
        missing = [p for p in relative_paths if not (root / p).is_file()]
        if missing:
            raise DataUnavailableError(
                f"{dataset}: {len(missing)} file(s) missing in {root}, e.g. {root / missing[0]}; "
                f"expected {relative_paths} there (public copies: {base_url.rstrip('/')}/<file>)"
            )
        return {p: root / p for p in relative_paths}
    root = Path(download_dir).expanduser() / dataset
    return {p: _cached_download(f"{base_url.rstrip('/')}/{p}", root / p, dataset, timeout) for p in relative_paths}


def _cached_download(url: str, target: Path, dataset: str, timeout: float) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file():
            return target
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
                    shutil.copyfileobj(response, partial)
            # Rename only a complete download, so an interrupted one is never taken for the file.
            Path(partial.name).replace(target)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            raise DataUnavailableError(
                f"{dataset}: cannot download {url} ({error}). Offline, put the file at {target} "
                f"or set the loader's root to a folder holding the benchmark files (e.g. HYBRIDSWEEP_DATA=/path/to/data)"
            ) from None
    return target
