"""Log review for the ``review_logs`` step: collectors, parsers, detections, output.

Public API (collectors live in their own modules so that importing the review does
not import the Docker, Kubernetes or AWS SDKs)::

    from tasks.logs import ReviewConfig, Source, Window, review, to_markdown, to_table_rows
    from tasks.logs.collect_docker import collect_container
    from tasks.logs.collect_kubernetes import collect_pod
    from tasks.logs.collect_files import collect_files
    from tasks.logs.collect_cloudwatch import collect_log_group
"""

from .config import ReviewConfig
from .detections import RULES, Rule
from .model import (
    CollectedArtifact,
    Finding,
    LineRef,
    LogProblem,
    ReviewResult,
    Severity,
    Source,
    SourceCounts,
    TimelineEvent,
    Window,
    rotated_set,
)
from .render import to_markdown, to_table_rows
from .review import review

__all__ = [
    "RULES",
    "CollectedArtifact",
    "Finding",
    "LineRef",
    "LogProblem",
    "ReviewConfig",
    "ReviewResult",
    "Rule",
    "Severity",
    "Source",
    "SourceCounts",
    "TimelineEvent",
    "Window",
    "review",
    "rotated_set",
    "to_markdown",
    "to_table_rows",
]
