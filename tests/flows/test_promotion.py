"""Promotion end to end against labsim, on a lab of its own (it destroys the primary).

What real PE does that the drill must handle (real-world-findings §1 rows 3, 4, 7): an enabled
replica already listens on 8142/8143, so "promoted" is read from PE's own status; the client
tools on the promoted replica still name the destroyed primary; `forget` fails on a node PE no
longer knows, so "already forgotten" is read from PuppetDB.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from labsim.testing import LabHandle, running_lab
from pe_dr.report import DrillReport

if TYPE_CHECKING:
    from pe_dr.lab.live import Lab

pytestmark = pytest.mark.slow

CODE_CONF = "/etc/puppetlabs/client-tools/puppet-code.conf"


@pytest.fixture(scope="module")
def promoted(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: None, run_drill: Any
) -> Iterator[tuple[LabHandle, bool, DrillReport]]:
    state = tmp_path_factory.mktemp("promotion-lab")
    with running_lab(state) as handle, pytest.MonkeyPatch.context() as mp:
        for name, value in handle.env.items():
            mp.setenv(name, value)
        # left promoted: the tests below reprotect it, drill it swapped, and promote it back
        ok, report = run_drill(tmp_path_factory.mktemp("reports"), promote=True, reprotect=False)
        yield handle, ok, report


@pytest.fixture
def handle(promoted: tuple[LabHandle, bool, DrillReport]) -> LabHandle:
    """The promoted lab, for the tests that go on from the promotion (it must have passed)."""
    lab, ok, _ = promoted
    assert ok
    return lab


@pytest.fixture
def before(handle: LabHandle) -> int:
    """Where the test's own entries in the lab's journal begin."""
    return len(handle.journal())


@contextlib.contextmanager
def _live(handle: LabHandle) -> Iterator[Lab]:
    """The drill's own view of the lab (the live Lab over SSH and HTTP)."""
    from pe_dr.lab.live import Lab
    from pe_dr.lab.spec import load_spec

    with Lab(load_spec(handle.spec_path)) as live:
        yield live


def _vm_file(handle: LabHandle, vm: str, path: str) -> str:
    return (handle.state_dir / "vms" / vm / "fs" / path.lstrip("/")).read_text()


def test_the_drill_promotes_the_replica_and_it_serves_as_primary(
    promoted: tuple[LabHandle, bool, DrillReport], journal_ops: Any
) -> None:
    handle, ok, report = promoted
    data = report.to_dict()
    assert ok and data["status"] == "passed", data
    steps = {s["name"]: s["status"] for s in data["steps"]}
    for step in (
        "destroy-primary",
        "promote-replica",
        "client-tools-to-new-primary",
        "forget-old-primary",
        "code-deploy-on-new-primary",
    ):
        assert steps.get(step) == "completed", (step, steps)
    promotion = next(c for c in data["checks"] if c["name"] == "promotion")
    assert promotion["passed"], promotion
    # promote ran once although the replica's 8143 answered before it
    assert len(journal_ops(handle, "puppet.infrastructure.promote")) == 1
    assert handle.status()["primary.vm"] == "not_created"
    # the client tools on the new primary name it, not the destroyed primary
    conf = json.loads(_vm_file(handle, "replica.vm", CODE_CONF))
    assert conf["service-url"] == "https://replica.vm:8170/code-manager"
    access = json.loads(
        _vm_file(handle, "replica.vm", "/etc/puppetlabs/client-tools/puppet-access.conf")
    )
    assert access["service-url"] == "https://replica.vm:4433/rbac-api"
    deploys = [e for e in journal_ops(handle, "code-manager.deploy") if e["vm"] == "replica.vm"]
    assert deploys and deploys[-1]["outcome"] == "ok"
    assert len(journal_ops(handle, "puppet.infrastructure.forget")) == 1


