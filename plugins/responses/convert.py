"""Responses API input items, tools, tool choice and text format, in the chat-completions
format every adapter reads (``ChatRequest.messages`` and ``extra``).

Pure functions on dicts. Anything that has no chat equivalent is refused with a 400
naming where it is (``input[2].content[0].type``), never dropped, with one exception
said out loud in the docs: ``reasoning`` items, an OpenAI model's private reasoning
(often encrypted), which no chat upstream can take and which the model's answer does
not depend on being replayed.
"""

from __future__ import annotations

from typing import Any

from modelbroker.plugins.responses.request import invalid

#: The roles a message item may have, and the chat role each becomes.
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "developer"}
#: Input item types that OpenAI's platform itself runs (hosted tools) or resolves (item
#: references): a chat upstream has nothing to do with them.
HOSTED_ITEMS = ("web_search_call", "file_search_call", "computer_call", "computer_call_output", "image_generation_call",
                "code_interpreter_call", "local_shell_call", "local_shell_call_output", "shell_call",
                "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_list_tools",
                "mcp_approval_request", "mcp_approval_response", "mcp_call", "custom_tool_call",
                "custom_tool_call_output", "tool_search_call", "tool_search_output", "compaction", "program",
                "program_output")
#: Image detail levels chat completions knows ("original" is the Responses API's own).
CHAT_DETAIL = ("auto", "low", "high")


# --- input items -> chat messages ---------------------------------------------------


