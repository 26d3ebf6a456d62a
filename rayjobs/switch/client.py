"""`asit switch ask`: one HTTP request to a running switch server (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from rayjobs.errors import UserError


def ask(url: str, prompts: list[str], switch: bool, max_new_tokens: int = 16, timeout_s: float = 60.0) -> dict:
    """POST the prompts; the server's answer ({"mode", "completions", ...}), or a UserError with its message."""
    # urllib also opens file:// and ftp:// URLs: a typo must not read a local file as the "answer".
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UserError(f"--url {url!r}: only http:// or https:// URLs are allowed; pass the URL `asit switch serve` "
                        "printed, e.g. http://127.0.0.1:8765/")
    body = json.dumps({"prompts": prompts, "switch": switch, "max_new_tokens": max_new_tokens}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        raise UserError(f"switch server {url} answered {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise UserError(f"no switch server at {url} ({e.reason}); start one with `asit switch serve CONFIG`") from None
