"""Secrets in broker URLs never leak: every URL form through every path (reprs,
str, format, dumps, config errors, BrokerUnavailable and its traceback,
/health, ``taskserve check``, log records), for every plugin's URL fields.
The engines still receive the real URL."""

from __future__ import annotations

import io
import json
import logging
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taskserve import (
    REVEAL_SECRETS,
    BrokerUnavailable,
    ConfigError,
    SecretUrl,
    TaskProcessorConfig,
    redact_url,
    secret_value,
)
from taskserve.cli import main
from taskserve.http import create_task_app
from taskserve.registry import resolve_adapter

SECRET = "hunter2x"

# Every form a password takes in a URL: (name, redis URL, amqp URL or None).
FORMS: dict[str, tuple[str, str | None]] = {
    "userinfo": (f"redis://:{SECRET}@127.0.0.1:1/0", f"amqp://guest:{SECRET}@127.0.0.1:1//"),
    "user-and-password": (f"redis://default:{SECRET}@127.0.0.1:1/0", None),
    "percent-encoded @ / %": (
        f"redis://:a%40b%2Fc%25-{SECRET}@127.0.0.1:1/0",
        f"amqp://guest:a%40b%2F-{SECRET}@127.0.0.1:1//",
    ),
    "query password": (f"redis://127.0.0.1:1/0?password={SECRET}", None),
    "unix socket query password": (f"unix:///nonexistent/redis.sock?db=0&password={SECRET}", None),
}
# Forms no client parses (raw '@' and '/' in the password, odd parameter names):
# still never shown, in configs and their dumps.
CONFIG_ONLY_FORMS: dict[str, str] = {
    "raw @ / % in the password": f"redis://user:p@ss/w%rd-{SECRET}@127.0.0.1:1/0",
    "passwd": f"redis://127.0.0.1:1/0?passwd={SECRET}",
    "pass": f"redis://127.0.0.1:1/0?db=1&pass={SECRET}",
    "token": f"rediss://127.0.0.1:1/0?token={SECRET}&ssl_cert_reqs=none",
    "secret": f"redis://127.0.0.1:1/0?secret={SECRET}",
    "access_key": f"redis://127.0.0.1:1/0?access_key={SECRET}#frag",
    "bare token userinfo": f"redis://{SECRET}@127.0.0.1:1/0",
}

# plugin alias -> {url field: which URL kind it takes}
FIELDS: dict[str, dict[str, str]] = {
    "celery": {"broker_url": "both", "backend_url": "redis"},
    "dramatiq": {"broker_url": "both", "state_url": "redis"},
    "rq": {"redis_url": "redis"},
}


def _adapter_config(alias: str, field: str, url: str) -> dict[str, Any]:
    redis_url = "redis://127.0.0.1:1/0"
    if alias == "celery":
        base = {"broker_url": redis_url}
        if url.startswith("amqp"):
            base["backend_url"] = redis_url
    elif alias == "dramatiq":
        base = {"broker_url": redis_url, "state_url": redis_url}
    else:
        base = {}
    return {**base, field: url}


def _cases(runtime: bool) -> list[Any]:
    cases = []
    for alias, fields in FIELDS.items():
        for field, kinds in fields.items():
            for form, (redis_url, amqp_url) in FORMS.items():
                if not (
                    redis_url.startswith("unix") and alias == "celery" and field == "broker_url"
                ):
                    cases.append(
                        pytest.param(alias, field, redis_url, id=f"{alias}-{field}-{form}")
                    )
                if kinds == "both" and amqp_url:
                    cases.append(
                        pytest.param(alias, field, amqp_url, id=f"{alias}-{field}-amqp-{form}")
                    )
            if not runtime:
                for form, url in CONFIG_ONLY_FORMS.items():
                    if not (alias == "celery" and field == "broker_url" and "rediss" in url):
                        cases.append(pytest.param(alias, field, url, id=f"{alias}-{field}-{form}"))
    return cases


def _config(alias: str, field: str, url: str) -> TaskProcessorConfig:
    pytest.importorskip(f"taskserve_{alias}")
    return TaskProcessorConfig(
        queue_name="secrets",
        adapter=alias,
        adapter_config=_adapter_config(alias, field, url),
        max_retries=0,
    )


def _clean(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, text


@pytest.mark.parametrize("url", [f for f, _ in FORMS.values()] + list(CONFIG_ONLY_FORMS.values()))
def test_redact_url_hides_every_form(url: str) -> None:
    _clean(redact_url(url), redact_url(f"error talking to '{url}': refused"))
    secret = SecretUrl(url)
    percent = "%s" % secret  # noqa: UP031 - what logging does with its arguments
    _clean(repr(secret), str(secret), f"{secret}", percent, f"{secret!s:>80}")
    assert secret.get_secret_value() == url == secret_value(secret)


@pytest.mark.parametrize(("alias", "field", "url"), _cases(runtime=False))
def test_configs_never_show_the_secret(alias: str, field: str, url: str) -> None:
    config = _config(alias, field, url)
    settings = config.adapter_config
    value = getattr(settings, field)
    _clean(
        repr(config),
        str(config),
        repr(settings),
        str(settings),
        repr(value),
        str(value),
        f"{value}",
        str(config.model_dump()),
        str(config.model_dump(mode="json")),
        config.model_dump_json(),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        repr(resolve_adapter(alias)(config)),
    )
    # The engines' view, and a dump that says it carries the secrets.
    assert secret_value(value) == url
    revealed = config.model_dump(mode="json", context=REVEAL_SECRETS)
    assert revealed["adapter_config"][field] == url
    again = TaskProcessorConfig(**config.model_dump())
    assert secret_value(getattr(again.adapter_config, field)) == url
    with pytest.raises(ConfigError) as bad:
        TaskProcessorConfig(
            queue_name="secrets",
            adapter=alias,
            adapter_config={**_adapter_config(alias, field, url), "bogus": url},
        )
    _clean(str(bad.value))


def _expect_unavailable(call: Callable[[], Any]) -> BrokerUnavailable:
    with pytest.raises(BrokerUnavailable) as info:
        call()
    return info.value


@pytest.mark.parametrize(("alias", "field", "url"), _cases(runtime=True))
def test_failures_never_show_the_secret(
    alias: str, field: str, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(alias, field, url)
    caplog.set_level(logging.DEBUG)
    adapter = resolve_adapter(alias)(config)
    try:
        error = _expect_unavailable(lambda: adapter.enqueue_task_sync("t", [1]))
        report = adapter.health_check_sync()
    finally:
        adapter.shutdown()
    assert not report.healthy
    _clean(str(error), repr(error), "".join(traceback.format_exception(error)), report.detail)
    with TestClient(create_task_app(config)) as http:
        health = http.get("/health")
        submit = http.post("/submit", json={"task_name": "t"})
    assert health.status_code == submit.status_code == 503
    _clean(health.text, submit.text)
    out, err = io.StringIO(), io.StringIO()
    text = json.dumps(config.model_dump(mode="json", context=REVEAL_SECRETS))
    with redirect_stderr(err):
        status = main(["check", "--config", text], out=out)
    assert status == 1
    _clean(out.getvalue(), err.getvalue())
    for record in caplog.records:
        _clean(record.getMessage(), record.exc_text or "")
