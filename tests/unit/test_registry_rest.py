"""Which tracking URIs the plain-HTTP registry reader takes, and how it reads errors."""

from __future__ import annotations

import pytest

from modelcanary.registry_rest import RestModelReader, _error


@pytest.mark.parametrize(
    "uri",
    [
        "https://mlflow.example.com",
        "sqlite:////tmp/mlflow.db",
        "file:///tmp/mlruns",
        "databricks",
        "http://",
        "http://host:notaport",
        "http://host:5000?x=1",
    ],
)
def test_the_client_keeps_everything_but_plain_http(uri: str) -> None:
    assert RestModelReader.for_uri(uri, 5.0) is None


def test_plain_http_with_a_path_prefix_is_read_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    reader = RestModelReader.for_uri("http://mlflow.internal:5000/mlflow/", 5.0)
    assert reader is not None
    assert (reader.host, reader.port) == ("mlflow.internal", 5000)
    assert RestModelReader.for_uri("http://mlflow.internal", 5.0).port == 80  # type: ignore[union-attr]


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME"])
def test_credentials_in_the_environment_leave_it_to_the_client(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "secret")
    assert RestModelReader.for_uri("http://127.0.0.1:5000", 5.0) is None


def test_an_mlflow_error_answer_keeps_its_code_and_message() -> None:
    body = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model x not found"}'
    error = _error(404, body)
    assert error.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert error.message == "Model x not found"


def test_an_error_answer_that_is_not_mlflows_says_the_status() -> None:
    error = _error(502, b"<html>Bad Gateway</html>")
    assert error.error_code == "INTERNAL_ERROR"
    assert "HTTP 502" in error.message and "Bad Gateway" in error.message
    assert _error(500, b'{"error_code": "NO_SUCH_CODE", "message": "m"}').error_code == (
        "INTERNAL_ERROR"
    )
