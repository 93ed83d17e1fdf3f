# The layout rule (docs/architecture.md section 1), read from the source with ast: no import
# cycles in host_tools/ or firmware/, and no package of host_tools imports one higher in the
# pipeline. Every import counts, also those inside functions (a lazy import still ties the two
# modules).
import ast

import pytest

from host_tools.paths import FIRMWARE, ROOT

HOST_TOOLS = ROOT / "host_tools"

# package -> the packages it may import. "base" is host_tools' top level (errors, paths,
# runtime, sysdeps, __init__); "cli" is the zeroburn command, which loads every subcommand.
ALLOWED = {
    "base": {"base"},
    "platform": {"base", "platform"},
    "build": {"base", "platform", "build"},
    "flash": {"base", "build", "flash"},
    "emulator": {"base", "build", "platform", "emulator"},
    "load": {"base", "build", "platform", "emulator", "load"},
    "cli": {"base", "build", "platform", "flash", "emulator", "load", "cli"},
}


def modules(root, prefix=""):
    """{dotted module name: path} for every .py under root (a package's __init__ is its name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([p for p in (prefix,) if p] + parts)] = path
    return out


def imports(name, path, known):
    """The modules of `known` that module `name` (file `path`) imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            targets = [base + "." + a.name for a in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a name inside a module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(root, prefix=""):
    mods = modules(root, prefix)
    return {name: imports(name, path, mods) for name, path in mods.items()}


def cycles(g):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer(module):
    parts = module.split(".")
    if len(parts) > 1 and (HOST_TOOLS / parts[1]).is_dir():
        return parts[1]
    return "cli" if module == "host_tools.cli" else "base"


def test_the_cycle_finder_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_and_relative_imports_count(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from p import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    assert cycles(graph(tmp_path)) == [["p.a", "p.b"]]


@pytest.mark.parametrize("root,prefix", [(HOST_TOOLS, "host_tools"), (FIRMWARE, "")])
def test_no_import_cycles(root, prefix):
    assert cycles(graph(root, prefix)) == []


def test_every_host_tools_package_has_a_row_and_says_what_it_may_import():
    packages = {p.name for p in HOST_TOOLS.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(ALLOWED), f"put {packages - set(ALLOWED)} in ALLOWED"
    for name in packages:
        doc = ast.get_docstring(ast.parse((HOST_TOOLS / name / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"host_tools/{name}/__init__.py: opening docstring"


def test_nothing_imports_upward():
    g = graph(HOST_TOOLS, "host_tools")
    upward = sorted(
        f"{src} -> {dst}"
        for src, dsts in g.items()
        for dst in dsts
        if layer(dst) not in ALLOWED[layer(src)]
    )
    assert upward == []
