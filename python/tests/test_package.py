"""The package as a whole: one version everywhere, the library search and its messages, optional
numpy and torch, help() text, the struct mirrors against the C headers, and pip install."""
import os
import pydoc
import re
import shutil
import subprocess
import sys
import textwrap


import gpukit
from gpukit import _structs as S
from conftest import SOURCE, need_env

PY = "/usr/bin/python3"


def run_py(code, env=None, cwd=None):
    full = dict(os.environ)
    full.update(env or {})
    for k, v in list(full.items()):
        if v is None:
            del full[k]
    return subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full, cwd=cwd)


def test_one_version_everywhere():
    header = open(os.path.join(SOURCE, "include/gpukit/version.h")).read()
    parts = [re.search(r"#define GK_VERSION_%s (\d+)" % p, header).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    cmake = open(os.path.join(SOURCE, "CMakeLists.txt")).read()
    assert ".".join(parts) == gpukit.__version__
    assert "project(gpukit VERSION %s " % gpukit.__version__ in cmake
    assert gpukit._lib.gk_version_string().decode() == gpukit.__version__
    abi = re.search(r"#define GK_ABI_VERSION (\d+)", header).group(1)
    assert int(abi) == gpukit.ABI_VERSION == gpukit._lib.gk_abi_version()
    assert gpukit.library_found_by == "GPUKIT_LIBRARY"
    assert os.path.samefile(gpukit.library_path, need_env("GPUKIT_LIBRARY"))


def test_a_bad_gpukit_library_is_named():
    r = run_py("import gpukit", {"GPUKIT_LIBRARY": "/nonexistent/libgpukit.so.1"})
    assert r.returncode != 0
    assert "GPUKIT_LIBRARY=/nonexistent/libgpukit.so.1 cannot be used" in r.stderr
    assert "unset it" in r.stderr
    # a library that is not gpukit's
    libm = "/lib/x86_64-linux-gnu/libm.so.6"
    r = run_py("import gpukit", {"GPUKIT_LIBRARY": libm})
    assert r.returncode != 0 and "no gk_abi_version" in r.stderr


def test_the_search_order_and_its_message(tmp_path):
    """A copy of the package outside the checkout finds nothing and says where it looked; a
    library placed beside it is then found there, before the system loader."""
    pkg = tmp_path / "site" / "gpukit"
    shutil.copytree(os.path.join(SOURCE, "python/gpukit"), pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "_install.py"))
    env = {"GPUKIT_LIBRARY": None, "PYTHONPATH": str(tmp_path / "site"), "LD_LIBRARY_PATH": None}
    r = run_py("import gpukit; print(gpukit.library_found_by)", env, cwd=str(tmp_path))
    if r.returncode == 0:  # this machine has gpukit installed where the system loader looks
        assert r.stdout.strip() == "system loader"
    else:
        assert "cannot find a usable libgpukit" in r.stderr
        assert "GPUKIT_LIBRARY (not set)" in r.stderr
        assert "%s (beside the package): not found" % (pkg / "libgpukit.so.1") in r.stderr
        assert "libgpukit.so.1 (system loader)" in r.stderr
        assert "make install" in r.stderr and "GPUKIT_LIBRARY=/path/to/libgpukit.so.1" in r.stderr
    shutil.copy(need_env("GPUKIT_LIBRARY"), pkg / "libgpukit.so.1")
    r = run_py("import gpukit; print(gpukit.library_found_by, gpukit.library_path)", env,
               cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "beside the package %s" % (pkg / "libgpukit.so.1")
    # An installed copy records where `make install` put the library, relative to itself.
    (pkg / "libgpukit.so.1").unlink()
    os.makedirs(tmp_path / "lib")
    shutil.copy(need_env("GPUKIT_LIBRARY"), tmp_path / "lib" / "libgpukit.so.1")
    (pkg / "_install.py").write_text('LIBRARY = "../../lib/libgpukit.so.1"\n')
    r = run_py("import gpukit; print(gpukit.library_found_by)", env, cwd=str(tmp_path))
    assert r.stdout.strip() == "installed with the package", r.stderr


def test_a_library_of_another_version_is_refused(tmp_path):
    """The version check: a package whose _version.py says otherwise refuses the library."""
    pkg = tmp_path / "gpukit"
    shutil.copytree(os.path.join(SOURCE, "python/gpukit"), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "_version.py").write_text('__version__ = "9.9.9"\nABI_VERSION = 1\n')
    r = run_py("import gpukit", {"PYTHONPATH": str(tmp_path)}, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "version %s, the package is 9.9.9" % gpukit.__version__ in r.stderr


def test_import_needs_neither_numpy_nor_torch():
    r = run_py("import sys, gpukit, gpukit.metrics, gpukit.data\n"
               "print('numpy' in sys.modules, 'torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_help_reads_well():
    text = pydoc.render_doc(gpukit, renderer=pydoc.plaintext)
    for needle in ("Loader", "find_batch_size", "MemoryManager", "OutOfMemoryError",
                   "GPUKIT_LIBRARY"):
        assert needle in text
    doc = pydoc.render_doc(gpukit.Loader, renderer=pydoc.plaintext)
    assert "valid until the next batch" in doc and ".copy()" in doc
    for obj in (gpukit.find_batch_size, gpukit.MemoryManager, gpukit.metrics.gauge,
                gpukit.data.pack, gpukit.Pool, gpukit.Device, gpukit.Loader.state_dict):
        assert obj.__doc__ and len(obj.__doc__) > 40, obj


def test_struct_mirrors_match_the_headers(tmp_path):
    """Every mirrored field has the offset and size of the C field of the same name, in header
    order, and every mirror is a prefix of its struct (a newer header may have more fields)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (scripts/deps.sh installs gcc)"
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <gpukit/gpukit.h>",
             "int main(void) {"]
    for m in S.MIRRORS:
        name = m.__name__
        lines.append('printf("%s %%zu\\n", sizeof(%s));' % (name, name))
        for f, _ in m._fields_:
            lines.append('printf("%s.%s %%zu %%zu\\n", offsetof(%s, %s), sizeof(((%s *)0)->%s));'
                         % (name, f, name, f, name, f))
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    r = subprocess.run([cc, "-std=c11", "-I", os.path.join(SOURCE, "include"), str(src), "-o",
                        str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # a mirrored field the header lacks fails here
    c = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True).stdout.splitlines():
        key, *nums = line.split()
        c[key] = tuple(int(n) for n in nums)
    for m in S.MIRRORS:
        name = m.__name__
        last_end = 0
        for f, _ in m._fields_:
            desc = getattr(m, f)
            assert c["%s.%s" % (name, f)] == (desc.offset, desc.size), (name, f)
            assert desc.offset >= last_end, (name, f, "out of header order")
            last_end = desc.offset + desc.size
        assert __import__("ctypes").sizeof(m) <= c[name][0], name
        if name != "gk_logger":
            assert m._fields_[0][0] == "size"


def test_pip_install_in_a_venv(tmp_path):
    """`pip install ./python` in a virtual environment, without network: the stdlib backend."""
    venv = tmp_path / "venv"
    r = subprocess.run([PY, "-m", "venv", str(venv)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check",
           "--no-input", "install", "--no-index", os.path.join(SOURCE, "python")]
    r = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True).stdout.strip()
    assert os.path.isfile(os.path.join(site, "gpukit", "loader.py"))
    assert os.path.isfile(os.path.join(site, "gpukit", "torch", "memory.py"))
    assert not os.path.exists(os.path.join(site, "gpukit", "_install.py"))
    env = dict(os.environ, PYTHONPATH="")
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import gpukit; print(gpukit.__version__, gpukit.library_found_by)"],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [gpukit.__version__, "GPUKIT_LIBRARY"]
    assert sys.version_info >= (3, 8)


def test_the_python_guide_runs(tmp_path, capsys, monkeypatch):
    """Every ```python block of docs/python.md, in order, in one namespace."""
    text = open(os.path.join(SOURCE, "docs/python.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    ns = {}
    for code in blocks:
        exec(compile(code, "docs/python.md", "exec"), ns)
    assert ns["found"].batch > 200 and len(ns["found"].trials) <= 4
    assert ns["resumed"].state_dict() == ns["state"]
