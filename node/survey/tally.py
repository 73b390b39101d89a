"""The survey's tally: studies per task and per skip reason, with each group's most frequent
StudyDescriptions, as text for the terminal or as JSON. Descriptions may name patients: they are shown
to the operator only, never logged."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from node.routing import Router, first_routed
from node.survey.query import FoundStudy

#: What an empty StudyDescription is shown as.
NO_DESCRIPTION = "(no description)"


@dataclass
class Group:
    """The studies of one task or one skip reason."""

    studies: int = 0
    descriptions: Counter[str] = field(default_factory=Counter)

    def top(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` most frequent StudyDescriptions with their studies (ties in alphabetical order)."""
        return sorted(self.descriptions.items(), key=lambda item: (-item[1], item[0]))[:count]


@dataclass
class Tally:
    """Where the surveyed studies would go."""

    router: Router
    tasks: dict[str, Group] = field(default_factory=dict)
    skipped: dict[str, Group] = field(default_factory=dict)

    @property
    def studies(self) -> int:
        """Studies tallied."""
        return sum(group.studies for group in (*self.tasks.values(), *self.skipped.values()))

    def add(self, study: FoundStudy) -> None:
        """Route a study on its series' headers, as the node would route it on its instances."""
        header, explanation = first_routed(study.headers, self.router)
        if explanation.task is not None:
            group = self.tasks.setdefault(explanation.task.name, Group())
        else:
            group = self.skipped.setdefault(explanation.reason(header), Group())
        group.studies += 1
        group.descriptions[study.description or NO_DESCRIPTION] += 1

    def as_json(self, top: int) -> dict[str, Any]:
        """The tally as JSON: ``tasks`` by name and ``skipped`` by reason, each with its studies and top
        descriptions (most studies first)."""
        def groups(by: dict[str, Group]) -> dict[str, Any]:
            return {key: {"studies": group.studies, "descriptions": [list(pair) for pair in group.top(top)]}
                    for key, group in sorted(by.items(), key=lambda item: (-item[1].studies, item[0]))}

        return {"studies": self.studies, "tasks": groups(self.tasks), "skipped": groups(self.skipped)}

    def lines(self, top: int) -> list[str]:
        """The tally as text: each task, then each skip reason, most studies first, with top descriptions."""
        data = self.as_json(top)
        lines = [f"{data['studies']} studies: {sum(g['studies'] for g in data['tasks'].values())} would be read, "
                 f"{sum(g['studies'] for g in data['skipped'].values())} skipped"]
        for title, groups in (("read, per task:", data["tasks"]), ("skipped, per reason:", data["skipped"])):
            if groups:
                lines.append(title)
            for key, group in groups.items():
                lines.append(f"  {group['studies']:>6}  {key}")
                lines += [f"          {count:>5} × {text}" for text, count in group["descriptions"]]
        return lines