def chat_messages(items: list[Any], first: int = 0) -> list[dict[str, Any]]:
    """The chat messages for ``items``; ``first`` numbers the first item in error messages.

    An item's place (``input[3].content[1]``) is written out only for an error: an agent
    sends its whole conversation each turn, and every item is read on the event loop."""
    messages: list[dict[str, Any]] = []
    calls_may_join = False  # a function_call right after an assistant message joins it, as chat has it
    for number, item in enumerate(items, start=first):
        if not isinstance(item, dict):
            raise invalid(f"input[{number}]", "each input item must be an object", "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, number))
            calls_may_join = messages[-1]["role"] == "assistant"
        elif kind == "function_call":
            call = _function_call(item, number)
            if calls_may_join:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            calls_may_join = True
        elif kind == "function_call_output":
            messages.append(_function_output(item, number))
            calls_may_join = False
        elif kind == "reasoning":
            continue  # see the module's docstring
        elif kind == "item_reference":
            raise invalid(f"input[{number}]", "item references cannot be resolved by the gateway; send the item "
                                              "itself, or continue a stored response with previous_response_id",
                          "unsupported_parameter")
        elif kind in HOSTED_ITEMS:
            raise invalid(f"input[{number}].type", f"{kind!r} items belong to tools that OpenAI hosts, which the "
                                                   "gateway cannot run; it carries messages and function calls",
                          "unsupported_parameter")
        else:
            raise invalid(f"input[{number}].type", f"{kind!r} is not an input item type the gateway knows; it "
                                                   "carries message, function_call and function_call_output items")
    return messages


def _message(item: dict[str, Any], number: int) -> dict[str, Any]:
    role = ROLES.get(item.get("role"))
    if role is None:
        raise invalid(f"input[{number}].role", "must be one of user, assistant, system, developer")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid(f"input[{number}].content", "must be a string or an array of content parts", "invalid_type")
    parts = [_part(part, role, number, index) for index, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}  # the plain form every chat upstream reads
    return {"role": role, "content": parts}


def _part(part: Any, role: str, number: int, index: int) -> dict[str, Any]:
    """One content part (``input[number].content[index]``) as chat's: text, image_url, file,
    input_audio or (assistant) refusal."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    where = f"input[{number}].content[{index}]"
    if not isinstance(part, dict):
        raise invalid(where, "each content part must be an object", "invalid_type")
    if kind in ("input_text", "output_text"):
        raise invalid(f"{where}.text", "must be a string", "invalid_type")
    if role == "assistant":
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            return {"type": "refusal", "refusal": part["refusal"]}
        raise invalid(f"{where}.type", "an assistant message holds output_text and refusal parts")
    if kind == "input_image" and role == "user":
        return _image(part, where)
    if kind == "input_file" and role == "user":
        return _file(part, where)
    if kind == "input_audio" and role == "user" and isinstance(part.get("input_audio"), dict):
        return {"type": "input_audio", "input_audio": part["input_audio"]}
    if kind in ("input_image", "input_file", "input_audio"):
        raise invalid(f"{where}.type", f"{kind} parts go in user messages; a {role} message holds text")
    raise invalid(f"{where}.type", f"{kind!r} is not a content part the gateway knows; it carries input_text, "
                                   "input_image, input_file and input_audio (and output_text for the assistant)")


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        if part.get("file_id"):
            raise invalid(f"{where}.file_id", "files uploaded to OpenAI cannot be read through the gateway; send "
                                              "the image as image_url (a URL or a data: URL)", "unsupported_parameter")
        raise invalid(f"{where}.image_url", "must be the image's URL or a data: URL")
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail in CHAT_DETAIL:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file(part: dict[str, Any], where: str) -> dict[str, Any]:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise invalid(where, "a file can be sent through the gateway only as file_data (its content, base64 "
                             "encoded), not by file_id or file_url", "unsupported_parameter")
    file = {"file_data": data}
    if isinstance(part.get("filename"), str):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _function_call(item: dict[str, Any], number: int) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    for field, value in (("call_id", call_id), ("name", name), ("arguments", arguments)):
        if not isinstance(value, str):
            raise invalid(f"input[{number}].{field}", "must be a string", "invalid_type")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _function_output(item: dict[str, Any], number: int) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"input[{number}].call_id", "must be the call_id of the function call it answers")
    if isinstance(output, list):
        output = [_output_part(part, f"input[{number}].output[{index}]") for index, part in enumerate(output)]
    elif not isinstance(output, str):
        raise invalid(f"input[{number}].output", "must be a string or an array of input_text parts",
                      "invalid_type")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _output_part(part: Any, where: str) -> dict[str, Any]:
    """A chat tool message holds text only."""
    if isinstance(part, dict) and part.get("type") == "input_text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    raise invalid(where, "a function call's output can reach a chat upstream only as text (input_text parts)",
                  "unsupported_parameter")


# --- tools, tool choice, text format -------------------------------------------------


def chat_tools(tools: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``tools`` as chat's (nested ``function``), and as a Response repeats them."""
    if not isinstance(tools, list):
        raise invalid("tools", "must be an array", "invalid_type")
    chat, echoed = [], []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            if kind is None:
                raise invalid(where, "each tool must be an object with a type")
            raise invalid(f"{where}.type", f"the gateway runs function tools only; {kind!r} is a tool that OpenAI "
                                           "hosts (or runs in its own way), which the providers behind the gateway "
                                           "cannot run. Remove it, or describe it as a function",
                          "unsupported_parameter")
        name, description, parameters, strict = (tool.get(k) for k in ("name", "description", "parameters", "strict"))
        if not isinstance(name, str) or not name:
            raise invalid(f"{where}.name", "must be the function's name")
        if description is not None and not isinstance(description, str):
            raise invalid(f"{where}.description", "must be a string", "invalid_type")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid(f"{where}.parameters", "must be a JSON schema (an object)", "invalid_type")
        if strict is not None and not isinstance(strict, bool):
            raise invalid(f"{where}.strict", "must be true or false", "invalid_type")
        function = {key: value for key, value in (("name", name), ("description", description),
                                                   ("parameters", parameters), ("strict", strict)) if value is not None}
        chat.append({"type": "function", "function": function})
        echoed.append({"type": "function", "name": name, "description": description, "parameters": parameters,
                       "strict": strict})
    return chat, echoed


def chat_tool_choice(choice: Any) -> str | dict[str, Any]:
    """``tool_choice`` as chat's: the same words, or a function named in chat's nested form."""
    if choice in ("none", "auto", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools" and choice.get("mode") in ("auto", "required") and isinstance(choice.get("tools"), list):
        allowed = []
        for index, tool in enumerate(choice["tools"]):
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
                raise invalid(f"tool_choice.tools[{index}]", "the gateway can allow function tools only, each as "
                                                            "{'type': 'function', 'name': ...}")
            allowed.append({"type": "function", "function": {"name": tool["name"]}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice["mode"], "tools": allowed}}
    raise invalid("tool_choice", "must be none, auto, required, {'type': 'function', 'name': ...} or allowed_tools "
                                 "of functions; tools that OpenAI hosts cannot be chosen through the gateway")


def response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format`` (None for plain text)."""
    form = text.get("format")
    if form is None:
        return None
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise invalid("text.format.type", "must be text, json_object or json_schema")
    name, schema = form.get("name"), form.get("schema")
    if not isinstance(name, str) or not name:
        raise invalid("text.format.name", "must name the schema")
    if not isinstance(schema, dict):
        raise invalid("text.format.schema", "must be a JSON schema (an object)", "invalid_type")
    json_schema = {"name": name, "schema": schema}
    for key in ("strict", "description"):
        if form.get(key) is not None:
            json_schema[key] = form[key]
    return {"type": "json_schema", "json_schema": json_schema}
