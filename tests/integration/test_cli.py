"""The real ``idsvc`` console script, run as a subprocess against the embedded store and real slapd.

Every test writes its own TOML file and points ``IDSVC_CONFIG`` at it; nothing touches the
user's or the system's default store. Backends: ``embedded`` (a SQLite file in tmp_path) and
``ldap`` (the session slapd from tests/fixtures/slapd.py, a fresh subtree per test, reader and
writer passwords handed over through ``*_password_file`` settings).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from idsvc import errors
from idsvc.cli import common
from idsvc.errors import InvalidInput
from tests.fixtures.slapd import SlapdServer, find_binary

IDSVC = Path(sys.executable).with_name("idsvc")
PASSWORD = "s3cret pass phrase"
PW_LINE = PASSWORD + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def render_toml(data: dict[str, dict[str, Any]]) -> str:
    """``{"a.b": {"k": v}}`` → ``[a.b]\\nk = v`` (enough for test configs)."""
    out = []
    for table, values in data.items():
        out.append(f"[{table}]")
        out.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        out.append("")
    return "\n".join(out)


@dataclass
class Cli:
    """Runs ``idsvc`` with one config file and a clean environment."""

    workdir: Path
    config: dict[str, dict[str, Any]]
    backend: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.workdir / "idsvc.toml"

    def write_config(self) -> Path:
        self.config_path.write_text(render_toml(self.config), encoding="utf-8")
        return self.config_path

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "XDG_DATA_HOME": str(self.workdir / "data"),
            "XDG_RUNTIME_DIR": str(self.workdir / "run"),
            "LANG": "C.UTF-8",
            "IDSVC_CONFIG": str(self.write_config()),
        }
        if os.environ.get("PYTHONPATH"):  # the tree under test, not whatever is installed
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update(self.extra_env)
        return env

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        if not IDSVC.exists():
            pytest.fail(f"{IDSVC} is missing: install the package (scripts/bootstrap)")
        return subprocess.run(
            [str(IDSVC), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok("--json", *args, stdin=stdin))


def base_config(workdir: Path) -> dict[str, dict[str, Any]]:
    """Fast, quiet settings: no failure delay or penalties, cheap hashes, sockets in workdir."""
    return {
        "directory": {"backend": "embedded"},
        "directory.embedded": {"path": str(workdir / "store" / "idsvc.db"), "busy_timeout": 1.0},
        "passwords": {"scheme": "SHA512-CRYPT"},
        "auth": {"failure_delay": 0, "penalty": False},
        "saslauthd.socket": {"path": str(workdir / "run" / "mux")},
        "dovecot_auth.socket": {"path": str(workdir / "run" / "auth-client")},
        "api": {
            "enabled": False,
            "bootstrap_token_file": str(workdir / "state" / "admin.token"),
            "state_path": str(workdir / "state" / "state.db"),
        },
    }


def ldap_config(server: SlapdServer, base_dn: str, workdir: Path) -> dict[str, Any]:
    """The [directory.ldap] table for ``server``; passwords go through 0600 files."""
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    reader, writer = secrets_dir / "reader.pw", secrets_dir / "writer.pw"
    for path, value in ((reader, server.reader_pw), (writer, server.writer_pw)):
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)
    return {
        "uris": [server.uri],
        "base_dn": base_dn,
        "bind_dn": server.reader_dn,
        "bind_password_file": str(reader),
        "writer_dn": server.writer_dn,
        "writer_password_file": str(writer),
        "connect_timeout": 2.0,
        "timeout": 5.0,
        "retry_after": 0.5,
    }


_subtree = iter(range(1, 1_000_000))


@pytest.fixture(params=["embedded", "ldap"], name="cli")
def cli_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """``Cli`` on each backend in turn (shared with test_cli_serve.py)."""
    config = base_config(tmp_path)
    if request.param == "ldap":
        server: SlapdServer = request.getfixturevalue("slapd")
        base = server.new_subtree(f"cli{next(_subtree)}-{os.getpid()}")
        config["directory"] = {"backend": "ldap"}
        config["directory.ldap"] = ldap_config(server, base, tmp_path)
    return Cli(tmp_path, config, request.param)


@pytest.fixture(name="embedded_cli")
def embedded_cli_fixture(tmp_path: Path) -> Cli:
    return Cli(tmp_path, base_config(tmp_path), "embedded")


def one_clear_line(stderr: str) -> str:
    """The error output is exactly one line, prefixed ``idsvc:``, without a traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("idsvc: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- the main path ----------------------------------------------------------------------------


def test_domain_user_and_auth_test(cli: Cli) -> None:
    cli.ok("domain", "add", "Example.ORG")
    out = cli.ok("user", "add", "Alice@Example.org", "--password-stdin", stdin=PW_LINE)
    assert "alice@example.org" in out

    good = cli.run("auth", "test", "ALICE@example.org", "--password-stdin", stdin=PW_LINE)
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    assert "alice@example.org" in good.stdout  # the canonical name, not what was typed

    bad = cli.run("auth", "test", "alice@example.org", "--password-stdin", stdin="wrong\n")
    assert bad.returncode == 1
    assert "mismatch" in bad.stdout

    unknown = cli.run("--json", "auth", "test", "bob@example.org", "--password-stdin", stdin="x\n")
    assert unknown.returncode == 1
    data = json.loads(unknown.stdout)
    assert data["outcome"] == "unknown_user"
    assert set(data) >= {"outcome", "user", "elapsed", "cached"}


def test_json_output_and_paging(cli: Cli) -> None:
    cli.ok("domain", "add", "example.org", "--default-quota", "1G")
    for i in range(5):
        cli.ok(
            "user", "add", f"u{i}@example.org", "--password-stdin", stdin=f"passphrase number {i}\n"
        )

    domains = cli.json("domain", "list")
    assert [d["name"] for d in domains["items"]] == ["example.org"]
    assert domains["items"][0]["default_quota"] == 1024**3

    page = cli.json("user", "list", "example.org", "--limit", "2")
    assert [u["address"] for u in page["items"]] == ["u0@example.org", "u1@example.org"]
    assert page["next_cursor"]
    rest = cli.json("user", "list", "example.org", "--limit", "2", "--cursor", page["next_cursor"])
    assert [u["address"] for u in rest["items"]] == ["u2@example.org", "u3@example.org"]

    everything = cli.json("user", "list", "--all", "--limit", "2")  # walks three pages
    assert [u["address"] for u in everything["items"]] == [f"u{i}@example.org" for i in range(5)]
    assert everything["total"] == 5
    assert everything["next_cursor"] is None
    assert all("password_hash" not in u for u in everything["items"])

    table = cli.ok("user", "list", "--all", "--limit", "2").splitlines()
    assert table[0].split()[0] == "ADDRESS"
    assert len(table) == 6

    prefixed = cli.json("user", "list", "--prefix", "u3")
    assert [u["address"] for u in prefixed["items"]] == ["u3@example.org"]

    shown = cli.json("user", "show", "U4@EXAMPLE.ORG")
    assert shown["address"] == "u4@example.org"
    assert shown["quota"] == 1024**3  # inherited from the domain's default quota


def test_user_set_passwd_disable_enable(cli: Cli, tmp_path: Path) -> None:
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "carol@example.org", "--password-stdin", stdin=PW_LINE)
    changed = cli.json(
        "user", "set", "carol@example.org", "--quota", "500M", "--services", "smtp,imap",
        "--name", "Carol C",
    )  # fmt: skip
    assert changed["quota"] == 500 * 1024**2
    assert changed["services"] == ["imap", "smtp"]
    assert changed["display_name"] == "Carol C"

    pop = cli.run(
        "auth", "test", "carol@example.org", "--service", "pop3", "--password-stdin",
        stdin=PW_LINE,
    )  # fmt: skip
    assert pop.returncode == 1
    assert "disabled" in pop.stdout  # not enabled for pop3

    new_pw = tmp_path / "new.pw"
    new_pw.write_text("another secret\n", encoding="utf-8")
    cli.ok("user", "passwd", "carol@example.org", "--password-file", str(new_pw))
    old = cli.run("auth", "test", "carol@example.org", "--password-stdin", stdin=PW_LINE)
    assert old.returncode == 1
    cli.ok("auth", "test", "carol@example.org", "--password-file", str(new_pw))

    cli.ok("user", "disable", "carol@example.org")
    off = cli.run("--json", "auth", "test", "carol@example.org", "--password-file", str(new_pw))
    assert off.returncode == 1
    assert json.loads(off.stdout)["outcome"] == "disabled"
    cli.ok("user", "enable", "carol@example.org")
    cli.ok("auth", "test", "carol@example.org", "--password-file", str(new_pw))


