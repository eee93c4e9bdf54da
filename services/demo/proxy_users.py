"""The demo's users of the proxy: the same questions, asked with the official ``openai`` SDK
through the ``demo-proxy`` deployment (docs/proxy.md), as an application moved onto PromptPulse
would ask them: base URL and key changed, nothing else.

The context goes in the system message (the deployment's ``proxy.context: system_message``), the
question in the user message; a share is streamed. The answer's request id and variant come from
the gateway's ``x-request-id`` and ``x-promptpulse-variant`` headers.
"""

from __future__ import annotations

import openai
from openai.types.chat import ChatCompletionMessageParam

from services.demo.dataset import Question

VARIANT_HEADER = "x-promptpulse-variant"


class ProxyUnavailable(Exception):
    """The gateway cannot be reached through the proxy, or answered 503."""


class ProxyUsers:
    """One ``AsyncOpenAI`` client on the gateway's ``/v1``, asking questions as chat completions."""

    def __init__(self, gateway_url: str, key: str, *, model: str, timeout: float) -> None:
        # No SDK retries: the generator counts each failure, and a retry would hide it.
        self.client = openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0, timeout=timeout)
        self.model = model

    def use_key(self, key: str) -> None:
        self.client.api_key = key

    async def close(self) -> None:
        await self.client.close()

    async def ask(self, question: Question, *, streamed: bool) -> tuple[int, str | None, str | None, str | None]:
        """(status, request id, variant, error): status 200 with an error when the answer was cut.

        Raises ProxyUnavailable (gateway away or 503) and TimeoutError (no answer in time).
        """
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": question.context}, {"role": "user", "content": question.question}]
        try:
            if not streamed:
                raw = await self.client.chat.completions.with_raw_response.create(model=self.model, messages=messages)
                raw.parse()
                return 200, raw.headers.get("x-request-id"), raw.headers.get(VARIANT_HEADER), None
            streaming = await self.client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, stream=True)
            text = ""
            async for chunk in streaming.parse():
                text += "".join(c.delta.content or "" for c in chunk.choices)
            # An openai instrumentation (OpenTelemetry's, in an instrumented app) wraps the stream and
            # hides the raw response's headers, not the stream's own response.
            headers = getattr(streaming, "headers", None) or streaming.response.headers  # type: ignore[attr-defined]
            return 200, headers.get("x-request-id"), headers.get(VARIANT_HEADER), None if text else "empty stream"
        except openai.APITimeoutError:
            raise TimeoutError from None
        except openai.APIConnectionError as exc:
            raise ProxyUnavailable(f"{type(exc).__name__}: {exc}") from None
        except openai.APIStatusError as exc:
            if exc.status_code == 503:
                raise ProxyUnavailable("503 from the gateway") from None
            return exc.status_code, exc.response.headers.get("x-request-id"), None, None
