"""Routing: a study's headers (and its HL7 order) → a task (clinical domain, the training question and its
options, how its images are rendered, the context that goes with it).

Rules live in a YAML file (``routing.rules``; unset, the rules the node ships with,
``node/routing/rules.yaml``). Tasks are keyed by name; a task belongs to one of QoQ-Med's nine domains
(its name, unless it says ``domain``), so a domain can hold several training questions. ``rules.py``
holds the file's models, ``header.py`` what a study carries, ``conditions.py`` the conditions tried on
it, ``router.py`` the choice (or each task's nearest miss), ``orders.py`` the study's HL7 order and
``stage.py`` the route stage.
"""

from node.routing.header import StudyHeader
from node.routing.router import DEFAULT_RULES, Explanation, Miss, Router, Task
from node.routing.rules import (
    DOMAINS,
    ContextPolicy,
    DomainSpec,
    EcgPolicy,
    LabPolicy,
    Match,
    PriorPolicy,
    RoutingError,
    RoutingRules,
    Rule,
)
from node.routing.stage import NOT_READ_MODALITIES, Routed, Skipped, first_routed, route, skip, study_routing

__all__ = ["DEFAULT_RULES", "DOMAINS", "NOT_READ_MODALITIES", "ContextPolicy", "DomainSpec", "EcgPolicy",
           "Explanation", "LabPolicy", "Match", "Miss", "PriorPolicy", "Routed", "Router", "RoutingError",
           "RoutingRules", "Rule", "Skipped", "StudyHeader", "Task", "first_routed", "route", "skip", "study_routing"]
