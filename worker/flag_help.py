"""What the flags say: each setting's help line and placeholder (``--timeout SECONDS``),
``run --help``'s sections in the order an operator thinks of them, and what ``list`` takes and
says otherwise. Words only; ``worker.parser`` builds the grammar from them.
"""

from __future__ import annotations

HELP = {
    "input": "file of task IDs (text, CSV with task_id, JSON Lines; .gz ok); - for stdin",
    "input_format": "input format; auto: from the file name, else the first line",
    "queue": "read from a Redis stream instead: redis://host:port/db",
    "stream": "with --queue: the Redis stream to read",
    "group": "with --queue: the consumer group (created if missing)",
    "consumer": "with --queue: this consumer's name (default: hostname-pid)",
    "until_empty": "with --queue: exit once the stream is drained",
    "claim_idle": "with --queue: seconds a pending entry stays idle before others reclaim it",
    "journal_retention": "seconds the journal keeps final outcomes (0: all): a long-running "
    "--queue consumer forgets older ones as it goes (default 3600); a run with --journal, once "
    "at its start (default: keeps all)",
    "keep_acked": "with --queue: leave entries in the stream once acknowledged (default: trim "
    "the ones every consumer group has acknowledged)",
    "dead_letter_maxlen": "with --queue: keep the newest N entries of <stream>:dead, dropping "
    "older ones (default 0: keep all)",
    "shard": "take shard I of N, a stable hash share of the input (Indexed Jobs)",
    "shard_count": "take the shard JOB_COMPLETION_INDEX names, of N",
    "redis": "Redis URL for --shared-rate-key and --refusal-memory when the input is a file",
    "shared_rate_key": "Redis key of one rate limit shared by every replica",
    "refusal_memory": "with --queue, --redis or --refusal-file: seconds refused credentials "
    "are remembered there, so no run (a restart, another replica) sends them again; with a "
    "Redis, runs started together send their first request one at a time (0: neither)",
    "refusal_file": "without a Redis: the file where refused credentials are remembered (on a "
    "volume that outlives the pod, e.g. beside the journal)",
    "health_host": "with --queue, long-running: address of /healthz and /metrics",
    "health_port": "with --queue, long-running: port of /healthz and /metrics",
    "pushgateway": "Prometheus Pushgateway URL: push the run's metrics at the end",
    "id_pattern": "regular expression a task ID must match",
    "project_id": "default project ID (a CSV/JSONL project_id column overrides it)",
    "region": "region, e.g. cn-north-4 (endpoint https://dcs.REGION.myhuaweicloud.com)",
    "endpoint": "API endpoint URL (overrides --region)",
    "concurrency": "requests in flight at most",
    "processes": "worker processes on this machine, each a shard of the input (CPU-bound runs)",
    "rate": "requests per second for the whole run (0 = unknown: find it from 429s)",
    "burst": "requests allowed at once above the rate",
    "max_attempts": "attempts per task, the first included",
    "timeout": "seconds for one whole request (connect, headers and body)",
    "backoff_base": "seconds: retry n waits uniform(0, min(cap, base * 2^(n-1)))",
    "backoff_cap": "seconds: the longest backoff between two attempts",
    "max_retry_after": "seconds: the longest Retry-After honoured",
    "adaptive": "adapt the rate to throttling (default: on with --rate 0; with R, a ceiling)",
    "grace": "seconds in-flight requests get after SIGTERM/SIGINT or the deadline",
    "deadline": "stop by then: seconds or a duration from start (3300, 45m, 1h30m), or an "
    "ISO-8601 timestamp",
    "max_deletes": "safety guard: abort (exit 3) before deleting more than this many tasks",
    "retry_budget": "retries the whole run may spend beyond first attempts (refilled by successes)",
    "retry_refund": "retry tokens each success adds back to the budget",
    "breaker_window": "answers the circuit breaker looks back over",
    "breaker_threshold": "share of failed answers in the window that opens the breaker",
    "forbidden_limit": "abort (exit 3) after this many HTTP 403 answers in a row (0: never)",
    "retry_failed": "re-attempt the journal's failed/not_attempted tasks (not with --input)",
    "journal": "SQLite journal: a re-run skips tasks already deleted",
    "report": "write the JSON report here",
    "outcomes": "append one JSON line per task here",
    "dry_run": "validate input, credentials and endpoint; send no DELETE",
    "message": "optional message body sent with each DELETE",
    "log_level": "the least severe level logged",
    "log_format": "auto: console on a terminal, JSON lines otherwise",
    "progress": "auto: a bar on a terminal, else a log line every --progress-interval",
    "progress_interval": "seconds between progress log lines",
}


# ``run --help`` in sections, in the order an operator thinks of them, each flag with a
# placeholder that says what it takes. Every setting but the credentials is in one section.
GROUPS = (
    ("what to delete", ("input", "input_format", "id_pattern", "shard", "shard_count",
                        "retry_failed", "dry_run", "message")),
    ("where", ("project_id", "region", "endpoint")),
    ("how fast", ("concurrency", "processes", "rate", "burst", "adaptive", "max_attempts",
                  "timeout", "backoff_base", "backoff_cap", "max_retry_after")),
    ("stopping and guards", ("grace", "deadline", "max_deletes", "retry_budget", "retry_refund",
                             "breaker_window", "breaker_threshold", "forbidden_limit")),
    ("records, logs and metrics", ("journal", "journal_retention", "report", "outcomes",
                                   "log_level", "log_format", "progress", "progress_interval",
                                   "pushgateway")),
    ("queue consumers (--queue)", ("queue", "stream", "group", "consumer", "until_empty",
                                   "claim_idle", "keep_acked", "dead_letter_maxlen",
                                   "health_host", "health_port")),
    ("shared by runs and replicas", ("redis", "shared_rate_key", "refusal_memory",
                                     "refusal_file")),
)  # fmt: skip
METAVAR = {
    "input": "PATH", "journal": "PATH", "report": "PATH", "outcomes": "PATH",
    "refusal_file": "PATH",
    "queue": "URL", "redis": "URL", "endpoint": "URL", "pushgateway": "URL",
    "id_pattern": "REGEX", "shard": "I/N", "message": "TEXT", "project_id": "ID",
    "region": "NAME", "stream": "NAME", "group": "NAME", "consumer": "NAME",
    "shared_rate_key": "KEY", "health_host": "ADDRESS", "health_port": "PORT",
    "rate": "R", "retry_refund": "R", "breaker_threshold": "SHARE", "deadline": "WHEN",
    "timeout": "SECONDS", "backoff_base": "SECONDS", "backoff_cap": "SECONDS",
    "max_retry_after": "SECONDS", "grace": "SECONDS", "progress_interval": "SECONDS",
    "claim_idle": "SECONDS", "journal_retention": "SECONDS", "refusal_memory": "SECONDS",
}  # fmt: skip
RUN_USAGE = (
    "%(prog)s (--input PATH | --queue URL | --retry-failed --journal PATH)\n"
    "       [--project-id ID] [--region NAME | --endpoint URL] [options]"
)


# The settings ``list`` takes as flags (the rest from the environment and files, as for run).
LIST_SETTINGS = (
    "project_id",
    "region",
    "endpoint",
    "timeout",
    "max_attempts",
    "log_level",
    "log_format",
    "refusal_memory",
    "refusal_file",
    "progress_interval",
)
# Where ``list`` means otherwise than ``run``: a project has no CSV column, a page no task.
LIST_HELP = {
    "project_id": "the project whose tasks are listed",
    "max_attempts": "attempts per page request, the first included",
    "progress_interval": "seconds between two cleanup.list_progress log lines",
}