def test_aliases_and_domain_deletion(cli: Cli) -> None:
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "dave@example.org", "--password-stdin", stdin=PW_LINE)
    cli.ok("alias", "add", "Info@Example.org", "dave@example.org", "team@other.example")
    cli.ok("alias", "add", "@example.org", "dave@example.org")
    aliases = cli.json("alias", "list", "example.org")
    by_source = {a["source"]: a["destinations"] for a in aliases["items"]}
    assert by_source == {
        "@example.org": ["dave@example.org"],
        "info@example.org": ["dave@example.org", "team@other.example"],
    }
    cli.ok("alias", "del", "info@example.org")
    assert cli.run("alias", "show", "info@example.org").returncode == 1

    busy = cli.run("domain", "del", "example.org")
    assert busy.returncode == 3
    one_clear_line(busy.stderr)
    cli.ok("domain", "del", "example.org", "--cascade")
    gone = cli.run("user", "show", "dave@example.org")
    assert gone.returncode == 1
    assert "does not exist" in one_clear_line(gone.stderr)


def test_import_of_an_existing_hash(cli: Cli) -> None:
    cli.ok("domain", "add", "example.org")
    stored = cli.ok("pw", "-s", "SSHA", "--password-stdin", stdin="imported pw\n").strip()
    assert stored.startswith("{SSHA}")
    verified = cli.run("pw", "-t", stored, "--password-stdin", stdin="imported pw\n")
    assert verified.returncode == 0
    assert "verified" in verified.stdout
    assert cli.run("pw", "-t", stored, "--password-stdin", stdin="nope\n").returncode == 1

    cli.ok("user", "add", "erin@example.org", "--password-hash-stdin", stdin=stored + "\n")
    cli.ok("auth", "test", "erin@example.org", "--password-stdin", stdin="imported pw\n")

    corrupt = cli.run(
        "user", "add", "fred@example.org", "--password-hash-stdin", stdin="{SSHA}%%%\n"
    )
    assert corrupt.returncode == 2
    one_clear_line(corrupt.stderr)


