# MicroPython manifest files (firmware/manifest.py, boards/<board>.manifest.py) evaluated the way
# MicroPython's own tool does (micropython/tools/manifestfile.py), written from its documented
# semantics: module(), package(), require(), include(), metadata(), options, add_library() and,
# in freeze mode, freeze*(). Paths are relative to the manifest being run; $(PORT_DIR),
# $(BOARD_DIR), $(MPY_DIR) and $(MPY_LIB_DIR) are substituted; including a folder runs its
# manifest.py; a manifest included twice (also through two require()s of one package) runs once.
#
# The build uses compile mode (what `zeroburn build` stages and package.json lists); the tests
# use freeze mode on the board manifests (what `make BOARD=... FROZEN_MANIFEST=...` freezes).
import os
from dataclasses import dataclass, field
from pathlib import Path

COMPILE = "compile"
FREEZE = "freeze"
LIBRARY_NAMES = ("micropython", "python-stdlib", "python-ecosys")


class ManifestError(ValueError):
    pass


@dataclass
class Metadata:
    description: str | None = None
    version: str | None = None
    license: str | None = None
    author: str | None = None
    initialised: bool = False


@dataclass(frozen=True)
class Entry:
    """One file a manifest adds: the source, its path on the board (or in the frozen image) and
    the metadata of the package (manifest level) that added it."""

    source: Path
    target: str
    kind: str  # "mpy" (.py compiled/frozen as bytecode), "str" (frozen as text), "frozen-mpy"
    package: str | None  # the require()d package name that added it; None: the top level


