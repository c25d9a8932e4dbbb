"""``[notify] urls`` as apprise reads them: each parsed by apprise itself, and shown masked.

The config's own rule only asks for ``SCHEME://``; whether apprise can send to a URL only
apprise knows (``Apprise().add(url)`` is False for ``slack://``, ``json://``, ``mailto://``,
``http://[::1``). ``corral check`` and ``corral run`` ask it the same way (``url_problems``),
after filling each ``${NAME}`` from this machine's environment, so a URL the first notice
would fail on is refused before the run starts, hours earlier.

Every message that shows a URL shows ``masked(url)``: the URL as written with its
``user:password@`` part, its path and its query replaced by ``***`` (apprise keeps tokens in
each: ``pover://USER_KEY@TOKEN``, ``discord://ID/TOKEN``, ``?token=``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from profiles.user_errors import UsageError

SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``${NAME}`` in a URL: the environment variable ``NAME`` of this machine."""
HIDDEN = "***"


def masked(url: str) -> str:
    """``url`` safe to print: ``scheme://***@host:port/***?***`` (the parts it has)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return HIDDEN
    head, question, _ = rest.partition("?")
    _, at, place = head.rpartition("@")
    host, slash, path = place.partition("/")
    if at:  # a user name may be a key too (pover://USER_KEY@TOKEN)
        host = f"{HIDDEN}@{host}"
    return (f"{scheme}://{host}" + (f"/{HIDDEN}" if slash and path else slash)
            + (f"?{HIDDEN}" if question else ""))


def masked_list(urls: Sequence[str]) -> str:
    """``urls`` masked, comma-separated (for "urls as written: ...")."""
    return ", ".join(masked(url) for url in urls)


def resolved(urls: Sequence[str]) -> list[str]:
    """The URLs with every ``${NAME}`` filled from the environment; a UsageError names the
    first variable that is not set."""
    out = []
    for url in urls:
        for name in SECRET.findall(url):
            if name not in os.environ:
                raise UsageError(f"[notify] urls names ${{{name}}}, which is not set in this "
                                 f"machine's environment: export {name} before corral runs",
                                 title="notify secret missing")
        out.append(SECRET.sub(lambda m: os.environ[m.group(1)], url))
    return out


def url_problems(apprise: Any, written: Sequence[str], urls: Sequence[str]) -> list[str]:
    """One sentence per URL apprise cannot read (``Apprise().add`` False), naming its index
    and its masked form; ``urls`` are ``written`` with ``${NAME}`` filled (``resolved``)."""
    problems = []
    for i, (shown, url) in enumerate(zip(written, urls, strict=True)):
        if not apprise.Apprise().add(url):
            problems.append(f"[notify] urls[{i}] ({masked(shown)}) is no URL apprise can send "
                            "to: see https://github.com/caronc/apprise/wiki for its form "
                            "(e.g. ntfy://TOPIC, json://HOST:PORT/PATH)")
    return problems

