"""Stand-ins for ``promptflow.core.Prompty`` and ``AsyncPrompty``: what flow code calls itself.

``Prompty.load(source=..., model={...})`` reads the file (file.py), with the model overrides
prompt flow allows (a dict, or an ``AzureOpenAIModelConfiguration`` / ``OpenAIModelConfiguration``
as ``configuration``). Calling it with keyword inputs renders the template (template.py: the
sandbox and role-line escaping of flow templates) and makes one call with the official
``openai`` client (sync for Prompty, async for AsyncPrompty), answering as prompt flow does: the
first choice's text; a dict with ``response_format: json_object`` (only the declared
``outputs``); a generator of text chunks with ``stream: true``; the whole completion with
``response: all``; the message itself when the model calls a tool.

The call goes through the ``openai`` package, so python_llm.py sees it inside a flow run (a
span with its usage, counted in the response event). Streams ask for
``stream_options.include_usage`` so a streamed call is counted too.

Where the model is: ``configuration.connection`` names a connections.yaml entry (the runtime's
connections, :func:`provide_connections`; else ``$PROMPTPULSE_DEPLOYMENTS_DIR/connections.yaml``);
otherwise the configuration's own endpoint and key (``${env:...}`` resolved), else the
environment as prompt flow reads it (``AZURE_OPENAI_ENDPOINT``/``AZURE_OPENAI_API_KEY``, or
the openai package's ``OPENAI_API_KEY``/``OPENAI_BASE_URL``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from shared.deployments.connections import (
    CONNECTIONS_FILE,
    Connection,
    load_connections_file,
    openai_client_kwargs,
)
from shared.deployments.prompty_files import PROMPTY_SUFFIX
from shared.flow.errors import FlowInputError
from shared.flow.pf_tracing import trace
from shared.flow.prompty.deployment import json_answer
from shared.flow.prompty.file import (
    ENDPOINT_FIELDS,
    PromptyFile,
    PromptyModel,
    load_prompty,
    resolve_references,
)
from shared.flow.prompty.tokens import count_prompt_tokens
from shared.flow.template import render_chat, render_prompt

log = logging.getLogger(__name__)
DEFAULT_AZURE_API_VERSION = "2024-10-21"
_provided: Mapping[str, Connection] | None = None


def provide_connections(connections: Mapping[str, Connection] | None) -> None:
    """The connections a ``configuration.connection`` name is looked up in (the runtime's load of
    connections.yaml); None: read the deployments folder's file when a name needs it."""
    global _provided
    _provided = connections


def _connection(name: str) -> Connection:
    connections = _provided
    if connections is None:
        folder = Path(os.environ.get("PROMPTPULSE_DEPLOYMENTS_DIR", "deploy/local/deployments"))
        connections = load_connections_file(folder / CONNECTIONS_FILE)
    found = connections.get(name)
    if found is None:
        known = ", ".join(sorted(connections)) or "none"
        raise ValueError(f"connection {name!r} is not in connections.yaml (known: {known})")
    return found