class _Options:
    """`options` in a manifest: the keyword arguments of include()/require()."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self._defaults = {}

    def defaults(self, **kwargs):
        self._defaults = kwargs

    def __getattr__(self, name):
        return self._kwargs.get(name, self._defaults.get(name))


@dataclass
class Manifest:
    mode: str = COMPILE
    path_vars: dict = field(default_factory=dict)
    # require()s that no library folder could satisfy are recorded here (name, version) rather
    # than refused when `unresolved_ok`: the build supplies them itself (umqtt.simple).
    unresolved_ok: bool = False

    def __post_init__(self):
        self.entries: list[Entry] = []
        self.requires: list[tuple[str, str | None]] = []  # every require(), in order
        self.unresolved: list[tuple[str, str | None]] = []
        self.included: list[Path] = []  # manifests run, in order
        self._visited: set[Path] = set()
        self._meta = [Metadata()]
        self._packages: list[str | None] = [None]
        self._libraries: dict[str, Path] = {}
        self._library_dirs: list[Path] = []
        self._cwd = [Path.cwd()]
        if self.path_vars.get("MPY_LIB_DIR"):
            for lib in LIBRARY_NAMES:
                self.add_library(lib, os.path.join("$(MPY_LIB_DIR)", lib))

    # ---- the API a manifest sees --------------------------------------------------------
    def _globals(self, kwargs):
        g = {
            "metadata": self.metadata,
            "include": self.include,
            "require": self.require,
            "add_library": self.add_library,
            "package": self.package,
            "module": self.module,
            "options": _Options(**kwargs),
        }
        if self.mode == FREEZE:
            g.update(
                freeze=self.freeze,
                freeze_as_str=self.freeze_as_str,
                freeze_as_mpy=self.freeze_as_mpy,
                freeze_mpy=self.freeze_mpy,
            )
        return g

    def _resolve(self, path):
        path = str(path)
        for name, value in self.path_vars.items():
            if value is not None:
                path = path.replace(f"$({name})", str(value))
        if "$(" in path:
            raise ManifestError(f"{path}: unknown path variable (not given to this evaluation)")
        return (self._cwd[-1] / path).resolve()

    def metadata(self, description=None, version=None, license=None, author=None, **_extra):
        m = self._meta[-1]
        if description is None and version is None and license is None and author is None:
            return m
        if m.initialised:
            raise ManifestError("Duplicate call to metadata().")
        m.description, m.version, m.license, m.author = description, version, license, author
        m.initialised = True
        return m

    def _check_initialised(self):
        if self.mode == COMPILE and not self._meta[-1].initialised:
            raise ManifestError("metadata() must be the first command in a manifest file.")

    def include(self, manifest_path, is_require=False, **kwargs):
        if not isinstance(manifest_path, str | Path):
            for m in manifest_path:
                self.include(m, **kwargs)
            return
        path = self._resolve(manifest_path)
        if path.is_dir():
            path = path / "manifest.py"
        if path in self._visited:
            return
        self._visited.add(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ManifestError(f"cannot read manifest {path}: {e.strerror}")
        self.included.append(path)
        self._cwd.append(path.parent)
        if is_require:
            self._meta.append(Metadata())
            self._packages.append(kwargs.pop("_package"))
        try:
            exec(compile(text, str(path), "exec"), self._globals(kwargs))
        except ManifestError:
            raise
        except Exception as e:
            raise ManifestError(f"Error in manifest file: {path}: {e}")
        finally:
            self._cwd.pop()
            if is_require:
                self._meta.pop()
                self._packages.pop()

    def require(self, name, version=None, library=None, **kwargs):
        self._check_initialised()
        kwargs.pop("pypi", None)
        self.requires.append((name, version))
        dirs = self._library_dirs
        if library is not None:
            if library not in self._libraries:
                raise ManifestError(f"Unknown library '{library}' for require('{name}').")
            dirs = [self._libraries[library]]
        for lib_dir in dirs:
            for root, _dirs, files in os.walk(lib_dir):
                if os.path.basename(root) == name and "manifest.py" in files:
                    self.include(root, is_require=True, _package=name, **kwargs)
                    return
        if self.unresolved_ok and library is None:
            if (name, version) not in self.unresolved:
                self.unresolved.append((name, version))
            return
        raise ManifestError(f"Package '{name}' not found in any known library.")

    def add_library(self, library, library_path, prepend=False):
        path = self._resolve(library_path)
        self._libraries[library] = path
        self._library_dirs.insert(0 if prepend else len(self._library_dirs), path)

    def module(self, module_path, base_path=".", opt=None):
        self._check_initialised()
        if not str(module_path).lower().endswith(".py"):
            raise ManifestError("module must be .py file")
        self._add(self._resolve(base_path) / module_path, str(module_path))

    def package(self, package_path, files=None, base_path=".", opt=None):
        self._check_initialised()
        self._search(base_path, package_path, files, (".py",), "auto")

    def freeze(self, path, script=None, opt=None):
        self._freeze(path, script, (".py", ".mpy"), "auto")

    def freeze_as_str(self, path):
        self._search(path, None, None, (".py",), "str")

    def freeze_as_mpy(self, path, script=None, opt=None):
        self._freeze(path, script, (".py",), "mpy")

    def freeze_mpy(self, path, script=None, opt=None):
        self._freeze(path, script, (".mpy",), "frozen-mpy")

    # ---- files ----------------------------------------------------------------------------
    def _freeze(self, path, script, exts, kind):
        base = self._resolve(path)
        if script is None:
            self._search(path, None, None, exts, kind)
        elif isinstance(script, str) and (base / script).is_dir():
            self._search(path, script, None, exts, kind)
        elif not isinstance(script, str):
            self._search(path, None, list(script), exts, kind)
        else:
            self._search(path, None, [script], exts, kind)

    def _search(self, base_path, package_path, files, exts, kind):
        base = self._resolve(base_path)
        if files is not None:
            for f in files:
                rel = os.path.join(package_path, f) if package_path else f
                self._add(base / rel, rel, kind)
            return
        top = base / package_path if package_path else base
        if not top.is_dir():
            raise ManifestError(f"package folder {top} does not exist")
        for dirpath, _dirnames, filenames in sorted(os.walk(top, followlinks=True)):
            for name in sorted(filenames):
                full = Path(dirpath) / name
                if full.suffix.lower() in exts:
                    self._add(full, full.relative_to(base).as_posix(), kind)

    def _add(self, full, target, kind="auto"):
        if not Path(full).is_file():
            raise ManifestError(f"Cannot stat {full}")
        ext = Path(full).suffix.lower()
        if self.mode == FREEZE:
            if kind == "auto":
                kind = "mpy" if ext == ".py" else "frozen-mpy"
        else:
            if kind != "auto":
                raise ManifestError("Not in freeze mode")
            if ext != ".py":
                raise ManifestError("Expected .py file")
            kind = "mpy"
        self.entries.append(Entry(Path(full), Path(target).as_posix(), kind, self._packages[-1]))

    # ---- the result -------------------------------------------------------------------------
    @property
    def top(self):
        """The metadata of the top-level manifest."""
        return self._meta[0]

    def targets(self):
        return [e.target for e in self.entries]


def evaluate(path, mode=COMPILE, path_vars=None, unresolved_ok=False):
    """Run one manifest file; returns the Manifest (entries, requires, metadata)."""
    m = Manifest(mode=mode, path_vars=dict(path_vars or {}), unresolved_ok=unresolved_ok)
    m.include(str(Path(path).resolve()))
    return m
