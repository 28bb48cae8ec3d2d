"""Bearer tokens come from a file or the environment, never argv, and not in plaintext to a
non-loopback address unless asked for."""

from __future__ import annotations

import pytest

from edge_server.__main__ import parse_args
from splitnet.tokens import TOKEN_ENV, host_of, is_loopback, read_token


def test_token_on_the_command_line_is_refused_with_the_alternatives(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--token", "s3cret"])
    message = capsys.readouterr().err
    assert "--token-file" in message and TOKEN_ENV in message and "ps" in message


def test_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert read_token(None) == "from-env"
    secret = tmp_path / "token"
    secret.write_text("  from-file\n")
    assert read_token(secret) == "from-file"  # the file wins
    options, _ = parse_args(["--token-file", str(secret)])
    assert options.token == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_a_token_over_plaintext_is_refused_off_loopback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    assert parse_args(["--address", "127.0.0.1:0"])[0].token == "s3cret"
    with pytest.raises(SystemExit):
        parse_args(["--address", "0.0.0.0:50051"])
    assert "plaintext" in capsys.readouterr().err
    assert parse_args(["--address", "0.0.0.0:50051", "--insecure"])[0].token == "s3cret"
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    assert parse_args(["--address", "0.0.0.0:50051", "--tls-cert", str(cert),
                       "--tls-key", str(cert)])[0].token == "s3cret"


def test_device_refuses_a_plaintext_token_to_a_remote_edge(monkeypatch, capsys):
    from device_client.__main__ import main

    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with pytest.raises(SystemExit):
        main(["--edge", "10.0.0.5:50051,127.0.0.1:50051", "--n", "1"])
    assert "10.0.0.5" in capsys.readouterr().err


def test_hosts_and_loopback():
    assert [host_of(t) for t in ("10.0.0.1:1", "[::1]:2", "dns:///edge.local:3")] == [
        "10.0.0.1", "[::1]", "edge.local"]
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("edge.local")
