"""Chat templates (Jinja2, as stored in GGUF ``tokenizer.chat_template``)."""

from __future__ import annotations

from typing import Any, Sequence

from pyruntime.errors import InvalidArgumentError


def render_chat(
    template: str,
    messages: Sequence[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` with ``template`` in a sandbox (templates come from model files)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InvalidArgumentError(f"message {i} must be a dict with 'role' and 'content'")

    def raise_exception(msg: str) -> Any:
        raise InvalidArgumentError(f"chat template: {msg}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=list(messages),
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except TemplateError as e:
        raise InvalidArgumentError(f"chat template failed: {e}") from e
