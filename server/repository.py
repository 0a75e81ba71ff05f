"""The models directory: find model packages, load them, and keep them current (hot reload).

Layout: ``DIR/NAME/manifest.json`` (one unversioned package; its version comes from the manifest)
or ``DIR/NAME/VERSION/manifest.json`` (versioned; the directory names the version). Names and
versions starting with "." are skipped, so a package can be staged in a hidden directory and
renamed into place.

A package is (re)loaded when its fingerprint, the (mtime, size, inode) of its manifest and ONNX
files, changes. A new or changed package must load (SHA-256 checks in :meth:`Predictor.load`) and
answer a test inference in both modes before it replaces what was serving; a package that fails
is logged and retried only once its files change again, while the version it was to replace keeps
serving. A package whose files change while it loads is retried on the next scan. At most
:data:`MAX_CONCURRENT_LOADS` packages load at a time, so a scan of many packages does not spike CPU
and memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropnet.core.errors import ConfigError, DropnetError, ModelPackageError, NotFoundError, quoted
from dropnet.core.manifest import MANIFEST_FILE, ONNX_FILES
from dropnet.core.outputs import Mode, output_spec
from dropnet.server.predictor import Predictor
from dropnet.server.priority import MC_NICE
from dropnet.server.request import check_request
from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)

MAX_CONCURRENT_LOADS = 2
"""Packages loaded (read, hashed, sessions created, test-run) at the same time by one scan."""
VERIFY_MC_SAMPLES = 2
"""T of the test inference in MC mode (at most the model's limit)."""

Fingerprint = tuple[tuple[int, int, int] | None, ...]
"""(mtime_ns, size, inode) of the manifest and each ONNX file; None for a missing file."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified package that is serving."""

    name: str
    version: str
    path: Path
    predictor: Predictor


@dataclass(frozen=True)
class ModelRef:
    """A model of the repository as listed to clients."""

    name: str
    versions: tuple[str, ...]
    """Every version found on disk, oldest first (for an unversioned package: its loaded version)."""
    latest: str | None
    """The highest loaded version, used when a request names none; None while none is loaded."""
    ready: bool
    """Whether at least one version is loaded."""


@dataclass(frozen=True)
class PackageDir:
    """A package directory found by a scan; ``version`` is None when the manifest decides it."""

    name: str
    version: str | None


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key of versions: numeric ones numerically and above any non-numeric one."""
    return (1, int(version), version) if version.isdigit() else (0, 0, version)


def fingerprint(package_dir: Path) -> Fingerprint:
    """The (mtime_ns, size, inode) of each file of the package, None where a file is missing.

    Links are not followed, so a file swapped for a symbolic link (which the package reader refuses)
    changes the fingerprint even when the link leads to the very same file.
    """
    stats: list[tuple[int, int, int] | None] = []
    for file_name in (MANIFEST_FILE, *ONNX_FILES):
        try:
            stat = (package_dir / file_name).lstat()
        except OSError:
            stats.append(None)
        else:
            stats.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(stats)


def discover(models_dir: Path) -> dict[Path, tuple[PackageDir, Fingerprint]]:
    """Every package directory under ``models_dir`` with its fingerprint, by path.

    A directory is a package when it holds an entry named ``manifest.json`` of any kind, so that a
    manifest which is a symbolic link or not a regular file is refused by the loader, by name,
    rather than skipped in silence. Model and version directories may themselves be symbolic links
    (a common way to deploy a release); the files inside a package may not (see
    :func:`dropnet.server.package.read_package`).
    """
    found: dict[Path, tuple[PackageDir, Fingerprint]] = {}
    for model_dir in sorted(models_dir.iterdir()):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        if _has_manifest(model_dir):
            found[model_dir] = (PackageDir(model_dir.name, None), fingerprint(model_dir))
            continue
        for version_dir in sorted(model_dir.iterdir()):
            if not version_dir.name.startswith(".") and _has_manifest(version_dir):
                found[version_dir] = (PackageDir(model_dir.name, version_dir.name), fingerprint(version_dir))
    return found


def _has_manifest(directory: Path) -> bool:
    """Whether ``directory`` holds an entry named ``manifest.json`` (a dangling link included)."""
    return os.path.lexists(directory / MANIFEST_FILE)


def verify_inference(predictor: Predictor, where: Path) -> None:
    """Run one row at the midpoint of the input's value range in both modes; raise if an output is wrong.

    Every default output must have its output-table shape, and float outputs finite values.
    """
    manifest = predictor.manifest
    spec = manifest.input
    low, high = spec.value_range
    x = np.full((1, *spec.shape), (low + high) // 2 if spec.is_integer else (low + high) / 2, dtype=spec.dtype)
    samples = min(VERIFY_MC_SAMPLES, predictor.max_mc_samples)
    sizes = {"B": 1, "T": samples, **manifest.sizes()}
    for mode in Mode:
        mc = mode is Mode.MC
        outputs = predictor.run(check_request(predictor, x, mode, samples if mc else None, 0 if mc else None))
        for name, value in outputs.items():
            expected = tuple(output_spec(manifest.task, mode, name).dims(sizes))
            if value.shape != expected or (value.dtype.kind == "f" and not np.all(np.isfinite(value))):
                raise ModelPackageError(
                    f"{where}: test inference in {mode.value} mode gave {name} of shape {value.shape} "
                    f"with values {value.ravel()[:4].tolist()}...; expected finite values of shape {expected}"
                )


def _by_name(loaded: dict[Path, LoadedModel]) -> dict[str, dict[str, LoadedModel]]:
    """Loaded models as name → version → model."""
    models: dict[str, dict[str, LoadedModel]] = {}
    for model in loaded.values():
        models.setdefault(model.name, {})[model.version] = model
    return models


class ModelRepository:
    """The packages of ``settings.models_dir``, loaded as predictors and rescanned every reload interval."""

    def __init__(self, settings: ServerSettings, on_unload: Callable[[str, str], None] | None = None) -> None:
        """``on_unload(name, version)`` is called after a scan for each version that stopped serving."""
        self._settings = settings
        self._on_unload = on_unload
        self._found: dict[Path, PackageDir] = {}
        self._attempted: dict[Path, Fingerprint] = {}
        self._loaded: dict[Path, LoadedModel] = {}
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self._started = False
        self._reload_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load every package, then rescan every ``reload_interval_s`` (0: never)."""
        models_dir = Path(self._settings.models_dir)
        if not models_dir.is_dir():
            raise ConfigError(f"models directory {models_dir} does not exist; expected a directory of model packages")
        await self.scan()
        self._started = True
        if self._settings.reload_interval_s > 0:
            self._reload_task = asyncio.create_task(self._reload_loop(), name="dropnet-model-reload")

    async def stop(self) -> None:
        """Stop rescanning; loaded models keep serving until the repository is dropped."""
        if self._reload_task is not None:
            self._reload_task.cancel()
            try:
                await self._reload_task
            except asyncio.CancelledError:
                pass
            self._reload_task = None

    async def scan(self) -> None:
        """Bring the loaded models in line with the directory: load new or changed packages, drop removed ones.

        The loaded set is swapped in one step once every load has settled, so requests never see a half-done scan.
        """
        found = await asyncio.to_thread(discover, Path(self._settings.models_dir))
        changed = [(path, package, fp) for path, (package, fp) in found.items() if fp != self._attempted.get(path)]
        slots = asyncio.Semaphore(MAX_CONCURRENT_LOADS)
        results = await asyncio.gather(*(self._load_in_thread(slots, *args) for args in changed))
        loaded = {path: model for path, model in self._loaded.items() if path in found}
        for path in self._loaded.keys() - found.keys():
            model = self._loaded[path]
            log.info("unloaded model %s version %s: %s was removed", model.name, model.version, path)
        self._attempted = {path: fp for path, fp in self._attempted.items() if path in found}
        for (path, _, fp), result in zip(changed, results):
            self._settle(loaded, path, fp, result)
        self._found = {path: package for path, (package, _) in found.items()}
        serving_before = {(model.name, model.version) for model in self._loaded.values()}
        self._loaded = loaded
        self._models = _by_name(loaded)
        if self._on_unload is not None:
            for name, version in sorted(serving_before - {(m.name, m.version) for m in loaded.values()}):
                self._on_unload(name, version)

    async def _load_in_thread(
        self, slots: asyncio.Semaphore, path: Path, package: PackageDir, before: Fingerprint
    ) -> LoadedModel | Exception | None:
        """:meth:`_load` in a worker thread, once one of the scan's ``slots`` is free."""
        async with slots:
            return await asyncio.to_thread(self._load, path, package, before)

    def _load(self, path: Path, package: PackageDir, before: Fingerprint) -> LoadedModel | Exception | None:
        """Load and verify one package (in a worker thread): the model, the error, or None if it changed meanwhile."""
        settings = self._settings
        try:
            predictor = Predictor.load(
                path, settings.device, settings.session_threads, settings.max_mc_samples, settings.spin_wait,
                settings.mc_chunk_bytes, MC_NICE,
            )
            verify_inference(predictor, path)
            result: LoadedModel | Exception = LoadedModel(package.name, package.version or predictor.version, path, predictor)
        except (DropnetError, OSError) as exc:
            result = exc
        except Exception as exc:  # a package must never take serving down; the traceback is logged
            log.warning("unexpected error loading %s", path, exc_info=True)
            result = exc
        return result if fingerprint(path) == before else None

    def _settle(self, loaded: dict[Path, LoadedModel], path: Path, before: Fingerprint,
                result: LoadedModel | Exception | None) -> None:
        """Apply to ``loaded`` the outcome of loading ``path``, whose fingerprint was ``before`` when loading began."""
        if result is None:
            log.info("%s changed while it was loading; it will be retried on the next scan", path)
            return
        self._attempted[path] = before
        old = loaded.get(path)
        if isinstance(result, Exception):
            keeps = f"version {old.version} keeps serving" if old else "nothing was serving from it"
            log.warning("rejected model package %s: %s (%s)", path, result, keeps)
            return
        loaded[path] = result
        log.info("%s model %s version %s from %s", "reloaded" if old else "loaded", result.name, result.version, path)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reload_interval_s)
            try:
                await self.scan()
            except Exception as exc:  # e.g. the directory vanished; keep serving and try again
                log.warning("rescanning models directory %s failed (%s); serving what is loaded",
                            self._settings.models_dir, exc, exc_info=not isinstance(exc, OSError))

    def get(self, name: str, version: str | None) -> LoadedModel:
        """The loaded ``version`` of model ``name`` (None or "": the latest), else :class:`NotFoundError`.

        An unknown model's error names no other model (what is served is ListModels' to tell); an
        unknown version of a loaded model lists that model's loaded versions, which its metadata shows too.
        """
        versions = self._models.get(name)
        if versions is None:
            raise NotFoundError(
                f"model {quoted(name)} is not loaded; expected the name of a served model (ListModels lists them)"
            )
        if not version:
            return versions[max(versions, key=version_key)]
        if version not in versions:
            loaded = sorted(versions, key=version_key)
            raise NotFoundError(f"model {quoted(name)} has no loaded version {quoted(version)}; loaded versions: {loaded}")
        return versions[version]

    def has_model(self, name: str) -> bool:
        """Whether any version of ``name`` is loaded."""
        return name in self._models

    def loaded_versions(self, name: str) -> tuple[str, ...]:
        """The loaded versions of ``name``, oldest first (empty when none is loaded)."""
        return tuple(sorted(self._models.get(name, {}), key=version_key))

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether ``get(name, version)`` would answer."""
        versions = self._models.get(name, {})
        return bool(versions) and (not version or version in versions)

    def ready(self) -> bool:
        """Whether the first scan finished and every model found has a loaded version."""
        return self._started and all(found.name in self._models for found in self._found.values())

    def loaded_count(self) -> int:
        """Number of model versions serving."""
        return len(self._loaded)

    def list_models(self) -> list[ModelRef]:
        """Every model found, sorted by name."""
        versions: dict[str, set[str]] = {}
        for path, found in self._found.items():
            version = found.version or (self._loaded[path].version if path in self._loaded else None)
            versions.setdefault(found.name, set()).update([version] if version else [])
        refs = []
        for name in sorted(versions):
            loaded = self._models.get(name, {})
            latest = max(loaded, key=version_key) if loaded else None
            refs.append(ModelRef(name, tuple(sorted(versions[name], key=version_key)), latest, latest is not None))
        return refs
