"""The one chat backend: any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
llama.cpp, the embedded model) through the official async ``openai`` client.

The API key is read from the environment variable the spec names, handed to the client and to
:func:`redact`, and nowhere else: it is not part of the endpoint identity, not stored, not logged,
and every error message that leaves this module has been passed through :func:`redact` (OpenAI's
own 401 message echoes part of the key).

A call returns a :class:`CallResult` or raises :class:`CallError` with a ``kind``:

=================  ===============================================  ===========================
kind               cause                                            handling
=================  ===============================================  ===========================
rate_limit         429                                              retry, honour Retry-After
server             5xx                                              retry with backoff
timeout            no answer within ``timeout_s``                   retry with backoff
connection         refused / reset / DNS                            retry with backoff
malformed          200 but not a chat completion                    retry twice, then fail
bad_request        400, 413, 422 (this request is wrong)            fail this request
auth               401, 403                                         stop the run
not_found          404 (unknown model or wrong base URL)            stop the run
quota              429 ``insufficient_quota``                       stop the run
=================  ===============================================  ===========================

A content-filter refusal (``finish_reason == 'content_filter'`` or Azure's 400 ``content_filter``)
is not an error: it is returned as a result with status ``content_filter`` and never retried.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import openai

from ..errors import AuditError

RETRYABLE = {"rate_limit", "server", "timeout", "connection", "malformed"}
FATAL = {"auth", "not_found", "quota"}


def content_text(content: Any) -> str | None:
    """A message's ``content`` as text: a string as is; a list of content parts (``[{"type": "text",
    "text": ...}]``) as their texts joined; any other JSON value as JSON (never a Python repr)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text") or "") for p in content if p.get("type", "text") in ("text", "output_text"))
    try:
        return json.dumps(content, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(content)


@dataclass
class CallResult:
    status: str  # 'ok' | 'content_filter'
    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model_reported: str | None
    runtime: str | None
    runtime_version: str | None
    latency_s: float | None   # None for an answer read from a batch output (no per-request latency)


class CallError(Exception):
    def __init__(self, kind: str, message: str, status_code: int | None = None, retry_after: float | None = None):
        self.kind = kind
        self.status_code = status_code
        self.retry_after = retry_after
        self.text = message
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL

    def __repr__(self) -> str:
        return f"CallError({self.kind!r}, {self.text!r}, status_code={self.status_code!r})"


# ---------------------------------------------------------------------------- key hygiene


def redact(text: str | None, secret: str | None) -> str | None:
    """Remove ``secret`` and any run of 6+ of its characters (masked echoes) from ``text``."""
    if not text or not secret:
        return text
    if len(secret) < 8:
        return text.replace(secret, "[redacted]") if len(secret) >= 4 else text
    text = text.replace(secret, "[redacted]")
    windows = {secret[i:i + 6] for i in range(len(secret) - 5)}
    masked = [False] * len(text)
    for j in range(len(text) - 5):
        if text[j:j + 6] in windows:
            for k in range(j, j + 6):
                masked[k] = True
    if not any(masked):
        return text
    out, prev = [], False
    for ch, m in zip(text, masked):
        if m and not prev:
            out.append("[redacted]")
        elif not m:
            out.append(ch)
        prev = m
    # OpenAI-style masked key echoes ("sk-ab****wxyz") around the redacted part
    return re.sub(r"(\[redacted\])[*A-Za-z0-9_-]*\*{3,}[A-Za-z0-9_-]*", r"\1", "".join(out))


# ---------------------------------------------------------------------------- the backend


def endpoint_identity(model: Any) -> tuple[str, str]:
    """(endpoint_id, model name) that go into every request key. No secrets, no ports of local servers."""
    if model.azure is not None:
        az = model.azure
        return f"azure:{az.endpoint.rstrip('/')}/deployments/{az.deployment}?api-version={az.api_version}", (
            model.model or az.deployment
        )
    return model.base_url.rstrip("/"), model.model


class ChatBackend:
    """Async chat completions against one endpoint.

    ``model`` is an :class:`audit.spec.ModelSpec` with an endpoint (the embedded model gets one from
    :mod:`audit.backends.embedded`). ``runtime`` / ``runtime_version`` override what is recorded
    as the serving runtime (the embedded server knows its own).
    """

    def __init__(
        self,
        model: Any,
        *,
        base_url: str | None = None,
        endpoint_id: str | None = None,
        model_name: str | None = None,
        api_key: str | None = None,
        runtime: str | None = None,
        runtime_version: str | None = None,
        send_extra: dict[str, Any] | None = None,
    ):
        self.spec = model
        self.label = model.label
        if endpoint_id is None:
            endpoint_id, model_name = endpoint_identity(model)
        self.endpoint_id = endpoint_id
        self.model_name = model_name
        self.runtime = runtime
        self.runtime_version = runtime_version
        self.send_extra = dict(send_extra or {})
        self.server_header: str | None = None  # the endpoint's Server header, read once by preflight()
        self.timeout_s = float(model.timeout_s)
        self._secret = api_key if api_key is not None else self._read_key(model)
        common = dict(
            api_key=self._secret or "not-needed",
            max_retries=0,  # retries are ours: recorded, with backoff shared across workers
            timeout=self.timeout_s,
            default_headers=dict(model.headers) or None,
        )
        try:
            if model.azure is not None:
                self.client = openai.AsyncAzureOpenAI(
                    azure_endpoint=model.azure.endpoint, azure_deployment=model.azure.deployment,
                    api_version=model.azure.api_version, **common,
                )
                self.display_url = model.azure.endpoint
            else:
                url = base_url or model.base_url
                self.client = openai.AsyncOpenAI(base_url=url, **common)
                self.display_url = url
        except openai.OpenAIError as exc:
            raise AuditError(
                f"cannot set up the client for model '{model.label}': {redact(str(exc), self._secret)}",
                where=f"models[label={model.label}]",
            ) from None

    @staticmethod
    def _read_key(model: Any) -> str | None:
        if not model.api_key_env:
            return None
        key = os.environ.get(model.api_key_env)
        if not key:
            raise AuditError(
                f"the environment variable {model.api_key_env} (api_key_env of model '{model.label}') is not set",
                where=f"models[label={model.label}].api_key_env",
                fix=f"export {model.api_key_env}=<your key> in this shell, then run the command again",
            )
        return key

    def redact(self, text: str | None) -> str | None:
        return redact(text, self._secret)

    async def aclose(self) -> None:
        try:
            await self.client.close()
        except Exception:  # pragma: no cover - closing a dead connection pool
            pass

    # ------------------------------------------------------------------ calls
    def chat_kwargs(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one request (``extra_body`` apart)."""
        extra = {**(params.get("extra_body") or {}), **self.send_extra}
        kwargs: dict[str, Any] = dict(
            model=self.model_name, messages=messages, temperature=params.get("temperature"),
            top_p=params.get("top_p"), max_tokens=params.get("max_tokens"),
        )
        if params.get("seed") is not None:
            kwargs["seed"] = params["seed"]
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def request_body(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """The JSON body the online client sends for one request: a batch file line's ``body``."""
        kwargs = self.chat_kwargs(messages, params)
        return {**{k: v for k, v in kwargs.items() if k != "extra_body"}, **kwargs.get("extra_body", {})}

    def result_from_body(self, body: Any, latency: float | None = None) -> CallResult:
        """A chat completion read from a JSON body (a batch output line's ``response.body``), as
        :meth:`chat` returns it; :class:`CallError` ``malformed`` when it is not one."""
        from openai.types.chat import ChatCompletion

        try:
            resp = ChatCompletion.model_validate(body)
        except Exception as exc:  # pydantic ValidationError and anything else a stranger's body causes
            raise CallError("malformed", self.redact(f"the answer is not a chat completion: {str(exc)[:300]}")) from None
        return self._result(resp, latency)

    def status_error(self, code: int, body: Any, headers: Any = None, message: str = "") -> CallError:
        """The CallError of an HTTP error answer (status ``code``, JSON ``body``), online or in a batch output."""
        from .ratelimit import parse_retry_after

        body = body if isinstance(body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        err = err if isinstance(err, dict) else {"message": str(err)}
        ecode = str(err.get("code") or err.get("type") or "")
        message = str(err.get("message") or message or "")[:500]
        msg = self.redact(f"HTTP {code}: {message}")
        if code == 429:
            if "insufficient_quota" in ecode or "insufficient_quota" in message:
                return CallError("quota", msg, code)
            return CallError("rate_limit", msg, code, parse_retry_after(headers))
        if code in (401, 403):
            return CallError("auth", msg, code)
        if code == 404:
            return CallError("not_found", msg, code)
        if code == 408:
            return CallError("timeout", msg, code, parse_retry_after(headers))
        if code >= 500:
            return CallError("server", msg, code, parse_retry_after(headers))
        if "content_filter" in ecode or "content management policy" in message.lower():
            return CallError("content_filter", msg, code)
        return CallError("bad_request", msg, code)

    async def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> CallResult:
        """One chat completion. ``params``: temperature, top_p, max_tokens, seed, extra_body."""
        kwargs = self.chat_kwargs(messages, params)
        t0 = time.monotonic()
        try:
            resp = await self.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APITimeoutError:
            raise CallError("timeout", f"no answer within {self.timeout_s:g} s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc.__context__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            raise CallError("connection", self.redact(f"cannot connect to {self.display_url} ({detail})")) from None
        except openai.APIResponseValidationError as exc:
            raise CallError("malformed", self.redact(f"the endpoint's answer is not a chat completion: {exc}")) from None
        except (ValueError, TypeError, KeyError) as exc:  # a body that is not JSON at all
            raise CallError("malformed", self.redact(f"the endpoint's answer could not be read: {exc}")) from None
        latency = time.monotonic() - t0
        return self._result(resp, latency)

    def _result(self, resp: Any, latency: float | None) -> CallResult:
        choices = getattr(resp, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            snippet = str(resp)[:200]
            raise CallError("malformed", self.redact(f"the endpoint's answer has no choices: {snippet!r}"))
        ch = choices[0]
        msg = ch.message
        text = msg.content
        if text is None:
            text = getattr(msg, "refusal", None)
        text = content_text(text)
        finish = ch.finish_reason
        usage = getattr(resp, "usage", None)
        status = "content_filter" if finish == "content_filter" else "ok"
        runtime = self.runtime or self.server_header or "unknown"
        version = self.runtime_version or getattr(resp, "system_fingerprint", None)
        return CallResult(
            status=status, text=text if text is not None else "", finish_reason=finish,
            prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
            completion_tokens=getattr(usage, "completion_tokens", None) if usage else None,
            model_reported=getattr(resp, "model", None), runtime=runtime, runtime_version=version,
            latency_s=latency,
        )

    def _status_error(self, exc: Any) -> CallError:
        headers = exc.response.headers if getattr(exc, "response", None) is not None else None
        return self.status_error(exc.status_code, exc.body, headers, exc.message or "")

    async def preflight(self) -> None:
        """Fail fast on an unreachable endpoint or a rejected key (GET /models; other answers are fine)."""
        import asyncio

        last: str = ""
        for wait in (0.5, 1.5, None):
            try:
                raw = await self.client.models.with_raw_response.list(timeout=min(self.timeout_s, 15.0))
                self.server_header = raw.headers.get("server")
                return
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise self.fatal_error(self._status_error(exc)) from None
                self.server_header = exc.response.headers.get("server") if exc.response is not None else None
                return  # 404/405/500 on /models says nothing about chat completions
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc.__context__
                last = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            except Exception:  # pragma: no cover - e.g. a non-JSON /models page
                return
            if wait:
                await asyncio.sleep(wait)
        raise AuditError(
            self.redact(f"cannot reach the endpoint of model '{self.label}' at {self.display_url} ({last})"),
            where=f"models[label={self.label}]",
            fix="check base_url (it usually ends in /v1) and that the server is running; nothing stored was lost",
        )

    def fatal_error(self, err: CallError) -> AuditError:
        """The AuditError that stops a run for a fatal CallError."""
        where = f"models[label={self.label}]"
        if err.kind == "auth":
            env = self.spec.api_key_env
            fix = (f"check the key in ${env}" if env else "set api_key_env in the spec to the variable holding the key")
            return AuditError(f"the endpoint {self.display_url} rejected the credentials ({err.text})", where=where,
                              fix=fix + "; everything stored so far is kept")
        if err.kind == "not_found":
            return AuditError(
                f"the endpoint {self.display_url} does not know model '{self.model_name}' or the URL is wrong "
                f"({err.text})", where=where,
                fix="check the model name (GET <base_url>/models lists them) and base_url; everything stored is kept",
            )
        if err.kind == "quota":
            return AuditError(f"the account's quota is exhausted ({err.text})", where=where,
                              fix="add credit or raise the quota, then run the same command again: it resumes")
        return AuditError(err.text, where=where)