def test_promotion_steps_run_again_find_the_work_done(
    handle: LabHandle, before: int, journal_ops: Any
) -> None:
    """A Retry after a crash re-runs steps: each reads PE's state and does not act twice."""
    from pe_dr.steps import promotion as promotion_steps

    with _live(handle) as live:
        assert promotion_steps.promote_replica(live) == "already promoted"
        assert promotion_steps.forget_old_primary(live) == "already forgotten"
        named = promotion_steps.ensure_client_tools_point_at(live, "replica.vm")
        assert all("https://replica.vm:" in url for url in named.values()), named
    assert journal_ops(handle, "puppet.infrastructure.promote", before) == []
    assert [e for e in journal_ops(handle, "puppet.agent", before) if e["vm"] == "replica.vm"] == []
    assert journal_ops(handle, "puppet.infrastructure.forget", before) == []


def test_forget_failing_falls_back_to_purge_and_both_failing_is_a_failure(
    handle: LabHandle, journal_ops: Any
) -> None:
    """Only PE's state says "already forgotten"; a failed forget is followed by `puppet node
    purge` (peadm's recovery procedure), and when that fails too the step fails."""
    from pe_dr.errors import CommandFailed
    from pe_dr.steps import promotion as promotion_steps

    handle.fault_add("fail:puppet.infrastructure.forget")
    handle.fault_add("fail:puppet.node.purge")
    before = len(handle.journal())
    try:
        with _live(handle) as live, pytest.MonkeyPatch.context() as mp:
            mp.setattr(promotion_steps, "_active_node", lambda *_: True)  # PE still lists it
            with pytest.raises(CommandFailed, match="Could not purge the node"):
                promotion_steps.forget_old_primary(live)
    finally:
        handle.fault_clear()
    forget = journal_ops(handle, "puppet.infrastructure.forget", before)
    purge = journal_ops(handle, "puppet.node.purge", before)
    assert [e["outcome"] for e in forget] == ["fault"] and [e["outcome"] for e in purge] == [
        "fault"
    ]
    assert forget[0]["detail"].endswith("forget primary.vm"), forget  # no --token-file


# --- a year on one lab: promoted, reprotected, drilled swapped, promoted back ------------------


def _hooks(handle: LabHandle) -> list[str]:
    with _live(handle) as live, live.gitlab() as gl:
        project = gl.project("root/control-repo")
        return [h["url"].split("?")[0] for h in gl.hooks(int(project["id"]))]


def test_a_drill_on_a_promoted_lab_refuses_saying_to_reprotect_and_touches_nothing(
    handle: LabHandle, before: int, tmp_path: Any, run_drill: Any, journal_ops: Any
) -> None:
    hooks = _hooks(handle)
    done, report = run_drill(tmp_path)
    assert not done
    assert report.error is not None and "run reprotect first" in report.error, report.error
    assert "replica.vm is PE's primary and primary.vm is not its replica" in report.error
    assert journal_ops(handle, "vagrant.up", before) == [], "nothing rebuilt the lost primary"
    assert [e for e in handle.journal()[before:] if e["op"] == "vagrant.halt"] == []
    assert _hooks(handle) == hooks, "the webhook was not re-pointed"
    assert handle.status()["primary.vm"] == "not_created"


def test_reprotect_rebuilds_the_lost_primary_as_the_new_primarys_replica(
    handle: LabHandle, before: int, tmp_path: Any, run_drill: Any, journal_ops: Any
) -> None:
    done, report = run_drill(tmp_path, flow="reprotect")
    data = report.to_dict()
    assert done and data["status"] == "passed", data
    check = next(c for c in data["checks"] if c["name"] == "reprotect")
    assert check["passed"] and "primary.vm is the replica of replica.vm again" in check["detail"]
    assert report.measurements["reprotect_seconds"] > 0
    # the rebuilt VM installed the agent from the promoted primary, not a second PE (the
    # Vagrantfile's PE_DR_PRIMARY), its certificate signed by the new CA
    ups = [e for e in journal_ops(handle, "vagrant.up", before) if e["vm"] == "primary.vm"]
    assert ups and ups[-1]["outcome"] == "ok"
    signs = journal_ops(handle, "puppetserver.ca.sign", before)
    assert [(e["vm"], e["outcome"]) for e in signs] == [("replica.vm", "ok")]
    provisions = journal_ops(handle, "puppet.infrastructure.provision", before)
    assert [e["vm"] for e in provisions] == ["replica.vm"], "provisioned from the new primary"
    assert "provision replica primary.vm" in provisions[0]["detail"]
    assert any("replica.vm is PE's primary since a promotion" in n for n in report.notes)