MD5_OF_PASSWORD = "{MD5}X03MO1qnZdYdgyfeuILPmQ=="  # base64 MD5 of "password", OpenLDAP style


def test_cli_password_policy(cli: Cli, tmp_path: Path) -> None:
    """Hardening item 4 at the CLI: ``user add``/``user passwd`` refuse what the policy refuses
    (exit 2, one line naming the rule, never the password); cleartext and unsalted imports are
    refused until the migration switch is on; an allowed {PLAIN} import is hashed."""
    cli.ok("domain", "add", "example.org")
    for password, rule in (
        ("short", "min_length"),
        ("password1234", "blocklist"),
        ("tab\tinside the password", "control_characters"),
        ("kim@example.org", "context"),
    ):
        result = cli.run(
            "user", "add", "kim@example.org", "--password-stdin", stdin=password + "\n"
        )
        assert result.returncode == 2, (password, result.stderr)
        line = one_clear_line(result.stderr)
        assert f"password policy ({rule})" in line
        assert password not in line
    cli.ok("user", "add", "kim@example.org", "--password-stdin", stdin=PW_LINE)
    bad = tmp_path / "bad.pw"
    bad.write_text("x" * 11 + "\n", encoding="utf-8")
    result = cli.run("user", "passwd", "kim@example.org", "--password-file", str(bad))
    assert result.returncode == 2
    assert "password policy (min_length)" in one_clear_line(result.stderr)
    cli.ok("auth", "test", "kim@example.org", "--password-stdin", stdin=PW_LINE)

    for weak in (MD5_OF_PASSWORD, "{PLAIN}legacy secret"):
        for args in (
            ("user", "add", "lee@example.org", "--password-hash-stdin"),
            ("user", "passwd", "kim@example.org", "--password-hash-stdin"),
        ):
            result = cli.run(*args, stdin=weak + "\n")
            assert result.returncode == 2, (args, result.stderr)
            line = one_clear_line(result.stderr)
            assert "password policy (hash_scheme)" in line
            assert "allow_weak_imports" in line
            assert weak.partition("}")[2] not in line
    cli.ok("auth", "test", "kim@example.org", "--password-stdin", stdin=PW_LINE)

    cli.config["passwords"]["allow_weak_imports"] = True  # the migration switch
    cli.ok(
        "user", "passwd", "kim@example.org", "--password-hash-stdin", stdin=MD5_OF_PASSWORD + "\n"
    )
    cli.ok("auth", "test", "kim@example.org", "--password-stdin", stdin="password\n")
    cli.ok(
        "user", "add", "lee@example.org", "--password-hash-stdin", stdin="{PLAIN}legacy secret\n"
    )
    cli.ok("auth", "test", "lee@example.org", "--password-stdin", stdin="legacy secret\n")


