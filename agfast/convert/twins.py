"""Per-chunk converters, compiled when possible.

Cython builds `openai_chat.py` and `anthropic_stream.py` a second time under twin names (setup.py), so the
compiled converters are the very same code, only faster. The choice follows `agfast.sse.IMPLEMENTATION`
(one switch: `AGFAST_NO_EXTENSIONS`). A compiled twin built from an older source is refused with a warning:
running stale conversion code would be worse than running it slower.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from agfast import sse
from agfast.convert import anthropic_stream as _anthropic_stream_py
from agfast.convert import openai_chat as _openai_chat_py

log = logging.getLogger("agfast.twins")


def load(pure: ModuleType, compiled_name: str, implementation: str = sse.IMPLEMENTATION) -> ModuleType:
    """`pure`, or its compiled twin when the hot path is compiled and the twin matches the source."""
    if implementation != "c":
        return pure
    try:
        compiled = importlib.import_module(compiled_name)
    except ImportError:
        log.warning("%s is not built; using the pure-Python converter (pip install -e . builds it)", compiled_name)
        return pure
    source = Path(pure.__file__ or "").read_bytes()
    if getattr(compiled, "__twin_source_sha256__", None) != hashlib.sha256(source).hexdigest():
        log.warning("%s was built from an older %s; using the pure-Python one (rebuild: pip install -e .)",
                    compiled_name, pure.__name__)  # fmt: skip
        return pure
    return compiled


if TYPE_CHECKING:  # the twins have the pure modules' API; type-check against those
    openai_chat = _openai_chat_py
    anthropic_stream = _anthropic_stream_py
else:
    openai_chat = load(_openai_chat_py, "agfast.convert._openai_chat_c")
    anthropic_stream = load(_anthropic_stream_py, "agfast.convert._anthropic_stream_c")
