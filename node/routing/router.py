"""The router: a study's header → its task, or for each task the first condition its nearest rule failed.

A code in the rules' ``procedures`` table routes by itself; otherwise the first rule whose every condition
holds wins. A study no rule matches gets no task, and the reason names the task whose rule came nearest
(most conditions holding) and the condition that failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from node.routing.conditions import code_listed, first_failure, nearness
from node.routing.header import StudyHeader
from node.routing.orders import OrderFinder
from node.routing.rules import DomainSpec, RoutingError, RoutingRules

#: The rules the node ships with, used when ``routing.rules`` names none.
DEFAULT_RULES = Path(__file__).with_name("rules.yaml")


@dataclass(frozen=True)
class Task:
    """What to do with a study: the task's name, its clinical domain and what to ask."""

    name: str
    domain: str
    spec: DomainSpec


@dataclass(frozen=True)
class Miss:
    """A task a study was not routed to: its nearest rule (1-based) and the first condition that rule failed."""

    task: str
    rule: int
    failed: str
    nearness: tuple[int, int]  # that rule's conditions that held before the first failed, and in all


@dataclass(frozen=True)
class Explanation:
    """Why a study goes where it goes: the task and what chose it, or each task's nearest miss."""

    task: Task | None
    chosen_by: str  # "rule N" or "procedure code SCHEME:VALUE"; empty without a task
    misses: tuple[Miss, ...]  # without a task: every task's, nearest first

    def reason(self, header: StudyHeader) -> str:
        """Why the study has no task (codes and the rule's own terms only, never a description's text)."""
        text = f"no routing rule matches modality '{header.modality}', body part '{header.body_part}'"
        if self.misses:
            near = self.misses[0]
            text += f"; nearest: task '{near.task}' (rule {near.rule}): {near.failed}"
        return text


class Router:
    """Applies routing rules to studies; with ``orders``, a study's HL7 order is routed on too."""

    def __init__(self, rules: RoutingRules, orders: OrderFinder | None = None) -> None:
        self.rules = rules
        self.orders = orders

    @classmethod
    def from_file(cls, path: Path | None = None) -> Router:
        """Load and validate the rules file (None: the rules the node ships with)."""
        path = DEFAULT_RULES if path is None else Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls(RoutingRules.model_validate(data))
        except OSError as exc:
            raise RoutingError(f"cannot read routing rules {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise RoutingError(f"routing rules {path} are not valid YAML: {exc}") from exc
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise RoutingError(f"routing rules {path}: {details}") from exc

    def with_orders(self, orders: OrderFinder) -> Router:
        """These rules, routing on each study's HL7 order too."""
        return Router(self.rules, orders)

    def _task(self, name: str) -> Task:
        spec = self.rules.domains[name]
        return Task(name, spec.domain or name, spec)

    def explain(self, header: StudyHeader) -> Explanation:
        """The task for a study and what chose it; without one, each task's nearest rule and its failure."""
        for code, name in self.rules.procedures.items():
            if code_listed((code,), header.procedure_codes):
                return Explanation(self._task(name), f"procedure code {code} (procedures table)", ())
        nearest: dict[str, Miss] = {}
        for index, rule in enumerate(self.rules.rules, start=1):
            failure = first_failure(rule.match, header)
            if failure is None:
                return Explanation(self._task(rule.domain), f"rule {index}", ())
            miss = Miss(rule.domain, index, failure.why_not, nearness(rule.match, header))
            if rule.domain not in nearest or miss.nearness > nearest[rule.domain].nearness:
                nearest[rule.domain] = miss
        ranked = sorted(nearest.values(), key=lambda miss: (-miss.nearness[0], -miss.nearness[1], miss.rule))
        return Explanation(None, "", tuple(ranked))

    def route(self, header: StudyHeader) -> Task | str:
        """The task for a study, or the reason it has none."""
        explanation = self.explain(header)
        return explanation.task or explanation.reason(header)
