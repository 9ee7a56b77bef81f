"""JSON-RPC 2.0 over HTTP to a node (or the light proxy), blocking and async: `call(method,
**params)` returns the result or raises `RPCError`."""

from __future__ import annotations

from typing import Any

import httpx

from node.sdk.errors import RPCError

DEFAULT_TIMEOUT = 15.0


def _body(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def _unreachable(url: str, exc: Exception) -> RPCError:
    return RPCError(
        {"code": -32603, "message": "unreachable", "data": str(exc)}, f"cannot reach {url}: {exc}"
    )


def _result(url: str, method: str, response: httpx.Response) -> Any:
    try:
        payload = response.json()
    except ValueError:
        message = f"{url} answered HTTP {response.status_code} without JSON"
        raise RPCError({"code": -32603, "message": message}, message) from None
    if not isinstance(payload, dict):
        raise RPCError(
            {"code": -32603, "message": "not a JSON-RPC response"}, f"{url}: not a JSON-RPC response"
        )
    if "error" in payload:
        error = payload["error"]
        raise RPCError(error, f"{method}: {error.get('message')}: {error.get('data', '')}".rstrip(": "))
    return payload["result"]


class Transport:
    """Blocking calls over one kept connection."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        try:
            response = self._client.post(self.url, json=_body(method, params))
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        return _result(self.url, method, response)

    def close(self) -> None:
        self._client.close()


class AsyncTransport:
    """Async calls (trio or asyncio) over one kept connection."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout)

    async def call(self, method: str, **params: Any) -> Any:
        try:
            response = await self._client.post(self.url, json=_body(method, params))
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        return _result(self.url, method, response)

    async def aclose(self) -> None:
        await self._client.aclose()