# -- errors and exit codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["a..b@example.org", "no-domain", "x@-bad-.org", "ünï@example.org", "a@b@c.org"]
)
def test_invalid_address_is_exit_2_with_one_line(embedded_cli: Cli, address: str) -> None:
    embedded_cli.ok("domain", "add", "example.org")
    result = embedded_cli.run("user", "add", address, "--password-stdin", stdin=PW_LINE)
    assert result.returncode == 2
    one_clear_line(result.stderr)


def test_invalid_inputs_are_exit_2(cli: Cli) -> None:
    for args in (
        ("domain", "add", "bad_domain!.org"),
        ("domain", "add", "example.org", "--default-quota", "lots"),
        ("user", "list", "--limit", "0"),
        ("pw", "-s", "NO-SUCH-SCHEME", "--password-stdin"),
    ):
        result = cli.run(*args, stdin=PW_LINE)
        assert result.returncode == 2, (args, result.stderr)
        one_clear_line(result.stderr)


def test_duplicates_are_exit_3(cli: Cli) -> None:
    cli.ok("domain", "add", "example.org")
    again = cli.run("domain", "add", "EXAMPLE.org")
    assert again.returncode == 3
    one_clear_line(again.stderr)
    cli.ok("user", "add", "gina@example.org", "--password-stdin", stdin=PW_LINE)
    dup = cli.run("user", "add", "Gina@example.org", "--password-stdin", stdin=PW_LINE)
    assert dup.returncode == 3
    one_clear_line(dup.stderr)


def test_missing_objects_are_exit_1(cli: Cli) -> None:
    for args in (
        ("domain", "show", "nowhere.example"),
        ("user", "show", "nobody@nowhere.example"),
        ("alias", "del", "nothing@nowhere.example"),
    ):
        result = cli.run(*args)
        assert result.returncode == 1, (args, result.stderr)
        one_clear_line(result.stderr)
    no_domain = cli.run("user", "add", "x@nowhere.example", "--password-stdin", stdin=PW_LINE)
    assert no_domain.returncode == 1


def test_passwords_are_never_arguments(embedded_cli: Cli) -> None:
    embedded_cli.ok("domain", "add", "example.org")
    result = embedded_cli.run("user", "add", "h@example.org", "--password", "s3cret")
    assert result.returncode == 2
    # no terminal and no --password-stdin/--password-file: refused, not read from anywhere else
    result = embedded_cli.run("user", "add", "h@example.org", stdin="s3cret\n")
    assert result.returncode == 2
    assert "--password-stdin" in one_clear_line(result.stderr)
    assert embedded_cli.run("user", "show", "h@example.org").returncode == 1


def test_usage_errors_are_exit_2(embedded_cli: Cli) -> None:
    assert embedded_cli.run().returncode == 2
    assert embedded_cli.run("user").returncode == 2
    assert embedded_cli.run("user", "frobnicate").returncode == 2
    assert embedded_cli.ok("--help").startswith("usage: idsvc")


def test_locked_store_is_exit_75(embedded_cli: Cli) -> None:
    embedded_cli.ok("domain", "add", "example.org")
    embedded_cli.config["directory.embedded"]["busy_timeout"] = 0.3
    path = Path(embedded_cli.config["directory.embedded"]["path"])
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = embedded_cli.run("domain", "add", "other.example")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 75, result.stderr
    assert "lock" in one_clear_line(result.stderr).lower()
    embedded_cli.ok("domain", "add", "other.example")  # fine again once the lock is gone


def test_corrupt_store_is_a_clear_error(embedded_cli: Cli) -> None:
    path = Path(embedded_cli.config["directory.embedded"]["path"])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database, just text\n" * 200)
    for args in (("domain", "list"), ("healthcheck",)):
        result = embedded_cli.run(*args)
        assert result.returncode not in (0, 70), result
        line = one_clear_line(result.stderr)
        assert "idsvc.db" in line or "database" in line.lower()


