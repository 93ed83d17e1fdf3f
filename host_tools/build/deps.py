# Fetch MicroPython-side dependencies that pip cannot install (no setup.py in their sdist):
# by name from the package index pip is configured with, hash-checked, unpacked into build/lib.
import hashlib
import html.parser
import json
import os
import ssl
import subprocess
import sys
import tarfile
import tomllib
import urllib.parse
import urllib.request

from host_tools.errors import ZeroburnError
from host_tools.paths import BUILD, BUILD_LIB, MICROPYTHON_DEPS

DEFAULT_INDEX = "https://pypi.org/simple"


def pinned_deps():
    """The pins of host_tools/build/micropython-deps.toml: {name: {project, version, ...}}."""
    with open(MICROPYTHON_DEPS, "rb") as f:
        return tomllib.load(f)


def _pip_config():
    """pip's effective configuration as a dict (env vars included), or {} if pip cannot say."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        conf[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return conf


def index_url(conf=None):
    """The index pip uses: PIP_INDEX_URL, else pip's config, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].rstrip("/")
    conf = _pip_config() if conf is None else conf
    return (conf.get("index-url") or DEFAULT_INDEX).rstrip("/")


def _ssl_context(conf):
    cafile = os.environ.get("PIP_CERT") or conf.get("cert")
    if cafile and os.path.exists(cafile):
        return ssl.create_default_context(cafile=cafile)
    return ssl.create_default_context()


class _Links(html.parser.HTMLParser):
    """PEP 503 simple page: <a href="url#sha256=...">filename</a>."""

    def __init__(self):
        super().__init__()
        self.links = []
        self._href = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href is not None:
            self.links.append((data.strip(), self._href))
            self._href = None


def normalize(name):
    """PEP 503 project name normalization."""
    out = []
    for ch in name.lower():
        out.append("-" if ch in "._-" else ch)
    s = "".join(out)
    while "--" in s:
        s = s.replace("--", "-")
    return s


def find_release(index, project, filename, context):
    """Return (url, sha256 published by the index) for one file of one project."""
    page = f"{index}/{normalize(project)}/"
    req = urllib.request.Request(
        page,
        headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "")
    except OSError as e:
        raise ZeroburnError(
            f"cannot reach the package index {index} to fetch {project} ({e}); "
            "check the network or set PIP_INDEX_URL / pip's index-url"
        )
    if "json" in ctype:
        files = [(f["filename"], f["url"], f.get("hashes", {})) for f in json.loads(body)["files"]]
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        files = []
        for name, href in parser.links:
            url, _, frag = href.partition("#")
            algo, _, digest = frag.partition("=")
            files.append((name, url, {algo: digest} if digest else {}))
    for name, url, hashes in files:
        if name == filename:
            if "sha256" not in hashes:
                raise ZeroburnError(f"the index publishes no sha256 for {filename}")
            return urllib.parse.urljoin(page, url), hashes["sha256"]
    raise ZeroburnError(f"{filename} is not on the package index {index}")


def ensure():
    """Fetch what is missing (an installed zeroburn's first build; `make setup` in a checkout)."""
    for dep in pinned_deps().values():
        if not (BUILD_LIB / dep["member"]).exists():
            fetch(dep)


def fetch(dep, dest_root=BUILD_LIB, cache=BUILD / "cache"):
    """Download (or reuse from cache), verify and unpack one pinned dependency; return its path."""
    filename = f"{dep['project']}-{dep['version']}.tar.gz"
    target = dest_root / dep["member"]
    cached = cache / filename
    if not (cached.exists() and _sha256(cached.read_bytes()) == dep["sha256"]):
        conf = _pip_config()
        context = _ssl_context(conf)
        index = index_url(conf)
        url, published = find_release(index, dep["project"], filename, context)
        if published.lower() != dep["sha256"].lower():
            raise ZeroburnError(
                f"{filename}: the index publishes sha256 {published}, "
                f"but pyproject.toml pins {dep['sha256']}; refusing to use it"
            )
        try:
            with urllib.request.urlopen(url, timeout=120, context=context) as resp:
                data = resp.read()
        except OSError as e:
            raise ZeroburnError(f"cannot download {filename} from {url} ({e})")
        if _sha256(data) != published.lower():
            raise ZeroburnError(f"{filename}: downloaded bytes do not match the published sha256")
        cache.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
    with tarfile.open(cached) as tar:
        wanted = f"{dep['project']}-{dep['version']}/{dep['member']}"
        try:
            member = tar.getmember(wanted)
        except KeyError:
            raise ZeroburnError(f"{filename} has no {wanted}")
        f = tar.extractfile(member)
        if f is None:
            raise ZeroburnError(f"{wanted} in {filename} is not a regular file")
        content = f.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, target)
    return target


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def main():
    try:
        for dep in pinned_deps().values():
            path = fetch(dep)
            print(f"deps: {dep['project']} {dep['version']} -> {path}")
    except ZeroburnError as e:
        print(f"zeroburn: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
