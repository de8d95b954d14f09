"""``idsvc app-password add | list | revoke`` on both backends: the secret printed once, a list
without secrets, ``idsvc auth test`` accepting the app password only for its service, and a
revoked one refused; errors are one line with the documented exit codes."""

from __future__ import annotations

from tests.integration.test_cli import PW_LINE, Cli, cli_fixture, one_clear_line

__all__ = ["cli_fixture"]  # the "cli" fixture: both backends


def test_app_password_lifecycle(cli: Cli) -> None:
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PW_LINE)
    made = cli.json(
        "app-password", "add", "alice@example.org", "scanner", "--service", "smtp",
        "--expires", "30d",
    )  # fmt: skip
    secret = made["secret"]
    assert made["services"] == ["smtp"]
    assert made["expires"] is not None
    listed = cli.json("app-password", "list", "alice@example.org")["items"]
    assert [i["id"] for i in listed] == [made["id"]]
    assert secret not in str(listed)
    table = cli.ok("app-password", "list", "alice@example.org")
    assert "scanner" in table
    assert secret not in table

    def auth(service: str) -> int:
        return cli.run(
            "auth", "test", "alice@example.org", "--service", service, "--password-stdin",
            stdin=secret + "\n",
        ).returncode  # fmt: skip

    assert auth("smtp") == 0
    assert auth("imap") == 1
    assert cli.ok("app-password", "revoke", "alice@example.org", made["id"]).startswith(
        f"app password {made['id']} (scanner) revoked"
    )
    assert auth("smtp") == 1

    missing = cli.run("app-password", "revoke", "alice@example.org", "ffffffffffffffff")
    assert missing.returncode == 1
    one_clear_line(missing.stderr)
    bad = cli.run("app-password", "add", "alice@example.org", "x", "--network", "nope")
    assert bad.returncode == 2
    one_clear_line(bad.stderr)
    nobody = cli.run("app-password", "add", "nobody@example.org", "x")
    assert nobody.returncode == 1
