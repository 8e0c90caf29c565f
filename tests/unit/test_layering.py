"""A job's or an export's status changes only in `tunesmith/jobs/`.

Every change goes through the one conditional UPDATE (tunesmith/jobs/lifecycle.py) by way of
the named operations; a status written anywhere else skips the guard that lets exactly one of
two racing writers win. The walk reads the shipped packages' syntax trees and finds the ways a
status is written: an assignment to `.status`, a `status=` keyword (a row's constructor,
`update(...).values(status=...)`), a `.values({"status": ...})`, `setattr(row, "status", ...)`,
raw SQL that sets a status, and any use of the guarded functions themselves.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "tunesmith", "worker")
HOME = Path("tunesmith/jobs")
# What writes a status through the guard: nothing outside HOME may name it.
GUARDS = {"change_status", "Lifecycle", "JOB_LIFECYCLE", "EXPORT_LIFECYCLE"}
RAW_SQL = re.compile(r"\bupdate\s+\W?\w+\W?\s+set\b.*\bstatus\b", re.IGNORECASE | re.DOTALL)

# Statuses that are not a job's or an export's, each with where it is and why it may be there.
NOT_A_JOB = {
    ("api/job_watch.py", "assign view.status"): "the event stream's in-memory view of a job",
    ("api/routes/files.py", "assign file.status"): "a file's own `deleted` mark",
    ("tunesmith/client/http.py", "assign self.status"): "the client's HTTP error code",
    ("tunesmith/webhooks/outbox.py", "keyword WebhookDelivery"): "a webhook delivery's state",
    ("tunesmith/webhooks/sender.py",
     "assign (delivery.status, delivery.delivered_at, delivery.next_attempt_at)"):
        "a webhook delivery's state",
    ("tunesmith/webhooks/sender.py", "assign (delivery.status, delivery.next_attempt_at)"):
        "a webhook delivery's state",
}


def status_writes(source: str) -> set[str]:
    """Each way `source` writes a status or reaches for the guard, as 'kind what'."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if any(isinstance(part, ast.Attribute) and part.attr == "status"
                       for part in ast.walk(target)):
                    found.add(f"assign {ast.unparse(target)}")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if any(keyword.arg == "status" for keyword in node.keywords):
                found.add(f"keyword {name}")
            if name.endswith("values") and any(
                    isinstance(arg, ast.Dict) and any(
                        isinstance(key, ast.Constant) and key.value == "status"
                        for key in arg.keys) for arg in node.args):
                found.add(f"values-dict {name}")
            if name == "setattr" and len(node.args) > 1 and \
                    isinstance(node.args[1], ast.Constant) and node.args[1].value == "status":
                found.add(f"setattr {ast.unparse(node.args[0])}")
        elif isinstance(node, ast.Name | ast.Attribute):
            named = node.id if isinstance(node, ast.Name) else node.attr
            if named in GUARDS:
                found.add(f"guard {named}")
        elif isinstance(node, ast.ImportFrom):
            found |= {f"guard {alias.name}" for alias in node.names if alias.name in GUARDS}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                RAW_SQL.search(node.value):
            found.add("sql " + " ".join(node.value.split())[:60])
    return found


def shipped_writes() -> set[tuple[str, str]]:
    """Every status write in the shipped packages outside HOME, by (path, what)."""
    writes = set()
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            if relative.is_relative_to(HOME):
                continue
            writes |= {(relative.as_posix(), what)
                       for what in status_writes(path.read_text())}
    return writes


def test_no_status_is_written_outside_tunesmith_jobs() -> None:
    outside = shipped_writes() - set(NOT_A_JOB)
    assert not outside, (
        "a status written outside tunesmith/jobs/ (use the operations in tunesmith/jobs/ "
        f"operations.py, attempts.py or exports.py): {sorted(outside)}")


def test_each_allowed_write_still_exists() -> None:
    """An entry left behind by a change would let a job's status write hide under it."""
    assert set(NOT_A_JOB) <= shipped_writes()


def test_the_walk_finds_each_way_of_writing_a_status() -> None:
    """Proof that the test above can fail: each of these would be flagged if it shipped."""
    snippets = {
        "job.status = 'cancelled'": "assign job.status",
        "job.status, job.error = 'failed', {}": "assign (job.status, job.error)",
        "session.execute(sa.update(Job).values(status='queued'))": "keyword sa.update(Job).values",
        "session.execute(sa.update(Export).values({'status': 'failed'}))":
            "values-dict sa.update(Export).values",
        "Job(id='x', status='running')": "keyword Job",
        "ctx.update_job(status='succeeded')": "keyword ctx.update_job",
        "setattr(export, 'status', 'cancelled')": "setattr export",
        "from tunesmith.jobs.states import change_status": "guard change_status",
        "states.change_status(session, 'x', JobStatus.failed, 'm')": "guard change_status",
        "EXPORT_LIFECYCLE.change(session, 'x', ExportStatus.failed)": "guard EXPORT_LIFECYCLE",
        "session.execute(sa.text('UPDATE jobs SET status = :s WHERE id = :i'))":
            "sql UPDATE jobs SET status = :s WHERE id = :i",
    }
    for source, expected in snippets.items():
        assert expected in status_writes(source), (source, status_writes(source))
    assert not status_writes("job_object(job)['status']\nJobStatus(job.status) in TERMINAL\n"
                             "JSONResponse(body, status_code=409)\n")
