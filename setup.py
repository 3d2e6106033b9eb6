"""Builds the optional Cython SSE hot path (`agfast/_sse.pyx`); any failure falls back to its pure-Python twin
(`agfast/_sse_py.py`) with a warning. The protocol converters stay plain Python; only their per-event fast paths
are compiled, in `_sse.pyx`: streams' (ChatDeltas, AnthropicDeltas, 1.6–1.8× faster than their twins) and
collected answers' (ChatFold, AnthropicFold, 5.2× per event: see benchmarks/README.md)."""

import os
import platform
import sys

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


def extensions() -> list:
    if os.environ.get("AGFAST_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("WARNING: Cython not available; agfast installs with the pure-Python hot path\n")
        return []
    return cythonize(
        ["agfast/_sse.pyx"],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
