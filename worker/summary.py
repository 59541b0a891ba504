"""The summary an operator reads at the end of a run (or of ``dcs-cleanup report``): one row per
outcome, the request figures, why tasks were skipped, failed or rejected, and what the exit code
means; made from the JSON report (``worker.report``), so a report rendered again from a journal
reads the same.
"""

from __future__ import annotations

from typing import Any

from worker.adaptive import QUOTA_MARGIN

EXIT_MEANING = {
    0: "every task deleted, absent, skipped or would_delete",
    1: "some tasks ended rejected or failed",
    2: "usage or input error; nothing was sent",
    3: "aborted",
    4: "interrupted; the rest is not_attempted",
}

# What to do after a run stopped early, by its stop reason: the README's table of stop reasons,
# word for word (a test holds them equal). Not for a signal or a deadline: ``_again`` says it.
_SAME_SERVER = "--endpoint is some other web server (a wrong port, a website, a login portal)"
_TLS = (
    "behind a TLS-inspecting proxy, point SSL_CERT_FILE at its CA bundle; or the address is "
    "http://, not https://"
)
NEXT_STEP = {
    "credentials_refused": (
        "set CLOUD_SDK_AK/CLOUD_SDK_SK (and CLOUD_SDK_SECURITY_TOKEN for temporary credentials) "
        "right. Do not run again with the same ones: Huawei locks an AK/SK after more than five "
        "refused signatures."
    ),
    "clock_skew": (
        "set this machine's clock right (NTP); the detail says by how much. The AK/SK are fine"
    ),
    "api_not_found": "--region or --endpoint names a gateway without the DCS task API",
    "not_dcs_api": _SAME_SERVER,
    "redirected": _SAME_SERVER,
    "tls_untrusted": _TLS,
    "tls_mismatch": _TLS,
    "circuit_open": (
        "the API is failing (5xx, no answers): run the same command again later; with --journal "
        "it goes on where it stopped"
    ),
    "forbidden": (
        "grant dcs:task:delete (or correct --project-id), then run again with the same --journal"
    ),
    "max_deletes": "the guard tripped: check the input is the one meant, then raise --max-deletes",
    "journal_error": (
        "free the disk under --journal (full, read-only) and run the same command again: what "
        "the journal holds as done is skipped, the rest sent again (a task deleted but not "
        "recorded is then absent)"
    ),
    "output_error": (
        "the disk under --outcomes (full, read-only, gone); every outcome had is in the "
        "journal: dcs-cleanup report --journal J --outcomes NEW"
    ),
    "rate_limit_error": (
        "Redis refused the --shared-rate-key limiter (a wrong type at the key, an ACL)"
    ),
    "worker_process_failed": (
        "a --processes child died (its log says why); run again with the same --journal"
    ),
    "input_error": (
        "fix the input where the error names it (3 if some tasks were already sent; with "
        "--journal a re-run skips them)"
    ),
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
    quota = (report.get("rate") or {}).get("quota_stated")
    if quota:  # what the account may send, said by the gateway: worth keeping for next time
        lines.append(
            f"quota: the gateway's 429s state {quota:g} requests/s for this account; "
            f"--rate {quota * QUOTA_MARGIN:g} --adaptive starts the next run just under it"
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
    step = NEXT_STEP.get(report["stop_reason"] or "")
    if step is not None:  # a run stopped early, not by a signal or its deadline
        lines.append(f"next: {step}")
    reason = f" ({report['stop_reason']})" if report["stop_reason"] else ""
    lines.append(f"exit {code}: {EXIT_MEANING.get(code, '')}{reason}")
    return "\n".join(lines)


def _again(report: dict[str, Any]) -> str | None:
    """How to send again what a run that failed some tasks (exit 1) or was stopped (exit 4)
    left: with a journal, the same command skips what ended (and ``--retry-failed`` sends the
    rest alone, when the whole input was read); without one, it sends it all.
    Not for an abort (exit 3: the credentials, the clock, the endpoint first). A queue's failed
    entries are dead letters in ``<stream>:dead``, which a run reads no more: ``redrive`` puts
    them back once what failed them is mended, after an abort too (the breaker's failed tasks);
    its not_attempted entries stay pending, read again as they are."""
    outcomes = report["outcomes"]
    if report["settings"].get("queue"):
        if not outcomes["failed"]:
            return None
        stream = report.get("queue", {}).get("stream") or report["settings"].get("stream")
        return (
            f"again: the {outcomes['failed']} failed entries are in {stream}:dead; "
            f"dcs-cleanup redrive, given this run's --queue and --stream, puts them back on "
            f"{stream}"
        )
    left = outcomes["failed"] + outcomes["not_attempted"]
    if report["exit_code"] not in (1, 4) or not left:
        return None
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
