"""Secrets never reach a log line, whatever path they take into it."""

from __future__ import annotations

import io
import json
import logging

import pytest

from doraforwarder.logging import SecretRedactor, configure_logging, get_logger

SECRET = "tok_0123456789abcdef"


@pytest.mark.parametrize(
    "value",
    [
        SECRET,
        f"prefix {SECRET} suffix",
        {"headers": {"Authorization": f"Bearer {SECRET}"}},
        [f"x{SECRET}y"],
        f"Authorization: Bearer {SECRET}",
        ("tuple", SECRET),
        ValueError(f"failed with {SECRET}"),
    ],
)
def test_redactor_masks_secret_everywhere(value: object) -> None:
    redactor = SecretRedactor([SECRET])
    assert SECRET not in json.dumps(redactor.redact(value), default=str)


def test_unregistered_bearer_and_authorization_values_are_masked() -> None:
    redactor = SecretRedactor()
    text = redactor.redact_text('{"Authorization": "Bearer abc.def-ghi"} authorization=xyz123')
    assert "abc.def-ghi" not in text and "xyz123" not in text


def test_structlog_and_stdlib_lines_are_redacted_and_carry_component() -> None:
    stream = io.StringIO()
    configure_logging(level="debug", log_format="json", secrets=[SECRET], stream=stream)
    get_logger("devlake").info("posting", headers={"Authorization": f"Bearer {SECRET}"},
                               url=f"https://x/?token={SECRET}")
    logging.getLogger("kubernetes.client").warning("error with %s", SECRET)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        get_logger("argocd").exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["component"] for line in lines] == ["devlake", "kubernetes", "argocd"]
    assert SECRET not in stream.getvalue()
