"""What went wrong with a file, said without quoting the file.

Warnings and errors of a drive are read by anyone with a reader token
(``GET /v1/drives/{id}``). Parser exceptions (cantools, tomllib, json, Arrow's CSV
reader, python-can, asammdf, mcap, PyAV) often quote the bytes they choke on, so a
drive that points a parser at another file would read that file out through its
warnings. These helpers keep the exception's type and where it happened (a line
number, FFmpeg's own error name), never its text.
"""

from __future__ import annotations

__all__ = ["reason"]


def _where(exc: BaseException) -> str:
    """``line N`` where the exception carries one (json, tomllib, textparser)."""
    for attr in ("lineno", "line"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return f"line {value}"
    inner = getattr(exc, "e_dbc", None)  # cantools wraps the DBC parser's error
    if isinstance(inner, BaseException):
        return _where(inner)
    return ""


def reason(exc: BaseException) -> str:
    """``TypeName`` plus a fixed description: an ``OSError``'s errno text, FFmpeg's
    error name, or the line it failed at; never the exception's message."""
    parts = [type(exc).__name__]
    strerror = getattr(exc, "strerror", None)  # OSError and av.FFmpegError: a fixed text per code
    if isinstance(strerror, str) and strerror:
        parts.append(strerror)
    where = _where(exc)
    if where:
        parts.append(where)
    return ": ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
