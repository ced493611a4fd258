"""Reference renderer: Python jinja2 configured exactly as transformers' apply_chat_template.

Reads JSON on stdin: {"template", "messages", "add_generation_prompt", "bos_token"?, "eos_token"?,
"extra"?} and writes the rendered text to stdout (exit 1 with the error on stderr if it raises),
or a JSON array of such cases, answered by a JSON array of {"text": ...} or {"error": ...}.
Mirrors transformers.utils.chat_template_utils._compile_jinja_template and render_jinja_template
(minus the AssistantTracker extension, which only matters for {% generation %} blocks).
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now


def render(case):
    kwargs = {}
    for key in ("bos_token", "eos_token"):
        if case.get(key) is not None:
            kwargs[key] = case[key]
    kwargs.update(case.get("extra") or {})
    return env.from_string(case["template"]).render(
        messages=case["messages"],
        tools=None,
        documents=None,
        add_generation_prompt=case.get("add_generation_prompt", True),
        **kwargs,
    )


def main():
    request = json.load(sys.stdin)
    if isinstance(request, list):
        results = []
        for case in request:
            try:
                results.append({"text": render(case)})
            except Exception as e:  # noqa: BLE001 (the error is the answer)
                results.append({"error": f"{type(e).__name__}: {e}"})
        json.dump(results, sys.stdout)
        return
    try:
        sys.stdout.write(render(request))
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"{type(e).__name__}: {e}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
