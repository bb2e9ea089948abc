#!/usr/bin/env python3
"""Checks a running moe-server's HTTP API with the official `openai` Python client.

Issue 3 asks that the client works unchanged. This is a tools-only check (ctest has no
Python): start the server, then

    python3 -m venv /tmp/openai-venv && /tmp/openai-venv/bin/pip install openai
    moe-server --http-port 8000 &            # the default model
    /tmp/openai-venv/bin/python tools/openai_client_check.py --base-url http://127.0.0.1:8000/v1

Exit status 0 when every check passes; each check prints one line.
"""

import argparse
import json
import sys
import urllib.request

import openai


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="served model name (default: the first listed)")
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0)
    failures = []

    def check(name, condition, detail=""):
        print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail else ""))
        if not condition:
            failures.append(name)

    models = client.models.list()
    model = args.model or models.data[0].id
    check("models.list", any(m.id == model for m in models.data), [m.id for m in models.data])
    check("models.retrieve", client.models.retrieve(model).id == model)

    c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8,
                                  temperature=0, extra_body={"ignore_eos": True})
    check("completions.create", c.object == "text_completion" and c.usage.completion_tokens == 8
          and c.choices[0].finish_reason == "length", repr(c.choices[0].text))

    root = args.base_url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(root + "/tokenize", data=json.dumps(
        {"prompt": "Once upon a time"}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        ids = json.load(response)
    c_ids = client.completions.create(model=model, prompt=ids["tokens"], max_tokens=8,
                                      temperature=0, extra_body={"ignore_eos": True})
    check("completions.create with token ids", c_ids.choices[0].text == c.choices[0].text)

    text, last = "", None
    finish = None
    for chunk in client.completions.create(model=model, prompt="Once upon a time", max_tokens=8,
                                           temperature=0, stream=True,
                                           stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True}):
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        last = chunk
    check("completions.create stream", text == c.choices[0].text and last.usage is not None
          and last.usage.completion_tokens == 8 and not last.choices and finish == "length")

    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Tell me a story."}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=12,
                                       temperature=0)
    check("chat.completions.create", r.object == "chat.completion"
          and r.choices[0].message.role == "assistant", repr(r.choices[0].message.content))

    content, role, usage = "", None, None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        role = role or delta.role
        content += delta.content or ""
    check("chat.completions.create stream", role == "assistant"
          and content == (r.choices[0].message.content or "") and usage is not None
          and usage.total_tokens == r.usage.total_tokens)

    try:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=1)
        check("unknown model is NotFoundError", False)
    except openai.NotFoundError as e:
        check("unknown model is NotFoundError", e.status_code == 404
              and e.body.get("code") == "model_not_found", e.message)
    try:
        client.completions.create(model=model, prompt="hi", top_p=1.5)
        check("bad top_p is BadRequestError", False)
    except openai.BadRequestError as e:
        check("bad top_p is BadRequestError", e.status_code == 400
              and e.body.get("param") == "top_p", e.message)

    print("all checks passed" if not failures else f"{len(failures)} failed: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
