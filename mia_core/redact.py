"""Secrets never reach a file or a log: credentials in URLs, secret-named options, key-like values.

``redact(value)`` returns ``value`` with every secret replaced by ``***``, recursively through
dicts and lists: the value of a key named like a secret (``api_key``, ``key``, ``token``,
``secret``, ``password``, ...), the ``user:password@`` of a URL, ``NAME=VALUE`` pairs with such a
name inside a text (a command line), and values that look like API keys (``sk-ant-…``, ``sk-…``,
``hf_…``). Every attribute mia writes (``formats.hdf5.encode_attrs``), every provenance record,
every note and every error line goes through it. A pure function: no file format, no click.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

#: Option and field names whose value is a secret (compared case-insensitively, - and _ alike).
SECRET_NAMES = frozenset({"api_key", "apikey", "key", "token", "secret", "password", "passwd", "pwd",
                          "auth_token", "access_token", "hf_token", "anthropic_api_key", "openai_api_key",
                          "authorization", "x_api_key", "client_secret"})

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_KEY_LIKE = re.compile(r"\b(?:sk-ant-[A-Za-z0-9_-]+|sk-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{20,})")
_NAMES = "|".join(sorted((n.replace("_", "[-_]") for n in SECRET_NAMES), key=len, reverse=True))
_NAMED = re.compile(rf"(?P<name>(?<![\w-])(?:{_NAMES}))(?P<sep>=)(?P<value>[^\s&,;'\"]+)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return name.strip().lower().replace("-", "_") in SECRET_NAMES


def redact_text(text: str) -> str:
    """``text`` with URL credentials, ``secret=value`` pairs and key-like values replaced by ``***``."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _NAMED.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
    return _KEY_LIKE.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """``value`` with every secret replaced (see the module doc); other values are returned as they are."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value