def client_settings(model: PromptyModel) -> tuple[bool, dict[str, Any]]:
    """(Azure or not, keyword arguments of the openai client) for a prompty's configuration."""
    name = model.config_value("connection_name") or model.config_value("connection")
    if isinstance(name, str) and name and not any(model.config_value(k) for k in ENDPOINT_FIELDS):
        connection = _connection(name)
        return connection.type == "azure_openai", openai_client_kwargs(connection)
    values = {k: resolve_references(model.config_value(k), Path.cwd()) for k in ENDPOINT_FIELDS}
    values["azure_endpoint"] = values["azure_endpoint"] or model.config_value("api_base")
    if model.is_azure:
        return True, {
            "azure_endpoint": values["azure_endpoint"] or os.environ.get("AZURE_OPENAI_ENDPOINT"),
            "api_key": values["api_key"] or os.environ.get("AZURE_OPENAI_API_KEY"),
            "api_version": values["api_version"] or os.environ.get("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION,
        }
    kwargs = {"api_key": values["api_key"], "base_url": values["base_url"], "organization": values["organization"]}
    return False, {k: v for k, v in kwargs.items() if v}


def _request(prompty: PromptyFile, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(api, the create() arguments): the rendered prompt and the prompty's parameters."""
    model = prompty.model
    params = {k: v for k, v in model.parameters.items() if v is not None}
    params["model"] = model.model_name
    if model.api == "completion":
        params["prompt"] = str(render_prompt(prompty.template, inputs))
    else:
        params["messages"] = render_chat(prompty.template, inputs)
        if params.get("stream") is True:
            params.setdefault("stream_options", {"include_usage": True})  # so the call's usage is counted
    return model.api, params


def _answer(prompty: PromptyFile, response: Any) -> Any:
    """The first choice as prompt flow answers it (a non-streamed response)."""
    model = prompty.model
    if model.response == "all":
        return response
    choice = response.choices[0]
    if model.api == "completion":
        text = choice.text
    elif choice.finish_reason in ("tool_calls", "function_call"):
        return response.model_dump()["choices"][0]["message"]
    else:
        text = choice.message.content or ""
    return json_answer(text, tuple(prompty.outputs)) if model.json_output else text


def _delta(chunk: Any, first_index: list[int]) -> str | None:
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return None
    choice = choices[0]
    delta = getattr(choice, "delta", None)  # a chat chunk; a legacy completion's has text
    text = getattr(delta, "content", None) if delta is not None else getattr(choice, "text", None)
    if not text:
        return None
    if not first_index:
        first_index.append(choice.index)
    return text if choice.index == first_index[0] else None


def whole_completion(prompty: PromptyFile, inputs: Mapping[str, Any], connection: Connection) -> Any:
    """``response: all`` in a deployment: the completion's JSON, from one non-streamed call made
    with the sync ``openai`` client (so python_llm.py counts it as the node's call)."""
    import openai

    api, params = _request(prompty, inputs)
    params.pop("stream", None)
    params.pop("stream_options", None)
    settings = openai_client_kwargs(connection)
    client = openai.AzureOpenAI(**settings) if connection.type == "azure_openai" else openai.OpenAI(**settings)
    with client:
        create = client.completions.create if api == "completion" else client.chat.completions.create
        return create(**params).model_dump(mode="json")


class Prompty:
    """A loaded prompty file, called like a function with its inputs as keyword arguments."""

    def __init__(self, path: str | os.PathLike[str], model: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        overrides = dict(kwargs)
        if model is not None:
            overrides["model"] = model
        self._file = load_prompty(Path(path), overrides)
        self._name = self._file.name
        self._model = self._file.model
        self._inputs = {k: {"type": v.type} for k, v in self._file.inputs.items()}
        self._outputs = dict(self._file.outputs)
        self._sample = self._file.sample
        self._template = self._file.template_source

    @classmethod
    def load(cls, source: str | os.PathLike[str], **kwargs: Any) -> Prompty:
        """Load a ``.prompty`` file; ``model={...}`` (and any other front matter key) overrides it."""
        path = Path(source)
        if not path.exists():
            raise ValueError(f"Source {path.absolute().as_posix()} does not exist")
        if path.suffix != PROMPTY_SUFFIX:
            raise ValueError(f"Source must be a file with {PROMPTY_SUFFIX} extension.")
        return cls(path, **kwargs)

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def code(self) -> Path:
        return self._file.path.parent

    def _resolve_inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        # prompt flow's rules: no inputs given -> the sample; then the declared inputs only, with
        # their defaults; a missing one without a default is an error.
        values = dict(given) if given or not self._file.sample else dict(self._file.sample)
        resolved: dict[str, Any] = {}
        missing = []
        for name, spec in self._file.inputs.items():
            if name in values:
                resolved[name] = values[name]
            elif not spec.required:
                resolved[name] = spec.default
            else:
                missing.append(name)
        if missing:
            raise FlowInputError(missing[0], f"Missing required inputs: {missing}")
        return resolved

    def render(self, *args: Any, **kwargs: Any) -> str:
        """The prompt the inputs make (the messages' text for a chat prompty)."""
        if args:
            raise TypeError("Prompty can only be rendered with keyword arguments.")
        api, params = _request(self._file, self._resolve_inputs(kwargs))
        return str(params["prompt"] if api == "completion" else params["messages"])

    def estimate_token_count(self, *args: Any, **kwargs: Any) -> int:
        """The prompt's tokens plus ``max_tokens``: what the call may use at most (offline)."""
        if args:
            raise TypeError("Prompty can only be rendered with keyword arguments.")
        api, params = _request(self._file, self._resolve_inputs(kwargs))
        response_max = self._model.parameters.get("max_tokens")
        if response_max is None:
            log.warning("max_tokens is not set: the estimate is the prompt's tokens only")
        elif not isinstance(response_max, int) or isinstance(response_max, bool):
            raise ValueError("max_tokens needs to be an integer.")
        elif response_max <= 1:
            raise ValueError(f"{response_max} is less than the minimum of max_tokens.")
        prompt = params["prompt"] if api == "completion" else params["messages"]
        return count_prompt_tokens(prompt) + (response_max or 0)

    @trace  # as prompt flow traces it: a span around the call in a flex flow's run, the LLM call's parent
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("Prompty can only be called with keyword arguments.")
        import openai

        api, params = _request(self._file, self._resolve_inputs(kwargs))
        azure, settings = client_settings(self._model)
        client = openai.AzureOpenAI(**settings) if azure else openai.OpenAI(**settings)
        create = client.completions.create if api == "completion" else client.chat.completions.create
        try:
            response = create(**params)
        except BaseException:
            client.close()
            raise
        if not params.get("stream"):
            client.close()
            return _answer(self._file, response)
        if self._model.response == "all":
            return response  # the caller reads (and closes) the raw stream
        chunks = self._chunks(response, client)
        return chunks if self._model.streams else _joined(self._file, "".join(chunks))

    @staticmethod
    def _chunks(stream: Any, client: Any) -> Iterator[str]:
        first: list[int] = []
        try:
            for chunk in stream:
                text = _delta(chunk, first)
                if text is not None:
                    yield text
        finally:
            stream.close()
            client.close()


def _joined(prompty: PromptyFile, text: str) -> Any:
    return json_answer(text, tuple(prompty.outputs)) if prompty.model.json_output else text


class AsyncPrompty(Prompty):
    """:class:`Prompty` called with ``await``; a stream is an async generator of text chunks."""

    @trace
    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("Prompty can only be called with keyword arguments.")
        import openai

        api, params = _request(self._file, self._resolve_inputs(kwargs))
        azure, settings = client_settings(self._model)
        client = openai.AsyncAzureOpenAI(**settings) if azure else openai.AsyncOpenAI(**settings)
        create = client.completions.create if api == "completion" else client.chat.completions.create
        try:
            response = await create(**params)
        except BaseException:
            await client.close()
            raise
        if not params.get("stream"):
            await client.close()
            return _answer(self._file, response)
        if self._model.response == "all":
            return response
        chunks = self._async_chunks(response, client)
        if self._model.streams:
            return chunks
        return _joined(self._file, "".join([text async for text in chunks]))

    @staticmethod
    async def _async_chunks(stream: Any, client: Any) -> AsyncIterator[str]:
        first: list[int] = []
        try:
            async for chunk in stream:
                text = _delta(chunk, first)
                if text is not None:
                    yield text
        finally:
            await stream.close()
            await client.close()
