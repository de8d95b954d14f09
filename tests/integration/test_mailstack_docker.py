"""``docker/`` without Docker: the compose file's structure, the Dockerfiles' references, the
template renderer the containers run, and the OpenLDAP image's init script run for real.

Docker cannot run in CI, so what can drift is checked here: every service builds from a
Dockerfile that exists and names only files that exist; every bind mount, secret and named volume
resolves; every service has a healthcheck (idsvc's is ``idsvc healthcheck``, a real sub-command);
every placeholder of the templates a container renders is given a value by that container's
Dockerfile ``ENV`` or compose ``environment``; ``render-templates.sh`` (the containers') and
``tests/fixtures/mtastack.py`` (CI's) render the same bytes; the rendered Postfix files pass
``postconf``; ``docker/slapd/init.sh`` builds a cn=config that a real slapd serves with our schema.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import ldap
import pytest
import yaml

from idsvc.cli import build_parser
from tests.fixtures.mtastack import DOCKER, POSTCONF, REPO, placeholders, render_dir
from tests.fixtures.slapd import find_binary, require_slapd

COMPOSE = DOCKER / "docker-compose.yml"
SERVICES = {"slapd", "idsvc", "postfix", "dovecot"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: dangling continuation"
    return out


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions(path):
        if word == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"{path}: ENV without '=': {item!r}"
                env[key] = value
    return env


def service_dockerfile(name: str) -> Path:
    build = compose()["services"][name]["build"]
    context = (DOCKER / build["context"]).resolve()
    return context / build["dockerfile"]


def service_env(name: str) -> dict[str, str]:
    env = dockerfile_env(service_dockerfile(name))
    env.update({k: str(v) for k, v in compose()["services"][name].get("environment", {}).items()})
    return env


# which template directory each container renders (the mount target is its templates dir)
TEMPLATES = {
    "idsvc": DOCKER / "idsvc",
    "postfix": DOCKER / "postfix",
    "dovecot": DOCKER / "dovecot",
}


def test_compose_has_the_four_services_each_built_here_with_a_healthcheck() -> None:
    data = compose()
    assert set(data["services"]) == SERVICES
    for name, service in data["services"].items():
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO, name  # every image is built from the repository root
        assert (context / build["dockerfile"]).is_file(), name
        check = service["healthcheck"]["test"]
        assert isinstance(check, list), name
        assert check[0] in ("CMD", "CMD-SHELL"), name
        assert len(check) > 1, name
    assert data["services"]["idsvc"]["healthcheck"]["test"] == ["CMD", "idsvc", "healthcheck"]
    # the idsvc healthcheck is a real sub-command of this tree's CLI
    assert build_parser().parse_args(["healthcheck"]) is not None


def test_compose_mounts_secrets_and_volumes_all_resolve() -> None:
    data = compose()
    named = set(data["volumes"])
    secrets = data["secrets"]
    maker = (DOCKER / "secrets" / "make-secrets.sh").read_text(encoding="utf-8")
    for name, spec in secrets.items():
        path = (DOCKER / spec["file"]).resolve()
        assert path.parent == DOCKER / "secrets", name
        assert path.name in maker, f"make-secrets.sh does not create {name}"
    used_named: set[str] = set()
    for service_name, service in data["services"].items():
        for secret in service.get("secrets", []):
            assert secret in secrets, (service_name, secret)
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), volume
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{service_name}: {source} does not exist"
            else:
                assert source in named, f"{service_name}: undeclared volume {source}"
                used_named.add(source)
        for dep in service.get("depends_on", {}):
            assert dep in data["services"], (service_name, dep)
    assert used_named == named  # no declared volume left unused
    # Postfix and Dovecot reach idsvc's sockets through the one shared volume
    for name in ("idsvc", "postfix", "dovecot"):
        assert "idsvc-run:/run/idsvc" in data["services"][name]["volumes"], name


def test_containers_mount_the_templates_ci_runs() -> None:
    data = compose()
    for name, directory in TEMPLATES.items():
        mounts = data["services"][name]["volumes"]
        rel = "./" + directory.relative_to(DOCKER).as_posix()
        assert any(m.startswith(rel + ":") and m.endswith(":ro") for m in mounts), (name, mounts)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dockerfile_copies_only_what_exists(name: str) -> None:
    path = service_dockerfile(name)
    instructions = dockerfile_instructions(path)
    assert instructions[0][0] in ("FROM", "ARG"), path
    assert any(word == "HEALTHCHECK" for word, _ in instructions), path
    assert any(word == "CMD" for word, _ in instructions), path
    for word, args in instructions:
        if word not in ("COPY", "ADD"):
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        if "--from=" in args:
            continue  # from an earlier build stage
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{path}: {word} {source}: no such file"


def test_idsvc_image_runs_as_a_user_and_reads_config_from_files() -> None:
    instructions = dockerfile_instructions(service_dockerfile("idsvc"))
    users = [args for word, args in instructions if word == "USER"]
    assert users, "idsvc must not run as root"
    assert users[-1] not in ("root", "0"), users
    health = [args for word, args in instructions if word == "HEALTHCHECK"][-1]
    assert '["idsvc", "healthcheck"]' in health
    env = service_env("idsvc")
    assert env["IDSVC_CONFIG"].endswith("/idsvc.toml")
    for key in ("BIND_PASSWORD_FILE", "WRITER_PASSWORD_FILE"):
        assert env[f"IDSVC_DIRECTORY__LDAP__{key}"].startswith("/run/secrets/"), key
    assert not any(k.endswith("PASSWORD") for k in env), "secrets come from files"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_placeholder_has_a_value_in_the_container(name: str) -> None:
    env = service_env(name)
    needed: set[str] = set()
    for template in TEMPLATES[name].glob("*.tmpl"):
        needed |= placeholders(template)
    assert needed, name
    missing = needed - set(env)
    assert not missing, f"{name}: no value for {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_shell_renderer_and_fixture_render_the_same(name: str, tmp_path: Path) -> None:
    values = service_env(name)
    values["TRICKY"] = "a|b&c\\d/e"  # characters sed would otherwise interpret
    by_python = render_dir(TEMPLATES[name], tmp_path / "py", values)
    env = {**values, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run(
        ["sh", str(DOCKER / "render-templates.sh"), str(TEMPLATES[name]), str(tmp_path / "sh")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for path in by_python:
        shell = (tmp_path / "sh" / path.name).read_text(encoding="utf-8")
        assert shell == path.read_text(encoding="utf-8"), path.name
        assert "@@" not in shell, path.name
    assert sorted(p.name for p in (tmp_path / "sh").iterdir()) == sorted(p.name for p in by_python)


def test_shell_renderer_refuses_a_missing_value(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.conf.tmpl").write_text("a = @@SURELY_UNSET_VALUE@@\n")
    proc = subprocess.run(
        ["sh", str(DOCKER / "render-templates.sh"), str(tmp_path / "src"), str(tmp_path / "out")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "SURELY_UNSET_VALUE" in proc.stderr
    assert not (tmp_path / "out" / "x.conf").exists()


def test_postfix_container_config_passes_postconf(tmp_path: Path) -> None:
    if not Path(POSTCONF).exists():
        pytest.fail("postconf (Debian package postfix) is required")
    values = service_env("postfix")
    values["POSTFIX_CONFIG_DIR"] = str(tmp_path)
    render_dir(TEMPLATES["postfix"], tmp_path, values)
    proc = subprocess.run(
        [POSTCONF, "-c", str(tmp_path), "-n"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    settings = dict(line.split(" = ", 1) for line in proc.stdout.splitlines() if " = " in line)
    for key in ("virtual_mailbox_domains", "virtual_mailbox_maps", "virtual_alias_maps"):
        assert settings[key].startswith("socketmap:unix:/run/idsvc/socketmap:"), key
    assert settings["smtpd_sasl_path"] == "/run/idsvc/auth-client"
    assert "check_policy_service unix:/run/idsvc/policy" in settings["smtpd_recipient_restrictions"]
    assert settings["virtual_transport"] == "lmtp:inet:dovecot:24"
    # postconf -M parses master.cf: both listeners (smtp, submission) are there
    master = subprocess.run(
        [POSTCONF, "-c", str(tmp_path), "-M"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert master.returncode == 0, master.stderr
    assert re.search(r"^smtp\s+inet", master.stdout, re.MULTILINE), master.stdout
    assert re.search(r"^submission\s+inet", master.stdout, re.MULTILINE), master.stdout


def test_slapd_image_init_builds_a_directory_slapd_serves(tmp_path: Path) -> None:
    """docker/slapd/init.sh for real (paths moved into tmp_path): slapadd accepts its cn=config
    and base entries; slapd serves them; the reader sees the domains container, with our schema
    loaded."""
    require_slapd()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    passwords = {"admin": "admin-pw", "reader": "reader-pw", "writer": "writer-pw"}
    for who, pw in passwords.items():
        (secrets / f"ldap_{who}.pw").write_text(pw + "\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin",
        "LDAP_SUFFIX": "dc=example,dc=org",
        "LDAP_ORG": "example",
        "SLAPD_CONF_DIR": str(tmp_path / "slapd.d"),
        "SLAPD_DATA_DIR": str(tmp_path / "data"),
        "SLAPD_RUN_DIR": str(tmp_path / "run"),
        "SLAPD_SECRETS_DIR": str(secrets),
        "IDSVC_SCHEMA": str(REPO / "schemas" / "idsvc.ldif"),
        "RENDER": str(DOCKER / "render-templates.sh"),
        "SLAPD_INIT_ONLY": "1",
    }
    proc = subprocess.run(
        ["sh", str(DOCKER / "slapd" / "init.sh")], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from tests.fixtures.postfix import free_port

    slapd_bin = find_binary("slapd")
    assert slapd_bin is not None
    port = free_port()
    server = subprocess.Popen(
        [slapd_bin, "-F", env["SLAPD_CONF_DIR"], "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        conn = None
        for _ in range(100):
            try:
                conn = ldap.initialize(f"ldap://127.0.0.1:{port}")
                conn.simple_bind_s("cn=reader,dc=example,dc=org", passwords["reader"])
                break
            except ldap.SERVER_DOWN:
                conn = None
                time.sleep(0.1)
        assert conn is not None, "slapd did not answer"
        found = conn.search_s("dc=example,dc=org", ldap.SCOPE_SUBTREE, "(ou=domains)", ["ou"])
        assert [dn for dn, _ in found] == ["ou=domains,dc=example,dc=org"]
        schema = conn.search_s(
            "cn=subschema", ldap.SCOPE_BASE, "(objectClass=*)", ["objectClasses"]
        )
        classes = b" ".join(schema[0][1]["objectClasses"])
        assert b"idsvc" in classes.lower()  # our schema is loaded
        with pytest.raises(ldap.INVALID_CREDENTIALS):
            ldap.initialize(f"ldap://127.0.0.1:{port}").simple_bind_s(
                "cn=reader,dc=example,dc=org", "wrong"
            )
        conn.unbind_s()
    finally:
        server.terminate()
        server.wait(timeout=20)
        assert server.stderr is not None
        server.stderr.close()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
