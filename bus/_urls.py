"""Log URLs: redacting credentials and splitting off the options the bus itself reads."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "ssl_password"})
REDACTED = "***"


def redact_url(url: str) -> str:
    """Return `url` with any password (in the userinfo or the query) replaced by '***'.

    A string without a scheme (a bare directory such as `runs`) holds no credentials and is
    returned as given."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = _redact_netloc(parts.netloc)
        query = urlencode(
            [(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in _params(url)],
            safe="*/",
        )
    except ValueError:  # unparsable (e.g. a bad port): show only the scheme
        return url.split(":", 1)[0] + "://" + REDACTED
    return _join(parts.scheme, netloc, parts.path, query, parts.fragment)


def password_of(url: str) -> str | None:
    """The password a URL carries (userinfo or query), so messages can be scrubbed of it."""
    try:
        parts = urlsplit(url)
        found = parts.password
    except ValueError:
        return None
    for key, value in _params(url):
        if key.lower() in _SECRET_PARAMS and value:
            found = value
    return found or None


def pop_param(url: str, name: str) -> tuple[str, str | None]:
    """Remove query parameter `name` from `url`; return the new URL and its value (or None)."""
    parts = urlsplit(url)
    kept, value = [], None
    for key, val in _params(url):
        if key == name:
            value = val
        else:
            kept.append((key, val))
    query = urlencode(kept, safe="/")
    return _join(parts.scheme, parts.netloc, parts.path, query, parts.fragment), value


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _redact_netloc(netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, host = netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{userinfo}@{host}"


def _join(scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    """Like urlunsplit, but keeps the '//' of an empty authority (unix:///path)."""
    url = f"{scheme}://{netloc}{path}"
    url += f"?{query}" if query else ""
    return url + (f"#{fragment}" if fragment else "")
