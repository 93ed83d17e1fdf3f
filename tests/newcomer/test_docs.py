# The README's commands work as written: `zeroburn` is on PATH once the README says how, every
# `zeroburn ...` command it shows exists, and every option it passes is one that command takes.
import re
import shlex
from functools import cache

from host_tools.paths import ROOT
from tests.newcomer.helpers import zeroburn

README = ROOT / "README.md"


def shell_lines(text):
    """Command lines of the README's sh blocks, continuation lines joined."""
    out, block = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            block = [] if block is None and line.strip() == "```sh" else None
            continue
        if block is not None:
            if out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1] + " " + line.strip()
            else:
                out.append(line.strip())
    return out


@cache
def help_text(*path):
    p = zeroburn(*path, "--help")
    assert p.returncode == 0, (path, p.stderr)
    return p.stdout


def test_zeroburn_is_on_path_before_the_readme_first_uses_it():
    lines = shell_lines(README.read_text())
    first = next(i for i, line in enumerate(lines) if line.startswith("zeroburn "))
    assert any(". .venv/bin/activate" in line for line in lines[:first]), lines[: first + 1]


def test_every_readme_command_and_option_exists():
    checked = 0
    for line in shell_lines(README.read_text()):
        if not line.startswith("zeroburn "):
            continue
        tokens = shlex.split(line.rstrip("&"), comments=True)[1:]
        path = []
        for t in tokens:
            if not re.fullmatch(r"[a-z][a-z-]*", t) or len(path) == 3:
                break
            sub = help_text(*path)
            if not re.search(
                rf"\{{[^}}]*\b{re.escape(t)}\b[^}}]*\}}|^\s+{re.escape(t)}\s", sub, re.M
            ):
                break
            path.append(t)
        if tokens in (["--help"], ["--version"]):
            continue
        assert path, line
        text = help_text(*path)
        for t in tokens:
            if t.startswith("--"):
                opt = t.split("=", 1)[0]
                assert re.search(rf"{re.escape(opt)}\b", text), (line, opt)
        checked += 1
    assert checked >= 20
