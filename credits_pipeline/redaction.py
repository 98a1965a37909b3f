"""One redaction for every URL, and every error text, the pipeline prints or records.

Credentials reach the pipeline only through the environment (`CREDITS_SOURCE_URL`, webhook URLs),
but they leave it easily: a log line naming the source, a metadata value, the message of a failed
step, a driver's error that echoes its connection string. Each of those goes to the terminal and
into the Dagster instance (event log, compute logs), where anyone with UI access reads it. So one
module decides, once, what of a URL is safe to show, and every caller goes through it:

- Database (SQLAlchemy) URLs keep driver, host, port and database; the user and password go, and so
  does the value of every sensitive query parameter (`?password=`, `sslkey=`, `token=`, ...): the
  parameter's name stays, its value becomes `***`, so a reader still sees that it is set.
- HTTP(S) URLs (Slack and alert webhooks, PagerDuty endpoints) keep only `scheme://host[:port]`.
  A webhook is a capability: its secret is the path itself (`/services/T0/B0/XXXX`), so no part of
  the path or query is shown, and no list of parameter names could make it safe.
- Free text (an exception message) has every URL inside it redacted as above, libpq-style
  `password=...` pairs masked, and any secret value of the URLs it may echo replaced by `***`.

Pure functions, no I/O: unit-tested in `credits_pipeline_tests/test_redaction.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

import sqlalchemy as sa

MASK = "***"
UNPARSEABLE = "<unparseable URL>"
HTTP_SCHEMES = frozenset({"http", "https", "ws", "wss"})

# Query parameter names whose value is a credential, compared case-insensitively. Besides these
# exact names, any name containing one of SENSITIVE_NAME_PARTS counts (`client_secret`,
# `x-api-key`, `sslpassword`, `auth_token`): hiding a harmless value costs nothing, showing a
# secret cannot be undone.
SENSITIVE_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "sslkey",
        "sslpassword",
        "token",
        "secret",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "sig",
        "signature",
        "credentials",
    }
)
SENSITIVE_NAME_PARTS = ("pass", "pwd", "secret", "token", "key", "credential", "signature", "auth")

# A URL inside free text: a scheme, `://`, then anything up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# `password=...` in a libpq keyword/value DSN or a driver's message (`password=abc host=...`).
_KEY_VALUE_IN_TEXT = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_\-]*)\s*=\s*(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,]+)"
)
# Secret values shorter than this are not replaced inside free text: masking every "1" or "a" in
# a message would make it unreadable, and such values are not secrets anyone should rely on.
MIN_SECRET_LENGTH = 4


def is_sensitive_param(name: str) -> bool:
    """Whether a query parameter (or DSN keyword) named `name` carries a credential."""
    lowered = name.strip().lower()
    return lowered in SENSITIVE_PARAMS or any(part in lowered for part in SENSITIVE_NAME_PARTS)


def redact_url(url: str) -> str:
    """A URL safe to show, print or record (see the module docstring for what each kind keeps)."""
    text = (url or "").strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in HTTP_SCHEMES:
        return _redact_http(text)
    return _redact_database(text)


def _redact_http(url: str) -> str:
    """`scheme://host[:port]`: a webhook's secret is its path, so path and query never show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return UNPARSEABLE
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return f"{parts.scheme.lower() or '?'}://{host}{port}"


def _redact_database(url: str) -> str:
    """Driver, host, port, database and query, without user, password or sensitive values."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return UNPARSEABLE
    parsed = parsed._replace(username=None, password=None)
    rendered = parsed.set(query={}).render_as_string(hide_password=True)
    if not parsed.query:
        return rendered
    pairs = []
    for name in sorted(parsed.query):
        values = parsed.query[name]
        for value in values if isinstance(values, tuple) else (values,):
            pairs.append(f"{name}={MASK if is_sensitive_param(name) else value}")
    return f"{rendered}?{'&'.join(pairs)}"


def secrets_of(url: str) -> set[str]:
    """The secret values a URL carries (password, sensitive query values, a webhook's path).

    Used to scrub them from text that may echo the URL in some other spelling (a driver that
    prints its DSN, a URL-decoded copy), where finding the URL itself is not enough.
    """
    found: set[str] = set()
    text = (url or "").strip()
    if not text:
        return found
    try:
        parts = urlsplit(text)
    except ValueError:
        return found
    if parts.password:
        found.update({parts.password, unquote(parts.password)})
    if parts.scheme.lower() in HTTP_SCHEMES:
        for segment in parts.path.split("/"):
            if segment:
                found.update({segment, unquote(segment)})
        for _, value in parse_qsl(parts.query, keep_blank_values=False):
            found.add(value)
    else:
        for name, value in parse_qsl(parts.query, keep_blank_values=False):
            if is_sensitive_param(name):
                found.update({value, unquote(value)})
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


def redact_text(text: str, urls: Iterable[str] = ()) -> str:
    """`text` with every URL in it redacted, `password=...` pairs masked, and `urls`' secrets gone.

    For messages the pipeline did not write itself — a driver's or connectorx's error — which may
    quote the connection string in any form. Pass the URLs the failing call was given as `urls`.
    """
    if not text:
        return text
    secrets: set[str] = set()
    for url in urls:
        secrets |= secrets_of(url)
    for match in _URL_IN_TEXT.findall(text):
        secrets |= secrets_of(match)
    # The longest first, so a secret containing another is replaced whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _KEY_VALUE_IN_TEXT.sub(_mask_pair, text)


def _mask_pair(match: re.Match) -> str:
    if not is_sensitive_param(match.group("key")):
        return match.group(0)
    return f"{match.group('key')}={MASK}"
