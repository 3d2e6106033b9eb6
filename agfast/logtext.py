"""Text bound for log lines: client-controlled strings escaped, account emails masked.

A path like `/v1beta/models/x%0d%0a...` decodes to real CR/LF; printed as is, it would forge log lines (or
drive a terminal with ESC sequences). Everything a client chose goes through `escape()` before it is logged.
"""

from __future__ import annotations


def escape(text: str) -> str:
    """`text` fit for one log line: control and other non-printable characters shown as escapes (`\\r`, `\\x00`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def mask_email(email: str) -> str:
    """`user@gmail.com` → `use***@gm***`: enough to tell accounts apart in a log, not enough to write to one."""
    if not email:
        return ""
    local, at, domain = email.partition("@")
    if not at:
        return local[:3] + "***"
    return f"{local[:3]}***@{domain[:2]}***"


# The access line: id, method, path, status, duration, `model->mapped` (or -), masked account (or -), attempts.
ACCESS_FORMAT = "%s %s %s %d %.1fms %s %s attempts=%d"


def model_pair(model: str, mapped: str) -> str:
    """`model->mapped` only where a model was asked for, `-` elsewhere (both escaped)."""
    return f"{escape(model)}->{escape(mapped) or '-'}" if model else "-"
