"""Keep credentials out of what the pipeline prints and writes.

Two kinds of secret reach the pipeline: credentials inside a URL (``MLFLOW_TRACKING_URI`` of
``https://user:password@host``, a presigned ``?X-Amz-Signature=…``) and environment variables
whose names say they are secret (``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``,
``AWS_SECRET_ACCESS_KEY``, ``RAY_AUTH_TOKEN``, …).  :func:`redact` masks both in any text before
it is printed, journaled or stored in a run folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
# Environment variable names whose values are credentials.
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY|PRIVATE_KEY|SESSION_KEY)", re.IGNORECASE
)
# scheme://user:password@  ->  scheme://user:***@   (and scheme://token@ -> scheme://***@)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::(?P<pw>[^/@\s]*))?@")
# Query parameters that carry credentials in presigned or token-bearing URLs.
_QUERY = re.compile(
    r"(?P<key>[?&](?:[\w-]*(?:token|signature|password|secret|credential|sig|key)[\w-]*))=(?P<v>[^&\s\"']+)",
    re.IGNORECASE,
)
MIN_SECRET_LEN = 6  # shorter values (e.g. "1", "true") would mask ordinary text


def _userinfo(match: re.Match) -> str:
    if match.group("pw") is not None:
        return f"{match.group('scheme')}{match.group('user')}:{MASK}@"
    if match.group("user"):  # a bare token in the user part (https://<token>@github.com)
        return f"{match.group('scheme')}{MASK}@"
    return match.group(0)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables named like credentials, longest first."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with URL credentials and secret environment values replaced by ``***``."""
    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY.sub(lambda m: f"{m.group('key')}={MASK}", text)
    for value in secret_values(env):
        text = text.replace(value, MASK)
    return text