def test_the_next_drill_runs_on_the_swapped_lab_halting_the_new_primary(
    handle: LabHandle, before: int, tmp_path: Any, run_drill: Any, journal_ops: Any
) -> None:
    hooks = _hooks(handle)
    done, report = run_drill(tmp_path)
    assert done, report.to_dict()
    halts = [e["vm"] for e in journal_ops(handle, "vagrant.halt", before)]
    assert halts == ["replica.vm"], halts
    served = next(c for c in report.to_dict()["checks"] if c["name"] == "failover")
    assert "compiled by primary" in served["detail"], served["detail"]  # the replica now
    assert _hooks(handle) == hooks == ["https://replica.vm:8170/code-manager/v1/webhook"]
    assert journal_ops(handle, "puppet.infrastructure.configure", before) == []
    # the new primary cloned the control repo (the clone lived on the lost primary), in its own
    # file tree
    clone = handle.state_dir / "vms" / "replica.vm" / "fs" / "root/repo/control-repo/.git"
    assert clone.is_dir()


def test_a_second_promotion_swaps_the_roles_back_and_reprotects(
    handle: LabHandle, before: int, tmp_path: Any, run_drill: Any, journal_ops: Any
) -> None:
    from pe_dr.steps import lab_state

    done, report = run_drill(tmp_path, promote=True)
    data = report.to_dict()
    assert done, data
    assert [e["vm"] for e in journal_ops(handle, "vagrant.destroy", before)] == ["replica.vm"]
    assert [e["vm"] for e in journal_ops(handle, "puppet.infrastructure.promote", before)] == [
        "primary.vm"
    ]
    assert report.measurements["promotion_seconds"] and report.measurements["reprotect_seconds"]
    with _live(handle) as live:
        roles = lab_state.lab_roles(live)
    assert (roles.state, roles.spec.primary.name) == (lab_state.AS_BUILT, "primary.vm")
    assert _hooks(handle) == ["https://primary.vm:8170/code-manager/v1/webhook"]


def test_the_history_has_the_promotions_and_the_reprotect_as_rows_with_their_figures(
    promoted: tuple[LabHandle, bool, DrillReport],
) -> None:
    """After the runs above: promotion, refused drill, reprotect, drill, promotion (with its
    reprotect). Each promotion and the reprotect is a row of its own kind with its own figures;
    the refused drill is listed apart."""
    from datetime import datetime

    from flows import history as drill_history
    from pe_dr import history
    from pe_dr.lab.spec import load_spec

    handle, ok, first = promoted
    assert ok

    def moment(iso: str) -> datetime:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(microsecond=0)

    since = moment(first.started_at)  # (other modules may drill a lab of the same name)
    rows = [
        d for d in drill_history.read(load_spec(handle.spec_path).name) if moment(d.date) >= since
    ]
    began = history.drills_only(rows)
    assert [(d.kind, d.verdict) for d in began] == [
        ("promotion", "passed"),
        ("reprotect", "passed"),
        ("drill", "passed"),
        ("promotion", "passed"),
    ], rows
    promotion, reprotect, drill, again = began
    assert promotion.flow_run_id == first.flow_run_id
    assert promotion.figures["promotion_seconds"] and promotion.figures["rto_seconds"]
    assert promotion.figures["reprotect_seconds"] is None, "the first was left promoted"
    assert reprotect.figures["reprotect_seconds"]
    assert [k for k, v in reprotect.figures.items() if v is not None] == ["reprotect_seconds"]
    assert drill.figures["promotion_seconds"] is None and drill.figures["rto_seconds"]
    assert again.figures["promotion_seconds"] and again.figures["reprotect_seconds"]
    assert [(d.kind, d.verdict) for d in history.not_begun(rows)] == [("drill", "failed")]
    assert history.summary(began).endswith(": 3 passed; 2 promotions; 1 reprotect"), began


