"""Stand-ins for the ``promptflow.tools`` functions flow code calls itself
(``from promptflow.tools.aoai import chat``, ``from promptflow.tools.common import parse_chat``...).

They do what prompt flow's do with PromptPulse's own parts: the prompt is rendered and parsed by
template.py (role lines in values escaped, images as ``image_url`` parts), parameters converted
by llm_params.py's rules, and the call is made with the official ``openai`` client built from the
connection object the node received, so python_llm.py sees it as the node's LLM call (span,
usage). They run inside a Python node, synchronously, like prompt flow's.
"""

from __future__ import annotations

from typing import Any

from shared.flow import llm_params
from shared.flow.template import compile_template, parse_chat, render_chat, render_prompt

_PARAMS = ("temperature", "top_p", "stop", "max_tokens", "presence_penalty", "frequency_penalty", "logit_bias",
           "user", "response_format", "seed", "n")
_COMPLETION_PARAMS = (*_PARAMS, "suffix", "echo", "logprobs", "best_of")


def _client(connection: Any) -> Any:
    import openai

    if getattr(connection, "api_type", None) == "azure" or getattr(connection, "api_base", None):
        return openai.AzureOpenAI(api_key=connection.api_key, api_version=connection.api_version or "2024-10-21",
                                  azure_endpoint=connection.api_base)
    return openai.OpenAI(api_key=connection.api_key, base_url=getattr(connection, "base_url", None),
                         organization=getattr(connection, "organization", None))


def _split(kwargs: dict[str, Any], names: tuple[str, ...], api: str) -> tuple[dict[str, Any], dict[str, Any]]:
    params: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in names:
            converted = llm_params.convert_param(key, value, api)
            if converted is not llm_params.OMIT:
                params[key] = converted
        else:
            variables[key] = value
    return params, variables


def _chat(connection: Any, prompt: str, model: str, kwargs: dict[str, Any]) -> str:
    params, variables = _split(kwargs, _PARAMS, "chat")
    messages = render_chat(compile_template(prompt), variables)
    with _client(connection) as client:
        reply = client.chat.completions.create(model=model, messages=messages, **params)
    return reply.choices[0].message.content or ""


def _completion(connection: Any, prompt: str, model: str, kwargs: dict[str, Any]) -> str:
    params, variables = _split(kwargs, _COMPLETION_PARAMS, "completion")
    text = str(render_prompt(compile_template(prompt), variables))
    with _client(connection) as client:
        reply = client.completions.create(model=model, prompt=text, **params)
    return reply.choices[0].text or ""


def aoai_chat(connection: Any, prompt: str, deployment_name: str, **kwargs: Any) -> str:
    """``promptflow.tools.aoai.chat``."""
    return _chat(connection, prompt, deployment_name, kwargs)


def openai_chat(connection: Any, prompt: str, model: str = "gpt-3.5-turbo", **kwargs: Any) -> str:
    """``promptflow.tools.openai.chat``."""
    return _chat(connection, prompt, model, kwargs)


def aoai_completion(connection: Any, prompt: str, deployment_name: str, **kwargs: Any) -> str:
    """``promptflow.tools.aoai.completion``."""
    return _completion(connection, prompt, deployment_name, kwargs)


def openai_completion(connection: Any, prompt: str, model: str = "gpt-3.5-turbo-instruct", **kwargs: Any) -> str:
    """``promptflow.tools.openai.completion``."""
    return _completion(connection, prompt, model, kwargs)


def embedding(connection: Any, input: str | list[str], deployment_name: str = "",  # noqa: A002 - prompt flow's name
              model: str = "text-embedding-ada-002") -> Any:
    """``promptflow.tools.embedding.embedding``: the vector of one text (a list of them for a list)."""
    azure = getattr(connection, "api_type", None) == "azure" or getattr(connection, "api_base", None)
    with _client(connection) as client:
        reply = client.embeddings.create(model=(deployment_name if azure else model) or model, input=input)
    vectors = [item.embedding for item in reply.data]
    return vectors[0] if isinstance(input, str) else vectors


# name of the stand-in module -> its functions, as prompt flow's modules name them
MODULES: dict[str, dict[str, Any]] = {
    "promptflow.tools.aoai": {"chat": aoai_chat, "completion": aoai_completion},
    "promptflow.tools.openai": {"chat": openai_chat, "completion": openai_completion},
    "promptflow.tools.embedding": {"embedding": embedding},
    "promptflow.tools.common": {"parse_chat": parse_chat},
}
