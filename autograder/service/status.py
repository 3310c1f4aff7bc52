"""`python -m autograder status --course ROOT`: the grading service's queue, throughput and failures."""

from __future__ import annotations

import collections
import json
import statistics
import time

from autograder.core import names
from autograder.service import queue as jobqueue

RECENT_SECONDS = 3600
FLAGS_SHOWN = 20


def summary(queue: jobqueue.Queue, now: float | None = None, identity: str | None = None) -> dict:
    """Plain data about the queue (what the status command prints, or emits with --json);
    `identity`: what the exchange can verify of who submitted (ExchangeTrust.describe)."""
    now = time.time() if now is None else now
    rows = queue.rows()
    counts = collections.Counter(row.state for row in rows)
    done = [row for row in rows if row.state == jobqueue.DONE and row.finished_at is not None]
    recent = [row for row in done if row.finished_at >= now - RECENT_SECONDS]
    latencies = sorted(row.finished_at - row.submitted_at for row in recent)
    grading = [row.finished_at - row.started_at for row in recent if row.started_at is not None]
    return {
        "course_id": queue.course_id,
        "identity": identity,
        "flags": [
            {"origin": row.origin, "kind": row.kind, "message": row.message, "at": _utc(row.at)}
            for row in queue.flags(FLAGS_SHOWN)
        ],
        "flag_count": queue.flag_count(),
        "states": {state: counts.get(state, 0) for state in jobqueue.STATES},
        "waiting_for_policy": sum(1 for row in rows if row.state == jobqueue.QUEUED and row.not_before > now),
        "graded_last_hour": len(recent),
        "graded_last_10_minutes": sum(1 for row in recent if row.finished_at >= now - 600),
        "latency_median_seconds": statistics.median(latencies) if latencies else None,
        "latency_p95_seconds": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None,
        "grading_median_seconds": statistics.median(grading) if grading else None,
        "running": [
            {
                "student": row.student,
                "assignment": row.assignment,
                "by": row.claimed_by,
                "seconds": round(now - (row.started_at or now), 1),
                "last_heartbeat_seconds_ago": round(now - (row.heartbeat or now), 1),
            }
            for row in rows
            if row.state == jobqueue.RUNNING
        ],
        "held": [
            {
                "student": row.student,
                "assignment": row.assignment,
                "origin": row.origin,
                "submitted": _utc(row.submitted_at),
                "message": row.message,
            }
            for row in rows
            if row.state == jobqueue.HELD
        ],
        "failed": [
            {
                "student": row.student,
                "assignment": row.assignment,
                "origin": row.origin,
                "attempts": row.attempts,
                "message": row.message,
            }
            for row in rows
            if row.state == jobqueue.FAILED
        ],
    }


def render(data: dict) -> str:
    def seconds(value):
        return "-" if value is None else f"{value:.2f} s"

    states = data["states"]
    lines = [data["identity"]] if data.get("identity") else []
    lines += [
        f"course {data['course_id']}: {states['queued']} queued ({data['waiting_for_policy']} held by the "
        f"rate limit), {states['held']} held for the instructor, {states['running']} grading, "
        f"{states['done']} done, {states['failed']} failed, {states['superseded']} superseded",
        f"last hour: {data['graded_last_hour']} graded ({data['graded_last_10_minutes']} in the last 10 minutes); "
        f"submission to feedback: median {seconds(data['latency_median_seconds'])}, "
        f"p95 {seconds(data['latency_p95_seconds'])}; grading median {seconds(data['grading_median_seconds'])}",
    ]
    for row in data["running"]:
        lines.append(
            f"  grading {row['student']}/{row['assignment']} on {row['by']} for {row['seconds']:g} s "
            f"(last heartbeat {row['last_heartbeat_seconds_ago']:g} s ago)"
        )
    for row in data["held"]:
        lines.append(f"  HELD {row['student']}/{row['assignment']} submitted {row['submitted']}: {row['message']}")
    if data["held"]:
        lines.append("  (python -m autograder grade-held [ASSIGNMENT] [--student S] queues them for grading)")
    for row in data["failed"]:
        lines.append(
            f"  FAILED {row['student']}/{row['assignment']} after {row['attempts']} attempts: {row['message']}"
        )
    for row in data.get("flags", []):
        lines.append(f"  FLAG {row['origin']} ({row['at']}): {row['kind']}: {row['message']}")
    if data.get("flag_count", 0) > len(data.get("flags", [])):
        lines.append(f"  ... {data['flag_count'] - len(data['flags'])} older flags (--json lists the newest)")
    # Every value may come from a student (names, messages quoting their files): one terminal
    # line each, control characters escaped.
    return "\n".join(names.shown(line, 2000) for line in lines)


def _utc(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _queue(course) -> jobqueue.Queue:
    from autograder.nbgrader.course_view import CourseView

    view = CourseView.load(course)
    return jobqueue.Queue(jobqueue.connect(view.db_url), view.course_id)


def _identity(course) -> str | None:
    """What the course's exchange can verify of who submitted (None for a course without one)."""
    from autograder.core import collector
    from autograder.nbgrader.course_view import CourseView
    from autograder.service.service import exchange_inbound

    view = CourseView.load(course)
    if not exchange_inbound(view.config, view.course_id).is_dir():
        return None
    with view.gradebook() as gradebook:
        roster = {student.id for student in gradebook.students}
    return collector.ExchangeTrust(config=view.config).describe(roster)


def grade_held(course, assignment: str | None = None, students: list[str] | None = None) -> int:
    """`python -m autograder grade-held`: queue held submissions; the running service grades them."""
    count = _queue(course).release_held(assignment, students)
    which = f" of {assignment}" if assignment else ""
    who = f" by {', '.join(students)}" if students else ""
    print(f"{count} held submission{'s' if count != 1 else ''}{which}{who} queued for grading")
    return 0


def main(course, as_json: bool = False) -> int:
    data = summary(_queue(course), identity=_identity(course))
    print(json.dumps(data) if as_json else render(data))
    return 0