# --- nothing piles up: twelve more drills on the same lab --------------------------------------

DRILLS = 12
# records a drill may add (any one drill adds at most this much) and records no drill may add
GROWS = ("commits", "reports", "rbac_tokens", "flow_runs", "task_runs", "artifacts")
FIXED = ("repo_files", "groups", "roles", "users", "hooks", "gitlab_keys", "pats")


def _counts(handle: LabHandle) -> dict[str, int]:
    """What the lab and the Prefect database hold now, store by store."""
    from prefect.client.orchestration import get_client

    from pe_dr.lab import paths

    counts: dict[str, int] = {}
    with _live(handle) as live:
        primary = live.host("primary.vm")
        repo = ["git", "-C", paths.CONTROL_REPO_DIR]
        files = primary.run([*repo, "ls-files"], root=True).stdout.split()
        counts["repo_files"] = len(files)
        counts["commits"] = int(
            primary.run([*repo, "rev-list", "--count", "HEAD"], root=True).stdout
        )
        with live.pe() as pe:
            counts["groups"] = len(pe.groups())
            counts["roles"] = len(pe.roles())
            counts["users"] = len(pe.users())
            counts["reports"] = len(pe.pdb_query("reports"))
        with live.gitlab() as gl:
            project = gl.project("root/control-repo")
            counts["hooks"] = len(gl.hooks(int(project["id"])))
            counts["gitlab_keys"] = len(gl.user_keys())
    kinds = [s["kind"] for s in json.loads(handle._cli("secrets", "--json").stdout)]
    counts["rbac_tokens"] = kinds.count("rbac-token")
    counts["pats"] = kinds.count("gitlab-pat")
    with get_client(sync_client=True) as client:
        counts["flow_runs"] = client.count_flow_runs()
        for what in ("task_runs", "artifacts"):  # Prefect's REST API counts them
            counts[what] = int(client._client.post(f"/{what}/count", json={}).json())
    return counts


@pytest.mark.timeout(900)  # twelve drills: 288 s measured at load average 11 (default 300)
def test_a_year_of_drills_after_promotions_leaves_one_drills_worth_per_drill(
    handle: LabHandle, tmp_path: Any, run_drill: Any
) -> None:
    """Twelve monthly drills on the lab that was promoted and reprotected twice above: what no
    drill should add stays as it was, and each drill adds no more than the first one did."""
    from pe_dr.steps.replication import PROBE_FILE, PROBE_PREFIX

    history = []
    for n in range(DRILLS):
        done, report = run_drill(tmp_path / f"drill-{n}")
        assert done, report.to_dict()
        # counted from the first drill on: primary.vm was just rebuilt, its clone of the control
        # repo is made by the first drill's set-up
        history.append(_counts(handle))
    first = {k: history[1][k] - history[0][k] for k in GROWS}
    for before, after in itertools.pairwise(history):
        for key in FIXED:
            assert after[key] == before[key], (key, history)
        for key in GROWS:
            assert 0 <= after[key] - before[key] <= max(first[key] * 2, 2), (key, first, history)
    assert history[-1]["commits"] - history[0]["commits"] == DRILLS - 1, "a probe commit a drill"
    control_repo = handle.state_dir / "vms" / "primary.vm" / "fs" / "root/repo/control-repo"
    assert (control_repo / PROBE_FILE).read_text().count("\n") == 1, "one drill-owned file"
    puppetfile = (control_repo / "Puppetfile").read_text().splitlines()
    assert not [line for line in puppetfile if line.startswith(PROBE_PREFIX)], puppetfile
