"""gitlab-rails runner (the API token bootstrap) and gitlab-ctl reconfigure on gitlab.vm."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from labsim import pki
from labsim.commands.base import Ctx, Result

if TYPE_CHECKING:
    pass


# GitLab commands


async def gitlab_rails(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    op = "gitlab.rails-runner"
    if len(args) < 2 or args[0] != "runner":
        return Result(
            1, "", "Usage: rails runner [options] [<'Some.ruby(code)'> | <filename.rb>]\n", op
        )
    failed = ctx.injected(op, "Error: PG::ConnectionBad: connection to server failed (injected)\n")
    if failed is not None:
        return failed
    src = args[1]
    fs = ctx.vm.fs
    code = fs.read_text(src) if src.endswith(".rb") or src.startswith("/") else src
    if code is None:
        return Result(
            1,
            "",
            f"Please specify a valid ruby command or the path of a script to run.\n"
            f"Run 'rails runner -h' for help.\n\ncannot load such file -- {src}\n",
            op,
        )
    await lab.sleep(lab.dur("rails-runner"))
    gl = lab.gitlab
    assert gl is not None
    m_user = re.search(r"find_by_username\(['\"](\w+)['\"]\)", code)
    m_file = re.search(r"set_token\(\s*File\.read\(['\"]([^'\"]+)['\"]\)", code)
    m_lit = re.search(r"set_token\(['\"]([^'\"]+)['\"]\)", code)
    if not m_user or m_user.group(1) != "root" or not (m_file or m_lit):
        return Result(
            1, "", "labsim: gitlab-rails runner only models the PAT bootstrap script\n", op
        )
    if "personal_access_tokens" not in code or "api" not in code:
        return Result(1, "", "labsim: the script does not create an api-scoped token\n", op)
    if m_file:
        text = fs.read_text(m_file.group(1))
        if text is None:
            return Result(
                1,
                "",
                f"{src}:3:in `read': No such file or directory @ rb_sysopen - "
                f"{m_file.group(1)} (Errno::ENOENT)\n",
                op,
            )
        token = text.strip()
    else:
        assert m_lit
        token = m_lit.group(1)
    if len(token) < 20:
        return Result(
            1, "", "ActiveRecord::RecordInvalid: Validation failed: Token is too short\n", op
        )
    gl.pats[token] = 1
    return Result(0, "", "", op)


async def gitlab_ctl(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    if not args or args[0] not in ("reconfigure", "status", "restart"):
        return Result(1, "", f"I don't know that command: {' '.join(args)}\n", "gitlab.ctl")
    if args[0] == "reconfigure":
        await lab.sleep(lab.dur("reconfigure"))
        gl = lab.gitlab
        assert gl is not None
        # Omnibus links one certificate per file of trusted-certs into GitLab's store; several
        # releases skip a file that holds more than one (omnibus-gitlab MRs !8306, !8711;
        # real-world-findings §1 row 2), so a CA bundle in one file is not trusted at all.
        d = ctx.vm.fs.host("/etc/gitlab/trusted-certs")
        gl.trusted_cas, skipped = [], []
        for path in sorted(d.iterdir()) if d.exists() else []:
            certs = pki.split_pem(path.read_text(errors="replace"))
            if len(certs) == 1:
                gl.trusted_cas.append(certs[0])
            else:
                skipped.append(path.name)
        notes = "".join(
            f"  * Skipping /etc/gitlab/trusted-certs/{name}: it does not hold exactly one "
            "certificate\n"
            for name in skipped
        )
        return Result(
            0,
            notes + "Running handlers:\nRunning handlers complete\n"
            "Infra Phase complete, 0/812 resources updated in 12 seconds\n"
            "gitlab Reconfigured!\n",
            "",
            "gitlab.reconfigure",
        )
    return Result(
        0, "run: gitlab-workhorse: (pid 1234) 100s; run: log: (pid 1200) 100s\n", "", "gitlab.ctl"
    )
