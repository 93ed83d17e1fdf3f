# package.json for MicroPython's mip (`mpremote mip install <repo or path>/package.json`),
# generated from firmware/manifest.py so the two cannot drift: the library files go to /lib as
# mip puts them (urls relative to the repository root, where package.json sits), each require()
# becomes a dependency mip fetches from its index, and the version is the manifest's metadata.
# `make package.json` (or `python -m host_tools.build.mip`) rewrites it; a test fails when the
# committed one is out of date.
import json
import sys

from host_tools.build import manifest
from host_tools.errors import ZeroburnError
from host_tools.paths import FIRMWARE, ROOT

PACKAGE_JSON = ROOT / "package.json"


def package_json(firmware=FIRMWARE, root=ROOT):
    """The package.json mip reads, as a dict."""
    path = firmware / "manifest.py"
    try:
        m = manifest.evaluate(path, unresolved_ok=True)
    except manifest.ManifestError as e:
        raise ZeroburnError(f"{path}: {e}")
    if not m.top.version:
        raise ZeroburnError(f"{path}: metadata() gives no version")
    urls = []
    for e in m.entries:
        if e.package is not None:
            raise ZeroburnError(f"{path}: {e.target} comes from a required package")
        urls.append([e.target, e.source.relative_to(root).as_posix()])
    deps = [[name, version or "latest"] for name, version in m.requires]
    return {"urls": urls, "deps": deps, "version": m.top.version}


def render(firmware=FIRMWARE, root=ROOT):
    """package.json's text: one [target, source] pair a line, so a diff shows the file."""
    d = package_json(firmware, root)

    def pairs(rows):
        return ",\n".join("    " + json.dumps(r) for r in rows)

    return '{\n  "urls": [\n%s\n  ],\n  "deps": [\n%s\n  ],\n  "version": %s\n}\n' % (
        pairs(d["urls"]),
        pairs(d["deps"]),
        json.dumps(d["version"]),
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = PACKAGE_JSON if not argv else argv[0]
    try:
        text = render()
    except ZeroburnError as e:
        print(f"zeroburn: {e}", file=sys.stderr)
        return 1
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
