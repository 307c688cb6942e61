"""An OpenAI-compatible server's endpoint as a client sees it: the API key sent as a Bearer token (read from the
environment variable the user names, never stored), whether the server answers, and what a 401/403 means."""

import os
from typing import Optional

from planner.errors import InputError, LaunchFailed


def auth_headers(api_key_env: Optional[str]) -> dict[str, str]:
    """`Authorization: Bearer <key>` with the key read from the environment variable `api_key_env` now (the key
    lives only in this dict); {} without one. InputError when the variable is unset or empty."""
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise InputError(f"api_key_env={api_key_env}: that environment variable is unset or empty, so no API key can "
                         f"be sent. Fix: export {api_key_env}=<the server's key>, or leave api_key_env unset for a "
                         "server without a key.")
    return {"Authorization": f"Bearer {key}"}


def auth_problem(url: str, status: int, api_key_env: Optional[str]) -> tuple[str, str]:
    """(what happened, ' Fix: ...') for a 401/403 from an OpenAI endpoint: an API-key problem, not a slow start."""
    what = (f"GET {url} answered {status} ({'Unauthorized' if status == 401 else 'Forbidden'}): the server requires "
            "an API key and ")
    if api_key_env:
        return (what + f"refused the one in ${api_key_env}",
                f" Fix: export {api_key_env}=<the key the server was started with>.")
    inherited = os.environ.get("VLLM_API_KEY")
    what += "none was sent (api_key_env is not set)"
    if inherited:
        what += "; VLLM_API_KEY is set in this environment, and vLLM reads it, so a server started here requires it"
    return what, (" Fix: api_key_env=VLLM_API_KEY (the NAME of the variable holding the key; it is sent as "
                  "`Authorization: Bearer`)" + (", or unset VLLM_API_KEY to serve without a key." if inherited
                                                 else "."))


def check_endpoint(base_url: str, api_key_env: Optional[str] = None, timeout_s: float = 10.0) -> None:
    """Raise LaunchFailed unless GET base_url/v1/models answers 200 (with the API key when one is named): a server
    that cannot be reached, or refuses the key, has nothing to measure."""
    import httpx

    try:
        parsed = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        parsed, problem = None, str(exc)
    else:
        problem = "" if parsed.scheme in ("http", "https") and parsed.host else "no http(s) scheme and host"
    if problem:
        raise InputError(f"endpoint={base_url!r} is not a server URL ({problem}). Fix: give the server's root as "
                         "http://HOST:PORT, e.g. endpoint=http://127.0.0.1:8000 (the port a number, no /v1).")
    url = base_url.rstrip("/") + "/v1/models"
    headers = auth_headers(api_key_env)
    try:
        status = httpx.get(url, headers=headers, timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        raise LaunchFailed(f"endpoint={base_url}: cannot reach the server: GET {url} failed "
                           f"({type(exc).__name__}: {exc}), so there is nothing to load-test and no verdict. Fix: "
                           "start the server, or check the endpoint's scheme, host and port (a running OpenAI-"
                           "compatible server answers GET /v1/models).") from exc
    if status in (401, 403):
        what, fix = auth_problem(url, status, api_key_env)
        raise LaunchFailed(f"endpoint={base_url}: {what}.{fix}")
    if status != 200:
        raise LaunchFailed(f"endpoint={base_url}: GET {url} answered HTTP {status}, not 200: this is not a ready "
                           "OpenAI-compatible server (vLLM answers 200 once the model is loaded). Fix: check the "
                           "endpoint URL (the server's root, without /v1), or wait until the server is ready.")
