"""Model access: one OpenAI-compatible async backend (any endpoint, Azure too), client-side rate
limits and retries, and the embedded default model served by llama.cpp on 127.0.0.1."""

from .openai_backend import CallError, CallResult, ChatBackend, endpoint_identity, redact
from .ratelimit import RateLimiter, RetryPolicy, parse_retry_after

__all__ = [
    "CallError", "CallResult", "ChatBackend", "endpoint_identity", "redact",
    "RateLimiter", "RetryPolicy", "parse_retry_after",
]