def test_directory_down_is_exit_75(tmp_path: Path) -> None:
    if find_binary("slapd") is None:
        pytest.skip("slapd is not installed")  # a failure under CI=true (tests/fixtures/ci.py)
    server = SlapdServer(tmp_path / "slapd", tls=False)
    try:
        server.start()
        base = server.new_subtree("down")
        config = base_config(tmp_path)
        config["directory"] = {"backend": "ldap"}
        config["directory.ldap"] = ldap_config(server, base, tmp_path)
        cli = Cli(tmp_path, config, "ldap")
        cli.ok("domain", "add", "example.org")
        cli.ok("user", "add", "ivy@example.org", "--password-stdin", stdin=PW_LINE)
        server.stop()
        for args, stdin in (
            (("domain", "list"), None),
            (("domain", "add", "other.example"), None),
            (("user", "add", "jo@example.org", "--password-stdin"), PASSWORD + "\n"),
            (("healthcheck",), None),
        ):
            result = cli.run(*args, stdin=stdin)
            assert result.returncode == 75, (args, result.stderr)
            one_clear_line(result.stderr)
        tempfail = cli.run("auth", "test", "ivy@example.org", "--password-stdin", stdin=PW_LINE)
        assert tempfail.returncode == 75
        assert "tempfail" in tempfail.stdout
        server.start()  # and it recovers without anything else being restarted
        cli.ok("auth", "test", "ivy@example.org", "--password-stdin", stdin=PW_LINE)
    finally:
        server.cleanup()


# -- configuration ------------------------------------------------------------------------------


def test_config_check_redacts_secrets(embedded_cli: Cli, tmp_path: Path) -> None:
    secret_file = tmp_path / "writer.pw"
    secret_file.write_text("writer-secret-value\n", encoding="utf-8")
    embedded_cli.config["directory.ldap"] = {
        "bind_dn": "cn=reader,o=mail",
        "bind_password": "reader-secret-value",
        "writer_password_file": str(secret_file),
    }
    text = embedded_cli.ok("config", "check")
    data = embedded_cli.json("config", "check")
    for output in (text, json.dumps(data)):
        assert "reader-secret-value" not in output
        assert "writer-secret-value" not in output
    assert data["valid"] is True
    assert data["file"] == str(embedded_cli.config_path)
    assert data["settings"]["directory"]["ldap"]["bind_password"] == "**********"
    assert data["settings"]["directory"]["ldap"]["writer_password"] == "**********"
    assert 'bind_password = "**********"' in text


def test_invalid_config_is_exit_2_with_the_dotted_key(embedded_cli: Cli) -> None:
    embedded_cli.config["auth"]["failure_delay"] = -3
    result = embedded_cli.run("config", "check")
    assert result.returncode == 2
    assert "auth.failure_delay" in one_clear_line(result.stderr)
    embedded_cli.config["auth"]["failure_delay"] = 0
    embedded_cli.extra_env["IDSVC_DIRECTORY__BACKEND"] = "mongodb"
    result = embedded_cli.run("domain", "list")
    assert result.returncode == 2
    assert "directory.backend" in one_clear_line(result.stderr)


def test_password_policy_settings_are_checked(embedded_cli: Cli, tmp_path: Path) -> None:
    passwords = embedded_cli.config["passwords"]
    passwords["import_schemes_admin"] = ["SSHA512", "LDAP-MD5"]
    for args in (("config", "check"), ("domain", "list")):
        result = embedded_cli.run(*args)
        assert result.returncode == 2, result.stderr
        line = one_clear_line(result.stderr)
        assert "import_schemes_admin" in line
        assert "unsalted" in line
    del passwords["import_schemes_admin"]
    passwords["blocklist_file"] = str(tmp_path / "absent.txt")
    result = embedded_cli.run("config", "check")
    assert result.returncode == 2
    assert "blocklist" in one_clear_line(result.stderr)
    passwords["min_length"] = 4
    result = embedded_cli.run("config", "check")
    assert result.returncode == 2
    assert "passwords.min_length" in one_clear_line(result.stderr)


