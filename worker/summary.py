"""The summary an operator reads at the end of a run (or of ``dcs-cleanup report``): one row per
outcome, the request figures, why tasks were skipped, failed or rejected, and what the exit code
means; made from the JSON report (``worker.report``), so a report rendered again from a journal
reads the same.
"""

from __future__ import annotations

from typing import Any

EXIT_MEANING = {
    0: "every task deleted, absent, skipped or would_delete",
    1: "some tasks ended rejected or failed",
    2: "usage or input error; nothing was sent",
    3: "aborted",
    4: "interrupted; the rest is not_attempted",
}


def summary_table(report: dict[str, Any]) -> str:
    """A short human summary: one row per outcome, then the request figures and the exit code."""
    rows = [("outcome", "tasks")]
    rows += [(name, str(count)) for name, count in report["outcomes"].items() if count]
    rows.append(("total", str(report["tasks"])))
    width = max(len(a) for a, _ in rows)
    num = max(len(b) for _, b in rows)
    lines = [f"{a:<{width}}  {b:>{num}}" for a, b in rows]
    lines.insert(1, "-" * (width + num + 2))
    lines.insert(len(lines) - 1, "-" * (width + num + 2))
    lat = report["latency_ms"]
    latency = f"p50 {lat['p50']} ms · p99 {lat['p99']} ms"
    if lat["p50"] is None:  # no answer, or the runs of a journal: each report has its own
        latency = "latency in each run's report" if report["requests"] else "no answers"
    lines.append(
        f"requests {report['requests']} · retries {report['retries']} · "
        f"throttled {report['throttled']} · {report['throughput_per_s']} tasks/s · "
        f"{latency} · {report['duration_s']} s"
    )
    for outcome in ("skipped", "failed", "rejected"):
        reasons = list(report[f"{outcome}_reasons"].items())
        if reasons:
            said = ", ".join(f"{k} {v}" for k, v in reasons[:5])
            more = f", and {len(reasons) - 5} more in the report" if len(reasons) > 5 else ""
            lines.append(f"{outcome}: {said}{more}")
    code = report["exit_code"]
    if report["stop_reason"] == "run_in_progress":  # report --journal of a run still going
        lines.append("a run is still writing this journal: counts so far, no exit code yet")
        return "\n".join(lines)
    again = _again(report)
    if again is not None:
        lines.append(again)
    reason = f" ({report['stop_reason']})" if report["stop_reason"] else ""
    lines.append(f"exit {code}: {EXIT_MEANING.get(code, '')}{reason}")
    return "\n".join(lines)


def _again(report: dict[str, Any]) -> str | None:
    """How to send again what a run that failed some tasks (exit 1) or was stopped (exit 4)
    left: with a journal, the same command skips what ended (and ``--retry-failed`` sends the
    rest alone, when the whole input was read); without one, it sends it all.
    Not for an abort (exit 3: the credentials, the clock, the endpoint first). A queue's failed
    entries are dead letters in ``<stream>:dead``, which a run reads no more: ``redrive`` puts
    them back (its not_attempted entries stay pending, read again as they are)."""
    outcomes = report["outcomes"]
    left = outcomes["failed"] + outcomes["not_attempted"]
    if report["exit_code"] not in (1, 4) or not left:
        return None
    if report["settings"].get("queue"):
        if not outcomes["failed"]:
            return None
        stream = report.get("queue", {}).get("stream") or report["settings"].get("stream")
        return (
            f"again: the {outcomes['failed']} failed entries are in {stream}:dead; "
            f"dcs-cleanup redrive, given this run's --queue and --stream, puts them back on "
            f"{stream}"
        )
    journal = report["settings"].get("journal")  # a run's --journal, or the one rendered
    # ``dcs-cleanup report --journal`` renders it: the command to give again is the run's.
    same = "the same run command" if "runs" not in report else "the run command, given again,"
    if journal and report.get("input_fully_read") is False:
        # Lines the stop left unread are in no journal: --retry-failed would pass them by.
        return f"again: {same} skips the tasks that ended deleted or absent"
    if journal:
        return (
            f"again: {same} skips the tasks that ended deleted or absent; "
            f"--retry-failed --journal {journal} sends the {left} failed and not_attempted alone"
        )
    return (
        "again: the same run command sends every task again (the deleted ones come back absent); "
        "with --journal PATH it would skip them"
    )
