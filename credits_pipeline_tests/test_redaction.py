"""The one redaction: what of a URL, or of an error text quoting one, may be shown or recorded."""

from __future__ import annotations

import pytest

from credits_pipeline import settings
from credits_pipeline.alerts.channels import redact_http_url
from credits_pipeline.redaction import MASK, is_sensitive_param, redact_text, redact_url, secrets_of

SECRET = "SeCrEt123"


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "PASSWORD",
        "passwd",
        "pwd",
        "sslkey",
        "sslpassword",
        "token",
        "secret",
        "access_token",
        "api_key",
        "Key",
        "client_secret",
        "X-Api-Key",
        "sig",
    ],
)
def test_every_credential_parameter_is_recognised_whatever_its_case(name):
    assert is_sensitive_param(name)


@pytest.mark.parametrize(
    "name", ["sslmode", "charset", "connect_timeout", "application_name", "options"]
)
def test_ordinary_parameters_are_kept_readable(name):
    assert not is_sensitive_param(name)


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/syllaby_v2?password={SECRET}",
            f"postgresql+psycopg://127.0.0.1:5432/syllaby_v2?password={MASK}",
        ),
        (
            (
                f"mysql+pymysql://app:{SECRET}@db.internal:3306/syllaby_v2"
                f"?charset=utf8mb4&PWD={SECRET}"
            ),
            f"mysql+pymysql://db.internal:3306/syllaby_v2?PWD={MASK}&charset=utf8mb4",
        ),
        (
            f"postgresql://h/db?sslmode=verify-full&sslkey=/keys/{SECRET}.pem&sslpassword={SECRET}",
            f"postgresql://h/db?sslkey={MASK}&sslmode=verify-full&sslpassword={MASK}",
        ),
        ("sqlite:///data/syllaby_v2_demo.sqlite", "sqlite:///data/syllaby_v2_demo.sqlite"),
        ("not a url at all", "<unparseable URL>"),
    ],
)
def test_a_database_url_keeps_where_it_points_and_loses_every_credential(url, expected):
    assert redact_url(url) == expected
    assert settings.redact_url(url) == expected  # settings delegates: one redaction
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"https://hooks.slack.com/services/T000/B000/{SECRET}", "https://hooks.slack.com"),
        (
            f"https://user:{SECRET}@alerts.example.com:8443/hook?token={SECRET}&team=ops",
            "https://alerts.example.com:8443",
        ),
        (f"http://127.0.0.1:9000/webhook/{SECRET}", "http://127.0.0.1:9000"),
    ],
)
def test_a_webhook_url_is_shown_as_its_origin_because_its_path_is_the_secret(url, expected):
    assert redact_url(url) == expected
    assert redact_http_url(url) == expected  # the alert channels share it


def test_a_driver_error_quoting_the_connection_string_loses_its_secrets():
    url = f"postgresql+psycopg://postgres@127.0.0.1:1/db?password={SECRET}"
    echoed = (
        f'connection to "postgresql://postgres:{SECRET}@127.0.0.1:1/db" failed; '
        f"dsn: host=127.0.0.1 port=1 user=postgres password={SECRET} dbname=db; "
        f"url was {url}"
    )
    cleaned = redact_text(echoed, [url])
    assert SECRET not in cleaned
    assert "127.0.0.1" in cleaned and "port=1" in cleaned  # still says where it failed


def test_a_secret_echoed_outside_any_url_is_found_from_the_url_given():
    url = f"mysql://root:{SECRET}@127.0.0.1:3306/db"
    assert (
        redact_text(f"Access denied (using {SECRET!r})", [url]) == f"Access denied (using '{MASK}')"
    )


def test_a_percent_encoded_password_is_found_in_both_spellings():
    url = "mysql+pymysql://root:p%40ss%2Fword@h/db"
    assert {"p%40ss%2Fword", "p@ss/word"} <= secrets_of(url)
    assert "p@ss/word" not in redact_text("login with p@ss/word refused", [url])


def test_text_without_secrets_is_left_as_it_was():
    message = "syllaby_v2.users: column plan_id is missing from the source table"
    assert redact_text(message) == message