def _unprivileged_runner() -> dict[str, Any] | None:
    """subprocess arguments that run the venv as ``nobody`` when we are root (CI runs as root),
    ``{}`` when we are not root, None when ``nobody`` cannot execute the venv (e.g. under /root)."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    drop: dict[str, Any] = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    try:
        probe = subprocess.run(
            [str(IDSVC), "--help"], capture_output=True, check=False, timeout=60, **drop
        )
    except OSError:
        return None
    return drop if probe.returncode == 0 else None


@pytest.fixture
def default_home() -> Iterator[Path]:
    """A home directory the (possibly unprivileged) child can write; pytest's tmp_path is 0700."""
    home = Path(tempfile.mkdtemp(prefix="idsvc-cli-home-"))
    try:
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_no_config_at_all_uses_the_embedded_default_store(default_home: Path) -> None:
    """No IDSVC_CONFIG and no IDSVC_* variables: the XDG data dir of a non-root user, and
    /var/lib/idsvc + /run/idsvc for root."""
    if Path("/etc/idsvc/idsvc.toml").exists():
        pytest.fail("/etc/idsvc/idsvc.toml exists on this machine; the test needs no system config")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(default_home),
        "XDG_DATA_HOME": str(default_home / "data"),
        "XDG_RUNTIME_DIR": str(default_home / "run"),
    }

    def run(*args: str, **extra: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(IDSVC), *args], env=env, capture_output=True, text=True, timeout=60,
            check=False, **extra,
        )  # fmt: skip

    if os.geteuid() == 0:  # root's defaults, read without opening (or creating) the system store
        checked = run("--json", "config", "check")
        assert checked.returncode == 0, checked.stderr
        settings = json.loads(checked.stdout)["settings"]
        assert settings["directory"]["backend"] == "embedded"
        assert settings["directory"]["embedded"]["path"] == "/var/lib/idsvc/idsvc.db"
        assert settings["saslauthd"]["socket"]["path"] == "/run/idsvc/mux"
    drop = _unprivileged_runner()
    if drop is None:  # the venv lives where nobody may not read it: root's check above must do
        return
    assert run("domain", "add", "example.org", **drop).returncode == 0
    listed = run("--json", "domain", "list", **drop)
    assert listed.returncode == 0, listed.stderr
    assert [d["name"] for d in json.loads(listed.stdout)["items"]] == ["example.org"]
    assert (default_home / "data" / "idsvc" / "idsvc.db").exists()
    assert run("healthcheck", **drop).returncode == 0


# -- REST API tokens ----------------------------------------------------------------------------


def test_tokens_are_shown_once_and_can_be_revoked(embedded_cli: Cli) -> None:
    cli = embedded_cli
    secret = cli.ok(
        "token", "create", "provisioning robot", "--domain-admin", "example.org"
    ).strip()
    assert secret.startswith("idsvc_")
    listed = cli.json("token", "list")
    assert len(listed["items"]) == 1
    token = listed["items"][0]
    assert token["scope"] == "domain_admin"
    assert token["domains"] == ["example.org"]
    assert token["created_by"].startswith("cli:")
    assert secret not in json.dumps(listed)  # the secret is never shown again
    assert secret not in cli.ok("token", "list")

    revoked = cli.json("token", "revoke", token["id"])
    assert revoked["revoked"] is not None
    assert cli.json("token", "list")["items"] == []  # active ones only by default
    assert len(cli.json("token", "list", "--revoked")["items"]) == 1

    both = cli.run("token", "create", "x", "--admin", "--read-only")
    assert both.returncode == 2
    one_clear_line(both.stderr)
    assert cli.run("token", "revoke", "nosuchtoken").returncode in (1, 2)


# -- pure helpers (no subprocess) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("unlimited", 0),
        ("1048576", 1048576),
        ("500M", 500 * 1024**2),
        ("1G", 1024**3),
        ("2GiB", 2 * 1024**3),
        ("3 kb", 3 * 1024),
        ("1t", 1024**4),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert common.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5G", "-1", "1X", "G", "1" * 30, "1 G B"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidInput):
        common.parse_size(text)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NotFound("x"), 1),
        (errors.InvalidAddress("x"), 2),
        (errors.ConfigError("x"), 2),
        (errors.PasswordError("x"), 2),
        (errors.AlreadyExists("x"), 3),
        (errors.Conflict("x"), 3),
        (errors.AmbiguousEntry("x"), 3),
        (errors.TemporaryFailure("x"), 75),
        (errors.DirectoryError("x"), 1),
        (RuntimeError("x"), 70),
    ],
)
def test_exit_codes(error: BaseException, code: int) -> None:
    assert common.exit_code_for(error) == code


def test_error_lines_are_flat_and_bounded() -> None:
    line = common.one_line("bad\nvalue\x1b[31m " + "x" * 1000)
    assert "\n" not in line
    assert "\x1b" not in line
    assert len(line) <= 500
