"""Builds the optional Cython hot path; any failure falls back to the pure-Python twin with a warning."""

import hashlib
import os
import platform
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A compile error must never fail `pip install`: agfast runs (slower) on `_sse_py`."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any toolchain failure means "no extension"
            self._warn(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        sys.stderr.write(f"WARNING: agfast C extension not built ({exc}); using the pure-Python hot path\n")


# Per-chunk converters compiled from their own pure-Python source under a twin name: the compiled module is
# the same code, so the twins agree byte for byte by construction. The copy records the source's hash so a
# stale build is detected at import (agfast/convert/twins.py) instead of silently running old code.
TWINS = {
    "agfast/convert/openai_chat.py": "agfast.convert._openai_chat_c",
    "agfast/convert/anthropic_stream.py": "agfast.convert._anthropic_stream_c",
}
TWIN_DIR = Path("build") / "twins"


def twin_sources() -> list:
    from setuptools import Extension

    out = []
    for source, module in TWINS.items():
        text = Path(source).read_bytes()
        target = TWIN_DIR / (module.rsplit(".", 1)[1] + ".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(text).hexdigest()
        target.write_bytes(text + f'\n__twin_source_sha256__ = "{digest}"\n'.encode())
        out.append(Extension(module, [str(target)]))
    return out


def extensions() -> list:
    if os.environ.get("AGFAST_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("WARNING: Cython not available; agfast installs with the pure-Python hot path\n")
        return []
    hot = cythonize(
        ["agfast/_sse.pyx"],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )
    # Plain Python semantics for the twins: no C typing from annotations, keywords and introspection kept.
    twins = cythonize(
        twin_sources(),
        compiler_directives={"language_level": "3", "annotation_typing": False, "binding": True},
        quiet=True,
    )
    return hot + twins


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
