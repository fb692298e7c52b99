"""What ``rconv check`` reports: named rule results, per-path differences, a summary line.

A rule result names the rule, the spec section it comes from and every problem found (one line
each); warnings (SHOULD rules) never make an image fail. A difference is one field of one path
that differs between the source tree and the Nydus tree. The report is equivalent (``ok``) only
when no error-level rule failed and no difference was found, on every checked platform.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR, WARNING = "error", "warning"
TEXT_DIFF_LIMIT = 200  # differences printed per platform (the JSON report has all of them)


@dataclass
class RuleResult:
    name: str
    spec: str  # where the rule comes from, e.g. "image.md §17"
    level: str = ERROR
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the rule was not evaluated (never a failure by itself)

    @property
    def failed(self) -> bool:
        return self.level == ERROR and bool(self.problems)

    @property
    def status(self) -> str:
        if self.skipped is not None:
            return "skipped"
        if not self.problems:
            return "ok"
        return "failed" if self.level == ERROR else "warning"


@dataclass(frozen=True)
class Difference:
    path: str
    field: str
    source: str
    nydus: str


@dataclass
class PlatformResult:
    platform: str
    target_digest: str
    source_digest: str | None = None
    rules: list[RuleResult] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences and not any(r.failed for r in self.rules)

    def rule(self, name: str) -> RuleResult | None:
        return next((r for r in self.rules if r.name == name), None)


@dataclass
class CheckReport:
    target: str
    source: str | None
    rules: list[RuleResult] = field(default_factory=list)  # index-level rules
    platforms: list[PlatformResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            bool(self.platforms)
            and all(p.ok for p in self.platforms)
            and not any(r.failed for r in self.rules)
        )

    def failed_rules(self) -> set[str]:
        """Names of the error-level rules that failed, on any platform."""
        rules = [*self.rules, *(r for p in self.platforms for r in p.rules)]
        return {r.name for r in rules if r.failed}

    def summary(self) -> str:
        failed = sorted(self.failed_rules())
        diffs = sum(len(p.differences) for p in self.platforms)
        paths = sum(p.stats.get("paths", 0) for p in self.platforms)
        checked = len(self.rules) + sum(len(p.rules) for p in self.platforms)
        verdict = "equivalent" if self.ok else "NOT equivalent"
        what = f"{checked} rules, {len(failed)} failed"
        if failed:
            what += f" ({', '.join(failed)})"
        where = f"{len(self.platforms)} platform(s)"
        if self.source:
            where += f", {paths} paths compared, {diffs} difference(s)"
        return f"{verdict}: {self.target}: {where}; {what}; {self.seconds:.1f} s"

    def render(self, limit: int = TEXT_DIFF_LIMIT) -> list[str]:
        """Human-readable lines: failed and warned rules, differences, notes, the summary."""
        lines = [_rule_line(r) for r in self.rules if r.status != "ok"]
        for p in self.platforms:
            head = f"platform {p.platform or '(single manifest)'}: {p.target_digest}"
            lines.append(head + (f" (source {p.source_digest})" if p.source_digest else ""))
            lines += ["  " + _rule_line(r) for r in p.rules if r.status != "ok"]
            for d in p.differences[:limit]:
                lines.append(f"  {d.path}: {d.field}: source {d.source}, nydus {d.nydus}")
            if len(p.differences) > limit:
                lines.append(f"  … and {len(p.differences) - limit} more differences")
            lines += [f"  note: {n}" for n in p.notes]
            stats = p.stats
            if "chunks" in stats:
                how = "range requests" if stats["range_reads"] else "whole-blob downloads"
                lines.append(
                    f"  read {stats['chunks']} chunks ({stats['chunk_bytes']} stored bytes, "
                    f"{stats['chunk_bytes_read']} bytes read in {stats['chunk_ranges']} ranges); "
                    f"{stats['bytes_fetched']} bytes fetched with {stats['requests']} {how}"
                )
        lines.append(self.summary())
        return lines

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["summary"] = self.summary()
        for p, obj in zip(self.platforms, out["platforms"], strict=True):
            obj["ok"] = p.ok
        for r, obj in _rules_with_json(self, out):
            obj["status"] = r.status
        return out


def _rules_with_json(report: CheckReport, out: dict[str, Any]):
    yield from zip(report.rules, out["rules"], strict=True)
    for p, obj in zip(report.platforms, out["platforms"], strict=True):
        yield from zip(p.rules, obj["rules"], strict=True)


def _rule_line(r: RuleResult) -> str:
    head = f"{r.status.upper()} {r.name} ({r.spec})"
    if r.skipped is not None:
        return f"{head}: {r.skipped}"
    if len(r.problems) == 1:
        return f"{head}: {r.problems[0]}"
    return head + "".join(f"\n      {p}" for p in r.problems)
