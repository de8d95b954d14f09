"""Benchmark: messages/s through Postfix → LMTP → Dovecot with idsvc's maps, next to the same
stack with Postfix's native ``ldap:`` maps, in the same run.

What it runs (``tests/fixtures/mtastack.py``, the stack the integration tests run, configured
from ``docker/``): a slapd of its own with the test directory, ``idsvc serve`` on it, one Dovecot
(LMTP; its userdb is idsvc's dict server in both variants) and two Postfix instances side by
side that differ only in their maps:

* ``idsvc``: ``docker/postfix/main.cf`` as shipped: ``virtual_mailbox_domains``,
  ``virtual_mailbox_maps``, ``virtual_alias_maps``, ``smtpd_sender_login_maps`` through idsvc's
  socketmap and ``check_policy_service`` on idsvc's policy socket;
* ``ldap:``: the same file with those four maps replaced by ``ldap:`` tables querying the same
  slapd (the queries a site would write for our schema; no alias domains or catch-alls) and no
  policy service (Postfix has no native equivalent).

``smtp-source`` (Postfix's load generator) sends ``--messages`` 10 KB messages to one mailbox
over 1, 8 and 32 concurrent sessions (a new connection per message, as from many MTAs); a run
ends when the last message is in the Maildir, and messages/s is messages / that wall time.
Rounds are interleaved (the variant order alternates) and the table shows medians of
``--rounds`` (≥ 3). Nothing leaves 127.0.0.1; every process is stopped by pid at the end.

The machine is shared with other work: the load average before and after is printed; compare the
two columns of one run, not runs of different days.

Usage: ``.venv/bin/python bench/e2e_mail.py [--messages 200] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import md_head, md_row, ratio  # noqa: E402
from tests.fixtures.mtastack import PEOPLE, MailStack, StackPostfix, mail_stack  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
CONCURRENCY = (1, 8, 32)
SIZE = 10 * 1024


def ldap_tables(stack: MailStack) -> dict[str, str]:
    """``ldap:`` config files for the four maps, against the stack's slapd; main.cf lines."""
    slapd = stack.backend.slapd
    assert slapd is not None
    conf = stack.root / "ldap-maps"
    conf.mkdir(mode=0o755)
    common = (
        f"server_host = {slapd.uri}\nversion = 3\nsearch_base = {stack.backend.base_dn}\n"
        f"scope = sub\nbind = yes\nbind_dn = {slapd.reader_dn}\nbind_pw = {slapd.reader_pw}\n"
    )
    queries = {
        "domain": "query_filter = (&(objectClass=idsvcDomain)(|(idsvcDomainName=%s)"
        "(idsvcAliasDomain=%s))(idsvcEnabled=TRUE))\nresult_attribute = idsvcDomainName\n",
        "mailbox": "query_filter = (&(objectClass=idsvcAccount)(idsvcAddress=%s)"
        "(idsvcEnabled=TRUE))\nresult_attribute = idsvcAddress\nresult_format = %d/%u/Maildir/\n",
        "alias": "query_filter = (&(objectClass=idsvcAlias)(idsvcAliasSource=%s)"
        "(idsvcEnabled=TRUE))\nresult_attribute = idsvcDestination\n",
        "senderlogin": "query_filter = (&(objectClass=idsvcAccount)(idsvcAddress=%s))\n"
        "result_attribute = idsvcAddress\n",
    }
    for name, query in queries.items():
        path = conf / f"{name}.cf"
        path.write_text(common + query)
        path.chmod(0o640)
        shutil.chown(path, "root", "postfix")
    return {
        "virtual_mailbox_domains": f"ldap:{conf / 'domain.cf'}",
        "virtual_mailbox_maps": f"ldap:{conf / 'mailbox.cf'}",
        "virtual_alias_maps": f"ldap:{conf / 'alias.cf'}",
        "smtpd_sender_login_maps": f"ldap:{conf / 'senderlogin.cf'}",
        "smtpd_recipient_restrictions": "",
    }


class NativePostfix(StackPostfix):
    """The shipped main.cf with the maps swapped for ``ldap:`` tables, line by line."""

    def __init__(self, root: Path, values: dict[str, str], tables: dict[str, str]) -> None:
        super().__init__(root, values)
        self.tables = tables

    def _main_cf(self) -> str:
        text = super()._main_cf()
        for key, value in self.tables.items():
            text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
            assert count == 1, key
        return text


def run(pf: StackPostfix, stack: MailStack, sessions: int, messages: int, tag: str) -> float:
    """One smtp-source run; messages/s until the last one is in the Maildir."""
    before = len(stack.maildir_files(PEOPLE.bob))
    t0 = time.perf_counter()
    subprocess.run(
        [
            SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(SIZE),
            "-f", "sender@idsvc.test", "-t", PEOPLE.bob, "-M", "client.idsvc.test",
            "-S", tag, f"{pf.host}:{pf.port}",
        ],
        check=True, timeout=900, capture_output=True,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    while len(stack.maildir_files(PEOPLE.bob)) < before + messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{tag}: not all messages delivered:\n{pf.log_tail()}")
        time.sleep(0.05)
    return messages / (time.perf_counter() - t0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200, help="per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (medians)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        print("smtp-source (Debian package postfix) is required", file=sys.stderr)
        return 2
    results: dict[tuple[str, int], list[float]] = {}
    with mail_stack("slapd") as stack:
        native_root = stack.root / "postfix-native"
        native_root.mkdir(mode=0o755)
        native = NativePostfix(native_root, dict(stack.values), ldap_tables(stack))
        native.start()
        try:
            variants = [("idsvc", stack.pf), ("ldap:", native)]
            load0 = os.getloadavg()
            for rnd in range(args.rounds):
                for conc in args.concurrency:
                    order = variants if (rnd + conc) % 2 == 0 else variants[::-1]
                    for name, pf in order:
                        tag = f"{name}-r{rnd}-c{conc}"
                        rate = run(pf, stack, conc, args.messages, tag)
                        results.setdefault((name, conc), []).append(rate)
                        print(f"# {tag}: {rate:.1f} msg/s", file=sys.stderr)
            load1 = os.getloadavg()
            bounced = "status=bounced" in stack.pf.log_text() + native.log_text()
        finally:
            native.stop()
    print(
        f"\n{args.messages} messages of 10 KB per run, Postfix → LMTP → Dovecot (userdb: idsvc "
        f"dict), medians of {args.rounds} interleaved rounds; {os.cpu_count()} CPUs shared, load "
        f"average {load0[0]:.1f} before / {load1[0]:.1f} after; bounces: {bounced}\n"
    )
    print("\n".join(md_head(["sessions", "idsvc maps msg/s", "ldap: maps msg/s", "ratio"])))
    for conc in args.concurrency:
        ours = statistics.median(results[("idsvc", conc)])
        theirs = statistics.median(results[("ldap:", conc)])
        print(md_row([conc, f"{ours:.1f}", f"{theirs:.1f}", f"{ratio(ours, theirs):.2f}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
