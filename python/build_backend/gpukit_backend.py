"""A PEP 517 / PEP 660 build backend for the gpukit package, standard library only.

The package is pure Python (it loads libgpukit at run time), so a wheel is a zip of gpukit/ plus
its metadata. Having no build requirement means `pip install ./python` works without network.
"""
import base64
import hashlib
import io
import os
import re
import tarfile
import tomllib
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # python/
PACKAGE = "gpukit"
SKIP = ("_install.py",)  # written by `make install` for an installed copy only


def _project():
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _version():
    text = open(os.path.join(HERE, PACKAGE, "_version.py")).read()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def _metadata():
    p = _project()
    lines = ["Metadata-Version: 2.1", "Name: %s" % p["name"], "Version: %s" % _version(),
             "Summary: %s" % p["description"], "Requires-Python: %s" % p["requires-python"],
             "License: %s" % p["license"]["text"]]
    for extra, reqs in p.get("optional-dependencies", {}).items():
        lines.append("Provides-Extra: %s" % extra)
        lines += ["Requires-Dist: %s ; extra == '%s'" % (r, extra) for r in reqs]
    readme = open(os.path.join(HERE, p["readme"])).read()
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def _files():
    """(archive name, path) of every file of the package."""
    out = []
    for root, dirs, files in os.walk(os.path.join(HERE, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py") and f not in SKIP:
                path = os.path.join(root, f)
                out.append((os.path.relpath(path, HERE).replace(os.sep, "/"), path))
    return out


def _dist_info():
    return "%s-%s.dist-info" % (PACKAGE, _version())


def _wheel(wheel_directory, entries):
    """Writes a wheel of `entries` ((name, bytes)) plus metadata; returns its file name."""
    name = "%s-%s-py3-none-any.whl" % (PACKAGE, _version())
    di = _dist_info()
    entries = list(entries) + [
        (di + "/METADATA", _metadata().encode()),
        (di + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: gpukit_backend\nRoot-Is-Purelib: true\n"
                        b"Tag: py3-none-any\n"),
        (di + "/top_level.txt", (PACKAGE + "\n").encode()),
    ]
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in entries:
            z.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append("%s,sha256=%s,%d" % (arc, digest.decode(), len(data)))
        record.append(di + "/RECORD,,")
        z.writestr(di + "/RECORD", "\n".join(record) + "\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, [(arc, open(p, "rb").read()) for arc, p in _files()])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """A wheel whose .pth file puts this source folder on sys.path."""
    return _wheel(wheel_directory, [("_gpukit_editable.pth", (HERE + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (PACKAGE, _version())
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ["pyproject.toml", "README.md", "build_backend/gpukit_backend.py"]:
            t.add(os.path.join(HERE, rel), arcname=base + "/" + rel)
        for arc, path in _files():
            t.add(path, arcname=base + "/" + arc)
        info = tarfile.TarInfo(base + "/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name
